//! The `tessera` binary end to end: `tessera serve` on port 0 as a child process, the client
//! commands run against it as separate processes sharing a profile directory, and the
//! operator's `tessera users` commands on a stopped or running server's database.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "Admin-Password-1";

/// A `tessera serve` child process with its own data directory; killed when dropped.
struct Server {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(vars: &[(&str, &str)]) -> Server {
    serve_in(tempfile::tempdir().unwrap(), vars)
}

/// The settings every server-side command of these tests runs with: the database in `dir`,
/// the bootstrap admin, cheap hashing, no login stall.
fn server_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env("DB_FILENAME", dir.join("data.db"))
        .env("ADMIN_EMAIL", EMAIL)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("LOGIN_STALL_TIME", "0")
        .env("HASH_MEMORY_COST", "1024")
        .env("HASH_TIME_COST", "1")
        .env("HASH_PARALLELISM", "1")
        .env("LOG_LEVEL", "warn");
    cmd
}

/// `tessera serve` on the database in `dir` (created if missing).
fn serve_in(dir: tempfile::TempDir, vars: &[(&str, &str)]) -> Server {
    let mut cmd = server_command(dir.path(), &["serve"]);
    cmd.env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("Tessera listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server {
        url,
        child,
        _dir: dir,
    }
}

/// Runs a client command with its own config directory; `stdin` is piped in when given.
fn tessera(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("TESSERA_CONFIG_DIR", config)
        .env_remove("TESSERA_PASSWORD")
        .env_remove("TESSERA_PROFILE");
    run(cmd, stdin)
}

/// Runs `cmd` to its end with `stdin` piped in (or an empty standard input).
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Asserts that a command exited with success, showing its standard error if not.
#[track_caller]
fn succeeded(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

#[track_caller]
fn json_out(o: &Output) -> Value {
    succeeded(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn login(s: &Server, config: &Path) {
    let out = tessera(
        config,
        &[
            "login",
            "--url",
            &s.url,
            "--email",
            EMAIL,
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert_eq!(json_out(&out)["profile"], "default");
}

#[test]
fn login_whoami_request_refresh_logout() {
    let s = serve(&[]);
    let config = tempfile::tempdir().unwrap();
    login(&s, config.path());
    let profile = config.path().join("profiles").join("default.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let me = json_out(&tessera(config.path(), &["whoami"], None));
    assert_eq!(me["email"], EMAIL);

    let patched = json_out(&tessera(
        config.path(),
        &[
            "request",
            "PATCH",
            "/users/me?fields=first_name",
            "--data",
            r#"{"first_name":"Ada"}"#,
        ],
        None,
    ));
    assert_eq!(patched["data"]["first_name"], "Ada");

    let refreshed = json_out(&tessera(config.path(), &["refresh"], None));
    let keys: Vec<&str> = refreshed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["access_token", "expires", "refresh_token"]);
    let stored: Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    assert_eq!(stored["refresh_token"], refreshed["refresh_token"]);

    let out = tessera(config.path(), &["logout"], None);
    assert!(out.status.success());
    assert!(!profile.exists());
    let out = tessera(config.path(), &["whoami"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not logged in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refresh_with_explicit_token_and_continue_on_fail() {
    let s = serve(&[]);
    let config = tempfile::tempdir().unwrap();
    let c = config.path();

    let out = tessera(
        c,
        &[
            "refresh",
            "--url",
            &s.url,
            "--refresh-token",
            "garbage",
            "--continue-on-fail",
        ],
        None,
    );
    assert_eq!(
        json_out(&out),
        serde_json::json!({"error": "Invalid refresh token"})
    );

    let out = tessera(
        c,
        &["refresh", "--url", &s.url, "--refresh-token", "garbage"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: Invalid refresh token"
    );

    let out = tessera(c, &["refresh", "--url", &s.url, "--continue-on-fail"], None);
    assert_eq!(
        json_out(&out),
        serde_json::json!({"error": "Missing required parameter: refresh_token"})
    );

    login(&s, c);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(c.join("profiles").join("default.json")).unwrap())
            .unwrap();
    let token = stored["refresh_token"].as_str().unwrap();
    let out = tessera(
        c,
        &["refresh", "--url", &s.url, "--refresh-token-stdin"],
        Some(token),
    );
    let r = json_out(&out);
    assert_eq!(r["expires"], 900_000);
    assert_ne!(r["refresh_token"], token);
}

#[tokio::test]
async fn static_token_command_sets_a_working_token() {
    let s = serve(&[]);
    let config = tempfile::tempdir().unwrap();
    login(&s, config.path());
    let me = json_out(&tessera(config.path(), &["whoami"], None));
    let id = me["id"].as_str().unwrap();
    let out = json_out(&tessera(
        config.path(),
        &["token", "static", "--user", id],
        None,
    ));
    let token = out["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    let body: Value = reqwest::Client::new()
        .get(format!("{}/users/me?fields=email", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["email"], EMAIL);
}

/// Two processes share one profile; every call needs a refresh (the access token lives 1 s,
/// the refresh margin is 30 s) and the server has no grace window, so a refresh token spent
/// twice would revoke the session. The file lock must keep them taking turns.
#[test]
fn two_processes_share_one_file_store() {
    let s = serve(&[
        ("ACCESS_TOKEN_TTL", "1s"),
        ("SESSION_REFRESH_GRACE_PERIOD", "0"),
    ]);
    let config = tempfile::tempdir().unwrap();
    login(&s, config.path());
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let dir = config.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let out = tessera(&dir, &["request", "GET", "/users/me?fields=id"], None);
                    assert!(
                        out.status.success(),
                        "call {i}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let me = json_out(&tessera(config.path(), &["whoami"], None));
    assert_eq!(me["email"], EMAIL);
}

#[test]
fn help_documents_every_flag_with_an_example() {
    for cmd in [
        vec!["login", "--help"],
        vec!["refresh", "--help"],
        vec!["request", "--help"],
        vec!["token", "static", "--help"],
        vec!["users", "list", "--help"],
        vec!["users", "unlock", "--help"],
        vec!["users", "reset-password", "--help"],
        vec!["users", "create-admin", "--help"],
    ] {
        let out = Command::new(BIN).args(&cmd).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        assert!(help.contains("Example:"), "{cmd:?}: {help}");
    }
}

/// Runs `tessera users …` on the database in `dir`, with `stdin` piped in.
fn users(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["users"];
    all.extend_from_slice(args);
    run(server_command(dir, &all), stdin)
}

fn listed(dir: &Path) -> Vec<Value> {
    json_out(&users(dir, &["list", "--json"], None))
        .as_array()
        .unwrap()
        .clone()
}

async fn login_status(url: &str, email: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn users_commands_on_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = server_command(dir.path(), &["bootstrap"]).output().unwrap();
    succeeded(&out);
    let all = listed(dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["email"], EMAIL);
    assert_eq!(all[0]["admin"], true);
    assert_eq!(all[0]["status"], "active");
    assert_eq!(all[0]["role"], "Administrator");
    let out = users(
        dir.path(),
        &["create-admin", "ops@example.com", "--password-stdin"],
        Some("Ops-Password-1\n"),
    );
    succeeded(&out);
    let again = users(
        dir.path(),
        &["create-admin", "OPS@example.com", "--password-stdin"],
        Some("Ops-Password-1"),
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let out = users(
        dir.path(),
        &["reset-password", EMAIL, "--password-stdin"],
        Some("Reset-Password-2\n"),
    );
    succeeded(&out);
    let out = users(dir.path(), &["unlock", "nobody@example.com"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody@example.com"));
    let out = users(
        dir.path(),
        &["reset-password", EMAIL, "--password-stdin"],
        Some(""),
    );
    assert!(!out.status.success(), "an empty password is refused");
    let admins = listed(dir.path());
    assert_eq!(admins.iter().filter(|u| u["admin"] == true).count(), 2);
    // A server started on the database afterwards takes both.
    let s = serve_in(dir, &[]);
    assert_eq!(login_status(&s.url, EMAIL, PASSWORD).await, 401);
    assert_eq!(login_status(&s.url, EMAIL, "Reset-Password-2").await, 200);
    assert_eq!(
        login_status(&s.url, "ops@example.com", "Ops-Password-1").await,
        200
    );
}

#[tokio::test]
async fn users_commands_on_a_running_server() {
    const TOKEN: &str = "operator-test-admin-token-0123";
    let s = serve(&[("ADMIN_TOKEN", TOKEN)]);
    let dir = s._dir.path().to_path_buf();
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", s.url))
            .bearer_auth(TOKEN)
    };
    let r = admin(reqwest::Method::PATCH, "/settings")
        .json(&serde_json::json!({"auth_login_attempts": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(reqwest::Method::POST, "/users")
        .json(&serde_json::json!({"email": "locked@example.com", "password": "Locked-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..3 {
        login_status(&s.url, EMAIL, "wrong").await;
        login_status(&s.url, "locked@example.com", "wrong").await;
    }
    // The admin is locked, the ordinary user suspended.
    assert_eq!(login_status(&s.url, EMAIL, PASSWORD).await, 401);
    assert_eq!(
        login_status(&s.url, "locked@example.com", "Locked-1").await,
        401
    );
    let table = listed(&dir);
    let row = |email: &str| table.iter().find(|u| u["email"] == email).unwrap().clone();
    assert!(row(EMAIL)["locked_until"].is_i64());
    assert_eq!(row(EMAIL)["status"], "active");
    assert_eq!(row("locked@example.com")["status"], "suspended");
    // The operator unlocks both while the server runs; the next logins work.
    let out = users(&dir, &["unlock", EMAIL], None);
    succeeded(&out);
    let out = users(&dir, &["unlock", "locked@example.com"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("active again"));
    assert_eq!(login_status(&s.url, EMAIL, PASSWORD).await, 200);
    assert_eq!(
        login_status(&s.url, "locked@example.com", "Locked-1").await,
        200
    );
    // A password reset ends the user's sessions on the running server.
    let r: Value = http
        .post(format!("{}/auth/login", s.url))
        .json(&serde_json::json!({"email": "locked@example.com", "password": "Locked-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = r["data"]["refresh_token"].as_str().unwrap().to_owned();
    let out = users(
        &dir,
        &["reset-password", "locked@example.com", "--password-stdin"],
        Some("Locked-2"),
    );
    succeeded(&out);
    let r = http
        .post(format!("{}/auth/refresh", s.url))
        .json(&serde_json::json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        login_status(&s.url, "locked@example.com", "Locked-2").await,
        200
    );
}
