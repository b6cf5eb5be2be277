//! The client library against a real Tessera server on 127.0.0.1:0 (and, for error paths no
//! real server produces, a small stub server).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use serde_json::json;
use tessera_client::{Client, ClientError, FileStore, MemoryStore, TokenStore, refresh_token};
use tessera_server::config::Config;

const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "Admin-Password-1";

struct Server {
    url: String,
    refreshes: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts Tessera with `vars`, counting `POST /auth/refresh` requests on the server side.
async fn spawn(vars: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.db").display().to_string();
    let mut map: HashMap<String, String> = [
        ("DB_FILENAME", db.as_str()),
        ("ADMIN_EMAIL", EMAIL),
        ("ADMIN_PASSWORD", PASSWORD),
        ("LOGIN_STALL_TIME", "0"),
        ("HASH_MEMORY_COST", "1024"),
        ("HASH_TIME_COST", "1"),
        ("HASH_PARALLELISM", "1"),
        ("LOG_LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in vars {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let started = tessera_server::start(
        Config::from_vars(&map).unwrap(),
        tessera_server::Hooks::default(),
    )
    .await
    .unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    let app = tessera_server::router(started.state).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let counter = counter.clone();
            async move {
                if req.method() == "POST" && req.uri().path() == "/auth/refresh" {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(req).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        url,
        refreshes,
        _dir: dir,
        _stop: tx,
    }
}

/// A stub that answers every request with `status` and `body`, counting requests.
async fn stub(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn refresh_operation_success_shape() {
    let s = spawn(&[]).await;
    let client = Client::builder(&s.url).build();
    let login = client.login(EMAIL, PASSWORD, None).await.unwrap();
    let r = refresh_token(&s.url, Some(&login.refresh_token))
        .await
        .unwrap();
    assert_ne!(r.refresh_token, login.refresh_token);
    assert_eq!(r.expires, 900_000);
    let v = serde_json::to_string(&r).unwrap();
    assert!(
        v.starts_with("{\"access_token\":\"")
            && v.contains("\"expires\":900000,\"refresh_token\":\""),
        "{v}"
    );
    let dbg = format!("{r:?}");
    assert!(!dbg.contains(&r.refresh_token) && !dbg.contains(&r.access_token));
}

#[tokio::test]
async fn refresh_operation_error_messages() {
    let s = spawn(&[]).await;
    let missing = refresh_token(&s.url, None).await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "Missing required parameter: refresh_token"
    );
    let blank = refresh_token(&s.url, Some("  ")).await.unwrap_err();
    assert!(matches!(blank, ClientError::MissingRefreshToken));
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 0, "no request is sent");

    let invalid = refresh_token(&s.url, Some("not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(invalid.to_string(), "Invalid refresh token");
    assert_eq!(
        invalid.code(),
        Some(tessera_proto::ErrorCode::InvalidCredentials)
    );

    // A rotated token is refused once the grace window is over.
    let s = spawn(&[("SESSION_REFRESH_GRACE_PERIOD", "0")]).await;
    let client = Client::builder(&s.url).build();
    let login = client.login(EMAIL, PASSWORD, None).await.unwrap();
    client.refresh().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let rotated = refresh_token(&s.url, Some(&login.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(rotated.to_string(), "Invalid refresh token");

    let (url, _) = stub(
        401,
        r#"{"errors":[{"message":"Token expired.","extensions":{"code":"TOKEN_EXPIRED"}}]}"#,
    )
    .await;
    let other = refresh_token(&url, Some("x")).await.unwrap_err();
    assert_eq!(other.to_string(), "401 Unauthorized");
    assert_eq!(other.code(), Some(tessera_proto::ErrorCode::TokenExpired));
}

#[tokio::test]
async fn network_and_5xx_errors_are_retried_then_reported() {
    let (url, hits) = stub(
        503,
        r#"{"errors":[{"message":"busy","extensions":{"code":"SERVICE_UNAVAILABLE"}}]}"#,
    )
    .await;
    let store = MemoryStore::new();
    store
        .save(&tessera_client::Session {
            refresh_token: Some("r".into()),
            ..Default::default()
        })
        .unwrap();
    let client = Client::builder(&url)
        .max_attempts(3)
        .backoff(Duration::from_millis(10))
        .store(Arc::new(store))
        .build();
    let err = client.refresh().await.unwrap_err();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(err.is_transient());
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
    assert!(err.to_string().contains("503"), "{err}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = refresh_token(&format!("http://{closed}"), Some("x"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("/auth/refresh"), "{err}");
}

#[tokio::test]
async fn automatic_refresh_across_expiry() {
    let s = spawn(&[("ACCESS_TOKEN_TTL", "2s")]).await;
    let client = Client::builder(&s.url)
        .refresh_margin(Duration::from_millis(500))
        .build();
    let login = client.login(EMAIL, PASSWORD, None).await.unwrap();
    assert_eq!(client.me().await.unwrap()["email"], EMAIL);
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(client.me().await.unwrap()["email"], EMAIL);
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 1);
    assert_ne!(client.access_token().await.unwrap(), login.access_token);
}

#[tokio::test]
async fn token_expired_answer_triggers_one_refresh() {
    let s = spawn(&[("ACCESS_TOKEN_TTL", "1s")]).await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder(&s.url)
        .refresh_margin(Duration::ZERO)
        .store(store.clone())
        .build();
    client.login(EMAIL, PASSWORD, None).await.unwrap();
    // Pretend the clock drifted: the stored expiry claims the token is still good.
    let mut session = store.load().unwrap().unwrap();
    session.expires_at = Some(i64::MAX / 2);
    store.save(&session).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.me().await.unwrap()["email"], EMAIL);
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_one_refresh() {
    let s = spawn(&[("ACCESS_TOKEN_TTL", "2s")]).await;
    let client = Client::builder(&s.url)
        .refresh_margin(Duration::from_millis(1000))
        .build();
    client.login(EMAIL, PASSWORD, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.me().await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap()["email"], EMAIL);
    }
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_refresh_is_not_cached() {
    let s = spawn(&[("ACCESS_TOKEN_TTL", "1s")]).await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder(&s.url).store(store.clone()).build();
    client.login(EMAIL, PASSWORD, None).await.unwrap();
    let good = store.load().unwrap().unwrap();
    let mut bad = good.clone();
    bad.refresh_token = Some("wrong".into());
    store.save(&bad).unwrap();
    let err = client.me().await.unwrap_err();
    assert_eq!(err.to_string(), "Invalid refresh token");
    store.save(&good).unwrap();
    assert_eq!(client.me().await.unwrap()["email"], EMAIL);
}

#[tokio::test]
async fn static_token_mode_never_refreshes() {
    let s = spawn(&[("ADMIN_TOKEN", "static-admin-token-123")]).await;
    let client = Client::builder(&s.url)
        .static_token("static-admin-token-123")
        .build();
    assert_eq!(client.me().await.unwrap()["email"], EMAIL);
    let err = client.refresh().await.unwrap_err();
    assert!(matches!(err, ClientError::NotLoggedIn(_)));
    let wrong = Client::builder(&s.url).static_token("nope").build();
    let err = wrong.me().await.unwrap_err();
    assert_eq!(err.to_string(), "401 Unauthorized");
    assert_eq!(s.refreshes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_store() {
    let s = spawn(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::new(dir.path().join("s.json")));
    let client = Client::builder(&s.url).store(store.clone()).build();
    let login = client.login(EMAIL, PASSWORD, None).await.unwrap();
    let generic = client
        .request(reqwest_method("GET"), "/users/me?fields=email", None)
        .await
        .unwrap();
    assert_eq!(generic, json!({"data": {"email": EMAIL}}));
    client.logout().await.unwrap();
    assert_eq!(store.load().unwrap(), None);
    let err = refresh_token(&s.url, Some(&login.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid refresh token");
}

fn reqwest_method(m: &str) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_bytes()).unwrap()
}
