//! The storage port: the [`Store`] trait the core depends on, the row models it trades in, the
//! decisions and guards the core hands a backend to run inside its transactions, and the
//! collection schema. It links no database driver; the SQL lives in `tessera-sql` and the
//! engines in `tessera-sqlite` and `tessera-postgres`.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod schema;

use async_trait::async_trait;
use serde_json::{Map, Value};
use uuid::Uuid;

pub use schema::{Collection, Field, Kind, Nulls, Relation};

/// One item of a collection, keyed by field name, values as stored (timestamps in Unix ms,
/// digests and hashes unconcealed: the core decides what a reader sees).
pub type Record = Map<String, Value>;

/// Everything a store can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; `field` names the offending field.
    #[error("value for field {field} is not unique")]
    Conflict { field: &'static str },
    /// A foreign key points nowhere.
    #[error("field {field} references a missing item")]
    MissingReference { field: &'static str },
    /// A guard the core attached to a write refused it; nothing was written.
    #[error("the write was refused by its guard")]
    Refused,
    /// The database cannot be reached (down, restarting, or every connection broken); the
    /// operation may succeed once it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
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
    pub email: Option<String>,
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

/// A user's failed-login bookkeeping, as a login attempt finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginState {
    pub status: String,
    /// Failed password checks since the last success.
    pub failed_logins: i64,
    /// Password logins are refused until then (the lockout of admins); kept once passed, as
    /// the mark that a lock happened.
    pub locked_until_ms: Option<i64>,
}

/// What a login attempt writes before its password is checked, as the core decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptChange {
    /// Write nothing.
    None,
    /// Refuse password logins until this time.
    Lock { until_ms: i64 },
    /// Suspend the user, which also ends all their sessions.
    Suspend,
}

/// The core's decision for a login attempt, run inside the store's transaction.
pub type AttemptDecision = Box<dyn FnOnce(&LoginState) -> AttemptChange + Send>;

/// Whether a login that verified its password may open its session, decided by the core on
/// the user row as it is at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Refuse,
    /// Open it, and take back `forgive` counted attempts (those up to this login's own).
    Admit {
        forgive: i64,
    },
}

/// The core's admission decision, run inside the store's transaction.
pub type AdmitDecision = Box<dyn FnOnce(&LoginUser) -> Admission + Send>;

/// One user as operators see it (`tessera users list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: Uuid,
    pub email: Option<String>,
    pub status: String,
    pub role: Option<Uuid>,
    pub failed_logins: i64,
    pub locked_until_ms: Option<i64>,
    pub last_access_ms: Option<i64>,
}

/// A policy as an access row attaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    pub id: Uuid,
    pub admin_access: bool,
    pub app_access: bool,
    pub enforce_tfa: bool,
    pub ip_access: Option<String>,
}

/// What the access tables hold for one principal, as stored; the core composes it into an
/// [`AccessTree`]. Policy lists are in access-row order (`sort`, then id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRows {
    /// The role chain from the asked role up through its parents, the role itself first;
    /// it stops after 64 steps, and names a role twice when the parents form a cycle.
    pub chain: Vec<Uuid>,
    /// The policies attached to each role of the chain, in chain order.
    pub by_role: Vec<Vec<PolicyRow>>,
    /// The policies attached to the user.
    pub of_user: Vec<PolicyRow>,
    /// The policies attached to nobody (the public policy).
    pub public: Vec<PolicyRow>,
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

/// A new session family (a login).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub family: Uuid,
    /// Digest of the family's first refresh token.
    pub token_hash: String,
    pub user: Uuid,
    pub now_ms: i64,
    pub expires_ms: i64,
    pub meta: ClientMeta,
    /// The user keeps at most this many families: the least recently used beyond it end.
    pub keep_at_most: u32,
}

/// A session just opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The user as it was when the session opened.
    pub user: Principal,
    /// The user's older families that ended to stay within `keep_at_most`.
    pub evicted: Vec<Uuid>,
}

/// A session family: one login and the chain of refresh tokens its refreshes issued, kept as
/// one row. Generation `generation` is the live token; earlier generations are spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: Uuid,
    /// The user as they are now (role and status read with the family).
    pub user: Principal,
    pub generation: u64,
    /// Digest of the live generation's token.
    pub token_hash: String,
    pub expires_ms: i64,
    /// When a refresh issued the live generation (generation − 1 was spent then).
    pub rotated_at_ms: Option<i64>,
    /// When a refresh issued generation − 1 (generation − 2 was spent then).
    pub prev_rotated_at_ms: Option<i64>,
}

/// What a refresh, a session check or a logout writes to a family, as the core decided it.
#[derive(Debug, Clone)]
pub enum FamilyChange {
    /// Write nothing.
    None,
    /// Issue the next generation, whose token has digest `token_hash`, at `now_ms`, live
    /// until `expires_ms`.
    Advance {
        now_ms: i64,
        expires_ms: i64,
        token_hash: String,
        meta: ClientMeta,
    },
    /// Keep the live generation and move its expiry to `expires_ms` (a refresh repeated
    /// inside the grace window).
    Extend { now_ms: i64, expires_ms: i64 },
    /// Delete the family: every token it ever issued is dead.
    End,
}

/// A user's two-factor state, and what `/users/me/tfa/generate` needs to know of the user.
#[derive(Clone, PartialEq, Eq)]
pub struct TfaState {
    pub email: Option<String>,
    pub external_identifier: Option<String>,
    pub provider: String,
    /// The enabled secret, as stored (sealed).
    pub secret: Option<String>,
    /// A secret generated and not yet enabled, as stored (sealed).
    pub pending: Option<String>,
    /// The last TOTP step a code was accepted for.
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for TfaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfaState")
            .field("provider", &self.provider)
            .field("enabled", &self.secret.is_some())
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A two-factor change, written only if the user's state still allows it.
#[derive(Clone, PartialEq, Eq)]
pub enum TfaChange {
    /// Keep a generated secret (sealed) until it is enabled; only while none is enabled.
    Pending(String),
    /// Enable `secret` (sealed), if TFA is off and the pending secret is still `pending`;
    /// `step` is used.
    Enable {
        secret: String,
        pending: String,
        step: i64,
    },
    /// Turn TFA off, if it is on and (when a code was given) its `step` is newer than the
    /// last one used.
    Disable { step: Option<i64> },
    /// Use `step` for a login, if TFA is on and the step is newer than the last one used.
    UseStep(i64),
}

impl std::fmt::Debug for TfaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TfaChange::Pending(_) => f.write_str("Pending"),
            TfaChange::Enable { step, .. } => write!(f, "Enable {{ step: {step} }}"),
            TfaChange::Disable { step } => write!(f, "Disable {{ step: {step:?} }}"),
            TfaChange::UseStep(step) => write!(f, "UseStep({step})"),
        }
    }
}

/// A counter of the request limits: the hits in a fixed window, and when the window (or a
/// hold) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hits {
    pub hits: i64,
    pub until_ms: i64,
}

/// One live session of a user, as its owner may see it (never a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_ms: i64,
    /// When its token was last rotated (its creation if never).
    pub last_used_ms: i64,
    pub expires_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A refresh's common case, decided by the core in advance: if the family's live token has
/// digest `live_hash`, the family is unexpired at `now_ms` and its user is active, the family
/// advances to the generation whose token has digest `next_hash`. One conditional write, so the
/// common refresh costs one statement; whatever else the family's state is, nothing is written
/// and the refresh takes the general path ([`Store::change_family`]).
#[derive(Debug, Clone)]
pub struct LiveAdvance {
    pub family: Uuid,
    pub live_hash: String,
    pub now_ms: i64,
    pub next_hash: String,
    pub expires_ms: i64,
    pub meta: ClientMeta,
}

/// The core's decision for a family. The store applies it atomically to the family it was
/// shown: if the family changed meanwhile, the store shows it the new state and asks again, so
/// it must be pure.
pub type FamilyDecision = Box<dyn Fn(&Family) -> FamilyChange + Send>;

/// Which of a user's sessions a user update ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    None,
    All,
    /// All but this family (the caller's own session).
    AllExcept(Uuid),
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
    /// `_contains`, ignoring ASCII case.
    IContains,
    NotContains,
    NotIContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
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
    /// Items for which `via` leads to at least one item matching `cond` (`role.name`,
    /// `policies.policy.id`), or, when `none`, to no such item (`_none`).
    Related {
        via: &'static Relation,
        cond: Box<Condition>,
        none: bool,
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

/// Field values of one item to write.
pub type Values = Vec<(&'static Field, Value)>;

/// One write of [`Store::write`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Inserts an item; `values` include its primary key unless the database assigns it.
    Insert {
        c: &'static Collection,
        values: Values,
    },
    /// Updates item `id`; `end` names the sessions of user `id` that end with it.
    Update {
        c: &'static Collection,
        id: String,
        values: Values,
        end: EndSessions,
    },
    /// Deletes item `id` (and, by cascade, what hangs off it).
    Delete { c: &'static Collection, id: String },
}

/// What one [`Write`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// An insert, with the key of the new item (the one given, or the one the database
    /// assigned).
    Inserted(Value),
    /// An update or delete that found its item.
    Found,
    /// An update or delete that found nothing.
    Missing,
}

impl Written {
    /// Whether the write found (or made) its item.
    pub fn found(&self) -> bool {
        !matches!(self, Written::Missing)
    }
}

/// Reads a guard may make inside the transaction it guards.
pub trait Reads {
    /// Items of a collection, as [`Store::read_items`].
    fn read_items(&mut self, c: &'static Collection, q: &Query) -> StoreResult<Vec<Record>>;
    /// The access rows of a principal, as [`Store::access_rows`].
    fn access_rows(&mut self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessRows>;
}

/// An invariant the core attaches to a write: `before` looks at the data before the write,
/// `after` after it, both inside the write's transaction; `after` returning false rolls the
/// write back ([`StoreError::Refused`]). Guarded writes run one at a time, across every
/// instance sharing the database.
pub trait Guard: Send {
    fn before(&mut self, r: &mut dyn Reads) -> StoreResult<()>;
    fn after(self: Box<Self>, r: &mut dyn Reads) -> StoreResult<bool>;
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
    /// Applies `writes` in order, in one transaction, under `guard` if given; says for each
    /// what it did. A failing write undoes them all.
    async fn write(
        &self,
        writes: Vec<Write>,
        guard: Option<Box<dyn Guard>>,
    ) -> StoreResult<Vec<Written>>;
    /// The values making up an alias list for one item, in key order; the first `limit` of
    /// them when given.
    async fn alias_values(
        &self,
        alias: &'static Relation,
        id: &str,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Value>>;
    /// The alias lists of many items at once, by item key (an item with an empty list is
    /// left out): each as [`Store::alias_values`] gives it with `limit`.
    async fn alias_values_of(
        &self,
        alias: &'static Relation,
        ids: &[String],
        limit: u64,
    ) -> StoreResult<std::collections::HashMap<String, Vec<Value>>>;

    /// The user whose (ASCII) lower-cased e-mail equals `email_lower`.
    async fn login_user(&self, email_lower: &str) -> StoreResult<Option<LoginUser>>;
    /// A user's id, role and status.
    async fn principal(&self, id: Uuid) -> StoreResult<Option<Principal>>;
    /// The user whose static token has this SHA-256 digest.
    async fn principal_by_token(&self, digest: &str) -> StoreResult<Option<Principal>>;
    /// The role chain from `role` up, the policies attached to its roles, to `user`, and to
    /// nobody.
    async fn access_rows(&self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessRows>;
    /// Reads the user's login state and applies `decide`'s change, in one transaction;
    /// returns the state as read (`None` if the user is gone).
    async fn login_attempt(
        &self,
        user: Uuid,
        decide: AttemptDecision,
    ) -> StoreResult<Option<LoginState>>;
    /// Counts one failed password check.
    async fn record_login_failure(&self, user: Uuid) -> StoreResult<()>;
    /// Forgets a user's failed logins and lifts any login lock.
    async fn clear_login_failures(&self, user: Uuid) -> StoreResult<()>;
    /// Every user with their login bookkeeping, ordered by e-mail.
    async fn user_summaries(&self) -> StoreResult<Vec<UserSummary>>;

    /// Opens a session family if `admit`, shown the user as it is inside the transaction,
    /// admits it; also forgives failures, lifts a login lock, sets `last_access`, and ends the
    /// user's families beyond `keep_at_most`.
    async fn open_session(
        &self,
        s: NewSession,
        admit: AdmitDecision,
    ) -> StoreResult<Option<Opened>>;
    /// The family with this id, with its user.
    async fn family(&self, id: Uuid) -> StoreResult<Option<Family>>;
    /// Reads the family and applies `decide`'s change atomically (the change is written only
    /// if the family is still as `decide` saw it; otherwise `decide` sees the new state);
    /// returns the family the applied decision saw. `Advance` and `Extend` also set the user's
    /// `last_access`.
    async fn change_family(&self, id: Uuid, decide: FamilyDecision) -> StoreResult<Option<Family>>;
    /// Applies `a` if the family is in the state it names; returns the family's user then (as
    /// it is now), and `None`, having written nothing, otherwise. Also sets the user's
    /// `last_access`, as `change_family` does.
    async fn advance_live(&self, a: LiveAdvance) -> StoreResult<Option<Principal>>;
    /// A user's two-factor state (`None` when there is no such user).
    async fn tfa(&self, user: Uuid) -> StoreResult<Option<TfaState>>;
    /// Applies a two-factor change if the user's state allows it; whether it did.
    async fn change_tfa(&self, user: Uuid, change: TfaChange) -> StoreResult<bool>;
    /// The user's families unexpired at `now_ms`, most recently used first.
    async fn sessions_of(&self, user: Uuid, now_ms: i64) -> StoreResult<Vec<SessionInfo>>;
    /// Deletes families that expired before `now_ms`.
    async fn purge_expired_sessions(&self, now_ms: i64) -> StoreResult<u64>;
    /// Adds `amount` to the counter `key`, first opening a fresh window that ends `window_ms`
    /// after `now_ms` when its window has ended (or it has none); says the count and the end.
    async fn count_hit(
        &self,
        key: &str,
        amount: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Hits>;
    /// Starts a wait under `key` ending at `until_ms`, unless one runs at `now_ms`; whether
    /// this call started it (of claims racing on one key, one wins).
    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool>;
    /// When `key` ends, if that is after `now_ms`.
    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>>;
    /// Drops counters.
    async fn forget_counts(&self, keys: Vec<String>) -> StoreResult<()>;
    /// Deletes counters that ended before `now_ms`.
    async fn purge_counts(&self, now_ms: i64) -> StoreResult<u64>;

    /// The settings singleton (empty when the row is missing).
    async fn settings(&self) -> StoreResult<Record> {
        Ok(self
            .read_items(&schema::SETTINGS, &Query::default())
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Whether any user exists: one row read, whatever their number (start-up and
    /// `/server/info` ask this on every start and call).
    async fn has_users(&self) -> StoreResult<bool> {
        let one = Query {
            limit: Some(1),
            ..Query::default()
        };
        Ok(!self.read_items(&schema::USERS, &one).await?.is_empty())
    }
    /// A round trip to the database, for health checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Rows the database has returned to this store since it opened (for metrics, and for
    /// tests that bound what an operation reads).
    fn rows_read(&self) -> u64;
    /// The engine's name in health reports, as Directus's `DB_CLIENT` spells it.
    fn engine(&self) -> &'static str;
    /// File descriptors the store may hold open at once (connections, files).
    fn descriptors(&self) -> usize;
    /// Connections in use now, and how many may be in use at once (for metrics).
    fn pool_use(&self) -> (usize, usize);

    /// Up to `limit` rows of `table` whose key is greater than `after` (all from the start
    /// when `None`), in key order, each row's values in `table.columns` order; for a data move.
    async fn dump(
        &self,
        table: &'static schema::Table,
        after: Option<Value>,
        limit: u64,
    ) -> StoreResult<Vec<Vec<Value>>>;
    /// Writes `rows` (as [`Store::dump`] gives them) into `table` in one transaction: a row
    /// whose key exists replaces it; with `table.copy_key` false the key is left to the
    /// database; the columns in `table.later` are written only when `later`.
    async fn load(
        &self,
        table: &'static schema::Table,
        rows: Vec<Vec<Value>>,
        later: bool,
    ) -> StoreResult<()>;

    /// Tells every other instance sharing the database that `change` committed, so that they
    /// drop what they cached of it. Where no other instance can share the database, nothing.
    async fn announce(&self, change: Change) -> StoreResult<()>;
    /// Whether this instance knows for certain that it is the only one using the database
    /// right now, so that what it caches of its own writes cannot change behind its back.
    fn exclusive(&self) -> bool;
    /// What other instances announce from now on; `None` where no other instance can share
    /// the database. After any gap in hearing them (a lost connection, a reader that fell
    /// behind), [`Change::Everything`] comes first.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;
}

/// Another program's database, read as it is (a Directus one, for `tessera migrate-data`).
#[async_trait]
pub trait Foreign: Send + Sync {
    /// The columns of `table`, in order; `None` where there is no such table.
    async fn columns(&self, table: &'static str) -> StoreResult<Option<Vec<String>>>;
    /// Up to `limit` rows of `table` whose `key` is greater than `after`, in key order, each
    /// row's values in `columns` order.
    async fn rows(
        &self,
        table: &'static str,
        columns: Vec<String>,
        key: &'static str,
        after: Option<Value>,
        limit: u64,
    ) -> StoreResult<Vec<Vec<Value>>>;
}

/// What a store tells its subscribers about other instances sharing the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Anything may have changed: users, roles, policies, static tokens, settings.
    Everything,
    /// One session family ended (a logout, an eviction, a replay).
    FamilyEnded(Uuid),
    /// This instance hears the others from now on (again): whatever it cached before may be
    /// stale. Never sent between instances.
    Listening,
}

impl Change {
    /// The change as it travels between instances.
    pub fn encode(self) -> String {
        match self {
            Change::Everything | Change::Listening => "*".to_owned(),
            Change::FamilyEnded(f) => format!("family {f}"),
        }
    }

    /// Reads what [`Change::encode`] wrote. A message this version does not know (from a
    /// newer instance, say) means [`Change::Everything`], the safe reading.
    pub fn decode(s: &str) -> Change {
        s.strip_prefix("family ")
            .and_then(|f| Uuid::parse_str(f).ok())
            .map_or(Change::Everything, Change::FamilyEnded)
    }
}

/// The fixed id of the public policy, which anonymous and role-less callers get.
pub const PUBLIC_POLICY_ID: &str = "abf8a154-5b1c-4a46-ac9c-7300570f4f17";
