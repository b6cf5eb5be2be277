//! The database going away under a running server (PostgreSQL restarting, a network cut): the
//! server answers 503 SERVICE_UNAVAILABLE meanwhile, reports it in its health, loses nothing
//! committed, and recovers by itself. The cut is a proxy between server and PostgreSQL that
//! the test severs and restores, so other tests sharing the server are untouched. Also: a
//! PostgreSQL start without `SECRET` is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tessera_postgres::scratch::Scratch;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

/// A TCP proxy to the local PostgreSQL that can be cut (open connections closed, new ones
/// refused) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accepting = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

const UNAVAILABLE_BODY: &str = r#"{"errors":[{"message":"Service \"database\" is unavailable. Database is unreachable.","extensions":{"service":"database","reason":"Database is unreachable","code":"SERVICE_UNAVAILABLE"}}]}"#;

#[tokio::test]
async fn requests_answer_503_while_postgres_is_away_and_recover_without_a_restart() {
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("database outage"))
        .await
        .unwrap()
    else {
        return;
    };
    let Some(upstream) = db.address() else {
        eprintln!("TESSERA_TEST_PG names a socket: no proxy can stand in front of it");
        return;
    };
    let proxy = Proxy::start(upstream).await;
    let user = db.config().get_user().unwrap_or("postgres").to_owned();
    let url = format!(
        "host=127.0.0.1 port={} user={user} dbname={}",
        proxy.port,
        db.name()
    );
    let s = TestServer::spawn(&[
        ("DB_CLIENT", "pg"),
        ("DB_CONNECTION_STRING", &url),
        ("SECRET", "outage-secret-0123456789abcdef0123456789"),
        ("DB_POOL__MIN", "2"),
    ])
    .await;
    let id = s.user("kept@example.com", "Kept-Password-1").await;
    let (_, rt) = s.admin_tokens().await;

    proxy.down();
    let login = s.login("kept@example.com", "Kept-Password-1", None).await;
    assert_eq!(login.status, 503, "{}", login.text);
    assert_eq!(login.text, UNAVAILABLE_BODY);
    let list = s.admin("GET", "/users?fields=id", None).await;
    assert_eq!(list.status, 503, "{}", list.text);
    assert_eq!(s.refresh_json(&rt).await.status, 503);
    // Health says so, in its own format, even though the caller cannot be identified now.
    let health = s.admin("GET", "/server/health", None).await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.text, r#"{"status":"error"}"#);
    assert_eq!(
        health.headers["content-type"],
        "application/health+json; charset=utf-8"
    );

    proxy.restore();
    let login = s.login("kept@example.com", "Kept-Password-1", None).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(status_of(&s, &id).await, "active");
    // The refresh token that could not be used meanwhile still works: nothing was spent.
    assert_eq!(s.refresh_json(&rt).await.status, 200);
    let health = s.admin("GET", "/server/health", None).await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(
        health.body["checks"]["pg:responseTime"][0]["status"],
        json!("ok")
    );
}

#[tokio::test]
async fn postgres_without_a_secret_does_not_start() {
    let mut vars: std::collections::HashMap<String, String> = [
        ("DB_CLIENT", "pg"),
        ("DB_CONNECTION_STRING", "host=127.0.0.1 port=1 dbname=none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = tessera_server::config::Config::from_vars(&vars).unwrap();
    let err = tessera_server::start(config, tessera_server::Hooks::default())
        .await
        .err()
        .expect("no start without SECRET");
    assert!(format!("{err:#}").contains("SECRET is required"), "{err:#}");
    vars.insert("DB_SSL__REJECT_UNAUTHORIZED".into(), "false".into());
    let Err(err) = tessera_server::config::Config::from_vars(&vars) else {
        panic!("TLS settings are refused");
    };
    assert_eq!(err.var, "DB_SSL__REJECT_UNAUTHORIZED");
}
