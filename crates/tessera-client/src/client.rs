//! The client: login, the refresh operation, single-flight automatic refresh, logout and
//! authenticated requests, against any server speaking Directus's auth protocol.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_proto::{AuthData, Data, ErrorEnvelope};

use crate::ClientError;
use crate::store::{MemoryStore, Session, TokenStore};

/// What the refresh operation returns, in the shape automation tools expect.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    pub access_token: String,
    /// Access-token lifetime in milliseconds.
    pub expires: i64,
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshResult")
            .field("access_token", &"<hidden>")
            .field("expires", &self.expires)
            .field("refresh_token", &"<hidden>")
            .finish()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Retry policy for network failures and 5xx answers.
#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    first_backoff: Duration,
}

async fn send(
    http: &reqwest::Client,
    retry: Retry,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
    retry_5xx: bool,
) -> Result<(StatusCode, Vec<u8>), ClientError> {
    let mut backoff = retry.first_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = http.request(method.clone(), url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let failure = match req.send().await {
            Ok(res) => {
                let status = res.status();
                let retryable = retry_5xx && status.is_server_error();
                match res.bytes().await {
                    Ok(bytes) if !retryable => return Ok((status, bytes.to_vec())),
                    Ok(_) => format!("server answered {status}"),
                    // The server may have acted on it: only safe-to-repeat requests go again.
                    Err(e) if retry_5xx => format!("reading the answer: {e}"),
                    Err(e) => {
                        return Err(ClientError::Unavailable {
                            url: url.to_owned(),
                            attempts: attempt,
                            reason: format!("reading the answer: {e}"),
                        });
                    }
                }
            }
            Err(e) => {
                // A connection that never opened is always safe to retry.
                let retryable = e.is_connect() || retry_5xx;
                if !retryable {
                    return Err(ClientError::Unavailable {
                        url: url.to_owned(),
                        attempts: attempt,
                        reason: e.to_string(),
                    });
                }
                e.to_string()
            }
        };
        if attempt >= retry.attempts {
            return Err(ClientError::Unavailable {
                url: url.to_owned(),
                attempts: attempt,
                reason: failure,
            });
        }
        tracing::debug!(%url, attempt, reason = %failure, "retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// Turns an error answer into a typed error.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let first = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next());
    let code = first.as_ref().and_then(|i| i.code().map(str::to_owned));
    if status == StatusCode::UNAUTHORIZED {
        return ClientError::Unauthorized { code };
    }
    ClientError::Api {
        status: status.as_u16(),
        code,
        message: first
            .map(|i| i.message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
    }
}

/// POSTs a JSON body without credentials; the answer's bytes on success, a typed error else.
async fn post_json(
    http: &reqwest::Client,
    retry: Retry,
    url: &str,
    body: &Value,
    retry_5xx: bool,
) -> Result<Vec<u8>, ClientError> {
    let (status, bytes) = send(http, retry, Method::POST, url, None, Some(body), retry_5xx).await?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(api_error(status, &bytes))
    }
}

fn auth_data(body: &[u8]) -> Result<AuthData, ClientError> {
    serde_json::from_slice::<Data<AuthData>>(body)
        .map(|d| d.data)
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

async fn refresh_with(
    http: &reqwest::Client,
    retry: Retry,
    base: &str,
    token: Option<&str>,
) -> Result<RefreshResult, ClientError> {
    let token = token
        .filter(|t| !t.trim().is_empty())
        .ok_or(ClientError::MissingRefreshToken)?;
    let url = format!("{base}/auth/refresh");
    let body = json!({"refresh_token": token, "mode": "json"});
    let bytes = post_json(http, retry, &url, &body, true)
        .await
        .map_err(|e| match e {
            ClientError::Unauthorized { code }
                if matches!(
                    code.as_deref(),
                    Some("INVALID_CREDENTIALS" | "USER_SUSPENDED")
                ) =>
            {
                ClientError::InvalidRefreshToken { code }
            }
            other => other,
        })?;
    let data = auth_data(&bytes)?;
    match (data.access_token, data.refresh_token) {
        (Some(access_token), Some(refresh_token)) => Ok(RefreshResult {
            access_token,
            expires: data.expires,
            refresh_token,
        }),
        _ => Err(ClientError::Protocol(
            "refresh answer lacks access_token or refresh_token".into(),
        )),
    }
}

/// An HTTP client with timeouts, so a hung server cannot hold a refresh (and the store's
/// cross-process lock) forever.
fn default_http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

const DEFAULT_RETRY: Retry = Retry {
    attempts: 4,
    first_backoff: Duration::from_millis(200),
};

/// The refresh-token operation on its own: spends `refresh_token` at `url` and returns the
/// new tokens. With no token it fails with "Missing required parameter: refresh_token"
/// without sending anything.
pub async fn refresh_token(
    url: &str,
    refresh_token: Option<&str>,
) -> Result<RefreshResult, ClientError> {
    refresh_with(
        &default_http(),
        DEFAULT_RETRY,
        url.trim_end_matches('/'),
        refresh_token,
    )
    .await
}

enum Auth {
    Session(Arc<dyn TokenStore>),
    Static(String),
}

struct Inner {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    margin_ms: i64,
    retry: Retry,
    /// One refresh at a time within this process; the store's lock covers other processes.
    refreshing: tokio::sync::Mutex<()>,
}

/// A client bound to one server and one session (or one static token). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Configures a [`Client`].
pub struct ClientBuilder {
    base: String,
    http: Option<reqwest::Client>,
    auth: Auth,
    margin: Duration,
    retry: Retry,
}

impl ClientBuilder {
    /// Keeps the session in `store` (default: memory).
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.auth = Auth::Session(store);
        self
    }

    /// Uses a static token, which never expires and is never refreshed.
    pub fn static_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Static(token.into());
        self
    }

    /// Refreshes when the access token has less than this left (default 30 s).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Tries a request this many times in all on network errors and 5xx (default 4).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.attempts = attempts.max(1);
        self
    }

    /// Waits this long before the first retry, doubling after each (default 200 ms).
    pub fn backoff(mut self, first: Duration) -> Self {
        self.retry.first_backoff = first;
        self
    }

    /// Uses a preconfigured HTTP client (proxies, TLS roots, timeouts).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(Inner {
                base: self.base,
                http: self.http.unwrap_or_else(default_http),
                auth: self.auth,
                margin_ms: i64::try_from(self.margin.as_millis()).unwrap_or(i64::MAX),
                retry: self.retry,
                refreshing: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Client {
    /// Starts configuring a client for the server at `url` (e.g. `http://127.0.0.1:8055`).
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            base: url.trim_end_matches('/').to_owned(),
            http: None,
            auth: Auth::Session(Arc::new(MemoryStore::new())),
            margin: Duration::from_secs(30),
            retry: DEFAULT_RETRY,
        }
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    fn store(&self) -> Result<&Arc<dyn TokenStore>, ClientError> {
        match &self.inner.auth {
            Auth::Session(s) => Ok(s),
            Auth::Static(_) => Err(ClientError::NotLoggedIn(
                "a static-token client has no session".into(),
            )),
        }
    }

    fn remember(&self, r: &RefreshResult) -> Result<Session, ClientError> {
        let session = Session {
            url: Some(self.inner.base.clone()),
            access_token: Some(r.access_token.clone()),
            refresh_token: Some(r.refresh_token.clone()),
            expires_at: Some(now_ms() + r.expires),
        };
        self.store()?.save(&session)?;
        Ok(session)
    }

    /// Logs in with e-mail and password (json mode) and stores the session.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        otp: Option<&str>,
    ) -> Result<RefreshResult, ClientError> {
        self.store()?;
        let mut body = json!({"email": email, "password": password, "mode": "json"});
        if let Some(otp) = otp {
            body["otp"] = json!(otp);
        }
        let url = format!("{}/auth/login", self.inner.base);
        let bytes = post_json(&self.inner.http, self.inner.retry, &url, &body, false).await?;
        let data = auth_data(&bytes)?;
        let result = match (data.access_token, data.refresh_token) {
            (Some(access_token), Some(refresh_token)) => RefreshResult {
                access_token,
                expires: data.expires,
                refresh_token,
            },
            _ => {
                return Err(ClientError::Protocol(
                    "login answer lacks access_token or refresh_token".into(),
                ));
            }
        };
        self.remember(&result)?;
        Ok(result)
    }

    /// Runs `f` holding both the in-process refresh mutex and the store's cross-process lock,
    /// with the session as it is in the store right now.
    async fn exclusive<T>(
        &self,
        f: impl AsyncFnOnce(Option<Session>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let store = self.store()?.clone();
        let _local = self.inner.refreshing.lock().await;
        let lock_store = store.clone();
        let guard = tokio::task::spawn_blocking(move || lock_store.lock())
            .await
            .map_err(|e| ClientError::Store(e.to_string()))??;
        let current = store.load()?;
        let out = f(current).await;
        drop(guard);
        out
    }

    async fn spend(&self, session: Option<Session>) -> Result<RefreshResult, ClientError> {
        let token = session.and_then(|s| s.refresh_token);
        let result = refresh_with(
            &self.inner.http,
            self.inner.retry,
            &self.inner.base,
            token.as_deref(),
        )
        .await?;
        self.remember(&result)?;
        Ok(result)
    }

    /// Refreshes now, with the refresh token currently in the store, and stores the rotated
    /// one.
    pub async fn refresh(&self) -> Result<RefreshResult, ClientError> {
        self.exclusive(async |current| self.spend(current).await)
            .await
    }

    /// The access token to use, refreshing first if it expires within the margin. Concurrent
    /// callers share one refresh; a refresh done meanwhile by another process is picked up.
    pub async fn access_token(&self) -> Result<String, ClientError> {
        let store = match &self.inner.auth {
            Auth::Static(t) => return Ok(t.clone()),
            Auth::Session(s) => s,
        };
        let fresh = |s: &Session| {
            s.access_token.is_some()
                && s.expires_at
                    .is_some_and(|e| e - now_ms() > self.inner.margin_ms)
        };
        if let Some(s) = store.load()?.filter(fresh) {
            return Ok(s.access_token.unwrap_or_default());
        }
        self.exclusive(async |current| match current {
            Some(s) if fresh(&s) => Ok(s.access_token.unwrap_or_default()),
            None => Err(ClientError::NotLoggedIn("no stored session".into())),
            other => Ok(self.spend(other).await?.access_token),
        })
        .await
    }

    /// After a `TOKEN_EXPIRED`: refresh unless someone already replaced the token that failed.
    async fn replace_expired(&self, failed: &str) -> Result<String, ClientError> {
        self.exclusive(async |current| match current {
            Some(s) if s.access_token.as_deref().is_some_and(|t| t != failed) => {
                Ok(s.access_token.unwrap_or_default())
            }
            other => Ok(self.spend(other).await?.access_token),
        })
        .await
    }

    /// Sends an authenticated request and returns the parsed JSON body (`Null` for 204).
    /// Refreshes ahead of expiry, and once more if the server answers `TOKEN_EXPIRED`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/{}", self.inner.base, path.trim_start_matches('/'));
        let idempotent = matches!(method, Method::GET | Method::HEAD);
        let mut token = self.access_token().await?;
        let mut retried = false;
        loop {
            let (status, bytes) = send(
                &self.inner.http,
                self.inner.retry,
                method.clone(),
                &url,
                Some(&token),
                body,
                idempotent,
            )
            .await?;
            if status.is_success() {
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::Protocol(e.to_string()));
            }
            let err = api_error(status, &bytes);
            let expired = matches!(&err, ClientError::Unauthorized { code } if code.as_deref() == Some("TOKEN_EXPIRED"));
            if expired && !retried && matches!(self.inner.auth, Auth::Session(_)) {
                retried = true;
                token = self.replace_expired(&token).await?;
                continue;
            }
            return Err(err);
        }
    }

    /// `GET /users/me`: the caller's user record (`data`).
    pub async fn me(&self) -> Result<Value, ClientError> {
        let body = self.request(Method::GET, "/users/me", None).await?;
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Ends the session on the server and forgets it locally.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.exclusive(async |current| {
            let token = current
                .and_then(|s| s.refresh_token)
                .ok_or(ClientError::MissingRefreshToken)?;
            let url = format!("{}/auth/logout", self.inner.base);
            let body = json!({"refresh_token": token, "mode": "json"});
            post_json(&self.inner.http, self.inner.retry, &url, &body, true).await?;
            self.store()?.clear()
        })
        .await
    }
}
