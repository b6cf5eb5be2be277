//! The one SQL layer both engines share. Every store operation is written here once, as a
//! synchronous body over a [`Conn`]; its statements are built with sea-query and rendered in
//! the dialect of the connection it runs on. An engine crate supplies only connections (how to
//! run a statement, bind a value, read a cell, begin and commit) and its migrations; it decides
//! nothing. The core's decisions and guards run inside these bodies, inside the engine's
//! transaction.

mod batch;
mod filter;
mod ops;
mod pages;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder};
use tessera_store::schema::Table;
use tessera_store::{
    AccessRows, AdmitDecision, AttemptDecision, Change, Collection, Condition, Family,
    FamilyDecision, Foreign, Guard, LiveAdvance, LoginState, LoginUser, NewSession, Opened,
    Principal, Query, Record, Store, StoreError, StoreResult, UserSummary, Write,
};
use uuid::Uuid;

pub use sea_query::Value as Param;

/// The SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One value read from a row, whatever the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// A statement parameter flattened to the few kinds both engines bind: every integer width
/// as `Int`, every float as `Real`. Each engine maps these onto its own values.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl From<&Param> for Scalar {
    fn from(p: &Param) -> Self {
        let int = |v: Option<i64>| v.map_or(Scalar::Null, Scalar::Int);
        match p {
            Param::Bool(v) => v.map_or(Scalar::Null, Scalar::Bool),
            Param::TinyInt(v) => int(v.map(i64::from)),
            Param::SmallInt(v) => int(v.map(i64::from)),
            Param::Int(v) => int(v.map(i64::from)),
            Param::BigInt(v) => int(*v),
            Param::TinyUnsigned(v) => int(v.map(i64::from)),
            Param::SmallUnsigned(v) => int(v.map(i64::from)),
            Param::Unsigned(v) => int(v.map(i64::from)),
            Param::BigUnsigned(v) => int(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
            Param::Float(v) => v.map_or(Scalar::Null, |f| Scalar::Real(f.into())),
            Param::Double(v) => v.map_or(Scalar::Null, Scalar::Real),
            Param::String(v) => v.clone().map_or(Scalar::Null, Scalar::Text),
            Param::Char(v) => v.map_or(Scalar::Null, |c| Scalar::Text(c.to_string())),
            Param::Bytes(v) => v.clone().map_or(Scalar::Null, Scalar::Bytes),
            other => Scalar::Text(format!("{other:?}")),
        }
    }
}

/// A row as read: its cells in column order.
pub type Row = Vec<Cell>;

/// A connection (inside a transaction when it writes) of some engine.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement that returns rows.
    fn query(&mut self, sql: &str, params: &[Param]) -> StoreResult<Vec<Row>>;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param]) -> StoreResult<u64>;
    /// The columns of `table`, in order; `None` where there is no such table.
    fn columns(&mut self, table: &str) -> StoreResult<Option<Vec<String>>>;
    /// Waits until no other transaction holds `key`, then holds it until this one ends; on an
    /// engine whose writers already run one at a time, does nothing.
    fn serialize(&mut self, key: i64) -> StoreResult<()>;
}

/// Renders a statement in the connection's dialect.
fn render(c: &dyn Conn, s: &impl QueryStatementWriter) -> (String, Vec<Param>) {
    let (sql, values) = match c.dialect() {
        Dialect::Sqlite => s.build(SqliteQueryBuilder),
        Dialect::Postgres => s.build(PostgresQueryBuilder),
    };
    (sql, values.0)
}

/// Runs a statement that returns rows.
pub(crate) fn rows(c: &mut dyn Conn, s: &impl QueryStatementWriter) -> StoreResult<Vec<Row>> {
    let (sql, params) = render(c, s);
    c.query(&sql, &params)
}

/// Runs a statement that returns at most one row.
pub(crate) fn row(c: &mut dyn Conn, s: &impl QueryStatementWriter) -> StoreResult<Option<Row>> {
    Ok(rows(c, s)?.into_iter().next())
}

/// Runs a statement; how many rows it changed.
pub(crate) fn run(c: &mut dyn Conn, s: &impl QueryStatementWriter) -> StoreResult<u64> {
    let (sql, params) = render(c, s);
    c.execute(&sql, &params)
}

impl Cell {
    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Text(s) => Some(s.clone()),
            Cell::Null => None,
            Cell::Int(i) => Some(i.to_string()),
            Cell::Real(r) => Some(r.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            Cell::Bool(b) => Some(i64::from(*b)),
            Cell::Text(s) => s.parse().ok(),
            Cell::Real(_) | Cell::Null => None,
        }
    }

    pub fn bool(&self) -> bool {
        match self {
            Cell::Bool(b) => *b,
            Cell::Int(i) => *i != 0,
            _ => false,
        }
    }

    pub fn uuid(&self) -> Option<Uuid> {
        match self {
            Cell::Text(s) => Uuid::parse_str(s).ok(),
            _ => None,
        }
    }
}

/// How an engine runs the shared bodies: reads on any connection, writes in a transaction.
pub trait Engine: Send + Sync + 'static {
    /// Runs `f` on a connection; its statements may each see a different moment.
    fn read<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static;
    /// Runs `f` in one transaction, committed if `f` succeeds and rolled back if it fails.
    fn write<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static;
    /// Runs `f`, whose every statement is safe on its own (a compare and set), with each
    /// statement committed by itself where the engine can do that more cheaply than a
    /// transaction around them all.
    fn write_each<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static;
    /// The engine's name, as Directus's `DB_CLIENT` spells it.
    fn name(&self) -> &'static str;
    /// How many writes the engine runs at once.
    fn writers(&self) -> usize;
    /// How many reads the engine runs at once.
    fn readers(&self) -> usize;
    /// File descriptors the engine may hold open at once.
    fn descriptors(&self) -> usize;
    /// Connections in use now, and how many may be in use at once.
    fn pool_use(&self) -> (usize, usize);
    /// Tells the other instances sharing the database about `change`; nothing where no other
    /// instance can share it.
    fn announce(&self, change: Change) -> impl Future<Output = StoreResult<()>> + Send {
        let _ = change;
        std::future::ready(Ok(()))
    }
    /// Whether this instance is for certain the only one using the database right now (see
    /// [`Store::exclusive`]); an engine only one process can open always is.
    fn exclusive(&self) -> bool {
        true
    }
    /// What other instances announce (see [`Store::changes`]).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}

/// A connection that counts the rows its statements return.
struct Counting<'a> {
    conn: &'a mut dyn Conn,
    rows: &'a AtomicU64,
}

impl Conn for Counting<'_> {
    fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> StoreResult<Vec<Row>> {
        let found = self.conn.query(sql, params)?;
        self.rows.fetch_add(found.len() as u64, Ordering::Relaxed);
        Ok(found)
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> StoreResult<u64> {
        self.conn.execute(sql, params)
    }

    fn columns(&mut self, table: &str) -> StoreResult<Option<Vec<String>>> {
        self.conn.columns(table)
    }

    fn serialize(&mut self, key: i64) -> StoreResult<()> {
        self.conn.serialize(key)
    }
}

/// An engine whose connections count the rows they return ([`Store::rows_read`]).
struct Counted<E> {
    inner: E,
    rows: Arc<AtomicU64>,
}

impl<E: Engine> Engine for Counted<E> {
    fn read<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let rows = self.rows.clone();
        self.inner
            .read(move |conn| f(&mut Counting { conn, rows: &rows }))
    }

    fn write<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let rows = self.rows.clone();
        self.inner
            .write(move |conn| f(&mut Counting { conn, rows: &rows }))
    }

    fn write_each<R, F>(&self, f: F) -> impl Future<Output = StoreResult<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let rows = self.rows.clone();
        self.inner
            .write_each(move |conn| f(&mut Counting { conn, rows: &rows }))
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn writers(&self) -> usize {
        self.inner.writers()
    }

    fn readers(&self) -> usize {
        self.inner.readers()
    }

    fn descriptors(&self) -> usize {
        self.inner.descriptors()
    }

    fn pool_use(&self) -> (usize, usize) {
        self.inner.pool_use()
    }

    fn announce(&self, change: Change) -> impl Future<Output = StoreResult<()>> + Send {
        self.inner.announce(change)
    }

    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        self.inner.changes()
    }
}

/// The [`Store`] of any engine: each method is one shared body run by the engine.
pub struct SqlStore<E> {
    engine: Arc<Counted<E>>,
    /// Live advances waiting together go out as one statement.
    advances: batch::Batcher<LiveAdvance, Option<Principal>>,
    /// So do reads of session families (a session check each).
    families: batch::Batcher<Uuid, Option<Family>>,
    /// Guarded writes of this process take turns here before they take a connection, so that
    /// those waiting for their turn (the database serialises them across instances too) hold
    /// no connection others need.
    guarded: tokio::sync::Mutex<()>,
    /// Where deep pages of recent reads start (see `pages`).
    marks: Arc<pages::Marks>,
}

impl<E: Engine> SqlStore<E> {
    pub fn new(engine: E) -> Self {
        Self {
            advances: batch::Batcher::new(engine.writers()),
            families: batch::Batcher::new(engine.readers()),
            engine: Arc::new(Counted {
                inner: engine,
                rows: Arc::default(),
            }),
            guarded: tokio::sync::Mutex::new(()),
            marks: Arc::default(),
        }
    }

    pub fn engine(&self) -> &E {
        &self.engine.inner
    }

    /// How the database plans the statement [`Store::read_items`] runs for `q`, one line per
    /// step (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL): what the tests and the
    /// scale benchmark read to see that an index is used.
    pub async fn plan(&self, c: &'static Collection, q: &Query) -> StoreResult<Vec<String>> {
        let q = q.clone();
        let marks = self.marks.clone();
        self.engine
            .read(move |x| ops::plan_items(x, c, &q, Some(&marks)))
            .await
    }
}

#[async_trait]
impl<E: Engine> Store for SqlStore<E> {
    async fn read_items(&self, c: &'static Collection, q: &Query) -> StoreResult<Vec<Record>> {
        let q = q.clone();
        let marks = self.marks.clone();
        self.engine
            .read(move |x| ops::read_items(x, c, &q, Some(&marks)))
            .await
    }

    async fn count_items(
        &self,
        c: &'static Collection,
        filter: Option<&Condition>,
    ) -> StoreResult<u64> {
        let filter = filter.cloned();
        self.engine
            .read(move |x| ops::count_items(x, c, filter.as_ref()))
            .await
    }

    async fn write(
        &self,
        writes: Vec<Write>,
        guard: Option<Box<dyn Guard>>,
    ) -> StoreResult<Vec<tessera_store::Written>> {
        let _turn = match guard {
            Some(_) => Some(self.guarded.lock().await),
            None => None,
        };
        self.engine
            .write(move |x| ops::write(x, writes, guard))
            .await
    }

    async fn alias_values(
        &self,
        alias: &'static tessera_store::Relation,
        id: &str,
        limit: Option<u64>,
    ) -> StoreResult<Vec<serde_json::Value>> {
        let id = id.to_owned();
        self.engine
            .read(move |x| ops::alias_values(x, alias, &id, limit))
            .await
    }

    async fn alias_values_of(
        &self,
        alias: &'static tessera_store::Relation,
        ids: &[String],
        limit: u64,
    ) -> StoreResult<std::collections::HashMap<String, Vec<serde_json::Value>>> {
        let ids = ids.to_vec();
        self.engine
            .read(move |x| ops::alias_values_of(x, alias, &ids, limit))
            .await
    }

    async fn login_user(&self, email_lower: &str) -> StoreResult<Option<LoginUser>> {
        let email = email_lower.to_owned();
        self.engine
            .read(move |x| ops::login_user(x, ops::ByUser::Email(email), false))
            .await
    }

    async fn principal(&self, id: Uuid) -> StoreResult<Option<Principal>> {
        self.engine
            .read(move |x| ops::principal(x, ops::ByUser::Id(id)))
            .await
    }

    async fn principal_by_token(&self, digest: &str) -> StoreResult<Option<Principal>> {
        let digest = digest.to_owned();
        self.engine
            .read(move |x| ops::principal(x, ops::ByUser::Token(digest)))
            .await
    }

    async fn access_rows(&self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessRows> {
        self.engine
            .read(move |x| ops::access_rows(x, role, user))
            .await
    }

    async fn login_attempt(
        &self,
        user: Uuid,
        decide: AttemptDecision,
    ) -> StoreResult<Option<LoginState>> {
        self.engine
            .write(move |x| ops::login_attempt(x, user, decide))
            .await
    }

    async fn record_login_failure(&self, user: Uuid) -> StoreResult<()> {
        self.engine
            .write(move |x| ops::record_login_failure(x, user))
            .await
    }

    async fn clear_login_failures(&self, user: Uuid) -> StoreResult<()> {
        self.engine
            .write(move |x| ops::clear_login_failures(x, user))
            .await
    }

    async fn user_summaries(&self) -> StoreResult<Vec<UserSummary>> {
        self.engine.read(ops::user_summaries).await
    }

    async fn open_session(
        &self,
        s: NewSession,
        admit: AdmitDecision,
    ) -> StoreResult<Option<Opened>> {
        self.engine
            .write(move |x| ops::open_session(x, s, admit))
            .await
    }

    async fn family(&self, id: Uuid) -> StoreResult<Option<Family>> {
        let engine = self.engine.clone();
        let run = move |ids: Vec<Uuid>| {
            let engine = engine.clone();
            async move { engine.read(move |x| ops::families(x, ids)).await }
        };
        self.families.submit(id, run).await
    }

    async fn change_family(&self, id: Uuid, decide: FamilyDecision) -> StoreResult<Option<Family>> {
        self.engine
            .write_each(move |x| ops::change_family(x, id, &decide))
            .await
    }

    async fn advance_live(&self, a: LiveAdvance) -> StoreResult<Option<Principal>> {
        let engine = self.engine.clone();
        let run = move |batch: Vec<LiveAdvance>| {
            let engine = engine.clone();
            async move {
                engine
                    .write_each(move |x| ops::advance_live(x, batch))
                    .await
            }
        };
        self.advances.submit(a, run).await
    }

    async fn tfa(&self, user: Uuid) -> StoreResult<Option<tessera_store::TfaState>> {
        self.engine.read(move |x| ops::tfa(x, user)).await
    }

    async fn change_tfa(&self, user: Uuid, change: tessera_store::TfaChange) -> StoreResult<bool> {
        self.engine
            .write(move |x| ops::change_tfa(x, user, &change))
            .await
    }

    async fn sessions_of(
        &self,
        user: Uuid,
        now_ms: i64,
    ) -> StoreResult<Vec<tessera_store::SessionInfo>> {
        self.engine
            .read(move |x| ops::sessions_of(x, user, now_ms))
            .await
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> StoreResult<u64> {
        self.engine
            .write(move |x| ops::purge_expired_sessions(x, now_ms))
            .await
    }

    async fn count_hit(
        &self,
        key: &str,
        amount: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> StoreResult<tessera_store::Hits> {
        let key = key.to_owned();
        self.engine
            .write(move |x| ops::count_hit(x, &key, amount, window_ms, now_ms))
            .await
    }

    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool> {
        let key = key.to_owned();
        self.engine
            .write(move |x| ops::claim(x, &key, until_ms, now_ms))
            .await
    }

    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        let key = key.to_owned();
        self.engine.read(move |x| ops::held(x, &key, now_ms)).await
    }

    async fn forget_counts(&self, keys: Vec<String>) -> StoreResult<()> {
        self.engine
            .write(move |x| ops::forget_counts(x, &keys))
            .await
    }

    async fn purge_counts(&self, now_ms: i64) -> StoreResult<u64> {
        self.engine
            .write(move |x| ops::purge_counts(x, now_ms))
            .await
    }

    fn rows_read(&self) -> u64 {
        self.engine.rows.load(Ordering::Relaxed)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.engine.read(ops::ping).await
    }

    fn engine(&self) -> &'static str {
        self.engine.name()
    }

    fn descriptors(&self) -> usize {
        self.engine.descriptors()
    }

    fn pool_use(&self) -> (usize, usize) {
        self.engine.pool_use()
    }

    async fn dump(
        &self,
        table: &'static Table,
        after: Option<serde_json::Value>,
        limit: u64,
    ) -> StoreResult<Vec<Vec<serde_json::Value>>> {
        self.engine
            .read(move |x| ops::page(x, table.name, table.columns, table.key, after, limit))
            .await
    }

    async fn load(
        &self,
        table: &'static Table,
        rows: Vec<Vec<serde_json::Value>>,
        later: bool,
    ) -> StoreResult<()> {
        self.engine
            .write(move |x| ops::load(x, table, rows, later))
            .await
    }

    async fn announce(&self, change: Change) -> StoreResult<()> {
        self.engine.announce(change).await
    }

    fn exclusive(&self) -> bool {
        self.engine.exclusive()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        self.engine.changes()
    }
}

/// Maps the text of a unique-constraint failure (SQLite's message, PostgreSQL's constraint
/// name) onto the field it concerns. Both engines' migrations name their constraints so that
/// this one reading serves both.
pub fn conflict_field(text: &str) -> &'static str {
    if text.contains("token_hash") {
        "token"
    } else if text.contains("email") {
        "email"
    } else if text.contains("external_identifier") {
        "external_identifier"
    } else {
        "id"
    }
}

/// An error an engine could not classify further.
pub fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl<E: Engine> Foreign for SqlStore<E> {
    async fn columns(&self, table: &'static str) -> StoreResult<Option<Vec<String>>> {
        self.engine.read(move |x| x.columns(table)).await
    }

    async fn rows(
        &self,
        table: &'static str,
        columns: Vec<String>,
        key: &'static str,
        after: Option<serde_json::Value>,
        limit: u64,
    ) -> StoreResult<Vec<Vec<serde_json::Value>>> {
        self.engine
            .read(move |x| ops::page(x, table, &columns, key, after, limit))
            .await
    }
}
