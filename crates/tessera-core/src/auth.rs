//! The token lifecycle: login (with the failed-attempt limit and the admin lockout), refresh
//! with rotation (grace window and reuse detection in every mode), logout, and turning a
//! presented token (JWT, session JWT or static token) into an [`Accountability`]. The rules
//! are pure functions here; the store runs them inside its transactions.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tessera_proto::AuthMode;
use tessera_store::{
    AccessTree, Admission, AttemptChange, Change, ClientMeta, EndSessions, Family, FamilyChange,
    LiveAdvance, LoginState, LoginUser, NewSession, Principal, Store, TfaChange, Write,
};
use uuid::Uuid;

use crate::access::{Accountability, GlobalAccess, global_access};
use crate::cache::Caches;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::jwt::{AccessClaims, ISSUER, JwtKeys, is_directus_jwt};
use crate::limits::Throttle;
use crate::password::Passwords;
use crate::probe::{NoProbe, Point, Probe};
use crate::tally::Cached;
use crate::tfa::{self, Sealer};
use crate::tokens::{RefreshId, digest, read_refresh_token, refresh_token};
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
    /// `SESSION_REFRESH_REVOKE_ON_REUSE`: whether a spent token replayed after the grace
    /// window ends its whole session (it is refused either way).
    pub revoke_on_reuse: bool,
    /// `LOGIN_STALL_TIME`.
    pub login_stall: Duration,
    /// `SESSION_MAX_PER_USER`: live sessions one user keeps; a login beyond it ends the
    /// least recently used.
    pub max_sessions_per_user: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_ttl_ms: 15 * 60 * 1000,
            refresh_ttl_ms: 7 * 24 * 3600 * 1000,
            session_ttl_ms: 24 * 3600 * 1000,
            grace_ms: 10_000,
            revoke_on_reuse: true,
            login_stall: Duration::from_millis(500),
            max_sessions_per_user: 100,
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

/// Where a presented refresh token (or the session a session JWT names) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Unknown, expired, or too old to tell: refused, nothing written.
    Dead,
    /// The family's user is no longer active: the family ends.
    Inactive,
    /// A spent token back after its grace window: a replay; the family ends (by default).
    Replayed,
    /// A spent token inside its grace window: it yields the live token again.
    InGrace,
    /// The live token.
    Live,
}

/// A refresh token as presented: what it names, whether this secret made it, and its digest.
#[derive(Clone)]
struct Presented {
    id: RefreshId,
    authentic: bool,
    digest: String,
}

impl Presented {
    /// `None` when the value does not even have a refresh token's shape.
    fn read(secret: &[u8], token: &str) -> Option<Self> {
        let t = read_refresh_token(secret, token)?;
        Some(Self {
            id: t.id,
            authentic: t.authentic,
            digest: digest(token),
        })
    }

    /// Whether this is the family's live token: its digest is the stored one. This holds for
    /// a token made under an earlier `SECRET` too, so rotating the secret ends no session.
    fn is_live_in(&self, f: &Family) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.digest.as_bytes(), f.token_hash.as_bytes()).into()
    }

    /// Whether the token belongs to family `f` at all: its live token, or one this secret
    /// made for it (a spent one). Anything else naming the family is a forgery.
    fn belongs_to(&self, f: &Family) -> bool {
        self.is_live_in(f) || self.authentic
    }
}

/// Judges a presented token against its family `f` at `now`. A spent generation's grace
/// window runs from the refresh that spent it; the family remembers when its last two
/// refreshes happened, so a token one or two refreshes behind is judged exactly, and an older
/// one is a replay once even the older of those two refreshes is past the window, else
/// unclear (dead).
fn verdict(f: &Family, p: &Presented, now: i64, grace_ms: i64) -> Verdict {
    let live = p.is_live_in(f);
    if f.expires_ms < now || !p.belongs_to(f) || (!live && p.id.generation >= f.generation) {
        return Verdict::Dead;
    }
    if !f.user.is_active() {
        return Verdict::Inactive;
    }
    if live {
        return Verdict::Live;
    }
    let within = |t: i64| t.saturating_add(grace_ms) >= now;
    match (
        f.generation - p.id.generation,
        f.rotated_at_ms,
        f.prev_rotated_at_ms,
    ) {
        (1, Some(t), _) | (2, _, Some(t)) if within(t) => Verdict::InGrace,
        (1, Some(_), _) | (2, _, Some(_)) => Verdict::Replayed,
        (_, _, Some(t)) if !within(t) => Verdict::Replayed,
        _ => Verdict::Dead,
    }
}

/// What a refresh writes for a verdict; `next` is the token an advance issues.
fn refresh_change(
    v: Verdict,
    revoke_on_reuse: bool,
    now_ms: i64,
    expires_ms: i64,
    next: &str,
    meta: ClientMeta,
) -> FamilyChange {
    match v {
        Verdict::Dead => FamilyChange::None,
        Verdict::Inactive => FamilyChange::End,
        Verdict::Replayed if revoke_on_reuse => FamilyChange::End,
        Verdict::Replayed => FamilyChange::None,
        Verdict::InGrace => FamilyChange::Extend { now_ms, expires_ms },
        Verdict::Live => FamilyChange::Advance {
            now_ms,
            expires_ms,
            token_hash: digest(next),
            meta,
        },
    }
}

/// What a login attempt may do, decided before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// Refused without a password check: the user is inactive or locked, this is the attempt
    /// that locks an admin, or more checks are in flight than the allowance has left.
    Refuse,
    /// The attempt past the limit of an ordinary user: the user is suspended, the attempt
    /// refused (architecture decision 4).
    Suspend,
    /// Check the password; `seen` is the count of failures it found, which a success forgives.
    Check { seen: i64 },
}

/// The first lock of an admin past the attempt limit; each further failure doubles it.
const LOCK_BASE_MS: i64 = 60_000;
/// The longest lock.
const LOCK_MAX_MS: i64 = 3_600_000;

/// How long password logins stay locked for the `nth` lock in a row.
fn lock_window_ms(nth: i64) -> i64 {
    let doublings = u32::try_from(nth.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    LOCK_BASE_MS.saturating_mul(1 << doublings).min(LOCK_MAX_MS)
}

/// The failed-attempt rule (ADR 0004), given the user's failures so far and the password
/// checks of this user in flight in this process, this attempt included. Failures are counted
/// when a check fails; an attempt is checked only if the failures and the checks in flight
/// stay within `limit`, so parallel guesses cannot pass it, and parallel right passwords do
/// not count against the user. Past `limit`, an ordinary user is suspended; a user with admin
/// access is never suspended by failed logins, so that no stranger can lock out the last admin:
/// its password logins are locked for a window that doubles with each further failure, and
/// one attempt after each window gets a real check. Static tokens and sessions are untouched.
fn attempt(
    limit: Option<i64>,
    admin: bool,
    now: i64,
    s: &LoginState,
    in_flight: i64,
) -> (Attempt, AttemptChange) {
    if s.status != "active" || s.locked_until_ms.is_some_and(|t| t > now) {
        return (Attempt::Refuse, AttemptChange::None);
    }
    let seen = s.failed_logins;
    let Some(limit) = limit else {
        return (Attempt::Check { seen }, AttemptChange::None);
    };
    if seen >= limit {
        if !admin {
            return (Attempt::Suspend, AttemptChange::Suspend);
        }
        // The first lock is set by the attempt that meets the limit, which is refused like
        // the one that suspends others; after it, each checked attempt sets the next lock,
        // as long as the one its own failure would earn.
        let (outcome, nth) = match s.locked_until_ms {
            None => (Attempt::Refuse, 1),
            Some(_) => (Attempt::Check { seen }, seen - limit + 2),
        };
        let until_ms = now.saturating_add(lock_window_ms(nth));
        return (outcome, AttemptChange::Lock { until_ms });
    }
    if seen + in_flight > limit {
        return (Attempt::Refuse, AttemptChange::None);
    }
    (Attempt::Check { seen }, AttemptChange::None)
}

/// Password checks in flight in this process, per user.
#[derive(Default)]
struct InFlight(std::sync::Mutex<std::collections::HashMap<Uuid, i64>>);

/// One attempt in flight; leaves the count when dropped.
struct Flight {
    all: Arc<InFlight>,
    user: Uuid,
    /// The user's checks in flight when this one entered, itself included.
    count: i64,
    /// Set while a password check runs: if the attempt is dropped before the check's verdict
    /// is written (its client hung up), the check counts as a failure, so that hanging up
    /// neither guesses for free nor holds a place in flight at no cost.
    unsettled: Option<Arc<dyn Store>>,
}

impl Flight {
    /// The attempt's password check starts.
    fn checking(&mut self, store: &Arc<dyn Store>) {
        self.unsettled = Some(store.clone());
    }

    /// The check's verdict is written (or needs no writing).
    fn settle(&mut self) {
        self.unsettled = None;
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>, user: Uuid) -> Flight {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(user).or_insert(0);
        *count += 1;
        Flight {
            all: self.clone(),
            user,
            count: *count,
            unsettled: None,
        }
    }
}

impl InFlight {
    fn leave(&self, user: Uuid) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&user) {
            *n -= 1;
            if *n <= 0 {
                map.remove(&user);
            }
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let user = self.user;
        if let Some(store) = self.unsettled.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The place in flight is left only once the failure is written, so that no
            // further check slips in between.
            tracing::debug!(%user, "login abandoned during its password check: counted as failed");
            let all = self.all.clone();
            runtime.spawn(async move {
                if let Err(e) = store.record_login_failure(user).await {
                    tracing::warn!(error = %e, %user, "recording an abandoned login failed");
                }
                all.leave(user);
            });
            return;
        }
        self.all.leave(user);
    }
}

/// Whether a user may log in with a password at all (active, local provider).
fn can_log_in(u: &LoginUser) -> bool {
    u.status == "active" && u.provider == "default"
}

/// The token a refresh of the token `id` names issues: the next generation's (none past the
/// last one).
fn successor(secret: &[u8], id: RefreshId) -> Option<String> {
    let generation = id.generation.checked_add(1)?;
    Some(refresh_token(
        secret,
        RefreshId {
            family: id.family,
            generation,
        },
    ))
}

/// The token after family `f`'s live generation.
fn successor_of(secret: &[u8], f: &Family) -> String {
    let live = RefreshId {
        family: f.id,
        generation: f.generation,
    };
    successor(secret, live).expect("a stored generation is at most i64::MAX")
}

/// How long a generated TOTP secret may be enabled.
const TFA_PENDING_MS: i64 = 10 * 60 * 1000;

/// Percent-encodes as JavaScript's `encodeURIComponent` does.
fn uri_component(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What `POST /auth/logout` ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogoutScope {
    /// The session of the refresh token given.
    #[default]
    Session,
    /// Every session of that token's user.
    All,
}

impl LogoutScope {
    /// Reads a logout body's `scope` (`session` when absent).
    pub fn parse(body: &Map<String, Value>) -> Result<Self> {
        match body.get("scope") {
            None | Some(Value::Null) => Ok(LogoutScope::Session),
            Some(Value::String(s)) if s == "session" => Ok(LogoutScope::Session),
            Some(Value::String(s)) if s == "all" => Ok(LogoutScope::All),
            Some(_) => Err(Error::payload("\"scope\" must be one of [session, all]")),
        }
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
    probe: Arc<dyn Probe>,
    settings: AuthSettings,
    caches: Caches,
    in_flight: Arc<InFlight>,
    /// Families whose replay was logged in the last minute.
    reported: moka::sync::Cache<Uuid, ()>,
    /// Seals TOTP secrets at rest.
    sealer: Sealer,
    /// Slows repeated logins per IP and per account, when set.
    throttle: Option<Arc<Throttle>>,
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
            sealer: Sealer::new(secret),
            secret: secret.into(),
            passwords,
            clock,
            probe: Arc::new(NoProbe),
            settings,
            caches: Caches::new(),
            in_flight: Arc::default(),
            reported: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            throttle: None,
        }
    }

    /// Puts logins under `throttle`.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Tells `probe` when a login reaches a [`Point`] (tests hold requests there).
    pub fn with_probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.probe = probe;
        self
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
    /// least `LOGIN_STALL_TIME`, except a refusal under pressure or by the throttle, which
    /// answers at once.
    pub async fn login(
        &self,
        body: &Map<String, Value>,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<(AuthMode, Issued)> {
        let started = tokio::time::Instant::now();
        let out = async {
            let req = LoginRequest::parse(body)?;
            let attempt = match &self.throttle {
                Some(t) => Some(t.attempt(ip, &req.email).await?),
                None => None,
            };
            let issued = self.login_checked(&req, meta, ip).await?;
            if let (Some(t), Some(a)) = (&self.throttle, attempt) {
                t.succeeded(a).await;
            }
            Ok((req.mode, issued))
        }
        .await;
        if !matches!(
            out,
            Err(Error::ServiceUnavailable { .. } | Error::RequestsExceeded { .. })
        ) {
            tokio::time::sleep_until(started + self.settings.login_stall).await;
        }
        self.caches.tally.login(&out);
        out
    }

    async fn login_checked(
        &self,
        req: &LoginRequest,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        // A place in the hashing queue first: under pressure the answer is 503 before anything
        // is read or counted. Every outcome below spends it on one hash, so that none can be
        // told from another by its timing.
        let ticket = self.passwords.ticket()?;
        let password = req.password.clone();
        // ASCII lower-casing, as SQLite's `lower()` in the lookup and the unique e-mail index:
        // Unicode lower-casing here would lock out addresses with non-ASCII capitals.
        let user = self
            .store
            .login_user(&req.email.to_ascii_lowercase())
            .await?;
        let Some(user) = user.filter(can_log_in) else {
            ticket.verify(password, None).await?;
            return Err(Error::InvalidCredentials);
        };
        let (mut flight, seen) = self.check_password(&user, password, ticket).await?;
        // The second factor is part of the check: a wrong or missing code counts as a failed
        // login (as in Directus), so codes cannot be guessed past the attempt limit.
        if let Some(sealed) = &user.tfa_secret
            && let Err(e) = self
                .check_login_otp(user.id, sealed, req.otp.as_deref())
                .await
        {
            if matches!(e, Error::InvalidOtp) {
                self.store.record_login_failure(user.id).await?;
            }
            flight.settle();
            return Err(e);
        }
        flight.settle();
        self.probe.reached(Point::PasswordVerified).await;
        // The session opens only if the user is, at that moment, still active with the e-mail
        // and password just verified: a suspension or a change of credentials made while the
        // hash ran wins.
        let verified = (user.email.clone(), user.password.clone());
        let admit = move |u: &LoginUser| {
            if can_log_in(u) && (&u.email, &u.password) == (&verified.0, &verified.1) {
                Admission::Admit { forgive: seen }
            } else {
                Admission::Refuse
            }
        };
        let now = self.clock.now_ms();
        let family = Uuid::new_v4();
        let token = refresh_token(
            &self.secret,
            RefreshId {
                family,
                generation: 0,
            },
        );
        let opened = self
            .store
            .open_session(
                NewSession {
                    family,
                    token_hash: digest(&token),
                    user: user.id,
                    now_ms: now,
                    expires_ms: now + self.settings.refresh_ttl_ms,
                    meta,
                    keep_at_most: self.settings.max_sessions_per_user,
                },
                Box::new(admit),
            )
            .await?
            .ok_or(Error::InvalidCredentials)?;
        drop(flight);
        for family in opened.evicted {
            self.family_ended(family).await;
        }
        let principal = opened.user;
        // Housekeeping: its failure is logged, never the login's.
        if let Err(e) = self.store.purge_expired_sessions(now).await {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
        self.caches.invalidate_user(user.id);
        let g = self
            .global_access(principal.role, Some(principal.id), ip)
            .await?;
        let enforce_tfa = (g.enforce_tfa && user.tfa_secret.is_none()).then_some(true);
        let grant = Grant {
            user: principal.id,
            role: principal.role,
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

    /// Spends a refresh token and issues its successor. Inside the grace window a spent token
    /// yields the family's live token again; after it, the replay ends the family.
    pub async fn refresh(
        &self,
        mode: AuthMode,
        token: &str,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        let out = self.refresh_counted(mode, token, meta, ip).await;
        self.caches.tally.refresh(&out);
        out
    }

    async fn refresh_counted(
        &self,
        mode: AuthMode,
        token: &str,
        meta: ClientMeta,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        let started = tokio::time::Instant::now();
        let p = Presented::read(&self.secret, token).ok_or(Error::InvalidCredentials)?;
        let family_id = p.id.family;
        let now = self.clock.now_ms();
        let grace = self.settings.grace_ms;
        let revoke = self.settings.revoke_on_reuse;
        let expires = now
            + match mode {
                AuthMode::Session => self.settings.session_ttl_ms,
                _ => self.settings.refresh_ttl_ms,
            };
        // The common case in one statement: the presented token is its family's live one (so
        // it names the family's generation), the family is unexpired and its user active —
        // exactly the `Live` verdict — and the family advances to the next generation.
        if let Some(next) = successor(&self.secret, p.id)
            && let Some(user) = self
                .store
                .advance_live(LiveAdvance {
                    family: family_id,
                    live_hash: p.digest.clone(),
                    now_ms: now,
                    next_hash: digest(&next),
                    expires_ms: expires,
                    meta: meta.clone(),
                })
                .await?
        {
            self.caches.forget_family(family_id);
            return self.refreshed(mode, &user, next, now, ip).await;
        }
        // Any other state: whichever verdict the store applies, the token it may hand out is
        // the one after the family's generation as the store read it: derive it inside. The
        // store may ask again after a concurrent change; the decision is pure.
        let secret = self.secret.clone();
        let judged = p.clone();
        let family = self
            .store
            .change_family(
                family_id,
                Box::new(move |f| {
                    let v = verdict(f, &judged, now, grace);
                    let next = successor_of(&secret, f);
                    refresh_change(v, revoke, now, expires, &next, meta.clone())
                }),
            )
            .await?
            .ok_or(Error::InvalidCredentials)?;
        self.caches.forget_family(family_id);
        let issued = match verdict(&family, &p, now, grace) {
            Verdict::Dead => return Err(Error::InvalidCredentials),
            Verdict::Replayed => {
                self.replayed(family_id).await;
                return Err(Error::InvalidCredentials);
            }
            Verdict::Inactive => {
                tokio::time::sleep_until(started + self.settings.login_stall).await;
                return Err(if family.user.status == "suspended" {
                    Error::UserSuspended
                } else {
                    Error::InvalidCredentials
                });
            }
            // Inside the grace window: the live token again, never a spent one.
            Verdict::InGrace => refresh_token(
                &self.secret,
                RefreshId {
                    family: family_id,
                    generation: family.generation,
                },
            ),
            Verdict::Live => successor_of(&self.secret, &family),
        };
        self.refreshed(mode, &family.user, issued, now, ip).await
    }

    /// Issues what a refresh answers for `user`, whose family now has `token` live.
    async fn refreshed(
        &self,
        mode: AuthMode,
        user: &Principal,
        token: String,
        now: i64,
        ip: Option<IpAddr>,
    ) -> Result<Issued> {
        self.caches.invalidate_user(user.id);
        let g = self.global_access(user.role, Some(user.id), ip).await?;
        let grant = Grant {
            user: user.id,
            role: user.role,
            access: g,
            enforce_tfa: None,
        };
        self.issue(mode, grant, token, now)
    }

    /// After a replay was detected (and, by default, its family ended in the same
    /// transaction): forget the family and tell the operator, once a minute per family, so
    /// that replays repeated with revocation off cannot flood the log.
    async fn replayed(&self, family: Uuid) {
        if self.settings.revoke_on_reuse {
            self.family_ended(family).await;
        } else {
            self.caches.forget_family(family);
        }
        self.caches.tally.replay();
        if self.reported.contains_key(&family) {
            return;
        }
        self.reported.insert(family, ());
        tracing::warn!(
            %family,
            revoked = self.settings.revoke_on_reuse,
            "spent refresh token presented after its grace window"
        );
    }

    /// A session JWT naming a spent token after its window: end the family (unless revocation
    /// is off), judging it again inside the transaction.
    async fn end_replayed(&self, p: Presented, now: i64) -> Result<()> {
        let family_id = p.id.family;
        if !self.settings.revoke_on_reuse {
            self.replayed(family_id).await;
            return Ok(());
        }
        let grace = self.settings.grace_ms;
        let judged = p.clone();
        let seen = self
            .store
            .change_family(
                family_id,
                Box::new(move |f| match verdict(f, &judged, now, grace) {
                    Verdict::Replayed => FamilyChange::End,
                    _ => FamilyChange::None,
                }),
            )
            .await?;
        if seen.is_some_and(|f| verdict(&f, &p, now, grace) == Verdict::Replayed) {
            self.replayed(family_id).await;
        }
        Ok(())
    }

    /// Forgets an ended family here and tells the other instances (an instance that counts
    /// itself alone may have cached it).
    async fn family_ended(&self, family: Uuid) {
        self.caches.forget_family(family);
        crate::cache::announce(&*self.store, Change::FamilyEnded(family)).await;
    }

    /// Ends the session a refresh token belongs to, whichever of its tokens it is, and with
    /// [`LogoutScope::All`] every other session of its user too. Unknown tokens are not an
    /// error.
    pub async fn logout(&self, token: &str, scope: LogoutScope) -> Result<()> {
        let Some(p) = Presented::read(&self.secret, token) else {
            return Ok(());
        };
        let family_id = p.id.family;
        let now = self.clock.now_ms();
        let grace = self.settings.grace_ms;
        let revoke = self.settings.revoke_on_reuse;
        // The live token, one inside its grace window, or any token of an inactive user's
        // family ends it; a replayed one only when replays revoke anyway; a forged or foreign
        // one never.
        let ends = move |f: &Family, p: &Presented| match verdict(f, p, now, grace) {
            Verdict::Live | Verdict::InGrace | Verdict::Inactive => true,
            Verdict::Replayed => revoke,
            Verdict::Dead => false,
        };
        let judged = p.clone();
        let found = self
            .store
            .change_family(
                family_id,
                Box::new(move |f| {
                    if ends(f, &judged) {
                        FamilyChange::End
                    } else {
                        FamilyChange::None
                    }
                }),
            )
            .await?;
        let Some(f) = found.filter(|f| ends(f, &p)) else {
            return Ok(());
        };
        self.family_ended(family_id).await;
        // Only the live token speaks for its user: a spent one (picked from an old cookie jar
        // or a log) ends its own session at most, never the user's others.
        if scope == LogoutScope::All && verdict(&f, &p, now, grace) == Verdict::Live {
            self.end_all_sessions(f.user.id).await?;
        }
        Ok(())
    }

    /// Checks `password` for `user` under the attempt limit: the attempt is judged first
    /// (refused, or the user suspended, past the limit; each answer costs one hash), and a
    /// wrong password or an abandoned check counts as a failure. On a right password, the
    /// attempt is returned still in flight (to be settled by the caller) with the failures it
    /// saw.
    async fn check_password(
        &self,
        user: &LoginUser,
        password: String,
        ticket: crate::password::Ticket,
    ) -> Result<(Flight, i64)> {
        let limit = self.login_attempt_limit().await?;
        let admin = self
            .global_access(user.role, Some(user.id), None)
            .await?
            .admin;
        let mut flight = self.in_flight.enter(user.id);
        let in_flight = flight.count;
        let now = self.clock.now_ms();
        let decide = move |s: &LoginState| attempt(limit, admin, now, s, in_flight).1;
        let state = self.store.login_attempt(user.id, Box::new(decide)).await?;
        let outcome = state.map(|s| attempt(limit, admin, now, &s, in_flight).0);
        self.probe.reached(Point::AttemptJudged).await;
        let seen = match outcome {
            Some(Attempt::Check { seen }) => seen,
            // A refused attempt leaves the count in flight before its (dummy) hash: only real
            // checks hold a place there.
            Some(Attempt::Suspend) => {
                drop(flight);
                self.caches.invalidate();
                crate::cache::announce(&*self.store, Change::Everything).await;
                tracing::warn!(user = %user.id, "login attempts exhausted: user suspended");
                ticket.verify(password, None).await?;
                return Err(Error::InvalidCredentials);
            }
            Some(Attempt::Refuse) | None => {
                drop(flight);
                ticket.verify(password, None).await?;
                return Err(Error::InvalidCredentials);
            }
        };
        flight.checking(&self.store);
        if !ticket.verify(password, user.password.clone()).await? {
            self.store.record_login_failure(user.id).await?;
            flight.settle();
            return Err(Error::InvalidCredentials);
        }
        Ok((flight, seen))
    }

    /// The second factor of a login whose password was right: a current code (one step of
    /// skew either way) of the user's secret, never one used before.
    async fn check_login_otp(&self, user: Uuid, sealed: &str, otp: Option<&str>) -> Result<()> {
        let otp = otp.ok_or(Error::InvalidOtp)?;
        let Some(secret) = self.sealer.open(sealed) else {
            tracing::warn!(%user, "a TFA secret does not open under this server's SECRET");
            return Err(Error::InvalidOtp);
        };
        let step = tfa::check(&secret, otp, self.clock.now_ms()).ok_or(Error::InvalidOtp)?;
        if self
            .store
            .change_tfa(user, TfaChange::UseStep(step))
            .await?
        {
            Ok(())
        } else {
            Err(Error::InvalidOtp)
        }
    }

    /// The caller and its two-factor state (401 for anonymous callers and vanished users).
    async fn own_tfa(&self, acc: &Accountability) -> Result<(Uuid, tessera_store::TfaState)> {
        let user = acc.user.ok_or(Error::InvalidCredentials)?;
        let state = self
            .store
            .tfa(user)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        Ok((user, state))
    }

    /// `POST /users/me/tfa/generate`: a new secret for the caller, kept (sealed) until it is
    /// enabled; the password is required for users who log in with one.
    pub async fn tfa_generate(
        &self,
        acc: &Accountability,
        body: &Map<String, Value>,
    ) -> Result<(String, String)> {
        let (user, state) = self.own_tfa(acc).await?;
        if state.provider == "default" {
            let password = required_string(body, "password")?;
            // Checked as a login's password is: under the attempt limit, a wrong one counted,
            // so that a stolen token does not make a free password oracle.
            let email = state
                .email
                .as_deref()
                .ok_or_else(|| Error::payload("User must have a valid email to enable TFA"))?;
            let login = self
                .store
                .login_user(&email.to_ascii_lowercase())
                .await?
                .filter(|u| u.id == user)
                .ok_or(Error::InvalidCredentials)?;
            let ticket = self.passwords.ticket()?;
            let (mut flight, _) = self
                .check_password(&login, password.to_owned(), ticket)
                .await?;
            flight.settle();
        }
        if state.secret.is_some() {
            return Err(Error::payload("TFA Secret is already set for this user"));
        }
        let account = match (&state.email, &state.external_identifier) {
            (Some(email), _) => email.clone(),
            (None, _) if state.provider == "default" => {
                return Err(Error::payload("User must have a valid email to enable TFA"));
            }
            (None, Some(external)) => external.clone(),
            (None, None) => format!("user_{user}"),
        };
        let secret = tfa::new_secret();
        let pending = format!("{}:{secret}", self.clock.now_ms());
        if !self
            .store
            .change_tfa(user, TfaChange::Pending(self.sealer.seal(&pending)))
            .await?
        {
            return Err(Error::payload("TFA Secret is already set for this user"));
        }
        let issuer = crate::project_name(&*self.store).await?;
        let (issuer, account) = (uri_component(&issuer), uri_component(&account));
        let url = format!(
            "otpauth://totp/{issuer}:{account}?secret={secret}&period=30&digits=6&algorithm=SHA1&issuer={issuer}"
        );
        Ok((secret, url))
    }

    /// `POST /users/me/tfa/enable`: turns TFA on with the secret this user generated, given a
    /// current code of it; `permit` is the caller's right to write its own `tfa_secret`,
    /// asked once the request is otherwise valid.
    pub async fn tfa_enable(
        &self,
        acc: &Accountability,
        body: &Map<String, Value>,
        permit: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        let (user, state) = self.own_tfa(acc).await?;
        let secret = required_string(body, "secret")?;
        let otp = required_string(body, "otp")?;
        if state.secret.is_some() {
            return Err(Error::payload("TFA Secret is already set for this user"));
        }
        // The pending secret holds for a while only: one seen over a shoulder cannot be
        // enabled days later.
        let now = self.clock.now_ms();
        let generated = state
            .pending
            .as_deref()
            .and_then(|p| self.sealer.open(p))
            .and_then(|p| {
                let (at, secret) = p.split_once(':')?;
                let fresh = at.parse::<i64>().is_ok_and(|at| now - at <= TFA_PENDING_MS);
                fresh.then(|| secret.to_owned())
            });
        let same = generated.is_some_and(|g| bool::from(g.as_bytes().ct_eq(secret.as_bytes())));
        if !same {
            return Err(Error::payload(
                "\"secret\" is not the one generated for this user",
            ));
        }
        let step =
            tfa::check(secret, otp, now).ok_or_else(|| Error::payload("\"otp\" is invalid"))?;
        permit.await?;
        let change = TfaChange::Enable {
            secret: self.sealer.seal(secret),
            pending: state.pending.unwrap_or_default(),
            step,
        };
        if !self.store.change_tfa(user, change).await? {
            return Err(Error::payload("\"otp\" is invalid"));
        }
        self.tfa_changed(user).await;
        Ok(())
    }

    /// `POST /users/me/tfa/disable`: turns the caller's TFA off, given a code never used.
    pub async fn tfa_disable(
        &self,
        acc: &Accountability,
        body: &Map<String, Value>,
        permit: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        let (user, state) = self.own_tfa(acc).await?;
        let otp = required_string(body, "otp")?;
        let Some(sealed) = state.secret else {
            return Err(Error::payload(format!(
                "User \"{user}\" doesn't have TFA enabled"
            )));
        };
        let invalid = || Error::payload("\"otp\" is invalid");
        let secret = self.sealer.open(&sealed).ok_or_else(invalid)?;
        let step = tfa::check(&secret, otp, self.clock.now_ms()).ok_or_else(invalid)?;
        permit.await?;
        let change = TfaChange::Disable { step: Some(step) };
        if !self.store.change_tfa(user, change).await? {
            return Err(invalid());
        }
        self.tfa_changed(user).await;
        Ok(())
    }

    /// `POST /users/:id/tfa/disable`: an admin turns a user's TFA off.
    pub async fn tfa_disable_for(&self, acc: &Accountability, id: &str) -> Result<()> {
        acc.user.ok_or(Error::InvalidCredentials)?;
        if !acc.admin {
            return Err(Error::Forbidden(None));
        }
        let user = Uuid::parse_str(id).map_err(|_| Error::Forbidden(None))?;
        self.store
            .change_tfa(user, TfaChange::Disable { step: None })
            .await?;
        self.tfa_changed(user).await;
        Ok(())
    }

    /// After a TFA change: cached records of the user (its `tfa_secret` reads) are stale.
    async fn tfa_changed(&self, user: Uuid) {
        self.caches.invalidate();
        crate::cache::announce(&*self.store, Change::Everything).await;
        tracing::info!(%user, "two-factor login changed");
    }

    /// Ends every session of `user`.
    async fn end_all_sessions(&self, user: Uuid) -> Result<()> {
        let live = self.store.sessions_of(user, i64::MIN).await?;
        let end = Write::Update {
            c: &tessera_store::schema::USERS,
            id: user.to_string(),
            values: Vec::new(),
            end: EndSessions::All,
        };
        self.store.write(vec![end], None).await?;
        for s in live {
            self.family_ended(s.id).await;
        }
        Ok(())
    }

    /// `GET /auth/sessions`: the live sessions of the caller, or (admins only) of `user`;
    /// which one is the caller's own. Never a token.
    pub async fn sessions(&self, acc: &Accountability, user: Option<&str>) -> Result<Vec<Value>> {
        let me = acc.user.ok_or(Error::InvalidCredentials)?;
        let whose = match user {
            None => me,
            Some(text) => {
                let id = Uuid::parse_str(text).map_err(|_| Error::Forbidden(None))?;
                if id != me && !acc.admin {
                    return Err(Error::Forbidden(None));
                }
                id
            }
        };
        let now = self.clock.now_ms();
        let iso = |ms: i64| Value::String(crate::clock::iso8601(ms));
        Ok(self
            .store
            .sessions_of(whose, now)
            .await?
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_string(),
                    "created": iso(s.created_ms),
                    "last_used": iso(s.last_used_ms),
                    "expires": iso(s.expires_ms),
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                    "current": acc.session == Some(s.id),
                })
            })
            .collect())
    }

    /// `DELETE /auth/sessions/:id`: ends one session of the caller (an admin: of anyone).
    /// Another user's session and one that does not exist answer alike.
    pub async fn end_session(&self, acc: &Accountability, id: &str) -> Result<()> {
        let me = acc.user.ok_or(Error::InvalidCredentials)?;
        let id = Uuid::parse_str(id).map_err(|_| Error::Forbidden(None))?;
        let found = self.store.family(id).await?;
        if !found.is_some_and(|f| f.user.id == me || acc.admin) {
            return Err(Error::Forbidden(None));
        }
        let admin = acc.admin;
        let ended = self
            .store
            .change_family(
                id,
                Box::new(move |f| {
                    if f.user.id == me || admin {
                        FamilyChange::End
                    } else {
                        FamilyChange::None
                    }
                }),
            )
            .await?;
        if ended.is_none() {
            return Err(Error::Forbidden(None));
        }
        self.family_ended(id).await;
        Ok(())
    }

    /// Deletes expired sessions and ended limit counters (run periodically); says how many
    /// sessions went.
    pub async fn purge_expired(&self) -> Result<u64> {
        let now = self.clock.now_ms();
        let sessions = self.store.purge_expired_sessions(now).await?;
        self.store.purge_counts(now).await?;
        Ok(sessions)
    }

    async fn access_tree(&self, role: Option<Uuid>, user: Option<Uuid>) -> Result<Arc<AccessTree>> {
        self.caches
            .get_or_load(Cached::Access, &self.caches.access, (role, user), async {
                Ok(Arc::new(
                    crate::access::tree(&*self.store, role, user).await?,
                ))
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
        session: Option<Uuid>,
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
            enforce_tfa: g.enforce_tfa,
            policies: crate::access::applicable(&tree, ip),
            session,
            ip,
        })
    }

    /// The family a session JWT's `session` claim names, if that token still authenticates
    /// `user`: live, or spent inside its grace window, and the user active. A spent token
    /// after its window is a replay and ends the family, as on `/auth/refresh`.
    async fn live_session(&self, token: &str, user: Uuid, now: i64) -> Result<Family> {
        let p = Presented::read(&self.secret, token).ok_or(Error::InvalidCredentials)?;
        let family_id = p.id.family;
        let grace = self.settings.grace_ms;
        let judge = |found: Option<Family>| {
            let f = found.filter(|f| f.user.id == user)?;
            let v = verdict(&f, &p, now, grace);
            Some((f, v))
        };
        // Unless this instance is alone on the database, the family is read every time: a
        // logout on another instance must end the session here at the very next request,
        // which no announcement can promise (it may arrive after that request).
        let shared = !self.store.exclusive();
        let read = |fresh: bool| async move {
            if shared {
                return Ok(self.store.family(family_id).await?);
            }
            if fresh {
                self.caches.sessions.invalidate(&family_id);
            }
            self.caches
                .family(family_id, async { Ok(self.store.family(family_id).await?) })
                .await
        };
        let judged = match judge(read(false).await?) {
            Some((f, Verdict::Live | Verdict::InGrace)) => return Ok(f),
            found if shared => found,
            // A refusal is never taken from the cache alone: the family may have moved on
            // since it was cached (a refresh on another connection). Read it again.
            _ => judge(read(true).await?),
        };
        match judged {
            Some((f, Verdict::Live | Verdict::InGrace)) => Ok(f),
            Some((_, Verdict::Replayed)) => {
                self.end_replayed(p, now).await?;
                Err(Error::InvalidCredentials)
            }
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// Resolves a presented token (or none) into the caller's accountability. A session JWT
    /// and a static token carry the user's current role and status; a plain JWT carries the
    /// role its claims name until it expires, as in Directus.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Accountability> {
        let Some(token) = token else {
            // Anonymous: the public policy (cached like any other access tree).
            return self.accountability(None, None, None, ip).await;
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
            return match (&v.session, v.id) {
                (Some(s), Some(user)) => {
                    let f = self.live_session(s, user, now).await?;
                    self.accountability(Some(f.user.id), f.user.role, Some(f.id), ip)
                        .await
                }
                (Some(_), None) => Err(Error::InvalidCredentials),
                (None, _) => self.accountability(v.id, v.role, None, ip).await,
            };
        }
        let key = digest(token);
        let principal = self
            .caches
            .get_or_load(
                Cached::StaticTokens,
                &self.caches.static_tokens,
                key.clone(),
                async { Ok(self.store.principal_by_token(&key).await?) },
            )
            .await?;
        match principal {
            Some(p) if p.is_active() => self.accountability(Some(p.id), p.role, None, ip).await,
            _ => Err(Error::InvalidCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_store::Principal;

    const SECRET: &[u8] = b"unit-test-secret";

    fn family(generation: u64, rotated: Option<i64>, prev: Option<i64>) -> Family {
        let id = Uuid::new_v4();
        Family {
            id,
            user: Principal {
                id: Uuid::new_v4(),
                role: None,
                status: "active".into(),
            },
            generation,
            token_hash: digest(&token(id, generation)),
            expires_ms: 1_000_000,
            rotated_at_ms: rotated,
            prev_rotated_at_ms: prev,
        }
    }

    fn token(family: Uuid, generation: u64) -> String {
        refresh_token(SECRET, RefreshId { family, generation })
    }

    fn judge(f: &Family, generation: u64, now: i64, grace: i64) -> Verdict {
        let p = Presented::read(SECRET, &token(f.id, generation)).unwrap();
        verdict(f, &p, now, grace)
    }

    #[test]
    fn verdicts_follow_the_grace_window_of_each_spent_token() {
        // T (0) spent at 1000, S1 (1) spent at 5000, S2 (2) live; grace 10 s.
        let f = family(2, Some(5_000), Some(1_000));
        assert_eq!(judge(&f, 2, 6_000, 10_000), Verdict::Live);
        assert_eq!(judge(&f, 1, 6_000, 10_000), Verdict::InGrace);
        assert_eq!(judge(&f, 0, 6_000, 10_000), Verdict::InGrace);
        assert_eq!(judge(&f, 0, 11_000, 10_000), Verdict::InGrace);
        assert_eq!(judge(&f, 0, 11_001, 10_000), Verdict::Replayed);
        assert_eq!(judge(&f, 1, 11_001, 10_000), Verdict::InGrace);
        assert_eq!(judge(&f, 1, 15_001, 10_000), Verdict::Replayed);
        assert_eq!(judge(&f, 3, 6_000, 10_000), Verdict::Dead);
    }

    #[test]
    fn tokens_older_than_the_remembered_refreshes_are_judged_conservatively() {
        let f = family(5, Some(9_000), Some(8_000));
        // Generation 1 was spent no later than 8000: within 10 s of it nothing can be told.
        assert_eq!(judge(&f, 1, 12_000, 10_000), Verdict::Dead);
        assert_eq!(judge(&f, 1, 18_001, 10_000), Verdict::Replayed);
    }

    #[test]
    fn forged_and_foreign_tokens_are_dead_but_a_live_token_survives_a_new_secret() {
        let f = family(3, Some(9_000), Some(8_000));
        let forged = Presented::read(b"another-secret", &token(f.id, 1)).unwrap();
        assert!(!forged.authentic);
        assert_eq!(verdict(&f, &forged, 100_000, 10), Verdict::Dead);
        // The live token made under the old secret still matches its stored digest.
        let live_old_secret = Presented::read(b"another-secret", &token(f.id, 3)).unwrap();
        assert_eq!(verdict(&f, &live_old_secret, 100_000, 10), Verdict::Live);
    }

    #[test]
    fn expired_families_and_inactive_users() {
        let mut f = family(0, None, None);
        assert_eq!(judge(&f, 0, 1_000_001, 10), Verdict::Dead);
        f.user.status = "suspended".into();
        assert_eq!(judge(&f, 0, 5, 10), Verdict::Inactive);
        assert_eq!(judge(&f, 1, 5, 10), Verdict::Dead);
    }

    #[test]
    fn replays_end_the_family_only_when_revocation_is_on() {
        let m = ClientMeta::default;
        assert!(matches!(
            refresh_change(Verdict::Replayed, true, 1, 2, "n", m()),
            FamilyChange::End
        ));
        assert!(matches!(
            refresh_change(Verdict::Replayed, false, 1, 2, "n", m()),
            FamilyChange::None
        ));
        assert!(matches!(
            refresh_change(Verdict::InGrace, true, 1, 2, "n", m()),
            FamilyChange::Extend {
                now_ms: 1,
                expires_ms: 2
            }
        ));
    }

    fn state(failed: i64, locked: Option<i64>) -> LoginState {
        LoginState {
            status: "active".into(),
            failed_logins: failed,
            locked_until_ms: locked,
        }
    }

    #[test]
    fn ordinary_users_are_suspended_by_the_attempt_after_the_limit() {
        assert_eq!(
            attempt(Some(3), false, 0, &state(2, None), 1),
            (Attempt::Check { seen: 2 }, AttemptChange::None)
        );
        assert_eq!(
            attempt(Some(3), false, 0, &state(3, None), 1),
            (Attempt::Suspend, AttemptChange::Suspend)
        );
        assert_eq!(
            attempt(None, false, 0, &state(1_000, None), 1),
            (Attempt::Check { seen: 1_000 }, AttemptChange::None)
        );
    }

    #[test]
    fn checks_in_flight_count_against_the_allowance_but_are_not_failures() {
        // Two failures and one check in flight: a second check would pass the limit of 3.
        assert_eq!(
            attempt(Some(3), false, 0, &state(2, None), 2),
            (Attempt::Refuse, AttemptChange::None)
        );
        assert_eq!(
            attempt(Some(3), false, 0, &state(0, None), 3),
            (Attempt::Check { seen: 0 }, AttemptChange::None)
        );
        assert_eq!(
            attempt(Some(3), false, 0, &state(0, None), 4),
            (Attempt::Refuse, AttemptChange::None)
        );
    }

    #[test]
    fn admins_are_locked_for_growing_windows_never_suspended() {
        let lock = |until_ms| AttemptChange::Lock { until_ms };
        // The attempt that meets the limit is refused and locks for a minute.
        assert_eq!(
            attempt(Some(3), true, 0, &state(3, None), 1),
            (Attempt::Refuse, lock(60_000))
        );
        // Inside the window: refused without a change.
        assert_eq!(
            attempt(Some(3), true, 59_999, &state(3, Some(60_000)), 1),
            (Attempt::Refuse, AttemptChange::None)
        );
        // After it: one checked attempt, under a lock twice as long.
        assert_eq!(
            attempt(Some(3), true, 60_000, &state(3, Some(60_000)), 1),
            (Attempt::Check { seen: 3 }, lock(180_000))
        );
        assert_eq!(
            attempt(Some(3), true, 180_000, &state(4, Some(180_000)), 1),
            (Attempt::Check { seen: 4 }, lock(420_000))
        );
        assert_eq!(lock_window_ms(3), 240_000);
        assert_eq!(lock_window_ms(40), LOCK_MAX_MS);
        let mut s = state(0, None);
        s.status = "suspended".into();
        assert_eq!(
            attempt(Some(3), true, 0, &s, 1),
            (Attempt::Refuse, AttemptChange::None)
        );
    }

    #[test]
    fn in_flight_counts_enter_and_leave() {
        let f = Arc::new(InFlight::default());
        let u = Uuid::new_v4();
        let a = f.enter(u);
        let b = f.enter(u);
        assert_eq!((a.count, b.count), (1, 2));
        drop(a);
        assert_eq!(f.enter(u).count, 2);
        drop(b);
        assert_eq!(f.enter(u).count, 1);
        assert!(f.0.lock().unwrap().is_empty());
    }
}
