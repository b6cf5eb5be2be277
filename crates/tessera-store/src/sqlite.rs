//! The SQLite store: WAL, a small pool of readers on tokio's blocking pool, and one writer
//! thread that commits queued writes in groups (each in its own savepoint), so async workers
//! never wait on the database and concurrent refreshes share a commit. Owns the SQLite dialect
//! of the filter language and the embedded migrations.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;
use uuid::Uuid;

use crate::schema::{Alias, Collection, Field, Kind, USERS};
use crate::{
    AccessTree, Admission, AdmitDecision, AttemptChange, AttemptDecision, Bootstrap, Condition,
    EndSessions, Family, FamilyChange, FamilyDecision, LoginState, LoginUser, NewSession, Op,
    Opened, PolicyGrant, Principal, Query, Record, Store, StoreError, StoreResult, UserSummary,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_session_families.sql"),
    ),
];

const MAX_IDLE_READERS: usize = 8;

/// Reader connections open at once at most (each holds three files: database, WAL, index);
/// further reads wait for one.
pub const MAX_READERS: usize = 16;

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: std::sync::mpsc::Sender<Box<dyn WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection that may be open.
    reading: Arc<tokio::sync::Semaphore>,
}

/// WAL size (in frames) past which the writer restarts the WAL once the background
/// checkpointer has copied (nearly) all of it back.
const RESTART_FRAMES: i64 = 4_000;

/// WAL size past which the writer restarts the WAL whatever the checkpointer managed.
const FORCE_RESTART_FRAMES: i64 = 30_000;

/// How many queued writes share one transaction at most.
const MAX_BATCH: usize = 128;

/// A queued write: runs inside its own savepoint, then hears how the commit went.
trait WriteJob: Send {
    /// Runs the write; false if it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Delivers the outcome once the batch's commit succeeded or failed.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Typed<R, F> {
    f: Option<F>,
    out: Option<StoreResult<R>>,
    reply: tokio::sync::oneshot::Sender<StoreResult<R>>,
}

impl<R, F> WriteJob for Typed<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> StoreResult<R> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = self.f.take().map_or_else(
            || Err(StoreError::Backend("write ran twice".into())),
            |f| f(conn),
        );
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let out = match (commit, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Backend("write did not run".into())),
            (Err(e), _) => Err(StoreError::Backend(e)),
        };
        let _ = self.reply.send(out);
    }
}

/// The writer thread: takes every write queued so far (up to [`MAX_BATCH`]), runs each in a
/// savepoint of one IMMEDIATE transaction, commits once, then answers them all.
fn writer_loop(
    mut conn: Connection,
    jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>,
    restart_due: Arc<AtomicBool>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for job in &mut batch {
                // Savepoint statements go through the statement cache: they run once per write.
                exec(&tx, "SAVEPOINT write_job", [])?;
                // A panicking write is a failed write, not a dead writer thread.
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&tx)))
                    .unwrap_or(false);
                if !ok {
                    exec(&tx, "ROLLBACK TO write_job", [])?;
                }
                exec(&tx, "RELEASE write_job", [])?;
            }
            tx.commit()
        })();
        let commit = commit.map_err(|e| e.to_string());
        for job in batch {
            job.finish(commit.clone());
        }
        if restart_due.swap(false, Ordering::Relaxed)
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "WAL restart failed");
        }
    }
}

/// Copies the WAL back into the database every 100 ms, off the writer thread, so commits never
/// pay for a checkpoint; asks the writer to restart the WAL once it is long and copied back.
/// Exits once the store is dropped.
fn checkpointer(conn: Connection, store: std::sync::Weak<Inner>, restart_due: Arc<AtomicBool>) {
    while store.upgrade().is_some() {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match frames {
            Ok((log, copied)) => {
                let caught_up = log >= RESTART_FRAMES && copied + 1_000 >= log;
                if caught_up || log >= FORCE_RESTART_FRAMES {
                    restart_due.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(code, Some(msg)) = &e
            && code.code == rusqlite::ErrorCode::ConstraintViolation
        {
            if msg.contains("UNIQUE") || msg.contains("PRIMARY KEY") {
                return StoreError::Conflict {
                    field: conflict_field(msg),
                };
            }
            if msg.contains("FOREIGN KEY") {
                return StoreError::MissingReference { field: "reference" };
            }
        }
        StoreError::Backend(e.to_string())
    }
}

/// Maps a SQLite constraint message onto the field it concerns.
fn conflict_field(msg: &str) -> &'static str {
    if msg.contains("token_hash") {
        "token"
    } else if msg.contains("email") {
        "email"
    } else if msg.contains("external_identifier") {
        "external_identifier"
    } else {
        "id"
    }
}

/// Creates the database file with mode 0600 if it does not exist. SQLite gives the WAL and
/// shared-memory files it creates beside it the database file's permissions.
fn create_private(path: &Path) -> StoreResult<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

fn open(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = 268435456;
         PRAGMA cache_size = -16384;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS tessera_migrations (
            version INTEGER PRIMARY KEY NOT NULL,
            applied_at INTEGER NOT NULL DEFAULT (unixepoch())
        )",
    )?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM tessera_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO tessera_migrations (version) VALUES (?1)",
                [version],
            )?;
            tracing::info!(version, "applied migration");
        }
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed, readable by its owner only) the database file and brings
    /// its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let mut writer = open(&path)?;
        migrate(&mut writer)?;
        // Commits never checkpoint inline: a background thread copies the WAL back, and the
        // writer only restarts it once that is (nearly) done; see `checkpointer`.
        writer.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
        )?;
        let restart_due = Arc::new(AtomicBool::new(false));
        let writer_restart = restart_due.clone();
        let (jobs, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, queue, writer_restart))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        let inner = Arc::new(Inner {
            path,
            writer: jobs,
            readers: Mutex::new(Vec::new()),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
        });
        let watched = Arc::downgrade(&inner);
        let checkpoints = open(&inner.path)?;
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoints, watched, restart_due))
            .map_err(|e| StoreError::Backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(Self { inner })
    }

    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let inner = self.inner.clone();
        let permit = inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("the store is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _reader = permit;
            let pooled = inner.readers.lock().map_err(poisoned)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => open(&inner.path)?,
            };
            let out = f(&conn);
            let mut idle = inner.readers.lock().map_err(poisoned)?;
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Typed {
            f: Some(f),
            out: None,
            reply,
        };
        self.inner
            .writer
            .send(Box::new(job))
            .map_err(|_| StoreError::Backend("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the writer thread dropped a write".into()))?
    }
}

/// Runs a statement through the connection's statement cache (no re-parsing on hot paths).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Reads one row through the connection's statement cache.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Backend("connection lock poisoned".into())
}

/// Converts a JSON value into the SQL value stored for a field of this kind.
fn to_sql(kind: Kind, v: &Value) -> Sql {
    match (kind, v) {
        (_, Value::Null) => Sql::Null,
        (Kind::Json, v) => Sql::Text(v.to_string()),
        (_, Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or_default()),
        },
        (_, Value::String(s)) => Sql::Text(s.clone()),
        (_, other) => Sql::Text(other.to_string()),
    }
}

/// Converts a stored SQL value back into JSON for a field of this kind.
fn from_sql(kind: Kind, v: Sql) -> Value {
    match (kind, v) {
        (_, Sql::Null) => Value::Null,
        (Kind::Boolean, Sql::Integer(i)) => Value::Bool(i != 0),
        (Kind::Json, Sql::Text(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        (_, Sql::Integer(i)) => Value::from(i),
        (_, Sql::Real(r)) => Value::from(r),
        (_, Sql::Text(s)) => Value::String(s),
        (_, Sql::Blob(b)) => Value::String(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a condition as SQLite SQL, pushing its parameters.
fn render(cond: &Condition, sql: &mut String, args: &mut Vec<Sql>) {
    match cond {
        Condition::And(parts) | Condition::Or(parts) => {
            let (joiner, empty) = match cond {
                Condition::And(_) => (" AND ", "1=1"),
                _ => (" OR ", "1=0"),
            };
            if parts.is_empty() {
                sql.push_str(empty);
                return;
            }
            sql.push('(');
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    sql.push_str(joiner);
                }
                render(p, sql, args);
            }
            sql.push(')');
        }
        Condition::Compare { field, op, value } => {
            let col = format!("\"{}\"", field.column);
            let like = |pattern: String, negate: bool, sql: &mut String, args: &mut Vec<Sql>| {
                sql.push_str(&col);
                sql.push_str(if negate { " NOT LIKE ?" } else { " LIKE ?" });
                sql.push_str(" ESCAPE '\\'");
                args.push(Sql::Text(pattern));
            };
            match op {
                Op::Eq if value.is_null() => sql.push_str(&format!("{col} IS NULL")),
                Op::Neq if value.is_null() => sql.push_str(&format!("{col} IS NOT NULL")),
                Op::Eq | Op::Neq | Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                    let sym = match op {
                        Op::Eq => "=",
                        Op::Neq => "!=",
                        Op::Gt => ">",
                        Op::Gte => ">=",
                        Op::Lt => "<",
                        _ => "<=",
                    };
                    sql.push_str(&format!("{col} {sym} ?"));
                    args.push(to_sql(field.kind, value));
                }
                Op::In | Op::Nin => {
                    let items = value.as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        sql.push_str(if *op == Op::In { "1=0" } else { "1=1" });
                        return;
                    }
                    sql.push_str(&col);
                    sql.push_str(if *op == Op::In { " IN (" } else { " NOT IN (" });
                    for (i, item) in items.iter().enumerate() {
                        sql.push_str(if i == 0 { "?" } else { ",?" });
                        args.push(to_sql(field.kind, item));
                    }
                    sql.push(')');
                }
                Op::Null => sql.push_str(&format!("{col} IS NULL")),
                Op::NotNull => sql.push_str(&format!("{col} IS NOT NULL")),
                Op::Empty => sql.push_str(&format!("({col} IS NULL OR {col} = '')")),
                Op::NotEmpty => sql.push_str(&format!("({col} IS NOT NULL AND {col} != '')")),
                Op::Contains => like(
                    format!("%{}%", escape_like(&value_text(value))),
                    false,
                    sql,
                    args,
                ),
                Op::NotContains => like(
                    format!("%{}%", escape_like(&value_text(value))),
                    true,
                    sql,
                    args,
                ),
                Op::StartsWith => like(
                    format!("{}%", escape_like(&value_text(value))),
                    false,
                    sql,
                    args,
                ),
                Op::EndsWith => like(
                    format!("%{}", escape_like(&value_text(value))),
                    false,
                    sql,
                    args,
                ),
            }
        }
    }
}

fn where_clause(filter: Option<&Condition>, args: &mut Vec<Sql>) -> String {
    match filter {
        Some(c) => {
            let mut sql = String::from(" WHERE ");
            render(c, &mut sql, args);
            sql
        }
        None => String::new(),
    }
}

fn read_rows(conn: &Connection, c: &'static Collection, q: &Query) -> StoreResult<Vec<Record>> {
    let cols: Vec<String> = c
        .fields
        .iter()
        .map(|f| format!("\"{}\"", f.column))
        .collect();
    let mut args = Vec::new();
    let mut sql = format!("SELECT {} FROM \"{}\"", cols.join(", "), c.table);
    sql.push_str(&where_clause(q.filter.as_ref(), &mut args));
    sql.push_str(" ORDER BY ");
    for (field, desc) in &q.sort {
        sql.push_str(&format!(
            "\"{}\" {}, ",
            field.column,
            if *desc { "DESC" } else { "ASC" }
        ));
    }
    // Directus sorts by the primary key unless told otherwise.
    sql.push_str("\"id\" ASC");
    if let Some(limit) = q.limit {
        sql.push_str(&format!(" LIMIT {limit} OFFSET {}", q.offset));
    } else if q.offset > 0 {
        sql.push_str(&format!(" LIMIT -1 OFFSET {}", q.offset));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        let mut rec = Record::new();
        for (i, f) in c.fields.iter().enumerate() {
            rec.insert(f.name.to_string(), from_sql(f.kind, row.get::<_, Sql>(i)?));
        }
        Ok(rec)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn delete_user_sessions(tx: &Connection, user: &str, end: &EndSessions) -> StoreResult<()> {
    match end {
        EndSessions::None => {}
        EndSessions::All => {
            exec(tx, "DELETE FROM directus_sessions WHERE user = ?1", [user])?;
        }
        EndSessions::AllExcept(family) => {
            exec(
                tx,
                "DELETE FROM directus_sessions WHERE user = ?1 AND family != ?2",
                params![user, family.to_string()],
            )?;
        }
    }
    Ok(())
}

fn uuid_col(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = row.get(i)?;
    Ok(s.and_then(|s| Uuid::parse_str(&s).ok()))
}

fn principal_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Principal> {
    Ok(Principal {
        id: uuid_col(row, 0)?.unwrap_or_default(),
        role: uuid_col(row, 1)?,
        status: row.get(2)?,
    })
}

/// The login view of the one user matching `condition` (which takes `?1`).
fn login_user_by(conn: &Connection, condition: &str, arg: &str) -> StoreResult<Option<LoginUser>> {
    let sql = format!(
        "SELECT id, role, status, provider, password, tfa_secret, email
         FROM directus_users WHERE {condition}"
    );
    Ok(query_one(conn, &sql, [arg], |r| {
        Ok(LoginUser {
            id: uuid_col(r, 0)?.unwrap_or_default(),
            email: r.get(6)?,
            role: uuid_col(r, 1)?,
            status: r.get(2)?,
            provider: r.get(3)?,
            password: r.get(4)?,
            tfa_secret: r.get(5)?,
        })
    })
    .optional()?)
}

fn family_by_id(conn: &Connection, id: Uuid) -> StoreResult<Option<Family>> {
    Ok(query_one(
        conn,
        "SELECT s.generation, s.expires, s.rotated_at, s.prev_rotated_at, u.id, u.role, u.status,
                s.token_hash
         FROM directus_sessions s JOIN directus_users u ON u.id = s.user
         WHERE s.family = ?1",
        [id.to_string()],
        |r| {
            Ok(Family {
                id,
                generation: u64::try_from(r.get::<_, i64>(0)?).unwrap_or_default(),
                token_hash: r.get(7)?,
                expires_ms: r.get(1)?,
                rotated_at_ms: r.get(2)?,
                prev_rotated_at_ms: r.get(3)?,
                user: Principal {
                    id: uuid_col(r, 4)?.unwrap_or_default(),
                    role: uuid_col(r, 5)?,
                    status: r.get(6)?,
                },
            })
        },
    )
    .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn read_items(&self, c: &'static Collection, q: &Query) -> StoreResult<Vec<Record>> {
        let q = q.clone();
        self.read(move |conn| read_rows(conn, c, &q)).await
    }

    async fn count_items(
        &self,
        c: &'static Collection,
        filter: Option<&Condition>,
    ) -> StoreResult<u64> {
        let mut args = Vec::new();
        let sql = format!(
            "SELECT COUNT(*) FROM \"{}\"{}",
            c.table,
            where_clause(filter, &mut args)
        );
        self.read(move |conn| {
            let n: i64 = conn.query_row(&sql, params_from_iter(args), |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or_default())
        })
        .await
    }

    async fn insert_item(
        &self,
        c: &'static Collection,
        values: Vec<(&'static Field, Value)>,
    ) -> StoreResult<()> {
        let cols: Vec<String> = values
            .iter()
            .map(|(f, _)| format!("\"{}\"", f.column))
            .collect();
        let marks = vec!["?"; values.len()].join(", ");
        let sql = format!(
            "INSERT INTO \"{}\" ({}) VALUES ({marks})",
            c.table,
            cols.join(", ")
        );
        let args: Vec<Sql> = values.iter().map(|(f, v)| to_sql(f.kind, v)).collect();
        self.write(move |tx| {
            exec(tx, &sql, params_from_iter(args))?;
            Ok(())
        })
        .await
    }

    async fn update_item(
        &self,
        c: &'static Collection,
        id: &str,
        values: Vec<(&'static Field, Value)>,
        end: EndSessions,
    ) -> StoreResult<bool> {
        let sets: Vec<String> = values
            .iter()
            .map(|(f, _)| format!("\"{}\" = ?", f.column))
            .collect();
        let mut args: Vec<Sql> = values.iter().map(|(f, v)| to_sql(f.kind, v)).collect();
        args.push(Sql::Text(id.to_string()));
        let sql = if sets.is_empty() {
            format!("SELECT COUNT(*) FROM \"{}\" WHERE id = ?", c.table)
        } else {
            format!(
                "UPDATE \"{}\" SET {} WHERE id = ?",
                c.table,
                sets.join(", ")
            )
        };
        let id = id.to_string();
        let is_users = std::ptr::eq(c, &USERS);
        self.write(move |tx| {
            let found = if sets.is_empty() {
                query_one(tx, &sql, params_from_iter(args), |r| r.get::<_, i64>(0))? > 0
            } else {
                exec(tx, &sql, params_from_iter(args))? > 0
            };
            if found && is_users {
                delete_user_sessions(tx, &id, &end)?;
            }
            Ok(found)
        })
        .await
    }

    async fn delete_item(&self, c: &'static Collection, id: &str) -> StoreResult<bool> {
        let sql = format!("DELETE FROM \"{}\" WHERE id = ?1", c.table);
        let id = id.to_string();
        self.write(move |tx| Ok(exec(tx, &sql, [id])? > 0)).await
    }

    async fn alias_values(&self, alias: &'static Alias, id: &str) -> StoreResult<Vec<Value>> {
        let sql = format!(
            "SELECT \"{}\" FROM \"{}\" WHERE \"{}\" = ?1 ORDER BY rowid",
            alias.value, alias.table, alias.foreign_key
        );
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([id], |r| Ok(from_sql(Kind::Uuid, r.get::<_, Sql>(0)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn login_user(&self, email_lower: &str) -> StoreResult<Option<LoginUser>> {
        let email = email_lower.to_string();
        self.read(move |conn| login_user_by(conn, "lower(email) = ?1", &email))
            .await
    }

    async fn principal(&self, id: Uuid) -> StoreResult<Option<Principal>> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, role, status FROM directus_users WHERE id = ?1")?;
            Ok(stmt.query_row([id.to_string()], principal_row).optional()?)
        })
        .await
    }

    async fn principal_by_token(&self, digest: &str) -> StoreResult<Option<Principal>> {
        let digest = digest.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, role, status FROM directus_users WHERE token_hash = ?1",
            )?;
            Ok(stmt.query_row([digest], principal_row).optional()?)
        })
        .await
    }

    async fn access_tree(&self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessTree> {
        self.read(move |conn| {
            let mut roles = Vec::new();
            if let Some(role) = role {
                let mut stmt = conn.prepare_cached(
                    "WITH RECURSIVE tree(id, parent, depth) AS (
                        SELECT id, parent, 0 FROM directus_roles WHERE id = ?1
                        UNION ALL
                        SELECT r.id, r.parent, t.depth + 1
                        FROM directus_roles r JOIN tree t ON r.id = t.parent
                        WHERE t.depth < 64
                     ) SELECT id FROM tree ORDER BY depth DESC",
                )?;
                let ids = stmt.query_map([role.to_string()], |r| uuid_col(r, 0))?;
                for id in ids {
                    if let Some(id) = id? {
                        if roles.contains(&id) {
                            return Err(StoreError::Backend("role tree has a cycle".into()));
                        }
                        roles.push(id);
                    }
                }
            }
            let mut policies = Vec::new();
            let mut push = |stmt: &mut rusqlite::CachedStatement<'_>,
                            arg: String,
                            direct: Option<Uuid>|
             -> StoreResult<()> {
                let rows = stmt.query_map([arg], |r| {
                    Ok((
                        uuid_col(r, 0)?.unwrap_or_default(),
                        r.get::<_, bool>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        uuid_col(r, 5)?,
                    ))
                })?;
                for row in rows {
                    let (id, admin, app, tfa, ip, via) = row?;
                    policies.push(PolicyGrant {
                        id,
                        admin_access: admin,
                        app_access: app,
                        enforce_tfa: tfa,
                        ip_access: ip,
                        on_direct_role: via.is_some() && via == direct,
                    });
                }
                Ok(())
            };
            const POLICY_COLS: &str =
                "SELECT p.id, p.admin_access, p.app_access, p.enforce_tfa, p.ip_access, a.role
                 FROM directus_access a JOIN directus_policies p ON p.id = a.policy";
            if roles.is_empty() {
                let mut stmt = conn.prepare_cached(&format!(
                    "{POLICY_COLS} WHERE a.role IS NULL AND a.user IS NULL AND ?1 = ?1
                     ORDER BY a.sort, a.rowid"
                ))?;
                push(&mut stmt, String::new(), None)?;
            } else {
                let mut stmt = conn.prepare_cached(&format!(
                    "{POLICY_COLS} WHERE a.role = ?1 ORDER BY a.sort, a.rowid"
                ))?;
                for r in &roles {
                    push(&mut stmt, r.to_string(), role)?;
                }
            }
            if let Some(user) = user {
                let mut stmt = conn.prepare_cached(&format!(
                    "{POLICY_COLS} WHERE a.user = ?1 ORDER BY a.sort, a.rowid"
                ))?;
                push(&mut stmt, user.to_string(), None)?;
            }
            Ok(AccessTree { roles, policies })
        })
        .await
    }

    async fn login_attempt(
        &self,
        user: Uuid,
        decide: AttemptDecision,
    ) -> StoreResult<Option<LoginState>> {
        self.write(move |tx| {
            let id = user.to_string();
            let state = query_one(
                tx,
                "SELECT status, failed_logins, login_locked_until FROM directus_users WHERE id = ?1",
                [&id],
                |r| {
                    Ok(LoginState {
                        status: r.get(0)?,
                        failed_logins: r.get(1)?,
                        locked_until_ms: r.get(2)?,
                    })
                },
            )
            .optional()?;
            let Some(state) = state else { return Ok(None) };
            match decide(&state) {
                AttemptChange::None => {}
                AttemptChange::Lock { until_ms } => {
                    exec(
                        tx,
                        "UPDATE directus_users SET login_locked_until = ?2 WHERE id = ?1",
                        params![id, until_ms],
                    )?;
                }
                AttemptChange::Suspend => {
                    exec(
                        tx,
                        "UPDATE directus_users SET status = 'suspended' WHERE id = ?1",
                        [&id],
                    )?;
                    delete_user_sessions(tx, &id, &EndSessions::All)?;
                }
            }
            Ok(Some(state))
        })
        .await
    }

    async fn record_login_failure(&self, user: Uuid) -> StoreResult<()> {
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE directus_users SET failed_logins = failed_logins + 1 WHERE id = ?1",
                [user.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn clear_login_failures(&self, user: Uuid) -> StoreResult<()> {
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE directus_users SET failed_logins = 0, login_locked_until = NULL
                 WHERE id = ?1",
                [user.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn user_summaries(&self) -> StoreResult<Vec<UserSummary>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, email, status, role, failed_logins, login_locked_until, last_access
                 FROM directus_users ORDER BY lower(email), id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(UserSummary {
                    id: uuid_col(r, 0)?.unwrap_or_default(),
                    email: r.get(1)?,
                    status: r.get(2)?,
                    role: uuid_col(r, 3)?,
                    failed_logins: r.get(4)?,
                    locked_until_ms: r.get(5)?,
                    last_access_ms: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn open_session(
        &self,
        s: NewSession,
        admit: AdmitDecision,
    ) -> StoreResult<Option<Opened>> {
        self.write(move |tx| {
            let user = s.user.to_string();
            let Some(found) = login_user_by(tx, "id = ?1", &user)? else {
                return Ok(None);
            };
            let Admission::Admit { forgive } = admit(&found) else {
                return Ok(None);
            };
            exec(
                tx,
                "INSERT INTO directus_sessions
                   (family, user, generation, token_hash, created, expires, ip, user_agent, origin)
                 VALUES (?1, ?2, 0, ?8, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.family.to_string(),
                    user,
                    s.now_ms,
                    s.expires_ms,
                    s.meta.ip,
                    s.meta.user_agent,
                    s.meta.origin,
                    s.token_hash
                ],
            )?;
            exec(
                tx,
                "UPDATE directus_users SET failed_logins = max(0, failed_logins - ?2),
                   login_locked_until = NULL, last_access = ?3
                 WHERE id = ?1",
                params![user, forgive, s.now_ms],
            )?;
            let mut evict = tx.prepare_cached(
                "DELETE FROM directus_sessions WHERE user = ?1 AND family NOT IN
                   (SELECT family FROM directus_sessions WHERE user = ?1
                    ORDER BY coalesce(rotated_at, created) DESC, family LIMIT ?2)
                 RETURNING family",
            )?;
            let evicted = evict
                .query_map(params![user, s.keep_at_most], |r| uuid_col(r, 0))?
                .filter_map(|r| r.transpose())
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Opened {
                user: Principal {
                    id: found.id,
                    role: found.role,
                    status: found.status,
                },
                evicted,
            }))
        })
        .await
    }

    async fn family(&self, id: Uuid) -> StoreResult<Option<Family>> {
        self.read(move |conn| family_by_id(conn, id)).await
    }

    async fn change_family(&self, id: Uuid, decide: FamilyDecision) -> StoreResult<Option<Family>> {
        self.write(move |tx| {
            let Some(family) = family_by_id(tx, id)? else {
                return Ok(None);
            };
            let key = id.to_string();
            let touched = match decide(&family) {
                FamilyChange::None => None,
                FamilyChange::End => {
                    exec(
                        tx,
                        "DELETE FROM directus_sessions WHERE family = ?1",
                        [&key],
                    )?;
                    None
                }
                FamilyChange::Advance {
                    now_ms,
                    expires_ms,
                    token_hash,
                    meta,
                } => {
                    exec(
                        tx,
                        "UPDATE directus_sessions SET generation = generation + 1,
                           token_hash = ?7, prev_rotated_at = rotated_at, rotated_at = ?2,
                           expires = ?3, ip = ?4, user_agent = ?5, origin = ?6
                         WHERE family = ?1",
                        params![
                            key,
                            now_ms,
                            expires_ms,
                            meta.ip,
                            meta.user_agent,
                            meta.origin,
                            token_hash
                        ],
                    )?;
                    Some(now_ms)
                }
                FamilyChange::Extend { now_ms, expires_ms } => {
                    exec(
                        tx,
                        "UPDATE directus_sessions SET expires = ?2 WHERE family = ?1",
                        params![key, expires_ms],
                    )?;
                    Some(now_ms)
                }
            };
            if let Some(now_ms) = touched {
                exec(
                    tx,
                    // A second's precision is plenty; skipping the write spares the users
                    // table a page write per refresh when one user refreshes often.
                    "UPDATE directus_users SET last_access = ?2
                     WHERE id = ?1 AND (last_access IS NULL OR last_access < ?2 - 1000)",
                    params![family.user.id.to_string(), now_ms],
                )?;
            }
            Ok(Some(family))
        })
        .await
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> StoreResult<u64> {
        self.write(move |tx| {
            let n = exec(
                tx,
                "DELETE FROM directus_sessions WHERE expires < ?1",
                [now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn user_count(&self) -> StoreResult<u64> {
        self.count_items(&USERS, None).await
    }

    async fn bootstrap(&self, b: Bootstrap) -> StoreResult<()> {
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO directus_roles (id, name, icon, description)
                 VALUES (?1, 'Administrator', 'verified', '$t:admin_description')",
                [b.role_id.to_string()],
            )?;
            exec(tx,
                "INSERT INTO directus_policies (id, name, icon, description, admin_access, app_access)
                 VALUES (?1, 'Administrator', 'verified', '$t:admin_description', 1, 1)",
                [b.policy_id.to_string()],
            )?;
            exec(tx,
                "INSERT INTO directus_access (id, role, user, policy, sort) VALUES (?1, ?2, NULL, ?3, 1)",
                params![b.access_id.to_string(), b.role_id.to_string(), b.policy_id.to_string()],
            )?;
            exec(tx,
                "INSERT INTO directus_users
                   (id, first_name, last_name, email, password, role, status, token_hash)
                 VALUES (?1, 'Admin', 'User', ?2, ?3, ?4, 'active', ?5)",
                params![
                    b.user_id.to_string(),
                    b.email,
                    b.password_hash,
                    b.role_id.to_string(),
                    b.token_hash
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientMeta;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn boot() -> Bootstrap {
        Bootstrap {
            role_id: Uuid::new_v4(),
            policy_id: Uuid::new_v4(),
            access_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            email: "Admin@Example.com".into(),
            password_hash: "$argon2id$x".into(),
            token_hash: Some("digest".into()),
        }
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_public_policy_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path).unwrap());
        let s = SqliteStore::open(&path).unwrap();
        let tree = s.access_tree(None, None).await.unwrap();
        assert!(tree.roles.is_empty());
        assert_eq!(tree.policies.len(), 1);
        assert_eq!(tree.policies[0].id.to_string(), crate::PUBLIC_POLICY_ID);
    }

    #[tokio::test]
    async fn bootstrap_gives_admin_tree_and_token_lookup() {
        let (_d, s) = store();
        let b = boot();
        s.bootstrap(b.clone()).await.unwrap();
        let u = s.login_user("admin@example.com").await.unwrap().unwrap();
        assert_eq!(u.id, b.user_id);
        let p = s.principal_by_token("digest").await.unwrap().unwrap();
        assert_eq!(p.role, Some(b.role_id));
        let tree = s.access_tree(p.role, Some(p.id)).await.unwrap();
        assert_eq!(tree.roles, vec![b.role_id]);
        assert!(tree.policies[0].admin_access && tree.policies[0].on_direct_role);
    }

    fn session(user: Uuid, family: Uuid) -> NewSession {
        NewSession {
            family,
            token_hash: "t0".into(),
            user,
            now_ms: 1_000,
            expires_ms: 10_000,
            meta: ClientMeta {
                ip: Some("127.0.0.1".into()),
                user_agent: Some("test".into()),
                origin: None,
            },
            keep_at_most: 2,
        }
    }

    #[tokio::test]
    async fn families_advance_extend_and_end_in_place() {
        let (_d, s) = store();
        let b = boot();
        s.bootstrap(b.clone()).await.unwrap();
        let fam = Uuid::new_v4();
        let opened = s
            .open_session(
                session(b.user_id, fam),
                Box::new(|_| Admission::Admit { forgive: 0 }),
            )
            .await
            .unwrap();
        assert_eq!(opened.map(|o| o.user.id), Some(b.user_id));
        let advance = |now: i64| -> FamilyDecision {
            Box::new(move |_| FamilyChange::Advance {
                now_ms: now,
                expires_ms: now + 10_000,
                token_hash: format!("t{now}"),
                meta: ClientMeta::default(),
            })
        };
        let before = s.change_family(fam, advance(2_000)).await.unwrap().unwrap();
        assert_eq!((before.generation, before.rotated_at_ms), (0, None));
        assert_eq!(before.token_hash, "t0");
        s.change_family(fam, advance(3_000)).await.unwrap();
        let f = s.family(fam).await.unwrap().unwrap();
        assert_eq!(f.generation, 2);
        assert_eq!(f.token_hash, "t3000");
        assert_eq!(f.rotated_at_ms, Some(3_000));
        assert_eq!(f.prev_rotated_at_ms, Some(2_000));
        assert_eq!(f.expires_ms, 13_000);
        assert_eq!(f.user.status, "active");
        s.change_family(
            fam,
            Box::new(|_| FamilyChange::Extend {
                now_ms: 4_000,
                expires_ms: 20_000,
            }),
        )
        .await
        .unwrap();
        let f = s.family(fam).await.unwrap().unwrap();
        assert_eq!((f.generation, f.expires_ms), (2, 20_000));
        assert_eq!(s.purge_expired_sessions(19_999).await.unwrap(), 0);
        s.change_family(fam, Box::new(|_| FamilyChange::End))
            .await
            .unwrap();
        assert!(s.family(fam).await.unwrap().is_none());
        assert!(
            s.change_family(fam, advance(5_000))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_user_keeps_at_most_its_most_recently_used_families() {
        let (_d, s) = store();
        let b = boot();
        s.bootstrap(b.clone()).await.unwrap();
        let families: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let open = |family: Uuid, now_ms: i64| {
            let s = s.clone();
            let new = NewSession {
                now_ms,
                ..session(b.user_id, family)
            };
            async move {
                s.open_session(new, Box::new(|_| Admission::Admit { forgive: 0 }))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        assert!(open(families[0], 1_000).await.evicted.is_empty());
        assert!(open(families[1], 2_000).await.evicted.is_empty());
        // The oldest family was refreshed since: the middle one is the least recently used.
        s.change_family(
            families[0],
            Box::new(|_| FamilyChange::Extend {
                now_ms: 2_500,
                expires_ms: 9_000,
            }),
        )
        .await
        .unwrap();
        s.change_family(
            families[0],
            Box::new(|_| FamilyChange::Advance {
                now_ms: 2_600,
                expires_ms: 9_000,
                token_hash: "t1".into(),
                meta: ClientMeta::default(),
            }),
        )
        .await
        .unwrap();
        assert_eq!(open(families[2], 3_000).await.evicted, [families[1]]);
        assert!(s.family(families[0]).await.unwrap().is_some());
        assert!(s.family(families[1]).await.unwrap().is_none());
        assert!(s.family(families[2]).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn refused_admission_opens_nothing_and_attempts_count() {
        let (_d, s) = store();
        let b = boot();
        s.bootstrap(b.clone()).await.unwrap();
        let fam = Uuid::new_v4();
        let refused = s
            .open_session(session(b.user_id, fam), Box::new(|_| Admission::Refuse))
            .await
            .unwrap();
        assert!(refused.is_none());
        assert!(s.family(fam).await.unwrap().is_none());
        for _ in 0..3 {
            s.record_login_failure(b.user_id).await.unwrap();
        }
        s.login_attempt(
            b.user_id,
            Box::new(|_| AttemptChange::Lock { until_ms: 99 }),
        )
        .await
        .unwrap();
        let state = s
            .login_attempt(b.user_id, Box::new(|_| AttemptChange::None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((state.failed_logins, state.locked_until_ms), (3, Some(99)));
        // A success forgives the failures it was told of, lifts the lock, and nothing else.
        s.open_session(
            session(b.user_id, fam),
            Box::new(|_| Admission::Admit { forgive: 2 }),
        )
        .await
        .unwrap();
        let state = s
            .login_attempt(b.user_id, Box::new(|_| AttemptChange::Suspend))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((state.failed_logins, state.locked_until_ms), (1, None));
        // Suspension ends the user's sessions in the same transaction.
        assert!(s.family(fam).await.unwrap().is_none());
        let summary = &s.user_summaries().await.unwrap()[0];
        assert_eq!(
            (summary.status.as_str(), summary.failed_logins),
            ("suspended", 1)
        );
        s.clear_login_failures(b.user_id).await.unwrap();
        assert_eq!(s.user_summaries().await.unwrap()[0].failed_logins, 0);
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_its_batch_neighbours() {
        let (_d, s) = store();
        s.bootstrap(boot()).await.unwrap();
        let id = USERS.field("id").unwrap();
        let email = USERS.field("email").unwrap();
        let user = |mail: &str| {
            vec![
                (id, Value::String(Uuid::new_v4().to_string())),
                (email, Value::String(mail.into())),
            ]
        };
        let writes: Vec<_> = (0..20)
            .map(|i| {
                let mail = if i % 2 == 0 {
                    "admin@example.com".to_owned()
                } else {
                    format!("u{i}@example.com")
                };
                let s = s.clone();
                let values = user(&mail);
                tokio::spawn(async move { s.insert_item(&USERS, values).await })
            })
            .collect();
        let mut ok = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert!(
                    matches!(e, StoreError::Conflict { field: "email" }),
                    "{e:?}"
                ),
            }
        }
        assert_eq!(ok, 10);
        assert_eq!(s.user_count().await.unwrap(), 11);
    }

    #[tokio::test]
    async fn duplicate_token_and_email_are_conflicts() {
        let (_d, s) = store();
        s.bootstrap(boot()).await.unwrap();
        let mut other = boot();
        other.email = "other@example.com".into();
        let err = s.bootstrap(other).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "token" }),
            "{err:?}"
        );
        let id = USERS.field("id").unwrap();
        let email = USERS.field("email").unwrap();
        let err = s
            .insert_item(
                &USERS,
                vec![
                    (id, Value::String(Uuid::new_v4().to_string())),
                    (email, Value::String("ADMIN@example.com".into())),
                ],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "email" }),
            "{err:?}"
        );
    }
}
