//! The PostgreSQL engine: a bounded pool of synchronous connections used from tokio's
//! blocking threads, each with its own prepared-statement cache; how values cross the wire in
//! both directions; which failures mean "the database is unreachable"; and the migrations,
//! applied under an advisory lock so that instances starting together take turns. Every
//! statement comes from `tessera-sql`.

mod changes;
pub mod scratch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};
use tessera_sql::{Cell, Conn, Dialect, Engine, Param, Row, Scalar, SqlStore, conflict_field};
use tessera_store::{Change, StoreError, StoreResult};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_tfa.sql")),
    (3, include_str!("../migrations/postgres/0003_limits.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_user_count.sql"),
    ),
    (5, include_str!("../migrations/postgres/0005_user_text.sql")),
    (
        6,
        include_str!("../migrations/postgres/0006_user_sorts.sql"),
    ),
    (
        7,
        include_str!("../migrations/postgres/0007_user_version.sql"),
    ),
];

/// The advisory lock migrations are applied under.
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_616d;

/// How long work waits for a pooled connection before it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(15);

/// An idle connection unused for this long is checked before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(10);

/// How long that check may take before the connection counts as dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Prepared statements a connection keeps at most; past it the cache starts over.
const MAX_STATEMENTS: usize = 256;

/// How to reach the database and how many connections to keep.
#[derive(Clone)]
pub struct Settings {
    pub config: postgres::Config,
    /// `DB_POOL__MAX`: connections open at once at most; further work waits for one.
    pub pool_max: usize,
    /// `DB_POOL__MIN`: connections opened at start and kept idle.
    pub pool_min: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("pool_max", &self.pool_max)
            .field("pool_min", &self.pool_min)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL engine under a [`SqlStore`].
#[derive(Clone)]
pub struct Postgres {
    pool: Arc<Pool>,
}

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<Postgres>;

struct Pool {
    settings: Settings,
    /// Tags what this engine announces, so that its own listener skips it.
    instance: String,
    /// Hears other instances; started by the first subscriber.
    listener: std::sync::OnceLock<changes::Listener>,
    /// Whether this instance is for certain the only one on the database (kept by the
    /// listener; never without one).
    alone: Arc<std::sync::atomic::AtomicBool>,
    idle: Mutex<Vec<Pooled>>,
    /// One permit per connection that may be open.
    permits: Arc<tokio::sync::Semaphore>,
}

struct Pooled {
    client: Client,
    statements: HashMap<String, Statement>,
    /// A transaction on it could not be closed: it must not be used again.
    broken: bool,
    /// When it was last given back to the pool.
    used: Instant,
    /// A statement failed in the current transaction: PostgreSQL has aborted it, and would
    /// answer a COMMIT by rolling back.
    failed: bool,
}

/// Whether an error means the database (or the way to it) is gone, rather than a statement or
/// a value being wrong.
fn unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    // No server error: unreachable only if the socket failed (refused, reset, timed out); a
    // value that could not be bound or read is our error, not the database's absence.
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

fn err(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict {
                field: conflict_field(db.constraint().unwrap_or_default()),
            };
        }
        if *db.code() == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::MissingReference { field: "reference" };
        }
    }
    if unreachable(&e) {
        StoreError::Unavailable(e.to_string())
    } else if let Some(db) = e.as_db_error() {
        // The server's own words, not the driver's bare "db error".
        StoreError::Backend(format!("{} ({})", db.message(), db.code().code()))
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// How long a dead peer may stay silent before its connection counts as lost, and how long a
/// statement may run: a database that stops answering (packets dropped, not refused) turns
/// into 503s within this time instead of hung requests.
const SILENCE: Duration = Duration::from_secs(10);

/// Statements, lock waits included, are cancelled after this long.
const STATEMENT_TIMEOUT: &str = "30s";

fn connect(settings: &Settings) -> StoreResult<Pooled> {
    let mut config = settings.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config
        .keepalives(true)
        .keepalives_idle(SILENCE)
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(SILENCE);
    let options = format!(
        "{} -c statement_timeout={STATEMENT_TIMEOUT} -c idle_in_transaction_session_timeout=60s",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim());
    let client = config
        .connect(NoTls)
        .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
    Ok(Pooled {
        client,
        statements: HashMap::new(),
        broken: false,
        used: Instant::now(),
        failed: false,
    })
}

fn migrate(conn: &mut Client) -> Result<(), postgres::Error> {
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS tessera_migrations (
            version bigint PRIMARY KEY NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    for (version, sql) in MIGRATIONS {
        let mut tx = conn.transaction()?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM tessera_migrations WHERE version = $1",
                &[version],
            )?
            .is_some();
        if !done {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO tessera_migrations (version) VALUES ($1)",
                &[version],
            )?;
            tracing::info!(version, "applied migration");
        }
        tx.commit()?;
    }
    Ok(())
}

impl Postgres {
    /// Connects, brings the schema up to date under the migration lock, and opens
    /// `pool_min` connections. Blocks; call it before serving or from a blocking thread.
    pub fn open(settings: Settings) -> StoreResult<PostgresStore> {
        let mut first = connect(&settings)?;
        let c = &mut first.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(err)?;
        let migrated = migrate(c);
        let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        migrated.map_err(err)?;
        unlocked.map_err(err)?;
        let mut idle = vec![first];
        while idle.len() < settings.pool_min.min(settings.pool_max.max(1)) {
            idle.push(connect(&settings)?);
        }
        Ok(Self::pooled(settings, idle))
    }

    /// Another program's database (a Directus one, for `tessera migrate-data`), as it is: no
    /// migration is applied, and only reads are made of it.
    pub fn open_as_is(settings: Settings) -> StoreResult<PostgresStore> {
        let first = connect(&settings)?;
        Ok(Self::pooled(settings, vec![first]))
    }

    fn pooled(settings: Settings, idle: Vec<Pooled>) -> PostgresStore {
        let max = settings.pool_max.max(1);
        SqlStore::new(Self {
            pool: Arc::new(Pool {
                settings,
                instance: uuid::Uuid::new_v4().to_string(),
                listener: std::sync::OnceLock::new(),
                alone: Arc::default(),
                idle: Mutex::new(idle),
                permits: Arc::new(tokio::sync::Semaphore::new(max)),
            }),
        })
    }

    /// Applies the migrations and returns; `tessera migrate`.
    pub fn migrate(settings: Settings) -> StoreResult<()> {
        Self::open(Settings {
            pool_min: 1,
            ..settings
        })
        .map(drop)
    }

    /// Runs `f` on a pooled connection on a blocking thread; a connection that broke is not
    /// returned to the pool, so the next use opens a fresh one.
    async fn with<R, F>(&self, transaction: bool, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        let pool = self.pool.clone();
        // Every connection busy for this long means the database is not keeping up (or not
        // answering): say so rather than queue without end.
        let permit = tokio::time::timeout(POOL_WAIT, pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::Unavailable("no database connection came free".into()))?
            .map_err(|_| StoreError::Backend("the pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.checkout()?;
            let out = run(&mut conn, transaction, f);
            if conn.client.is_closed() {
                // The database went away: the idle connections went with it. Dropping them
                // now spares the next requests a failure each once it is back.
                let stale = std::mem::take(&mut *pool.idle.lock().map_err(poisoned)?);
                drop(stale);
            }
            if !conn.client.is_closed() && !conn.broken {
                conn.used = Instant::now();
                pool.idle.lock().map_err(poisoned)?.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

impl Pool {
    /// An idle connection that still works, or a new one. One idle for longer than
    /// [`CHECK_AFTER_IDLE`] is asked first: the server may have restarted meanwhile.
    fn checkout(&self) -> StoreResult<Pooled> {
        loop {
            let Some(mut c) = self.idle.lock().map_err(poisoned)?.pop() else {
                return connect(&self.settings);
            };
            if c.client.is_closed() {
                continue;
            }
            if c.used.elapsed() < CHECK_AFTER_IDLE || c.client.is_valid(CHECK_TIMEOUT).is_ok() {
                return Ok(c);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a synchronous connection blocks on the driver's own runtime, which must not
        // happen on an async worker: close them on a thread of their own.
        let idle = self.idle.get_mut().map(std::mem::take).unwrap_or_default();
        if !idle.is_empty() {
            std::thread::spawn(move || drop(idle));
        }
    }
}

/// Runs `f` on one connection, inside BEGIN … COMMIT when `transaction`.
fn run<R>(
    conn: &mut Pooled,
    transaction: bool,
    f: impl FnOnce(&mut dyn Conn) -> StoreResult<R>,
) -> StoreResult<R> {
    if !transaction {
        return f(&mut Pgc(conn));
    }
    conn.client.batch_execute("BEGIN").map_err(err)?;
    conn.failed = false;
    let out = f(&mut Pgc(conn)).and_then(|out| {
        if conn.failed {
            Err(StoreError::Backend(
                "a statement failed inside the transaction".into(),
            ))
        } else {
            Ok(out)
        }
    });
    match out {
        Ok(out) => match conn.client.batch_execute("COMMIT") {
            Ok(()) => Ok(out),
            Err(e) => {
                conn.broken = true;
                Err(err(e))
            }
        },
        Err(e) => {
            if conn.client.batch_execute("ROLLBACK").is_err() {
                conn.broken = true;
            }
            Err(e)
        }
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Backend("connection pool lock poisoned".into())
}

impl Engine for Postgres {
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        self.with(false, f).await
    }

    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        self.with(true, f).await
    }

    async fn write_each<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> StoreResult<R> + Send + 'static,
    {
        self.with(false, f).await
    }

    fn name(&self) -> &'static str {
        "pg"
    }

    fn readers(&self) -> usize {
        self.pool.settings.pool_max.max(1)
    }

    fn pool_use(&self) -> (usize, usize) {
        let max = self.pool.settings.pool_max.max(1);
        (max - self.pool.permits.available_permits().min(max), max)
    }

    fn writers(&self) -> usize {
        self.pool.settings.pool_max.max(1)
    }

    fn descriptors(&self) -> usize {
        // The pool, and the connection that hears other instances.
        self.pool.settings.pool_max.max(1) + 1
    }

    async fn announce(&self, change: Change) -> StoreResult<()> {
        let payload = changes::tagged(&self.pool.instance, change);
        self.with(false, move |x| {
            let params = [
                Param::String(Some(changes::CHANNEL.to_owned())),
                Param::String(Some(payload)),
            ];
            // `pg_notify` returns `void`, which no row reader takes: run it, read nothing.
            x.execute("SELECT pg_notify($1, $2)", &params).map(drop)
        })
        .await
    }

    fn exclusive(&self) -> bool {
        self.pool.alone.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        let pool = &self.pool;
        let listener = pool.listener.get_or_init(|| {
            changes::Listener::start(
                pool.settings.clone(),
                pool.instance.clone(),
                pool.alone.clone(),
            )
        });
        Some(listener.subscribe())
    }
}

/// A pooled connection speaking for the shared SQL layer.
struct Pgc<'a>(&'a mut Pooled);

impl Pgc<'_> {
    /// Notes a failed statement and classifies its error.
    fn failed(&mut self, e: postgres::Error) -> StoreError {
        self.0.failed = true;
        err(e)
    }

    fn prepare(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(s) = self.0.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.0.client.prepare(sql).map_err(|e| self.failed(e))?;
        if self.0.statements.len() >= MAX_STATEMENTS {
            self.0.statements.clear();
        }
        self.0.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// A parameter, bound as whatever type the statement expects of it.
#[derive(Debug)]
struct Bound(Scalar);

impl ToSql for Bound {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let bad = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {self:?} as {ty}").into()
        };
        match (&self.0, ty) {
            (Scalar::Null, _) => Ok(IsNull::Yes),
            (Scalar::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Scalar::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Scalar::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Scalar::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Scalar::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Scalar::Int(i), _) => i.to_string().to_sql(ty, out),
            (Scalar::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Scalar::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Scalar::Real(f), &Type::INT8) if f.fract() == 0.0 => (*f as i64).to_sql(ty, out),
            (Scalar::Real(_), &Type::INT8 | &Type::INT4 | &Type::BOOL) => Err(bad()),
            (Scalar::Real(f), _) => f.to_string().to_sql(ty, out),
            (Scalar::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Scalar::Bool(b), &Type::INT8) => i64::from(*b).to_sql(ty, out),
            (Scalar::Bool(b), _) => b.to_string().to_sql(ty, out),
            (Scalar::Text(s), &Type::INT8) => {
                s.trim().parse::<i64>().map_err(|_| bad())?.to_sql(ty, out)
            }
            (Scalar::Text(s), &Type::INT4) => {
                s.trim().parse::<i32>().map_err(|_| bad())?.to_sql(ty, out)
            }
            (Scalar::Text(s), &Type::FLOAT8) => {
                s.trim().parse::<f64>().map_err(|_| bad())?.to_sql(ty, out)
            }
            (Scalar::Text(s), &Type::UUID) => uuid::Uuid::parse_str(s)?.to_sql(ty, out),
            (Scalar::Text(s), &Type::BOOL) => match s.as_str() {
                "true" | "1" => true.to_sql(ty, out),
                "false" | "0" => false.to_sql(ty, out),
                _ => Err(bad()),
            },
            (Scalar::Text(s), _) => s.to_sql(ty, out),
            (Scalar::Bytes(b), _) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn millis(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn cell(row: &postgres::Row, i: usize) -> StoreResult<Cell> {
    let ty = row.columns()[i].type_().clone();
    let got = match ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map(|v| v.map(Cell::Bool)),
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real)),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|v| Cell::Real(v.into()))),
        // Types Tessera's own schema does not use, found in other programs' databases (a
        // Directus one being imported): ids as text, JSON as its text, times as milliseconds.
        Type::UUID => row
            .try_get::<_, Option<uuid::Uuid>>(i)
            .map(|v| v.map(|v| Cell::Text(v.to_string()))),
        Type::JSON | Type::JSONB => row
            .try_get::<_, Option<serde_json::Value>>(i)
            .map(|v| v.map(|v| Cell::Text(v.to_string()))),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<time::OffsetDateTime>>(i)
            .map(|v| v.map(|v| Cell::Int(millis(v)))),
        Type::TIMESTAMP => row
            .try_get::<_, Option<time::PrimitiveDateTime>>(i)
            .map(|v| v.map(|v| Cell::Int(millis(v.assume_utc())))),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(Cell::Text)),
    };
    Ok(got.map_err(err)?.unwrap_or(Cell::Null))
}

impl Conn for Pgc<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> StoreResult<Vec<Row>> {
        let stmt = self.prepare(sql)?;
        let bound: Vec<Bound> = params.iter().map(|p| Bound(p.into())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as _).collect();
        let rows = self
            .0
            .client
            .query(&stmt, &refs)
            .map_err(|e| self.failed(e))?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| cell(r, i)).collect())
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> StoreResult<u64> {
        let stmt = self.prepare(sql)?;
        let bound: Vec<Bound> = params.iter().map(|p| Bound(p.into())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as _).collect();
        self.0
            .client
            .execute(&stmt, &refs)
            .map_err(|e| self.failed(e))
    }

    fn columns(&mut self, table: &str) -> StoreResult<Option<Vec<String>>> {
        let sql = format!("SELECT * FROM \"{}\" LIMIT 0", table.replace('"', "\"\""));
        match self.0.client.prepare(&sql) {
            Ok(stmt) => Ok(Some(
                stmt.columns().iter().map(|c| c.name().to_owned()).collect(),
            )),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    fn serialize(&mut self, key: i64) -> StoreResult<()> {
        self.0
            .client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
            .map_err(|e| {
                self.0.failed = true;
                err(e)
            })?;
        Ok(())
    }
}
