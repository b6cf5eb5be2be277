//! Restarts on the same data directory, the generated secret, bootstrap.

use serde_json::json;

use crate::common::*;

async fn user_count(s: &TestServer) -> i64 {
    let r = s
        .admin("GET", "/users?fields=id&meta=total_count", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["meta"]["total_count"].as_i64().unwrap()
}

#[tokio::test]
async fn tokens_survive_a_restart_with_the_generated_secret() {
    if on_postgres() {
        eprintln!("SQLite only: PostgreSQL requires SECRET and generates none");
        return;
    }
    let s = TestServer::spawn(&[]).await;
    let secret_path = s.dir.path().join("secret");
    assert!(secret_path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    assert!(secret.trim().len() >= 32);
    let (at, rt) = s.admin_tokens().await;
    let session = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let jwt = session.cookie("directus_session_token").unwrap();
    assert_eq!(user_count(&s).await, 1);

    let db = s.dir.path().join("data.db").display().to_string();
    let dir = s.shutdown().await;
    let s = TestServer::spawn_in(dir, &db, &[]).await;
    assert_eq!(std::fs::read_to_string(&secret_path).unwrap(), secret);
    let r = s.get_as("/users/me?fields=email", &at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["email"], json!(ADMIN_EMAIL));
    assert_eq!(s.get_as("/users/me", &jwt).await.status, 200);
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // No second admin.
    assert_eq!(user_count(&s).await, 1);
}

#[tokio::test]
async fn explicit_secret_change_invalidates_jwts() {
    let s = TestServer::spawn(&[("SECRET", "first-secret-0123456789abcdef0123")]).await;
    assert!(!s.dir.path().join("secret").exists());
    let (at, rt) = s.admin_tokens().await;
    let db = s.dir.path().join("data.db").display().to_string();
    let dir = s.shutdown().await;
    let s =
        TestServer::spawn_in(dir, &db, &[("SECRET", "second-secret-0123456789abcdef012")]).await;
    let r = s.get_as("/users/me", &at).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    // Refresh tokens are opaque and stored as digests: they still work.
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn bootstrap_without_admin_password() {
    let s = TestServer::spawn(&[("ADMIN_PASSWORD", "")]).await;
    assert_eq!(user_count(&s).await, 1);
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    let r = s
        .admin("GET", "/users/me?fields=email,password", None)
        .await;
    assert_eq!(r.body["data"]["email"], json!(ADMIN_EMAIL));
    assert_eq!(r.body["data"]["password"], json!("**********"));
}

#[tokio::test]
async fn restart_with_other_admin_settings_creates_nobody() {
    let s = TestServer::spawn(&[]).await;
    let db = s.dir.path().join("data.db").display().to_string();
    let dir = s.shutdown().await;
    let s = TestServer::spawn_in(
        dir,
        &db,
        &[
            ("ADMIN_EMAIL", "second@example.com"),
            ("ADMIN_PASSWORD", "Other-Password-1"),
        ],
    )
    .await;
    assert_eq!(user_count(&s).await, 1);
    assert_eq!(
        s.login("second@example.com", "Other-Password-1", None)
            .await
            .status,
        401
    );
    assert_eq!(s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await.status, 200);
}
