//! What the fuzz targets share: a real Tessera server (SQLite in a scratch directory, the
//! cheapest argon2 settings, no login stall, no throttle) driven in-process through its router,
//! with the checks every answer must pass; a generator of structured JSON (deeply nested
//! too) from fuzz bytes; JWT framing and signing with the server's secret; and small helpers
//! to read the line-based seed formats.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Number, Value};
use tessera_core::jwt::{AccessClaims, ISSUER, JwtKeys};
use tessera_server::config::Config;
use tessera_server::{AppState, Hooks};
use uuid::Uuid;

/// The server's `SECRET`: tokens signed with it pass the signature check.
pub const SECRET: &str = "tessera-fuzz-secret-0123456789abcdef";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "fuzz-admin-password";
pub const ADMIN_TOKEN: &str = "fuzz-admin-static-token";
pub const SESSION_COOKIE: &str = "directus_session_token";
pub const REFRESH_COOKIE: &str = "directus_refresh_token";
/// A fixed "now" (2027-01-15) for checks that take the time as an argument.
pub const NOW_MS: i64 = 1_800_000_000_000;

/// How deeply a client's JSON can nest: serde_json refuses deeper documents, so nothing
/// deeper ever reaches Tessera from a request.
pub const MAX_JSON_DEPTH: usize = 127;

/// A Tessera server running in this process.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    /// Keeps SIGPIPE from killing the fuzzer (see [`Server::start`]).
    _sigpipe: tokio::signal::unix::Signal,
    router: axum::Router,
    pub state: AppState,
    /// `Bearer <JWT>` of the bootstrap administrator, valid for years. A JWT rather than the
    /// static token, so that fuzzed writes that change the admin's token or password do not
    /// lock the fuzzer out.
    pub admin_bearer: String,
    pub admin_id: Uuid,
    pub admin_role: Uuid,
}

/// An answer, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// `errors[0].extensions.code` of an error answer.
    pub fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.pointer("/errors/0/extensions/code")?
            .as_str()
            .map(str::to_owned)
    }

    /// The status and body, for failure messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body))
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

/// Where the server keeps its database: `$TESSERA_FUZZ_SCRATCH` (set by `scripts/fuzz` to a
/// directory under `target/`), else the system's temporary directory; one directory per
/// process, made anew.
fn scratch_dir() -> PathBuf {
    let base = std::env::var_os("TESSERA_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("tessera-fuzz-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clearing the scratch directory");
    }
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

fn config(dir: &std::path::Path) -> Config {
    let db = dir.join("data.db").display().to_string();
    let vars: HashMap<String, String> = [
        ("DB_FILENAME", db.as_str()),
        ("SECRET", SECRET),
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("LOGIN_STALL_TIME", "0"),
        ("PASSWORD_RESET_STALL_TIME", "0"),
        ("AUTH_THROTTLE_ENABLED", "false"),
        // argon2's smallest valid cost: a login or a new password costs microseconds.
        ("HASH_MEMORY_COST", "8"),
        ("HASH_TIME_COST", "1"),
        ("HASH_PARALLELISM", "1"),
        ("EMAIL_TRANSPORT", "sendmail"),
        ("EMAIL_SENDMAIL_PATH", "/bin/true"),
        ("LOG_LEVEL", "error"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Config::from_vars(&vars).expect("the fuzz configuration is valid")
}

/// The server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // A Rust program ignores SIGPIPE before `main`; libFuzzer's `main` does not, so a
        // child that closes its end of a pipe early (the sendmail transport's /bin/true) would
        // kill the process. A registered handler makes the signal harmless, as in the server.
        let sigpipe = runtime.block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
                .expect("a SIGPIPE handler")
        });
        let dir = scratch_dir();
        let started = runtime
            .block_on(tessera_server::start(config(&dir), Hooks::default()))
            .expect("the server starts");
        let state = started.state;
        let router = tessera_server::router(state.clone());
        let mut server = Self {
            runtime,
            _sigpipe: sigpipe,
            router,
            state,
            admin_bearer: format!("Bearer {ADMIN_TOKEN}"),
            admin_id: Uuid::nil(),
            admin_role: Uuid::nil(),
        };
        let bearer = server.admin_bearer.clone();
        let me = server.request(
            Method::GET,
            "/users/me?fields=id,role",
            &[("authorization", bearer.as_bytes())],
            None,
        );
        assert_eq!(me.status, StatusCode::OK, "the admin reads itself");
        let me: Value = serde_json::from_slice(&me.body).expect("JSON");
        let uuid = |key: &str| {
            me["data"][key]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .expect("the admin has an id and a role")
        };
        server.admin_id = uuid("id");
        server.admin_role = uuid("role");
        let claims = AccessClaims {
            id: Some(server.admin_id),
            role: Some(server.admin_role),
            app_access: true,
            admin_access: true,
            enforce_tfa: None,
            session: None,
            iat: NOW_MS / 1000,
            exp: NOW_MS / 1000 + 100 * 365 * 86_400,
            iss: ISSUER,
        };
        let jwt = JwtKeys::new(SECRET.as_bytes())
            .sign(&claims)
            .expect("signing");
        server.admin_bearer = format!("Bearer {jwt}");
        server
    }

    /// Runs a future to its end on the server's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Sends a request through the whole router (every middleware) and checks the answer:
    /// never a 500, and a JSON answer is JSON, an error in Directus's `errors` shape.
    pub fn send(&self, req: Request<Body>) -> Reply {
        use tower::ServiceExt;
        let described = format!("{} {}", req.method(), req.uri());
        let reply = self.block_on(async {
            let res = self
                .router
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|never| match never {});
            let (parts, body) = res.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("reading the answer");
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: body.to_vec(),
            }
        });
        let text = String::from_utf8_lossy(&reply.body);
        assert_ne!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{described} answered 500: {text}"
        );
        let json = reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if json {
            let v: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
                panic!("{described}: JSON answer that is not JSON ({e}): {text}")
            });
            if reply.status.is_client_error() || reply.status.is_server_error() {
                assert!(
                    v.pointer("/errors/0/extensions/code")
                        .is_some_and(Value::is_string),
                    "{described}: error answer without errors[0].extensions.code: {text}"
                );
            }
        }
        reply
    }

    /// Sends `method uri` with `headers` (valid values only) and, if given, a JSON body.
    pub fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            let value = header_value(value).expect("a valid header value");
            req = req.header(*name, value);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default().to_vec()))
            .expect("a valid request");
        self.send(req)
    }
}

/// `path?qs`, with every byte a URI may not carry percent-encoded: the server decodes the
/// query as `application/x-www-form-urlencoded`, so it reads the same pairs either way.
pub fn uri_with_query(path: &str, qs: &[u8]) -> String {
    let mut out = String::with_capacity(path.len() + 1 + qs.len() * 3);
    out.push_str(path);
    out.push('?');
    for &b in qs {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header value from raw bytes, if HTTP allows them.
pub fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// The first line of `data` and the rest (both without the newline).
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// Words that make generated JSON look like what Tessera reads: body keys, filter operators,
/// dynamic variables, field names, modes and well-formed values.
const WORDS: &[&str] = &[
    "email",
    "password",
    "mode",
    "otp",
    "json",
    "cookie",
    "session",
    "all",
    "scope",
    "refresh_token",
    "token",
    "reset_url",
    "secret",
    "keys",
    "data",
    "query",
    "filter",
    "fields",
    "sort",
    "limit",
    "offset",
    "page",
    "meta",
    "search",
    "deep",
    "id",
    "role",
    "roles",
    "policy",
    "policies",
    "user",
    "users",
    "status",
    "active",
    "suspended",
    "first_name",
    "tfa_secret",
    "admin_access",
    "app_access",
    "enforce_tfa",
    "ip_access",
    "parent",
    "collection",
    "action",
    "permissions",
    "validation",
    "presets",
    "directus_users",
    "read",
    "create",
    "update",
    "delete",
    "auth_password_policy",
    "project_name",
    "last_access",
    "_and",
    "_or",
    "_eq",
    "_neq",
    "_in",
    "_nin",
    "_null",
    "_nnull",
    "_contains",
    "_icontains",
    "_ncontains",
    "_starts_with",
    "_istarts_with",
    "_ends_with",
    "_gt",
    "_gte",
    "_lt",
    "_lte",
    "_empty",
    "_nempty",
    "_some",
    "_none",
    "_submitted",
    "_regex",
    "_limit",
    "_filter",
    "$CURRENT_USER",
    "$CURRENT_ROLE",
    "$CURRENT_ROLES",
    "$CURRENT_POLICIES",
    "$CURRENT_USER.email",
    "$CURRENT_ROLE.name",
    "$NOW",
    "$NOW(-1 day)",
    "*",
    "role.*",
    "policies.policy.id",
    "admin@example.com",
    "a@b.co",
    "00000000-0000-0000-0000-000000000000",
    "2026-12-02T10:00:00Z",
    "127.0.0.1/8",
    "123456",
    "JBSWY3DPEHPK3PXP",
    "true",
    "null",
    "",
];

/// A JSON value built from fuzz bytes, at most `depth` levels deep: scalars, words from
/// [`WORDS`], arrays and objects, and chains of `_and`/`_or`/arrays nesting many levels at
/// once, so that depth limits are reached without the fuzzer building each level itself.
pub fn arbitrary_json(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let word = |u: &mut Unstructured<'_>| -> arbitrary::Result<String> {
        Ok(if u.arbitrary::<bool>()? {
            (*u.choose(WORDS)?).to_owned()
        } else {
            u.arbitrary::<String>()?
        })
    };
    let kinds = if depth == 0 { 6 } else { 9 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Number::from_f64(u.arbitrary::<f64>()?).map_or(Value::Null, Value::Number),
        4 => Value::String(word(u)?),
        5 => Value::from(u.arbitrary::<u64>()?),
        6 => {
            let len = u.int_in_range(0..=6)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(arbitrary_json(u, depth - 1)?);
            }
            Value::Array(items)
        }
        7 => {
            let len = u.int_in_range(0..=6)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = word(u)?;
                map.insert(key, arbitrary_json(u, depth - 1)?);
            }
            Value::Object(map)
        }
        _ => {
            let levels = u.int_in_range(1..=depth)?;
            let key = (*u.choose(&["_and", "_or", "role", "policies", ""])?).to_owned();
            // `{"_and": [v]}` nests two containers, `[v]` one.
            let wraps = if key.is_empty() { levels } else { levels / 2 };
            let mut v = arbitrary_json(u, 0)?;
            for _ in 0..wraps {
                v = if key.is_empty() {
                    Value::Array(vec![v])
                } else {
                    let mut map = Map::new();
                    map.insert(key.clone(), Value::Array(vec![v]));
                    Value::Object(map)
                };
            }
            v
        }
    })
}

/// Whether two JSON values are the same, numbers compared as numbers (a float may come back
/// from a text round trip one unit in the last place away).
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && json_close(va, vb))
        }
        _ => a == b,
    }
}

/// The HMAC algorithms Tessera accepts in a JWT header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hs {
    Hs256,
    Hs384,
    Hs512,
}

impl Hs {
    /// The algorithm a JWT header names, if it is one of these.
    pub fn of_header(header: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(header).ok()?;
        match v.get("alg")?.as_str()? {
            "HS256" => Some(Self::Hs256),
            "HS384" => Some(Self::Hs384),
            "HS512" => Some(Self::Hs512),
            _ => None,
        }
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes any key size");
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

/// `base64url(header).base64url(payload).signature`, signed with `key` under `alg`.
pub fn sign_jwt(alg: Hs, header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = match alg {
        Hs::Hs256 => mac::<Hmac<sha2::Sha256>>(key, signing_input.as_bytes()),
        Hs::Hs384 => mac::<Hmac<sha2::Sha384>>(key, signing_input.as_bytes()),
        Hs::Hs512 => mac::<Hmac<sha2::Sha512>>(key, signing_input.as_bytes()),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}
