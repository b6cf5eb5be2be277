//! The `tessera` binary end to end: `tessera serve` on port 0 as a child process, and the
//! client commands run against it as separate processes sharing a profile directory.

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
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(dir.path())
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("DB_FILENAME", dir.path().join("data.db"))
        .env("ADMIN_EMAIL", EMAIL)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("LOGIN_STALL_TIME", "0")
        .env("HASH_MEMORY_COST", "1024")
        .env("HASH_TIME_COST", "1")
        .env("HASH_PARALLELISM", "1")
        .env("LOG_LEVEL", "warn")
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
    let mut child = Command::new(BIN)
        .args(args)
        .env("TESSERA_CONFIG_DIR", config)
        .env_remove("TESSERA_PASSWORD")
        .env_remove("TESSERA_PROFILE")
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

fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
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
    ] {
        let out = Command::new(BIN).args(&cmd).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        assert!(help.contains("Example:"), "{cmd:?}: {help}");
    }
}
