//! `tessera-bench --scale`: the same server at 100, 100k and 1M users (with 100, 100k and 2M
//! live sessions), on SQLite and on PostgreSQL. Each data set is built by bulk SQL in the shape
//! the API writes (every user in one role, one shared password hash, random ids), then the
//! server starts on it and each query the scale issue names is timed (median of a few runs,
//! one at a time), next to refresh and `/users/me` rates and the server's memory. The sizes
//! can be narrowed with `SCALE_SIZES` (comma-separated).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use argon2::password_hash::PasswordHasher;
use serde_json::{Value, json};

use crate::{
    SECRET, STATIC_TOKEN, Server, login, ping, postgres, prepare_refresh_tokens, proc_kb,
    refresh_load, sqlite_env, tessera_env, wrk,
};

/// Runs of each timed request; the median is reported.
const RUNS: usize = 7;

/// Length of each rate measurement.
const RATE_SECS: u64 = 5;

/// The term the text queries look for: one user at 100k and 1M, none at 100.
const TERM: &str = "er4711@";

/// One engine and size, measured.
struct Column {
    label: String,
    cells: Vec<(&'static str, String)>,
}

/// Where a data set lives.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(Box<tessera_postgres::scratch::Scratch>),
}

impl Db {
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Db::Sqlite(path) => sqlite_env(path),
            Db::Postgres(db) => tessera_env(&[
                ("DB_CLIENT", "pg".into()),
                ("DB_CONNECTION_STRING", db.url()),
                ("DB_POOL__MAX", postgres::CONNECTIONS.to_string()),
            ]),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    /// Inserts `users` users into role `role` and `sessions` live sessions spread over them.
    fn load(&self, role: &str, users: usize, sessions: usize) -> Result<()> {
        let hash = tessera_core::password::HashSettings::default()
            .hasher()
            .map_err(anyhow::Error::msg)?
            .hash_password(b"scale-password-1")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        match self {
            Db::Sqlite(path) => {
                let mut c = rusqlite::Connection::open(path)?;
                c.busy_timeout(Duration::from_secs(30))?;
                let tx = c.transaction()?;
                tx.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO directus_users (id, first_name, last_name, email, password,
                                                 status, role, provider, text_direction,
                                                 last_access)
                     SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2)))
                              || '-4' || substr(lower(hex(randomblob(2))), 2)
                              || '-8' || substr(lower(hex(randomblob(2))), 2)
                              || '-' || lower(hex(randomblob(6))),
                            'First' || i, 'Last' || (i % 997),
                            'user' || i || '@scale.example.com', ?2, 'active', ?3, 'default',
                            'auto', ?4 - i * 1000
                     FROM n",
                    rusqlite::params![users as i64, hash, role, now],
                )?;
                tx.execute(
                    "INSERT INTO directus_sessions (family, user, generation, token_hash,
                                                    created, expires)
                     SELECT lower(hex(randomblob(16))), id, 0, lower(hex(randomblob(32))), ?1,
                            ?2
                     FROM directus_users, (SELECT 1 AS k UNION ALL SELECT 2)
                     WHERE role = ?3 LIMIT ?4",
                    rusqlite::params![now, now + 86_400_000, role, sessions as i64],
                )?;
                tx.commit()?;
                c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            }
            Db::Postgres(db) => {
                let mut c = db.config().connect(::postgres::NoTls)?;
                c.execute(
                    "INSERT INTO directus_users (id, first_name, last_name, email, password,
                                                 status, role, provider, text_direction,
                                                 last_access)
                     SELECT gen_random_uuid()::text, 'First' || i, 'Last' || (i % 997),
                            'user' || i || '@scale.example.com', $2, 'active', $3, 'default',
                            'auto', $4 - i * 1000
                     FROM generate_series(1, $1::bigint) AS i",
                    &[&(users as i64), &hash, &role, &now],
                )?;
                c.execute(
                    "INSERT INTO directus_sessions (family, \"user\", generation, token_hash,
                                                    created, expires)
                     SELECT gen_random_uuid()::text, id, 0,
                            md5(random()::text) || md5(random()::text), $1, $2
                     FROM directus_users, (VALUES (1), (2)) AS k(k)
                     WHERE role = $3 LIMIT $4",
                    &[&now, &(now + 86_400_000), &role, &(sessions as i64)],
                )?;
                // What autovacuum would do shortly after a load this size.
                for table in ["directus_users", "directus_sessions"] {
                    c.execute(&format!("VACUUM ANALYZE {table}"), &[])?;
                }
            }
        }
        Ok(())
    }

    /// Live refresh tokens of `user`, `n` of them.
    fn tokens(&self, user: &str, n: usize) -> Result<Vec<String>> {
        match self {
            Db::Sqlite(path) => prepare_refresh_tokens(path, user, n),
            Db::Postgres(db) => postgres::prepare_refresh_tokens(db, SECRET, user, n),
        }
    }
}

/// Runs `f` on a thread of its own: the synchronous PostgreSQL driver runs a runtime of its
/// own, which cannot start inside this one.
fn aside<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("bulk work panicked"))?
    })
}

/// The median of `runs` timings of `f`, in milliseconds.
async fn median_ms<F, Fut>(runs: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(f().await?.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One request as the admin; its time, after checking it succeeded.
async fn timed(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<(Duration, Value)> {
    let mut req = http.request(method, url).bearer_auth(STATIC_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let start = Instant::now();
    let res = req.send().await?;
    let status = res.status();
    let bytes = res.bytes().await?;
    let took = start.elapsed();
    if !status.is_success() {
        bail!("{url}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((took, body))
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// Starts the server on `db` and waits for its first ping: the server and the time it took.
fn start(tessera: &Path, db: &Db, work: &Path) -> Result<(Server, f64)> {
    let begun = Instant::now();
    let t = Server::spawn(tessera, &["serve"], &db.env(), work)?;
    while !ping(t.addr()) {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((t, begun.elapsed().as_secs_f64() * 1000.0))
}

/// Builds the data set of `users` users on `db` and measures it.
async fn measure(
    http: &reqwest::Client,
    tessera: &Path,
    db: Db,
    work: &Path,
    users: usize,
) -> Result<Column> {
    let sessions = if users >= 1_000_000 { 2 * users } else { users };
    let label = format!("{} {}", db.name(), size_label(users));
    eprintln!("scale: {label}: loading…");
    // A first start migrates and makes the admin; the role is made as the API makes it.
    let (t, _) = start(tessera, &db, work)?;
    let (_, role) = timed(
        http,
        reqwest::Method::POST,
        &format!("{}/roles", t.url),
        Some(json!({"name": "Scale"})),
    )
    .await?;
    let role = role["data"]["id"].as_str().context("role id")?.to_owned();
    t.stop();
    let loaded = Instant::now();
    aside(|| db.load(&role, users, sessions))?;
    let load_secs = loaded.elapsed().as_secs_f64();

    let (t, start_ms) = start(tessera, &db, work)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = proc_kb(t.pid(), "VmRSS");
    let mut cells = vec![
        ("data set built in", format!("{load_secs:.0} s")),
        ("start → first ping", ms(start_ms)),
        ("RSS idle after start", format!("{} MB", idle_rss / 1024)),
    ];
    let half = users / 2;
    let gets: [(&'static str, String); 7] = [
        (
            "`filter[email][_contains]`",
            format!("/users?filter[email][_contains]={TERM}&limit=25"),
        ),
        ("`search`", format!("/users?search={TERM}&limit=25")),
        ("`sort=-email`", "/users?sort=-email&limit=25".into()),
        ("`sort=last_name`", "/users?sort=last_name&limit=25".into()),
        (
            "`sort=-last_access`",
            "/users?sort=-last_access&limit=25".into(),
        ),
        (
            "`meta=total_count`",
            "/users?meta=total_count&limit=1".into(),
        ),
        ("`GET /roles`", "/roles".into()),
    ];
    for (name, path) in gets {
        let url = format!("{}{}", t.url, path.replace('[', "%5B").replace(']', "%5D"));
        let m = median_ms(RUNS, || async {
            Ok(timed(http, reqwest::Method::GET, &url, None).await?.0)
        })
        .await?;
        cells.push((name, ms(m)));
    }
    // Deep pages: the first read of one walks its offset; each next page of a walk starts
    // where the one before it ended, and costs what the same walk near the start costs. Each
    // page of a walk reads rows no earlier request read (the first pages above repeat one).
    for (sort, first, deep, shallow) in [
        (
            "",
            "`offset=n/2` (by id), first read",
            "`offset=n/2` (by id), each next page",
            "`offset=25` (by id), each next page",
        ),
        (
            "sort=email&",
            "`sort=email&offset=n/2`, first read",
            "`sort=email&offset=n/2`, each next page",
            "`sort=email&offset=25`, each next page",
        ),
    ] {
        let page = |offset: usize| format!("{}/users?{sort}offset={offset}&limit=25", t.url);
        let (cold, _) = timed(http, reqwest::Method::GET, &page(half), None).await?;
        cells.push((first, ms(cold.as_secs_f64() * 1000.0)));
        for (name, from) in [(deep, half), (shallow, 0)] {
            let mut k = 0;
            let walk = median_ms(RUNS, || {
                k += 1;
                let url = page(from + 25 * k);
                async move { Ok(timed(http, reqwest::Method::GET, &url, None).await?.0) }
            })
            .await?;
            cells.push((name, ms(walk)));
        }
    }
    // The same page as a client pages by key: the e-mail the previous page ended with.
    let (_, at) = timed(
        http,
        reqwest::Method::GET,
        &format!(
            "{}/users?sort=email&offset={half}&limit=1&fields=email",
            t.url
        ),
        None,
    )
    .await?;
    let after = at["data"][0]["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = format!(
        "{}/users?sort=email&limit=25&filter%5Bemail%5D%5B_gt%5D={}",
        t.url,
        after.replace('@', "%40")
    );
    let keyset = median_ms(RUNS, || async {
        Ok(timed(http, reqwest::Method::GET, &url, None).await?.0)
    })
    .await?;
    cells.push(("`sort=email&filter[email][_gt]=…` (n/2)", ms(keyset)));
    let roles = format!("{}/roles", t.url);
    let delete = median_ms(RUNS, || async {
        let (_, made) = timed(
            http,
            reqwest::Method::POST,
            &roles,
            Some(json!({"name": "Empty"})),
        )
        .await?;
        let id = made["data"]["id"].as_str().context("role id")?.to_owned();
        Ok(timed(
            http,
            reqwest::Method::DELETE,
            &format!("{roles}/{id}"),
            None,
        )
        .await?
        .0)
    })
    .await?;
    cells.push(("`DELETE /roles/<empty>`", ms(delete)));

    let json_login: Value = login(http, &t.url, "json").await?.json().await?;
    let jwt = json_login["data"]["access_token"]
        .as_str()
        .context("no access token")?;
    let me = wrk(
        &format!("{}/users/me", t.url),
        2,
        50,
        RATE_SECS,
        &[format!("Authorization: Bearer {jwt}")],
        None,
    )?;
    cells.push(("`/users/me` (JWT)", format!("{:.0}/s", me.rps)));
    // The refreshing user is one of the loaded ones, its row among theirs.
    let (_, one) = timed(
        http,
        reqwest::Method::GET,
        &format!("{}/users?fields=id&limit=1&offset={half}", t.url),
        None,
    )
    .await?;
    let user = one["data"][0]["id"].as_str().context("a user")?.to_owned();
    let tokens = aside(|| db.tokens(&user, 60_000))?;
    let refresh = refresh_load(&t.url, work, &tokens, RATE_SECS)?;
    cells.push(("refresh", format!("{:.0}/s", refresh.rps)));
    cells.push((
        "RSS peak",
        format!("{} MB", proc_kb(t.pid(), "VmHWM") / 1024),
    ));
    t.stop();
    Ok(Column { label, cells })
}

fn size_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Runs every engine at every size and returns the table.
pub async fn run(tessera: &Path) -> Result<String> {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .unwrap_or_else(|_| "100,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().context("SCALE_SIZES"))
        .collect::<Result<_>>()?;
    let http = reqwest::Client::new();
    let mut columns = Vec::new();
    for &users in &sizes {
        let work = tempfile::tempdir()?;
        let path = work.path().join("data.db");
        columns.push(measure(&http, tessera, Db::Sqlite(path), work.path(), users).await?);
    }
    for &users in &sizes {
        let work = tempfile::tempdir()?;
        let db = tokio::task::spawn_blocking(tessera_postgres::scratch::Scratch::create)
            .await?
            .map_err(anyhow::Error::msg)?;
        let db = Db::Postgres(Box::new(db));
        columns.push(measure(&http, tessera, db, work.path(), users).await?);
    }
    Ok(table(&columns))
}

fn table(columns: &[Column]) -> String {
    let mut out = String::from("| |");
    for c in columns {
        out.push_str(&format!(" {} |", c.label));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    for (i, (name, _)) in columns[0].cells.iter().enumerate() {
        out.push_str(&format!("| {name} |"));
        for c in columns {
            out.push_str(&format!(" {} |", c.cells[i].1));
        }
        out.push('\n');
    }
    out
}
