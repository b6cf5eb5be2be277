//! Tessera's HTTP server: configuration, start-up (database, secret, bootstrap), the router,
//! the authenticate middleware every route but `/server/ping` passes through, and `serve`
//! with graceful shutdown.

pub mod config;
pub mod error;
mod headers;
pub mod http;
pub mod limits;
mod listen;
pub mod mail;
mod metrics;
mod oas;
mod routes;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state, map_response, map_response_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tessera_core::Error;
use tessera_core::auth::{Auth, TokenSource};
use tessera_core::clock::{Clock, SystemClock};
use tessera_core::items::Items;
use tessera_core::limits::{RateLimiter, Throttle};
use tessera_core::password::Passwords;
use tessera_core::probe::{NoProbe, Probe};
use tessera_core::reset::Resets;
use tessera_core::{AdminSeed, Bootstrapped};
use tessera_postgres::Postgres;
use tessera_sqlite::Sqlite;
use tessera_store::Store;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::config::{Config, Database};
use crate::error::ApiError;
use crate::http::{client_ip, extract_token, set_cookie};

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<metrics::Metrics>,
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub items: Arc<Items>,
    pub resets: Arc<Resets>,
    /// The per-client request limit, when `RATE_LIMITER_ENABLED`.
    pub limiter: Option<Arc<RateLimiter>>,
}

/// What start-up did, for the operator.
pub struct Started {
    pub state: AppState,
    /// The generated admin password, when bootstrap made one (shown once).
    pub generated_admin_password: Option<String>,
    /// The admin e-mail bootstrap used, when it created the admin.
    pub created_admin: Option<String>,
}

/// What start-up hands the services besides the configuration: the clock they read and the
/// probe they report to. Tests replace both; [`Hooks::default`] is the real clock and no probe.
#[derive(Clone)]
pub struct Hooks {
    pub clock: Arc<dyn Clock>,
    pub probe: Arc<dyn Probe>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            probe: Arc::new(NoProbe),
        }
    }
}

/// Reads the secret kept beside the database, or creates one (mode 0600).
fn persistent_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = tessera_core::tokens::random_token();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new SECRET and kept it beside the database");
    Ok(secret)
}

/// Creates the data directory (and its parents) readable by its owner only, if missing.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Opens the configured database as it is, to read only: no directory, schema or migration is
/// made (another program's database, such as Directus's, for `tessera migrate-data`).
pub async fn open_foreign(config: &Config) -> anyhow::Result<Arc<dyn tessera_store::Foreign>> {
    match &config.database {
        Database::Sqlite { filename } => {
            if !filename.exists() {
                anyhow::bail!("{} does not exist", filename.display());
            }
            let store = tessera_sqlite::SqliteFile::open(filename)
                .with_context(|| format!("opening database {}", filename.display()))?;
            Ok(Arc::new(store))
        }
        Database::Postgres(settings) => {
            let settings = (**settings).clone();
            let store = tokio::task::spawn_blocking(move || Postgres::open_as_is(settings))
                .await
                .context("opening PostgreSQL")?
                .context("opening the PostgreSQL database")?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens (creating it and its directory if needed) the configured database, with its schema
/// up to date; also returns the directory that holds it.
pub async fn open_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Option<std::path::PathBuf>)> {
    match &config.database {
        Database::Sqlite { filename } => {
            let dir = filename
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            create_private_dir(&dir)?;
            let store = Sqlite::open(filename)
                .with_context(|| format!("opening database {}", filename.display()))?;
            Ok((Arc::new(store), Some(dir)))
        }
        Database::Postgres(settings) => {
            // Connecting and migrating block: keep them off the async workers.
            let settings = (**settings).clone();
            let store = tokio::task::spawn_blocking(move || Postgres::open(settings))
                .await
                .context("opening PostgreSQL")?
                .context("opening the PostgreSQL database")?;
            Ok((Arc::new(store), None))
        }
    }
}

/// How long start-up waits to hear other instances sharing the database.
const LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the database, settles the secret, and bootstraps the first admin if needed.
pub async fn start(config: Config, hooks: Hooks) -> anyhow::Result<Started> {
    if matches!(config.database, Database::Postgres(_)) && config.secret.is_none() {
        anyhow::bail!(
            "SECRET is required with DB_CLIENT=pg: every instance sharing the database must \
             sign and check tokens with the same secret"
        );
    }
    let (store, dir) = open_store(&config).await?;
    let secret = match (&config.secret, &dir) {
        (Some(s), _) => s.clone(),
        (None, Some(dir)) => persistent_secret(dir)?,
        (None, None) => anyhow::bail!("SECRET is required with this database"),
    };
    if secret.len() < 32 {
        tracing::warn!("SECRET is shorter than 32 bytes");
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let passwords = Passwords::with_probe(
        config.hash.clone(),
        cores,
        config.hash_queue_limit,
        hooks.probe.clone(),
    )?;
    let counters = limits::counters(&config.limiter_store, &store)?;
    let throttle = |kind| {
        config.throttle.map(|t| {
            Arc::new(Throttle::new(
                kind,
                counters.clone(),
                hooks.clock.clone(),
                t,
            ))
        })
    };
    let mut auth = Auth::new(
        store.clone(),
        secret.as_bytes(),
        passwords.clone(),
        hooks.clock.clone(),
        config.auth.clone(),
    )
    .with_probe(hooks.probe.clone());
    if let Some(t) = throttle("login") {
        auth = auth.with_throttle(t);
    }
    let items = Arc::new(Items::new(
        store.clone(),
        passwords.clone(),
        auth.caches().clone(),
        hooks.clock.clone(),
    ));
    let resets = Resets::new(
        store.clone(),
        items.clone(),
        secret.as_bytes(),
        hooks.clock.clone(),
        mail::Mailer::start(&config.email)?,
        throttle("reset"),
        config.reset.clone(),
    )
    .with_probe(hooks.probe);
    let limiter = config
        .rate_limit
        .map(|l| Arc::new(RateLimiter::new(counters.clone(), hooks.clock.clone(), l)));
    // Other instances sharing the database tell this one what they change. Serve once this
    // one hears them (its listener's first word says so), or after a while without.
    if let Some(mut changes) = store.changes() {
        let listening = async {
            loop {
                match changes.recv().await {
                    Ok(tessera_store::Change::Listening) => return true,
                    Err(RecvError::Closed) => return false,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                }
            }
        };
        if !matches!(tokio::time::timeout(LISTEN_WAIT, listening).await, Ok(true)) {
            tracing::warn!("not hearing other instances yet: their changes reach this one late");
        }
        tokio::spawn(tessera_core::cache::follow(changes, auth.caches().clone()));
    }
    let seed = AdminSeed {
        email: config.admin_email.clone(),
        password: config.admin_password.clone(),
        token: config.admin_token.clone(),
    };
    let (generated, created) = match tessera_core::bootstrap(&store, &passwords, seed).await? {
        Bootstrapped::Existing => (None, None),
        Bootstrapped::Created { generated_password } => {
            (generated_password, Some(config.admin_email.clone()))
        }
    };
    Ok(Started {
        state: AppState {
            config: Arc::new(config),
            metrics: Arc::default(),
            store,
            auth: Arc::new(auth),
            items,
            resets: Arc::new(resets),
            limiter,
        },
        generated_admin_password: generated,
        created_admin: created,
    })
}

/// Resolves the caller's token into an accountability for every route but `/server/ping`.
/// A session cookie that fails (other than by expiry) is cleared in the error answer.
async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req, &s);
    let token = match extract_token(
        req.uri().query(),
        req.headers(),
        &s.config.session_cookie.name,
    ) {
        Ok(t) => t,
        Err(e) => return ApiError(e).into_response(),
    };
    let ping = req.uri().path() == "/server/ping";
    let acc = if ping {
        tessera_core::access::Accountability {
            ip,
            ..Default::default()
        }
    } else {
        match s
            .auth
            .authenticate(token.as_ref().map(|(t, _)| t.as_str()), ip)
            .await
        {
            Ok(acc) => acc,
            Err(Error::ServiceUnavailable {
                service: "database",
                ..
            }) if req.uri().path() == "/server/health" && s.config.healthcheck_enabled => {
                // Who asks cannot be told without the database; that it is down can.
                return routes::server::database_unreachable();
            }
            Err(e) => {
                let clear = matches!(token, Some((_, TokenSource::Cookie)))
                    && matches!(e, Error::InvalidCredentials | Error::InvalidToken);
                let mut res = ApiError(e).into_response();
                if clear {
                    res.headers_mut().append(
                        header::SET_COOKIE,
                        set_cookie(&s.config.session_cookie, None, s.auth.now_ms()),
                    );
                }
                return res;
            }
        }
    };
    req.extensions_mut().insert(Arc::new(acc));
    let mut res = next.run(req).await;
    let status = res.status();
    let h = res.headers_mut();
    // Answers that went through Directus's `respond` are marked uncacheable; errors and the
    // ping, which bypass it, are not.
    if status.is_success() && !ping {
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Cache-Control"),
        );
    }
    res
}

async fn not_found(req: Request) -> Response {
    ApiError(Error::RouteNotFound(req.uri().path().to_owned())).into_response()
}

/// A known route asked with a method it lacks: `OPTIONS` is answered (axum adds the `Allow`
/// header), anything else is ROUTE_NOT_FOUND, as Express answers.
async fn wrong_method(req: Request) -> Response {
    if req.method() == axum::http::Method::OPTIONS {
        axum::http::StatusCode::OK.into_response()
    } else {
        not_found(req).await
    }
}

async fn powered_by(mut res: Response) -> Response {
    res.headers_mut()
        .insert("x-powered-by", HeaderValue::from_static("Tessera"));
    res
}

/// The full router. Each route is added with its description ([`oas::Api`]), which
/// `/server/specs/oas` serves.
pub fn router(state: AppState) -> Router {
    use axum::routing::{any as every_method, delete, patch, post};
    use oas::{Answer, FIELDS, Op, data};
    use routes::{auth, items, server};
    use serde_json::json;
    use tessera_core::permissions::Action;
    use tessera_store::schema::{ACCESS, PERMISSIONS, POLICIES, ROLES, SETTINGS, USERS};
    let any = || json!({"type": "object"});
    let login_body = json!({"type": "object", "properties": {
        "email": {"type": "string"}, "password": {"type": "string"},
        "mode": {"type": "string", "enum": ["json", "cookie", "session"]}, "otp": {"type": "string"}
    }});
    let refresh_body = json!({"type": "object", "properties": {
        "refresh_token": {"type": "string"}, "mode": {"type": "string", "enum": ["json", "cookie", "session"]}
    }});
    let mut logout_body = refresh_body.clone();
    logout_body["properties"]["scope"] = json!({"type": "string", "enum": ["session", "all"]});
    let session = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "created": {"type": "string"}, "last_used": {"type": "string"},
        "expires": {"type": "string"}, "ip": {"type": "string", "nullable": true},
        "user_agent": {"type": "string", "nullable": true}, "current": {"type": "boolean"}
    }});
    let described: oas::Described = Arc::default();
    let api = oas::Api::default()
        .route("/auth", get(auth::providers), vec![Op::new("get", "auth", "The login providers", Answer::Json(data(json!({"type": "array"}))))])
        .route("/auth/login", post(auth::login), vec![Op::new("post", "auth", "Log in with e-mail and password", Answer::Json(data(any()))).body(login_body)])
        .route("/auth/refresh", post(auth::refresh), vec![Op::new("post", "auth", "Exchange a refresh token for new tokens", Answer::Json(data(any()))).body(refresh_body.clone())])
        .route("/auth/logout", post(auth::logout), vec![Op::new("post", "auth", "End a session, or with scope all every session of its user", Answer::Empty).body(logout_body)])
        .route("/auth/password/request", post(auth::password_request), vec![Op::new("post", "auth", "Mail a password-reset link (always 204 for a valid request)", Answer::Empty).body(json!({"type": "object", "properties": {"email": {"type": "string"}, "reset_url": {"type": "string"}}}))])
        .route("/auth/password/reset", post(auth::password_reset), vec![Op::new("post", "auth", "Set a new password with a reset token", Answer::Empty).body(json!({"type": "object", "properties": {"token": {"type": "string"}, "password": {"type": "string"}}}))])
        .route("/auth/sessions", get(auth::sessions), vec![Op::new("get", "auth", "The caller's live sessions (an admin's: ?user=<id>)", Answer::Json(data(json!({"type": "array", "items": session})))).query(&["user"])])
        .route("/auth/sessions/{id}", delete(auth::end_session), vec![Op::new("delete", "auth", "End one of the caller's sessions (an admin: anyone's)", Answer::Empty)])
        .route("/server/ping", get(server::ping), vec![Op::new("get", "server", "Is the server up", Answer::Body("text/html", json!({"type": "string"})))])
        .route("/server/health", get(server::health), vec![Op::new("get", "server", "Health of the server and its database", Answer::Body("application/health+json", any()))])
        .route("/server/info", get(server::info), vec![Op::new("get", "server", "About the project and server", Answer::Json(data(any())))])
        .route("/server/metrics", get(metrics::serve), vec![Op::new("get", "server", "Prometheus metrics", Answer::Body("text/plain", json!({"type": "string"})))])
        .route("/server/specs/oas", get(oas::serve), vec![Op::new("get", "server", "This document, for the caller", Answer::Json(any()))])
        .route("/users/me", get(items::me).patch(items::update_me), vec![
            Op::new("get", "directus_users", "The caller's own user", Answer::Json(data(oas::item_schema(&USERS)))).query(FIELDS),
            Op::new("patch", "directus_users", "Update the caller's own user", Answer::JsonOr204(data(oas::item_schema(&USERS)))).query(FIELDS).body(oas::input_schema(&USERS)),
        ])
        .route("/users/me/tfa/generate", post(items::tfa_generate), vec![Op::new("post", "directus_users", "A new TOTP secret for the caller (password required)", Answer::Json(data(json!({"type": "object", "properties": {"secret": {"type": "string"}, "otpauth_url": {"type": "string"}}})))).body(json!({"type": "object", "properties": {"password": {"type": "string"}}}))])
        .route("/users/me/tfa/generate/", post(items::tfa_generate), vec![Op::new("post", "directus_users", "The same, with a trailing slash", Answer::Json(data(any()))).body(json!({"type": "object", "properties": {"password": {"type": "string"}}}))])
        .route("/users/me/tfa/enable", post(items::tfa_enable), vec![Op::new("post", "directus_users", "Turn two-factor login on with the generated secret and a current code", Answer::Empty).body(json!({"type": "object", "properties": {"secret": {"type": "string"}, "otp": {"type": "string"}}}))])
        .route("/users/me/tfa/disable", post(items::tfa_disable), vec![Op::new("post", "directus_users", "Turn the caller's two-factor login off with a current code", Answer::Empty).body(json!({"type": "object", "properties": {"otp": {"type": "string"}}}))])
        .route("/users/{id}/tfa/disable", post(items::tfa_disable_for), vec![Op::new("post", "directus_users", "Turn a user's two-factor login off (admins)", Answer::Empty)])
        .route("/roles/me", get(items::roles_me), vec![Op::new("get", "directus_roles", "The caller's roles", Answer::Json(data(json!({"type": "array", "items": oas::item_schema(&ROLES)})))).query(FIELDS)])
        .route("/policies/me/globals", get(items::policy_globals), vec![Op::new("get", "directus_policies", "The caller's global access flags", Answer::Json(data(json!({"type": "object", "properties": {
            "app_access": {"type": "boolean"}, "admin_access": {"type": "boolean"}, "enforce_tfa": {"type": "boolean"}
        }}))))])
        .route("/permissions/me", get(items::permissions_me), vec![Op::new("get", "directus_permissions", "What the caller may do, per collection and action", Answer::Json(data(any())))])
        .route("/settings", get(items::settings).merge(patch(items::update_settings)), vec![
            Op::new("get", "directus_settings", "The project settings", Answer::Json(data(oas::item_schema(&SETTINGS)))).guard(&SETTINGS, Action::Read).query(FIELDS),
            Op::new("patch", "directus_settings", "Update the project settings", Answer::JsonOr204(data(oas::item_schema(&SETTINGS)))).guard(&SETTINGS, Action::Update).query(FIELDS).body(oas::input_schema(&SETTINGS)),
        ]);
    let refused = |method: &'static str, what: &str| {
        Op::new(
            method,
            "items",
            format!("{what}: Tessera serves no user collections"),
            Answer::Refused,
        )
    };
    let api = api
        .route(
            "/items/{collection}",
            every_method(items::items_of),
            vec![
                refused("get", "List items"),
                refused("post", "Create items"),
            ],
        )
        .route(
            "/items/{collection}/{id}",
            every_method(items::items_of),
            vec![
                refused("get", "Read an item"),
                refused("patch", "Update an item"),
                refused("delete", "Delete an item"),
            ],
        );
    let api = [
        ("/users", &USERS),
        ("/roles", &ROLES),
        ("/policies", &POLICIES),
        ("/access", &ACCESS),
        ("/permissions", &PERMISSIONS),
    ]
    .into_iter()
    .fold(api, |api, (path, c)| items::collection(api, path, c));
    let router = api
        .finish(&described)
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::Extension(described))
        .layer(from_fn_with_state(state.clone(), authenticate));
    // The request limit sits in front of authentication, only where it is on.
    let router = if state.limiter.is_some() {
        router.layer(from_fn_with_state(state.clone(), limits::limit))
    } else {
        router
    };
    let router = if state.config.metrics_enabled {
        router.layer(from_fn_with_state(state.clone(), metrics::measure))
    } else {
        router
    };
    router
        .layer(from_fn_with_state(state.clone(), headers::cors))
        .layer(map_response(powered_by))
        .layer(map_response_with_state(state.clone(), headers::security))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests. Expired sessions are
/// purged every ten minutes meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let auth = state.auth.clone();
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            match auth.purge_expired().await {
                Ok(n) if n > 0 => tracing::info!(sessions = n, "purged expired sessions"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
        }
    });
    let limits = state.config.http.clone();
    let descriptors = state.store.descriptors();
    let out = listen::serve(listener, router(state), limits, descriptors, shutdown).await;
    purge.abort();
    out
}
