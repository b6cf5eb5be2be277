//! The one way tests start a server: [`TestServer::spawn`] with extra env-style settings, on
//! the engine the run tests (`TESSERA_TEST_DB=pg` for PostgreSQL, a scratch database per
//! server; SQLite under a temporary directory otherwise), and [`Db`], the same database as
//! another writer sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tessera_postgres::scratch::Scratch;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tessera_server::config::Config;
use tessera_server::{AppState, Hooks};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "Admin-Password-1";
pub const ADMIN_TOKEN: &str = "admin-static-token-0123456789";
/// For tests of what lies under the login throttle (the attempt limit, Directus's answers to
/// many wrong logins in a row): turns the throttle off.
pub const NO_THROTTLE: (&str, &str) = ("AUTH_THROTTLE_ENABLED", "false");

/// A running server with its own database; stopped when dropped.
pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The running server's services (hashing statistics, the configuration).
    pub state: AppState,
    /// The SQLite file, or the key of the PostgreSQL scratch database, the server runs on.
    pub db: String,
    pg: Option<Arc<Scratch>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Sends `req` and reads the answer.
    async fn read(req: reqwest::RequestBuilder) -> Self {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// `extensions.code` of the first error.
    pub fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("")
    }

    /// `message` of the first error.
    pub fn message(&self) -> &str {
        self.body["errors"][0]["message"].as_str().unwrap_or("")
    }

    /// All `Set-Cookie` values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value a `Set-Cookie` gives cookie `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
    }
}

/// Whether this run tests PostgreSQL (`TESSERA_TEST_DB=pg`).
pub fn on_postgres() -> bool {
    std::env::var("TESSERA_TEST_DB").as_deref() == Ok("pg")
}

/// The secret PostgreSQL servers get unless a test sets one (PostgreSQL requires it).
const PG_SECRET: &str = "postgres-test-secret-0123456789abcdef";

/// Scratch databases by the database key servers name them with: weakly while servers run on
/// them, strongly while a stopped server's database waits for its restart.
type Registry = HashMap<String, (Weak<Scratch>, Option<Arc<Scratch>>)>;

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The scratch database for `key`: the one servers already use, or a new one.
fn scratch_for(key: &str) -> Arc<Scratch> {
    let mut r = registry().lock().unwrap();
    let entry = r.entry(key.to_owned()).or_insert((Weak::new(), None));
    if let Some(parked) = entry.1.take() {
        return parked;
    }
    if let Some(live) = entry.0.upgrade() {
        return live;
    }
    // The synchronous driver runs its own runtime: off this one.
    let maker = std::thread::current().name().unwrap_or("test").to_owned();
    let made = std::thread::Builder::new()
        .name(maker)
        .spawn(Scratch::create)
        .unwrap()
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("TESSERA_TEST_DB=pg: {e}"));
    let made = Arc::new(made);
    entry.0 = Arc::downgrade(&made);
    made
}

impl TestServer {
    /// Starts a server; `vars` override the test defaults (cheap hashing, no login stall).
    pub async fn spawn(vars: &[(&str, &str)]) -> Self {
        Self::spawn_with(vars, Hooks::default()).await
    }

    /// Starts a server with an injected clock or probe.
    pub async fn spawn_with(vars: &[(&str, &str)], hooks: Hooks) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        Self::spawn_in_with(dir, &db.display().to_string(), vars, hooks).await
    }

    /// Starts a server on an existing directory/database (restart tests).
    pub async fn spawn_in(dir: tempfile::TempDir, db: &str, vars: &[(&str, &str)]) -> Self {
        Self::spawn_in_with(dir, db, vars, Hooks::default()).await
    }

    pub async fn spawn_in_with(
        dir: tempfile::TempDir,
        db: &str,
        vars: &[(&str, &str)],
        hooks: Hooks,
    ) -> Self {
        let pg = on_postgres().then(|| scratch_for(db));
        let url = pg.as_ref().map(|p| p.url());
        let engine: &[(&str, &str)] = match &url {
            Some(url) => &[
                ("DB_CLIENT", "pg"),
                ("DB_CONNECTION_STRING", url),
                ("SECRET", PG_SECRET),
                ("DB_POOL__MIN", "1"),
            ],
            None => &[("DB_FILENAME", db)],
        };
        let mut map: HashMap<String, String> = [
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("LOGIN_STALL_TIME", "0"),
            ("HASH_MEMORY_COST", "1024"),
            ("HASH_TIME_COST", "1"),
            ("HASH_PARALLELISM", "1"),
            ("LOG_LEVEL", "warn"),
        ]
        .into_iter()
        .chain(engine.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in vars {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_vars(&map).expect("test config");
        let started = tessera_server::start(config, hooks)
            .await
            .expect("server start");
        let state = started.state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            tessera_server::serve(listener, started.state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            dir,
            state,
            db: db.to_owned(),
            pg,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// The server's database as another writer (an operator, another instance) sees it.
    pub fn database(&self) -> Db {
        match &self.pg {
            Some(p) => Db::Postgres(p.config()),
            None => {
                let c = rusqlite::Connection::open(&self.db).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                Db::Sqlite(c)
            }
        }
    }

    /// Stops the server gracefully and hands back its directory.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
        if let Some(pg) = self.pg.take() {
            registry()
                .lock()
                .unwrap()
                .insert(self.db.clone(), (Arc::downgrade(&pg), Some(pg)));
        }
        let tmp = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, tmp)
    }

    /// Sends a request. `headers` are (name, value) pairs; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.request(method, path, headers);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::read(req).await
    }

    /// A request with its headers set, not yet sent.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_str(v).unwrap());
        }
        req
    }

    /// Sends a request carrying one cookie.
    pub async fn with_cookie(
        &self,
        method: &str,
        path: &str,
        name: &str,
        value: &str,
        body: Option<Value>,
    ) -> Reply {
        let cookie = format!("{name}={value}");
        self.call(method, path, &[("cookie", &cookie)], body).await
    }

    /// `GET` with a bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.call(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await
    }

    /// Logs in (json mode unless `mode` says otherwise).
    pub async fn login(&self, email: &str, password: &str, mode: Option<&str>) -> Reply {
        let mut body = json!({"email": email, "password": password});
        if let Some(m) = mode {
            body["mode"] = json!(m);
        }
        self.call("POST", "/auth/login", &[], Some(body)).await
    }

    /// `POST /auth/refresh {"refresh_token": token}` (json mode by body).
    pub async fn refresh_json<T: serde::Serialize + ?Sized>(&self, token: &T) -> Reply {
        self.call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": token})),
        )
        .await
    }

    /// `POST /auth/logout {"refresh_token": token}`.
    pub async fn logout_json<T: serde::Serialize + ?Sized>(&self, token: &T) -> Reply {
        self.call(
            "POST",
            "/auth/logout",
            &[],
            Some(json!({"refresh_token": token})),
        )
        .await
    }

    /// Logs the bootstrap admin in (json mode) and returns (access, refresh).
    pub async fn admin_tokens(&self) -> (String, String) {
        let r = self.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.body["data"]["access_token"].as_str().unwrap().to_owned(),
            r.body["data"]["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a user as the admin (static admin token); returns its id.
    pub async fn create_user(&self, body: Value) -> String {
        let r = self
            .call(
                "POST",
                "/users",
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                Some(body),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["data"]["id"].as_str().unwrap().to_owned()
    }
}

/// A direct connection to a test server's database. Statements take `$1`-style parameters,
/// which both engines read.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Config),
}

impl Db {
    /// Runs a statement; how many rows it changed.
    pub fn execute(&self, sql: &str, args: &[&str]) -> u64 {
        match self {
            Db::Sqlite(c) => c
                .execute(sql, rusqlite::params_from_iter(args.iter()))
                .unwrap() as u64,
            Db::Postgres(config) => with_postgres(config, sql, args, |c, sql, refs| {
                c.execute(sql, refs).unwrap()
            }),
        }
    }

    /// The one integer a query answers.
    pub fn one(&self, sql: &str, args: &[&str]) -> i64 {
        match self {
            Db::Sqlite(c) => c
                .query_row(sql, rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                .unwrap(),
            Db::Postgres(config) => with_postgres(config, sql, args, |c, sql, refs| {
                let row = c.query_one(sql, refs).unwrap();
                row.try_get::<_, i64>(0)
                    .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
                    .unwrap()
            }),
        }
    }
}

type PgArgs<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

/// Runs `f` with a fresh connection, the statement and its arguments, on a thread of its own
/// (the synchronous driver runs its own runtime, which cannot start inside the test's).
fn with_postgres<R: Send + 'static>(
    config: &postgres::Config,
    sql: &str,
    args: &[&str],
    f: impl FnOnce(&mut postgres::Client, &str, PgArgs<'_>) -> R + Send + 'static,
) -> R {
    let (config, sql) = (config.clone(), sql.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    std::thread::spawn(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        f(&mut c, &sql, &refs)
    })
    .join()
    .unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// Sends a raw body with an explicit content type (malformed JSON, forms, oversized bodies).
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let req = self
            .request(method, path, headers)
            .header("content-type", content_type)
            .body(body);
        Reply::read(req).await
    }

    /// A request as the static admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(
            method,
            path,
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            body,
        )
        .await
    }

    /// Creates an item as the static admin (`POST <path>`); returns its key.
    pub async fn make(&self, path: &str, body: Value) -> Value {
        let r = self.admin("POST", path, Some(body)).await;
        assert_eq!(r.status, 200, "POST {path}: {}", r.text);
        r.body["data"]["id"].clone()
    }

    /// Creates an active user with `email`/`password` and no role; returns its id.
    pub async fn user(&self, email: &str, password: &str) -> String {
        self.create_user(json!({"email": email, "password": password, "status": "active"}))
            .await
    }

    /// The bootstrap admin's id and role id.
    pub async fn admin_identity(&self) -> (String, String) {
        let r = self.admin("GET", "/users/me?fields=id,role", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.body["data"]["id"].as_str().unwrap().to_owned(),
            r.body["data"]["role"].as_str().unwrap().to_owned(),
        )
    }
}

/// Asserts an error answer: status, code and exact message.
#[track_caller]
pub fn assert_error(r: &Reply, status: u16, code: &str, message: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.code(), code, "{}", r.text);
    assert_eq!(r.message(), message, "{}", r.text);
}

/// The exact 401 INVALID_CREDENTIALS body.
pub const INVALID_CREDENTIALS_BODY: &str = r#"{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}"#;

/// Decodes a JWT's payload without verifying it.
pub fn jwt_payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("jwt shape");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json payload")
}

/// Whether `t` has Directus's refresh-token shape: 64 chars of `A-Za-z0-9_-`.
pub fn is_refresh_token(t: &str) -> bool {
    t.len() == 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
