//! Persistence for Tessera: the [`Store`] trait the core depends on, the row models it trades
//! in, the collection schema, and the SQLite implementation with its migrations. A PostgreSQL
//! implementation drops in behind the same trait; nothing above this crate writes SQL.

pub mod schema;
mod sqlite;

use async_trait::async_trait;
use serde_json::{Map, Value};
use uuid::Uuid;

pub use schema::{Alias, Collection, Field, Kind};
pub use sqlite::SqliteStore;

/// One item of a collection, keyed by field name, values as stored (timestamps in Unix ms,
/// digests and hashes unconcealed: the core decides what a reader sees).
pub type Record = Map<String, Value>;

/// Everything a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; `field` names the offending field.
    #[error("value for field {field} is not unique")]
    Conflict { field: &'static str },
    /// A foreign key points nowhere.
    #[error("field {field} references a missing item")]
    MissingReference { field: &'static str },
    /// The backend failed (I/O, corruption, a bug).
    #[error("database error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The identity a token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: Uuid,
    pub role: Option<Uuid>,
    pub status: String,
}

impl Principal {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// What login needs to know about the user an e-mail names.
#[derive(Clone)]
pub struct LoginUser {
    pub id: Uuid,
    pub role: Option<Uuid>,
    pub status: String,
    pub provider: String,
    pub password: Option<String>,
    pub tfa_secret: Option<String>,
}

impl std::fmt::Debug for LoginUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginUser")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("status", &self.status)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// A policy attached to a principal, directly or through its role tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyGrant {
    pub id: Uuid,
    pub admin_access: bool,
    pub app_access: bool,
    pub enforce_tfa: bool,
    pub ip_access: Option<String>,
    /// Attached to the principal's own (direct) role.
    pub on_direct_role: bool,
}

/// A principal's roles (root first) and every policy that applies to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessTree {
    pub roles: Vec<Uuid>,
    pub policies: Vec<PolicyGrant>,
}

/// Where a session was opened from.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
}

/// A new session row (one refresh token of a family).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: String,
    pub family: Uuid,
    pub user: Uuid,
    pub expires_ms: i64,
    pub meta: ClientMeta,
}

/// A refresh: spend `old_hash`, whose successor is `new_hash`.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old_hash: String,
    pub new_hash: String,
    pub now_ms: i64,
    /// Expiry of the successor row.
    pub expires_ms: i64,
    /// How long after its rotation a spent token still yields the same successor.
    pub grace_ms: i64,
    pub meta: ClientMeta,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// No live row for that token (unknown, expired, logged out, or a share session).
    NotFound,
    /// The user is not active; the row was deleted.
    Inactive { status: String },
    /// The token was rotated now, or within the grace window before: `new_hash` is live.
    Rotated { user: Principal, family: Uuid },
    /// A spent token came back after the grace window: the whole family was revoked.
    Reused { family: Uuid },
}

/// What a session JWT's check needs to know about its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub user: Option<Uuid>,
    pub expires_ms: i64,
    /// When the token was rotated, if it was.
    pub rotated_at_ms: Option<i64>,
}

impl SessionState {
    /// Whether the row still authenticates `user` at `now_ms`: not expired, and not rotated
    /// longer ago than the grace window.
    pub fn is_live_for(&self, user: Uuid, now_ms: i64, grace_ms: i64) -> bool {
        self.user == Some(user)
            && self.expires_ms >= now_ms
            && self.rotated_at_ms.is_none_or(|r| r + grace_ms >= now_ms)
    }
}

/// Which of a user's sessions a user update ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    None,
    All,
    /// All but the family of this token hash (the caller's own session).
    AllExcept(String),
}

/// A comparison operator of the filter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    In,
    Nin,
    Null,
    NotNull,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    Empty,
    NotEmpty,
}

/// A validated filter over one collection's fields.
#[derive(Debug, Clone)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Compare {
        field: &'static Field,
        op: Op,
        value: Value,
    },
}

/// A validated read: filter, sort, window.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Option<Condition>,
    /// `(field, descending)` pairs.
    pub sort: Vec<(&'static Field, bool)>,
    /// `None` = no limit.
    pub limit: Option<u64>,
    pub offset: u64,
}

/// What `bootstrap` creates on an empty database, in one transaction.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub role_id: Uuid,
    pub policy_id: Uuid,
    pub access_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub token_hash: Option<String>,
}

/// The persistence contract. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads items of a collection.
    async fn read_items(&self, c: &'static Collection, q: &Query) -> StoreResult<Vec<Record>>;
    /// Counts items matching a filter.
    async fn count_items(
        &self,
        c: &'static Collection,
        filter: Option<&Condition>,
    ) -> StoreResult<u64>;
    /// Inserts one item; `values` includes its primary key.
    async fn insert_item(
        &self,
        c: &'static Collection,
        values: Vec<(&'static Field, Value)>,
    ) -> StoreResult<()>;
    /// Updates one item; false if it does not exist. `end` applies to `directus_users` only.
    async fn update_item(
        &self,
        c: &'static Collection,
        id: &str,
        values: Vec<(&'static Field, Value)>,
        end: EndSessions,
    ) -> StoreResult<bool>;
    /// Deletes one item (and, by cascade, what hangs off it); false if it did not exist.
    async fn delete_item(&self, c: &'static Collection, id: &str) -> StoreResult<bool>;
    /// The values making up an alias list for one item.
    async fn alias_values(&self, alias: &'static Alias, id: &str) -> StoreResult<Vec<Value>>;

    /// The user whose (ASCII) lower-cased e-mail equals `email_lower`.
    async fn login_user(&self, email_lower: &str) -> StoreResult<Option<LoginUser>>;
    /// A user's id, role and status.
    async fn principal(&self, id: Uuid) -> StoreResult<Option<Principal>>;
    /// The user whose static token has this SHA-256 digest.
    async fn principal_by_token(&self, digest: &str) -> StoreResult<Option<Principal>>;
    /// The role tree from `role` up to its root, and the policies of those roles and of `user`
    /// (or the public policy when the tree is empty).
    async fn access_tree(&self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessTree>;
    /// Counts a login attempt; returns the attempts since the last success.
    async fn record_login_attempt(&self, user: Uuid) -> StoreResult<i64>;
    /// Records a successful login: resets the failure count and sets `last_access`.
    async fn record_login_success(&self, user: Uuid, now_ms: i64) -> StoreResult<()>;
    /// Suspends a user and ends all their sessions.
    async fn suspend_user(&self, user: Uuid) -> StoreResult<()>;

    /// Opens a session (login).
    async fn insert_session(&self, s: NewSession) -> StoreResult<()>;
    /// Spends a refresh token (see [`RotateOutcome`]); also sets `last_access`.
    async fn rotate_session(&self, r: Rotation) -> StoreResult<RotateOutcome>;
    /// The session row stored under this token hash, if any.
    async fn session_state(&self, token_hash: &str) -> StoreResult<Option<SessionState>>;
    /// Ends the user session this token belongs to (its whole family); false if none.
    async fn end_session(&self, token_hash: &str) -> StoreResult<bool>;
    /// Deletes sessions that expired before `now_ms`, of one user or of everyone.
    async fn purge_expired_sessions(&self, now_ms: i64, user: Option<Uuid>) -> StoreResult<u64>;

    /// The settings singleton (empty when the row is missing).
    async fn settings(&self) -> StoreResult<Record> {
        Ok(self
            .read_items(&schema::SETTINGS, &Query::default())
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// How many users exist.
    async fn user_count(&self) -> StoreResult<u64>;
    /// Creates the first role, policy, access row and admin user.
    async fn bootstrap(&self, b: Bootstrap) -> StoreResult<()>;
    /// A round trip to the database, for health checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// The fixed id of the public policy, which anonymous and role-less callers get.
pub const PUBLIC_POLICY_ID: &str = "abf8a154-5b1c-4a46-ac9c-7300570f4f17";
