//! The token lifecycle: login, refresh with rotation (grace window and reuse detection in every
//! mode), logout, and turning a presented token (JWT, session JWT or static token) into an
//! [`Accountability`]. Also the caches that keep token checks off the database.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tessera_proto::AuthMode;
use tessera_store::{AccessTree, ClientMeta, NewSession, RotateOutcome, Rotation, Store};
use uuid::Uuid;

use crate::access::{Accountability, GlobalAccess, global_access};
use crate::cache::Caches;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::jwt::{AccessClaims, ISSUER, JwtKeys, is_directus_jwt};
use crate::password::Passwords;
use crate::tokens::{digest, random_token, successor};
use crate::validate::{is_email, optional_string, required_string};

/// Lifetimes and delays of the token lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `ACCESS_TOKEN_TTL`: JWT lifetime in json and cookie modes.
    pub access_ttl_ms: i64,
    /// `REFRESH_TOKEN_TTL`: lifetime of a refresh token.
    pub refresh_ttl_ms: i64,
    /// `SESSION_COOKIE_TTL`: JWT lifetime in session mode, and of a session-mode successor.
    pub session_ttl_ms: i64,
    /// `SESSION_REFRESH_GRACE_PERIOD`.
    pub grace_ms: i64,
    /// `LOGIN_STALL_TIME`.
    pub login_stall: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_ttl_ms: 15 * 60 * 1000,
            refresh_ttl_ms: 7 * 24 * 3600 * 1000,
            session_ttl_ms: 24 * 3600 * 1000,
            grace_ms: 10_000,
            login_stall: Duration::from_millis(500),
        }
    }
}

/// Tokens handed out by a login or refresh.
#[derive(Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    /// Lifetime of `access_token` in ms (the `expires` of the answer).
    pub expires_ms: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Who an access token is issued to and what its claims say they may do.
struct Grant {
    user: Uuid,
    role: Option<Uuid>,
    access: GlobalAccess,
    /// Set (to `true`) only at login, when a policy of the direct role enforces TFA.
    enforce_tfa: Option<bool>,
}

/// A validated login request.
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    pub mode: AuthMode,
    pub otp: Option<String>,
}

impl LoginRequest {
    /// Validates a login body as Directus's Joi schema does: email, password, mode, otp, in
    /// that order, first failure wins.
    pub fn parse(body: &Map<String, Value>) -> Result<Self> {
        let email = required_string(body, "email")?;
        if !is_email(email) {
            return Err(Error::payload("\"email\" must be a valid email"));
        }
        let password = required_string(body, "password")?;
        let mode = match body.get("mode") {
            None => AuthMode::Json,
            Some(Value::String(m)) if AuthMode::parse(m).is_some() => {
                AuthMode::parse(m).unwrap_or_default()
            }
            Some(_) => {
                return Err(Error::payload(
                    "\"mode\" must be one of [cookie, json, session]",
                ));
            }
        };
        let otp = optional_string(body, "otp")?.map(str::to_owned);
        Ok(Self {
            email: email.to_owned(),
            password: password.to_owned(),
            mode,
            otp,
        })
    }
}

/// The token lifecycle service.
#[derive(Clone)]
pub struct Auth {
    store: Arc<dyn Store>,
    keys: JwtKeys,
    secret: Arc<[u8]>,
    passwords: Passwords,
    clock: Arc<dyn Clock>,
    settings: AuthSettings,
    caches: Caches,
}

/// Where an access token was found; failures of a session-cookie token clear the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Query,
    Header,
    Cookie,
}

impl Auth {
    pub fn new(
        store: Arc<dyn Store>,
        secret: &[u8],
        passwords: Passwords,
        clock: Arc<dyn Clock>,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            keys: JwtKeys::new(secret),
            secret: secret.into(),
            passwords,
            clock,
            settings,
            caches: Caches::new(),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Logs in from a raw request body. Every outcome, validation errors included, takes at
    /// least `LOGIN_STALL_TIME`.
    pub async fn login(
        &self,
        body: &Map<String, Value>,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<(AuthMode, Issued)> {
        let started = tokio::time::Instant::now();
        let out = async {
            let req = LoginRequest::parse(body)?;
            let issued = self.login_checked(&req, meta, ip).await?;
            Ok((req.mode, issued))
        }
        .await;
        tokio::time::sleep_until(started + self.settings.login_stall).await;
        out
    }

    async fn login_checked(
        &self,
        req: &LoginRequest,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        // ASCII lower-casing, as SQLite's `lower()` in the lookup and the unique e-mail index:
        // Unicode lower-casing here would lock out addresses with non-ASCII capitals.
        let user = self
            .store
            .login_user(&req.email.to_ascii_lowercase())
            .await?;
        let Some(user) = user.filter(|u| u.status == "active" && u.provider == "default") else {
            self.passwords.verify(req.password.clone(), None).await?;
            return Err(Error::InvalidCredentials);
        };
        // Every attempt is counted before the password is checked, atomically, so parallel
        // guesses cannot slip past the limit; a success resets the count.
        if let Some(limit) = self.login_attempt_limit().await?
            && self.store.record_login_attempt(user.id).await? > limit
        {
            // The attempt that trips the limit is itself refused (architecture decision 4).
            self.store.suspend_user(user.id).await?;
            self.caches.invalidate();
            tracing::warn!(user = %user.id, "login attempts exhausted: user suspended");
            self.passwords.verify(req.password.clone(), None).await?;
            return Err(Error::InvalidCredentials);
        }
        if !self
            .passwords
            .verify(req.password.clone(), user.password.clone())
            .await?
        {
            return Err(Error::InvalidCredentials);
        }
        if user.tfa_secret.is_some() {
            // TOTP verification is not available yet: a TFA account cannot log in (fail closed).
            return Err(Error::InvalidOtp);
        }
        let g = self.global_access(user.role, Some(user.id), ip).await?;
        let now = self.clock.now_ms();
        let token = random_token();
        self.store
            .insert_session(NewSession {
                token_hash: digest(&token),
                family: Uuid::new_v4(),
                user: user.id,
                expires_ms: now + self.settings.refresh_ttl_ms,
                meta,
            })
            .await?;
        self.store.purge_expired_sessions(now, None).await?;
        self.store.record_login_success(user.id, now).await?;
        self.caches.invalidate_user(user.id);
        let enforce_tfa = (g.enforce_tfa && user.tfa_secret.is_none()).then_some(true);
        let grant = Grant {
            user: user.id,
            role: user.role,
            access: g,
            enforce_tfa,
        };
        self.issue(req.mode, grant, token, now)
    }

    async fn login_attempt_limit(&self) -> Result<Option<i64>> {
        Ok(self
            .store
            .settings()
            .await?
            .get("auth_login_attempts")
            .and_then(Value::as_i64))
    }

    fn issue(
        &self,
        mode: AuthMode,
        grant: Grant,
        refresh_token: String,
        now_ms: i64,
    ) -> Result<Issued> {
        let ttl = match mode {
            AuthMode::Session => self.settings.session_ttl_ms,
            _ => self.settings.access_ttl_ms,
        };
        let iat = now_ms / 1000;
        let claims = AccessClaims {
            id: Some(grant.user),
            role: grant.role,
            app_access: grant.access.app,
            admin_access: grant.access.admin,
            enforce_tfa: grant.enforce_tfa,
            session: (mode == AuthMode::Session).then(|| refresh_token.clone()),
            iat,
            exp: iat + ttl / 1000,
            iss: ISSUER,
        };
        Ok(Issued {
            access_token: self.keys.sign(&claims)?,
            refresh_token,
            expires_ms: ttl,
        })
    }

    /// The refresh token a session JWT carries (session-mode refresh and logout).
    pub fn session_token_of(&self, session_jwt: &str) -> Result<String> {
        if !is_directus_jwt(session_jwt) {
            return Err(Error::InvalidCredentials);
        }
        let v = self.keys.verify_access(session_jwt, self.clock.now_ms())?;
        v.session.ok_or(Error::InvalidCredentials)
    }

    /// Spends a refresh token and issues its successor.
    pub async fn refresh(
        &self,
        mode: AuthMode,
        token: &str,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        let started = tokio::time::Instant::now();
        let now = self.clock.now_ms();
        let next = successor(&self.secret, token);
        let ttl = match mode {
            AuthMode::Session => self.settings.session_ttl_ms,
            _ => self.settings.refresh_ttl_ms,
        };
        let old_hash = digest(token);
        let outcome = self
            .store
            .rotate_session(Rotation {
                old_hash: old_hash.clone(),
                new_hash: digest(&next),
                now_ms: now,
                expires_ms: now + ttl,
                grace_ms: self.settings.grace_ms,
                meta,
            })
            .await?;
        match outcome {
            RotateOutcome::NotFound => Err(Error::InvalidCredentials),
            RotateOutcome::Reused { family } => {
                self.caches.invalidate();
                tracing::warn!(%family, "refresh token replayed after rotation: session revoked");
                Err(Error::InvalidCredentials)
            }
            RotateOutcome::Inactive { status } => {
                self.caches.sessions.invalidate(&old_hash);
                tokio::time::sleep_until(started + self.settings.login_stall).await;
                Err(if status == "suspended" {
                    Error::UserSuspended
                } else {
                    Error::InvalidCredentials
                })
            }
            RotateOutcome::Rotated { user, .. } => {
                self.caches.sessions.invalidate(&old_hash);
                self.caches.invalidate_user(user.id);
                let g = self.global_access(user.role, Some(user.id), ip).await?;
                let grant = Grant {
                    user: user.id,
                    role: user.role,
                    access: g,
                    enforce_tfa: None,
                };
                self.issue(mode, grant, next, now)
            }
        }
    }

    /// Ends the session a refresh token belongs to. Unknown tokens are not an error.
    pub async fn logout(&self, token: &str) -> Result<()> {
        if self.store.end_session(&digest(token)).await? {
            self.caches.invalidate();
        }
        Ok(())
    }

    /// Deletes expired sessions (run periodically).
    pub async fn purge_expired(&self) -> Result<u64> {
        Ok(self
            .store
            .purge_expired_sessions(self.clock.now_ms(), None)
            .await?)
    }

    async fn access_tree(&self, role: Option<Uuid>, user: Option<Uuid>) -> Result<Arc<AccessTree>> {
        self.caches
            .get_or_load(&self.caches.access, (role, user), async {
                Ok(Arc::new(self.store.access_tree(role, user).await?))
            })
            .await
    }

    async fn global_access(
        &self,
        role: Option<Uuid>,
        user: Option<Uuid>,
        ip: Option<IpAddr>,
    ) -> Result<GlobalAccess> {
        Ok(global_access(&*self.access_tree(role, user).await?, ip))
    }

    async fn accountability(
        &self,
        user: Option<Uuid>,
        role: Option<Uuid>,
        session: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<Accountability> {
        let tree = self.access_tree(role, user).await?;
        let g = global_access(&tree, ip);
        Ok(Accountability {
            user,
            role,
            roles: tree.roles.clone(),
            admin: g.admin,
            app: g.app,
            session,
            ip,
        })
    }

    /// Resolves a presented token (or none) into the caller's accountability.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Accountability> {
        let Some(token) = token else {
            return Ok(Accountability::public(ip));
        };
        let now = self.clock.now_ms();
        let verified = match self.caches.jwts.get(token) {
            Some(v) if v.is_expired(now) => return Err(Error::TokenExpired),
            Some(v) => Some(v),
            None if is_directus_jwt(token) => {
                let v = Arc::new(self.keys.verify_access(token, now)?);
                self.caches.jwts.insert(token.to_owned(), v.clone());
                Some(v)
            }
            None => None,
        };
        if let Some(v) = verified {
            let session = match (&v.session, v.id) {
                (Some(s), Some(user)) => {
                    let hash = digest(s);
                    let state = self
                        .caches
                        .get_or_load(&self.caches.sessions, hash.clone(), async {
                            Ok(self.store.session_state(&hash).await?)
                        })
                        .await?;
                    if !state.is_some_and(|st| st.is_live_for(user, now, self.settings.grace_ms)) {
                        return Err(Error::InvalidCredentials);
                    }
                    Some(hash)
                }
                (Some(_), None) => return Err(Error::InvalidCredentials),
                (None, _) => None,
            };
            return self.accountability(v.id, v.role, session, ip).await;
        }
        let key = digest(token);
        let principal = self
            .caches
            .get_or_load(&self.caches.static_tokens, key.clone(), async {
                Ok(self.store.principal_by_token(&key).await?)
            })
            .await?;
        match principal {
            Some(p) if p.is_active() => self.accountability(Some(p.id), p.role, None, ip).await,
            _ => Err(Error::InvalidCredentials),
        }
    }
}
