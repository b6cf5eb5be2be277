//! `tessera-bench`: runs Tessera's scenarios with wrk on loopback next to baselines measured
//! in the same run (an axum hello-world, a bare JWT-verifying server, raw SQLite and PostgreSQL
//! updates, raw argon2 verification), and prints each figure as a ratio of the ceiling it
//! should approach, with both engines side by side. Built and started by `scripts/bench`;
//! with `--scale`, runs the scale benchmark ([`scale`]) instead.

mod postgres;
mod scale;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use argon2::PasswordVerifier;
use argon2::password_hash::PasswordHasher;
use serde_json::{Value, json};

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "bench-password-1";
const STATIC_TOKEN: &str = "bench-static-token-0123456789abcdef";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// A server process under test.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn spawn(bin: &Path, args: &[&str], envs: &[(&str, String)], cwd: &Path) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let url = line
            .find("http://")
            .map(|i| line[i..].trim().to_owned())
            .with_context(|| format!("{} printed {line:?}", bin.display()))?;
        Ok(Self { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Reads a `/proc/<pid>/status` field in kB.
fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One raw HTTP/1.1 GET; true on a 200.
fn ping(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let req = format!("GET /server/ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_latency(v: &str) -> f64 {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * factor
}

/// Runs wrk closed-loop against `url` and parses its report.
fn wrk(
    url: &str,
    threads: u32,
    conns: u32,
    secs: u64,
    headers: &[String],
    script: Option<(&Path, &[String])>,
) -> Result<Load> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--latency".into(),
        // wrk abandons a request after 2 s by default; on a slow machine a login queued
        // behind others takes longer, and an abandoned password check counts as a failed
        // login, which would lock the bench's admin (ADR 0004).
        "--timeout".into(),
        "10s".into(),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some((path, _)) = script {
        cmd.arg("-s").arg(path);
    }
    cmd.arg(url);
    if let Some((_, args)) = script {
        cmd.arg("--").args(args);
    }
    let out = cmd
        .output()
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["Requests/sec:", v] => load.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => load.p50_ms = parse_latency(v),
            ["99%", v] => load.p99_ms = parse_latency(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                load.errors += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if load.rps == 0.0 {
        bail!("wrk produced no figures: {text}");
    }
    Ok(load)
}

/// Raw single-row SQLite update rate with the store's settings (WAL, synchronous=NORMAL):
/// one autocommit `UPDATE … SET token = new WHERE token = old` at a time on a 100k-row
/// session-shaped table, which is what a refresh must do at the least.
fn sqlite_update_rate(dir: &Path, secs: f64) -> Result<f64> {
    let mut conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE s (token TEXT PRIMARY KEY NOT NULL, user TEXT NOT NULL, expires INTEGER NOT NULL);",
    )?;
    let rows = 100_000;
    let mut tokens: Vec<String> = (0..rows).map(|i| format!("{i:064}")).collect();
    let tx = conn.transaction()?;
    for t in &tokens {
        tx.execute("INSERT INTO s VALUES (?1, 'u', 0)", [t])?;
    }
    tx.commit()?;
    let mut stmt = conn.prepare("UPDATE s SET token = ?2 WHERE token = ?1")?;
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        let i = n % rows;
        let next = tessera_core::tokens::digest(&tokens[i]);
        stmt.execute([&tokens[i], &next])?;
        tokens[i] = next;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Median time of one argon2 verify with Directus's default parameters, on one core.
fn argon2_verify_ms() -> Result<f64> {
    let argon = tessera_core::password::HashSettings::default()
        .hasher()
        .map_err(anyhow::Error::msg)?;
    let hash = argon
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        argon2::Argon2::default()
            .verify_password(PASSWORD.as_bytes(), hash.as_str())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn bins() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("no bin dir")?.to_path_buf())
}

fn tessera_env(database: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = database.to_vec();
    env.extend([
        ("PORT", "0".into()),
        ("HOST", "127.0.0.1".into()),
        ("SECRET", SECRET.into()),
        ("ADMIN_EMAIL", EMAIL.into()),
        ("ADMIN_PASSWORD", PASSWORD.into()),
        ("ADMIN_TOKEN", STATIC_TOKEN.into()),
        ("LOGIN_STALL_TIME", "0".into()),
        ("LOG_LEVEL", "error".into()),
        // The login storm is eight right passwords in flight at once from one address, which
        // the throttle (five at once per account) would turn into instant 429s: what is
        // measured here is hashing, so the throttle makes room.
        ("AUTH_THROTTLE_ACCOUNT_ATTEMPTS", "1000".into()),
        ("AUTH_THROTTLE_IP_ATTEMPTS", "1000".into()),
    ]);
    env
}

fn sqlite_env(db: &Path) -> Vec<(&'static str, String)> {
    tessera_env(&[("DB_FILENAME", db.display().to_string())])
}

async fn login(http: &reqwest::Client, url: &str, mode: &str) -> Result<reqwest::Response> {
    let res = http
        .post(format!("{url}/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD, "mode": mode}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("login failed: {}", res.status());
    }
    Ok(res)
}

/// Makes a non-admin user whose only right is reading its own row through a rule with an item
/// filter and a field list (made through the API as an admin would) and logs it in; returns
/// its `Authorization` header.
async fn rule_user(http: &reqwest::Client, url: &str, admin_bearer: &str) -> Result<String> {
    let admin = admin_bearer
        .strip_prefix("Authorization: Bearer ")
        .context("an admin bearer header")?;
    let post = async |path: &str, body: Value| -> Result<Value> {
        let res = http
            .post(format!("{url}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("POST {path}: {}", res.status());
        }
        let body: Value = res.json().await?;
        Ok(body["data"]["id"].clone())
    };
    let policy = post("/policies", json!({"name": "Own row"})).await?;
    post(
        "/permissions",
        json!({"policy": policy, "collection": "directus_users", "action": "read",
            "permissions": {"id": {"_eq": "$CURRENT_USER"}}, "fields": ["id", "email", "first_name"]}),
    )
    .await?;
    let role = post(
        "/roles",
        json!({"name": "Own row", "policies": {"create": [{"policy": policy}]}}),
    )
    .await?;
    let email = "rule@bench.example.com";
    post(
        "/users",
        json!({"email": email, "password": PASSWORD, "role": role, "status": "active"}),
    )
    .await?;
    let res: Value = http
        .post(format!("{url}/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let jwt = res["data"]["access_token"]
        .as_str()
        .context("no access token for the rule user")?;
    Ok(format!("Authorization: Bearer {jwt}"))
}

/// Inserts `n` live sessions straight into the database and returns their refresh tokens, for
/// the refresh scenario (each request spends a fresh token).
fn prepare_refresh_tokens(db: &Path, user: &str, n: usize) -> Result<Vec<String>> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let tx = conn.transaction()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut tokens = Vec::with_capacity(n);
    {
        let mut stmt = tx.prepare(
            "INSERT INTO directus_sessions (family, user, generation, token_hash, created, expires)
             VALUES (?1, ?2, 0, ?3, ?4, ?5)",
        )?;
        for _ in 0..n {
            let family = uuid::Uuid::new_v4();
            let id = tessera_core::tokens::RefreshId {
                family,
                generation: 0,
            };
            let token = tessera_core::tokens::refresh_token(SECRET.as_bytes(), id);
            stmt.execute(rusqlite::params![
                family.to_string(),
                user,
                tessera_core::tokens::digest(&token),
                now,
                now + 86_400_000
            ])?;
            tokens.push(token);
        }
    }
    tx.commit()?;
    Ok(tokens)
}

const REFRESH_LUA: &str = r#"
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
end
function init(args)
  local nthreads = tonumber(args[1])
  tokens = {}
  local n = 0
  for line in io.lines(args[2]) do
    if n % nthreads == tid then tokens[#tokens + 1] = line end
    n = n + 1
  end
  idx = 0
end
function request()
  idx = idx + 1
  local t = tokens[idx] or "exhausted"
  return wrk.format("POST", "/auth/refresh", {["Content-Type"] = "application/json"},
    '{"refresh_token":"' .. t .. '"}')
end
"#;

/// The loads both engines run: `/users/me` with each token kind, and refresh.
struct EngineLoads {
    /// `Authorization: Bearer <access token>` of an admin login.
    bearer: String,
    /// `Cookie: <session cookie>` of an admin login in session mode.
    cookie: String,
    /// The user whose refresh tokens the refresh load spends.
    refresh_user: String,
    me_jwt: Load,
    me_static: Load,
    me_session: Load,
    refresh: Load,
}

/// Logs in (json and session modes), loads `/users/me` with each token kind, then prepares
/// `token_count` refresh tokens of a user of their own with `prepare` (so that they do not
/// count against the admin's `SESSION_MAX_PER_USER`) and spends one per refresh.
async fn engine_loads(
    http: &reqwest::Client,
    t: &Server,
    work: &Path,
    secs: u64,
    token_count: usize,
    prepare: impl FnOnce(&str, usize) -> Result<Vec<String>>,
) -> Result<EngineLoads> {
    let json_login: Value = login(http, &t.url, "json").await?.json().await?;
    let jwt = json_login["data"]["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let bearer = format!("Authorization: Bearer {jwt}");
    let session_res = login(http, &t.url, "session").await?;
    let session_cookie = session_res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    eprintln!("tessera: /users/me…");
    let me = format!("{}/users/me", t.url);
    let me_jwt = wrk(&me, 2, 50, secs, std::slice::from_ref(&bearer), None)?;
    let static_bearer = format!("Authorization: Bearer {STATIC_TOKEN}");
    let me_static = wrk(&me, 2, 50, secs, &[static_bearer], None)?;
    let cookie = format!("Cookie: {session_cookie}");
    let me_session = wrk(&me, 2, 50, secs, std::slice::from_ref(&cookie), None)?;

    eprintln!("tessera: refresh…");
    let user: Value = http
        .post(format!("{}/users?fields=id", t.url))
        .bearer_auth(&jwt)
        .json(&json!({"email": "refresh@bench.example.com", "status": "active"}))
        .send()
        .await?
        .json()
        .await?;
    let user_id = user["data"]["id"]
        .as_str()
        .context("no user id")?
        .to_owned();
    let refresh = refresh_load(&t.url, work, &prepare(&user_id, token_count)?, secs)?;
    Ok(EngineLoads {
        bearer,
        cookie,
        refresh_user: user_id,
        me_jwt,
        me_static,
        me_session,
        refresh,
    })
}

/// Refresh at `url` for `secs` (2 threads, 50 connections), each request spending one of
/// `tokens` (written to a file in `work` for wrk's script).
fn refresh_load(url: &str, work: &Path, tokens: &[String], secs: u64) -> Result<Load> {
    let file = work.join("tokens.txt");
    std::fs::write(&file, tokens.join("\n"))?;
    let script = work.join("refresh.lua");
    std::fs::write(&script, REFRESH_LUA)?;
    wrk(
        url,
        2,
        50,
        secs,
        &[],
        Some((&script, &["2".to_string(), file.display().to_string()])),
    )
}

/// The same loads through two instances on one database, at once: one wrk per instance, each
/// with half the connections (and half the refresh tokens); figures summed (p50 and p99: the
/// worse of the two).
struct PairLoads {
    me_jwt: Load,
    me_session: Load,
    refresh: Load,
}

/// Runs `load` against both instances at once and sums what they did.
fn both(a: &Server, b: &Server, load: impl Fn(&str, usize) -> Result<Load> + Sync) -> Result<Load> {
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| load(&a.url, 0));
        let y = scope.spawn(|| load(&b.url, 1));
        (x.join(), y.join())
    });
    let (x, y) = (
        x.map_err(|_| anyhow::anyhow!("wrk thread panicked"))??,
        y.map_err(|_| anyhow::anyhow!("wrk thread panicked"))??,
    );
    Ok(Load {
        rps: x.rps + y.rps,
        p50_ms: x.p50_ms.max(y.p50_ms),
        p99_ms: x.p99_ms.max(y.p99_ms),
        errors: x.errors + y.errors,
    })
}

fn pair_loads(
    a: &Server,
    b: &Server,
    work: &Path,
    secs: u64,
    single: &EngineLoads,
    tokens: Vec<String>,
) -> Result<PairLoads> {
    eprintln!("tessera, two instances: /users/me…");
    let me = |header: &String| {
        both(a, b, |url, _| {
            wrk(
                &format!("{url}/users/me"),
                1,
                25,
                secs,
                std::slice::from_ref(header),
                None,
            )
        })
    };
    let me_jwt = me(&single.bearer)?;
    let me_session = me(&single.cookie)?;
    eprintln!("tessera, two instances: refresh…");
    let script = work.join("refresh.lua");
    let halves: Vec<std::path::PathBuf> = (0..2)
        .map(|half| {
            let path = work.join(format!("tokens-{half}.txt"));
            let mine: Vec<&str> = tokens
                .iter()
                .skip(half)
                .step_by(2)
                .map(String::as_str)
                .collect();
            std::fs::write(&path, mine.join("\n")).map(|()| path)
        })
        .collect::<std::io::Result<_>>()?;
    let refresh = both(a, b, |url, half| {
        let args = ["1".to_string(), halves[half].display().to_string()];
        wrk(url, 1, 25, secs, &[], Some((&script, &args)))
    })?;
    Ok(PairLoads {
        me_jwt,
        me_session,
        refresh,
    })
}

/// Tessera on a scratch PostgreSQL database: the same loads as on SQLite, and the raw update
/// rate of the same server; then the same loads through two instances on that database.
async fn postgres_loads(
    http: &reqwest::Client,
    tessera: &Path,
    work: &Path,
    secs: u64,
) -> Result<(f64, EngineLoads, PairLoads)> {
    let db = tokio::task::spawn_blocking(tessera_postgres::scratch::Scratch::create)
        .await?
        .map_err(anyhow::Error::msg)?;
    let db = std::sync::Arc::new(db);
    eprintln!("measuring raw PostgreSQL updates…");
    let raw = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || postgres::update_rate(&db, 3.0)).await??
    };
    let env = tessera_env(&[
        ("DB_CLIENT", "pg".into()),
        ("DB_CONNECTION_STRING", db.url()),
        ("DB_POOL__MAX", postgres::CONNECTIONS.to_string()),
    ]);
    let t = Server::spawn(tessera, &["serve"], &env, work)?;
    let token_count = (2 * raw as usize * secs as usize).clamp(50_000, 2_000_000);
    let loads = engine_loads(http, &t, work, secs, token_count, |user, n| {
        // The synchronous driver runs its own runtime: on a thread of its own.
        std::thread::scope(|scope| {
            scope
                .spawn(|| postgres::prepare_refresh_tokens(&db, SECRET, user, n))
                .join()
                .map_err(|_| anyhow::anyhow!("preparing tokens panicked"))?
        })
    })
    .await;
    let loads = loads?;
    let second = Server::spawn(tessera, &["serve"], &env, work)?;
    let user = loads.refresh_user.clone();
    let tokens = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            postgres::prepare_refresh_tokens(&db, SECRET, &user, token_count)
        })
        .await??
    };
    let pair = pair_loads(&t, &second, work, secs, &loads, tokens);
    second.stop();
    t.stop();
    Ok((raw, loads, pair?))
}

struct Row {
    scenario: &'static str,
    value: String,
    p50: String,
    p99: String,
    ratio: String,
    target: &'static str,
    met: Option<bool>,
}

fn rps_row(
    scenario: &'static str,
    l: Load,
    ratio: Option<(f64, &str)>,
    target: &'static str,
    min: f64,
) -> Row {
    let mut value = format!("{:.0} req/s", l.rps);
    if l.errors > 0 {
        value.push_str(&format!(" ({} errors)", l.errors));
    }
    let (ratio_s, met) = match ratio {
        Some((r, of)) => (
            format!("{:.0}% of {of}", r * 100.0),
            Some(r >= min && l.errors == 0),
        ),
        None => ("—".into(), None),
    };
    Row {
        scenario,
        value,
        p50: format!("{:.2} ms", l.p50_ms),
        p99: format!("{:.2} ms", l.p99_ms),
        ratio: ratio_s,
        target,
        met,
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cores} cores ({cpu}), {mem} GiB RAM")
}

#[tokio::main]
async fn main() -> Result<()> {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let scale = std::env::args().nth(1).as_deref() == Some("--scale");
    let out_path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from);
    let bin = bins()?;
    if scale {
        let table = scale::run(&bin.join("tessera")).await?;
        println!("{table}");
        if let Some(path) = out_path {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &table)?;
        }
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let mut rows = Vec::new();

    if std::env::var("BENCH_ONLY").as_deref() == Ok("postgres") {
        // A quick look at the PostgreSQL column alone, while working on it.
        let (raw, pg, pair) =
            postgres_loads(&http, &bin.join("tessera"), work.path(), secs).await?;
        println!(
            "PostgreSQL: raw update {raw:.0}/s; /users/me JWT {:.0}/s, static {:.0}/s, \
             session {:.0}/s; refresh {:.0}/s ({:.0}% of raw); two instances: /users/me JWT \
             {:.0}/s, session {:.0}/s, refresh {:.0}/s",
            pg.me_jwt.rps,
            pg.me_static.rps,
            pg.me_session.rps,
            pg.refresh.rps,
            100.0 * pg.refresh.rps / raw,
            pair.me_jwt.rps,
            pair.me_session.rps,
            pair.refresh.rps,
        );
        return Ok(());
    }
    eprintln!("measuring raw baselines…");
    let sqlite_rate = sqlite_update_rate(work.path(), 3.0)?;
    let verify_ms = argon2_verify_ms()?;

    eprintln!("baseline: axum hello…");
    let hello = Server::spawn(&bin.join("baseline-hello"), &[], &[], work.path())?;
    let hello_load = wrk(&format!("{}/hello", hello.url), 2, 50, secs, &[], None)?;
    hello.stop();

    eprintln!("baseline: JWT verify…");
    let jwt_server = Server::spawn(
        &bin.join("baseline-jwt"),
        &[],
        &[("SECRET", SECRET.into())],
        work.path(),
    )?;

    let db = work.path().join("tessera").join("data.db");
    std::fs::create_dir_all(db.parent().context("db dir")?)?;
    let tessera_bin = bin.join("tessera");
    let t = Server::spawn(&tessera_bin, &["serve"], &sqlite_env(&db), work.path())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kb = proc_kb(t.pid(), "VmRSS");

    eprintln!("tessera: ping…");
    let ping_load = wrk(&format!("{}/server/ping", t.url), 2, 50, secs, &[], None)?;
    // More tokens than the raw update rate could spend, so that none runs out.
    let token_count = (2 * sqlite_rate as usize * secs as usize).clamp(50_000, 2_000_000);
    let sqlite = engine_loads(&http, &t, work.path(), secs, token_count, |user, n| {
        prepare_refresh_tokens(&db, user, n)
    })
    .await?;
    let bearer = sqlite.bearer.clone();
    let me = format!("{}/users/me", t.url);
    eprintln!("tessera: /users/me under a rule…");
    let rule_bearer = rule_user(&http, &t.url, &bearer).await?;
    let me_rule = wrk(&me, 2, 50, secs, &[rule_bearer], None)?;
    let jwt_base = wrk(
        &format!("{}/users/me", jwt_server.url),
        2,
        50,
        secs,
        std::slice::from_ref(&bearer),
        None,
    )?;
    jwt_server.stop();
    let (me_jwt, me_static, me_session, refresh) = (
        sqlite.me_jwt,
        sqlite.me_static,
        sqlite.me_session,
        sqlite.refresh,
    );

    eprintln!("tessera: login storm…");
    let login_script = work.path().join("login.lua");
    std::fs::write(
        &login_script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{}'\n",
            json!({"email": EMAIL, "password": PASSWORD})
        ),
    )?;
    let login_url = format!("{}/auth/login", t.url);
    let login_load = wrk(&login_url, 1, 8, secs, &[], Some((&login_script, &[])))?;
    let storm_url = login_url.clone();
    let storm_script = login_script.clone();
    let storm =
        std::thread::spawn(move || wrk(&storm_url, 1, 8, secs, &[], Some((&storm_script, &[]))));
    let during_storm = wrk(&me, 2, 50, secs, std::slice::from_ref(&bearer), None)?;
    let storm_login = storm
        .join()
        .map_err(|_| anyhow::anyhow!("storm thread"))??;
    let peak_rss_kb = proc_kb(t.pid(), "VmHWM");
    t.stop();

    eprintln!("tessera: /users/me under the request limiter…");
    let mut limited_env = sqlite_env(&db);
    // Every request counted, none refused: the limiter's own cost.
    limited_env.extend([
        ("RATE_LIMITER_ENABLED", "true".into()),
        ("RATE_LIMITER_POINTS", "4000000000".into()),
    ]);
    let limited = Server::spawn(&tessera_bin, &["serve"], &limited_env, work.path())?;
    let me_limited = wrk(
        &format!("{}/users/me", limited.url),
        2,
        50,
        secs,
        std::slice::from_ref(&bearer),
        None,
    )?;
    limited.stop();

    eprintln!("tessera: start-up time…");
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let s = Server::spawn(&tessera_bin, &["serve"], &sqlite_env(&db), work.path())?;
        while !ping(s.addr()) {
            std::thread::sleep(Duration::from_micros(200));
        }
        starts.push(t0.elapsed().as_secs_f64() * 1000.0);
        s.stop();
    }
    starts.sort_by(f64::total_cmp);
    let start_ms = starts[starts.len() / 2];

    eprintln!("tessera on PostgreSQL…");
    let pg = postgres_loads(&http, &tessera_bin, work.path(), secs).await?;

    let login_ceiling = cores * 1000.0 / verify_ms;
    rows.push(rps_row("baseline: axum hello", hello_load, None, "—", 0.0));
    rows.push(rps_row(
        "baseline: HS256 verify + JSON",
        jwt_base,
        None,
        "—",
        0.0,
    ));
    rows.push(rps_row(
        "GET /server/ping",
        ping_load,
        Some((ping_load.rps / hello_load.rps, "hello")),
        "—",
        0.0,
    ));
    let mut jwt_row = rps_row(
        "GET /users/me, JWT",
        me_jwt,
        Some((me_jwt.rps / jwt_base.rps, "JWT baseline")),
        "≥ 80%, p99 ≤ 5 ms",
        0.8,
    );
    jwt_row.met = jwt_row.met.map(|m| m && me_jwt.p99_ms <= 5.0);
    rows.push(jwt_row);
    rows.push(rps_row(
        "GET /users/me, static token",
        me_static,
        Some((me_static.rps / me_jwt.rps, "JWT figure")),
        "≥ 80%",
        0.8,
    ));
    rows.push(rps_row(
        "GET /users/me, session cookie",
        me_session,
        Some((me_session.rps / me_jwt.rps, "JWT figure")),
        "≥ 80%",
        0.8,
    ));
    rows.push(rps_row(
        "GET /users/me, non-admin JWT (item filter + field list)",
        me_rule,
        Some((me_rule.rps / me_jwt.rps, "JWT figure")),
        "≥ 80%",
        0.8,
    ));
    rows.push(rps_row(
        "GET /users/me, JWT, request limiter on (memory)",
        me_limited,
        Some((me_limited.rps / me_jwt.rps, "JWT figure")),
        "≥ 80%",
        0.8,
    ));
    rows.push(rps_row(
        "POST /auth/refresh (json, fresh token each)",
        refresh,
        Some((refresh.rps / sqlite_rate, "raw SQLite update")),
        "≥ 60%",
        0.6,
    ));
    rows.push(rps_row(
        "POST /auth/login (argon2 m=64MiB,t=3,p=4; stall 0)",
        login_load,
        Some((login_load.rps / login_ceiling, "cores ÷ verify time")),
        "≥ 90%",
        0.9,
    ));
    let mut storm_row = rps_row(
        "GET /users/me (JWT) during a login storm",
        during_storm,
        Some((during_storm.rps / me_jwt.rps, "JWT figure")),
        "≥ 70%",
        0.7,
    );
    storm_row
        .value
        .push_str(&format!(" + {:.1} logins/s", storm_login.rps));
    rows.push(storm_row);
    let (pg_raw, pg, pair) = pg;
    for (scenario, on_pg, on_sqlite) in [
        ("PostgreSQL: GET /users/me, JWT", pg.me_jwt, me_jwt),
        (
            "PostgreSQL: GET /users/me, static token",
            pg.me_static,
            me_static,
        ),
        (
            "PostgreSQL: GET /users/me, session cookie",
            pg.me_session,
            me_session,
        ),
    ] {
        rows.push(rps_row(
            scenario,
            on_pg,
            Some((on_pg.rps / on_sqlite.rps, "SQLite figure")),
            "≥ 90%",
            0.9,
        ));
    }
    rows.push(rps_row(
        "PostgreSQL: POST /auth/refresh (json, fresh token each)",
        pg.refresh,
        Some((pg.refresh.rps / pg_raw, "raw PostgreSQL update")),
        "≥ 70%",
        0.7,
    ));
    for (scenario, two, one) in [
        (
            "PostgreSQL, two instances: GET /users/me, JWT",
            pair.me_jwt,
            pg.me_jwt,
        ),
        (
            "PostgreSQL, two instances: GET /users/me, session cookie",
            pair.me_session,
            pg.me_session,
        ),
        (
            "PostgreSQL, two instances: POST /auth/refresh",
            pair.refresh,
            pg.refresh,
        ),
    ] {
        let mut row = rps_row(
            scenario,
            two,
            Some((two.rps / one.rps, "one instance")),
            "—",
            0.0,
        );
        row.met = None;
        rows.push(row);
    }
    rows.push(Row {
        scenario: "RSS idle / peak",
        value: format!(
            "{:.1} MB / {:.1} MB",
            idle_rss_kb as f64 / 1024.0,
            peak_rss_kb as f64 / 1024.0
        ),
        p50: "—".into(),
        p99: "—".into(),
        ratio: "—".into(),
        target: "idle ≤ 20 MB",
        met: Some(idle_rss_kb <= 20 * 1024),
    });
    rows.push(Row {
        scenario: "start → first /server/ping (existing DB)",
        value: format!("{start_ms:.1} ms (median of 5)"),
        p50: "—".into(),
        p99: "—".into(),
        ratio: "—".into(),
        target: "≤ 100 ms",
        met: Some(start_ms <= 100.0),
    });

    let mut report = String::new();
    report.push_str(&format!(
        "Machine: {}. Each load: wrk closed loop on loopback, {secs} s, 50 connections (login: 8).\n\n",
        machine()
    ));
    report.push_str(&format!(
        "Raw baselines: SQLite single-row UPDATE {sqlite_rate:.0}/s; argon2id verify (m=65536, t=3, p=4, one core) {verify_ms:.0} ms → login ceiling {login_ceiling:.1}/s on {cores} cores.\n\n"
    ));
    report.push_str(
        "| scenario | result | p50 | p99 | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {met} |\n",
            r.scenario, r.value, r.p50, r.p99, r.ratio, r.target
        ));
    }
    report.push_str(&format!(
        "\nBoth engines side by side (PostgreSQL: local server, pool of {} connections; raw \
         update rate with as many clients):\n\n| scenario | SQLite | PostgreSQL |\n|---|---|---|\n",
        postgres::CONNECTIONS
    ));
    for (scenario, a, b) in [
        ("raw single-row UPDATE", sqlite_rate, pg_raw),
        ("GET /users/me, JWT", me_jwt.rps, pg.me_jwt.rps),
        (
            "GET /users/me, static token",
            me_static.rps,
            pg.me_static.rps,
        ),
        (
            "GET /users/me, session cookie",
            me_session.rps,
            pg.me_session.rps,
        ),
        ("POST /auth/refresh", refresh.rps, pg.refresh.rps),
    ] {
        report.push_str(&format!("| {scenario} | {a:.0}/s | {b:.0}/s |\n"));
    }
    println!("{report}");
    if let Some(p) = out_path {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, &report).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
