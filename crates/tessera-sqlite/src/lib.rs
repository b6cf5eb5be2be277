//! The SQLite engine: WAL, a small pool of readers on tokio's blocking pool, and one writer
//! thread that commits queued writes in groups (each in its own savepoint), so async workers
//! never wait on the database and concurrent refreshes share a commit. Owns the SQLite
//! migrations and how values cross rusqlite; every statement comes from `tessera-sql`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::types::{Value as Sql, ValueRef};
use tessera_sql::{Cell, Conn, Dialect, Engine, Param, Row, Scalar, SqlStore, conflict_field};
use tessera_store::{StoreError, StoreResult};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_session_families.sql"),
    ),
    (3, include_str!("../migrations/sqlite/0003_tfa.sql")),
    (4, include_str!("../migrations/sqlite/0004_limits.sql")),
    (5, include_str!("../migrations/sqlite/0005_user_count.sql")),
    (6, include_str!("../migrations/sqlite/0006_user_text.sql")),
    (7, include_str!("../migrations/sqlite/0007_user_sorts.sql")),
    (
        8,
        include_str!("../migrations/sqlite/0008_user_version.sql"),
    ),
];

const MAX_IDLE_READERS: usize = 8;

/// Reader connections open at once at most (each holds three files: database, WAL, index);
/// further reads wait for one.
pub const MAX_READERS: usize = 16;

/// The SQLite engine under a [`SqlStore`].
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

/// The store on SQLite.
pub type SqliteStore = SqlStore<Sqlite>;

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

/// A rusqlite error as a store error: constraint failures become conflicts and missing
/// references, the rest backend failures.
fn err(e: rusqlite::Error) -> StoreError {
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
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    // LIKE compares case as PostgreSQL's does; `_icontains` folds case itself.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = 268435456;
         PRAGMA cache_size = -16384;
         PRAGMA case_sensitive_like = ON;",
    )
    .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    migrate_all(conn).map_err(err)
}

/// Applies each migration not yet applied, in its own IMMEDIATE transaction: a second process
/// migrating the same file waits for the first and then finds the work done.
fn migrate_all(conn: &mut Connection) -> rusqlite::Result<()> {
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

impl Sqlite {
    /// Opens (creating if needed, readable by its owner only) the database file and brings
    /// its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let mut writer = open(&path)?;
        migrate(&mut writer)?;
        // Commits never checkpoint inline: a background thread copies the WAL back, and the
        // writer only restarts it once that is (nearly) done; see `checkpointer`.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;")
            .map_err(err)?;
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
        Ok(SqlStore::new(Self { inner }))
    }
}

impl Engine for Sqlite {
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
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
            let out = f(&mut Sqlc(&conn));
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
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Typed {
            f: Some(move |conn: &Connection| f(&mut Sqlc(conn))),
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

    async fn write_each<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        // The writer thread runs it inside its batch transaction, alone among writers.
        self.write(f).await
    }

    fn name(&self) -> &'static str {
        "sqlite3"
    }

    fn readers(&self) -> usize {
        MAX_READERS
    }

    fn pool_use(&self) -> (usize, usize) {
        // The readers; the writer thread is always there.
        let free = self.inner.reading.available_permits().min(MAX_READERS);
        (MAX_READERS - free, MAX_READERS)
    }

    fn writers(&self) -> usize {
        // One writer thread; what waits for it is committed together anyway.
        1
    }

    fn descriptors(&self) -> usize {
        // Each connection holds the database, its WAL and its index; plus the writer and the
        // checkpointer.
        3 * (MAX_READERS + 2)
    }
}

/// A rusqlite connection speaking for the shared SQL layer.
struct Sqlc<'a>(&'a Connection);

/// A parameter as rusqlite binds it (booleans as 0/1).
fn to_sql(p: &Param) -> Sql {
    match Scalar::from(p) {
        Scalar::Null => Sql::Null,
        Scalar::Int(i) => Sql::Integer(i),
        Scalar::Bool(b) => Sql::Integer(i64::from(b)),
        Scalar::Real(r) => Sql::Real(r),
        Scalar::Text(t) => Sql::Text(t),
        Scalar::Bytes(b) => Sql::Blob(b),
    }
}

fn cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(r) => Cell::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Cell::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

impl Conn for Sqlc<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> StoreResult<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql).map_err(err)?;
        let width = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            out.push(
                (0..width)
                    .map(|i| r.get_ref(i).map(cell))
                    .collect::<Result<_, _>>()
                    .map_err(err)?,
            );
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> StoreResult<u64> {
        let n = self
            .0
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params.iter().map(to_sql))))
            .map_err(err)?;
        Ok(n as u64)
    }

    fn columns(&mut self, table: &str) -> StoreResult<Option<Vec<String>>> {
        let sql = format!("SELECT * FROM \"{}\" LIMIT 0", table.replace('"', "\"\""));
        match self.0.prepare(&sql) {
            Ok(stmt) => Ok(Some(
                stmt.column_names().into_iter().map(str::to_owned).collect(),
            )),
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.starts_with("no such table") => {
                Ok(None)
            }
            Err(e) => Err(err(e)),
        }
    }

    fn serialize(&mut self, _key: i64) -> StoreResult<()> {
        // One writer thread: writes already run one at a time.
        Ok(())
    }
}

/// Runs a statement through the connection's statement cache.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Backend("connection lock poisoned".into())
}

/// Another program's SQLite database (a Directus one, for `tessera migrate-data`), opened
/// read-only and as it is: no pragma, no migration, no write.
pub struct SqliteFile {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteFile {
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqlStore<SqliteFile>> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        Ok(SqlStore::new(Self {
            conn: Arc::new(Mutex::new(conn)),
        }))
    }
}

fn read_only() -> StoreError {
    StoreError::Refused
}

impl Engine for SqliteFile {
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(poisoned)?;
            f(&mut Sqlc(&conn))
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn write<R, F>(&self, _f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        Err(read_only())
    }

    async fn write_each<R, F>(&self, _f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        Err(read_only())
    }

    fn name(&self) -> &'static str {
        "sqlite3"
    }

    fn pool_use(&self) -> (usize, usize) {
        (0, 1)
    }

    fn readers(&self) -> usize {
        1
    }

    fn writers(&self) -> usize {
        1
    }

    fn descriptors(&self) -> usize {
        3
    }
}
