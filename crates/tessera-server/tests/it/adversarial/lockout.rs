//! Password guessing against the attempt limit: ordinary users are suspended as in Directus,
//! while no stranger can lock out an admin — its password logins pause for a growing window
//! and its static token and sessions keep working.

use serde_json::json;

use super::*;

const WRONG: &str = "not-the-password";

async fn guess(s: &TestServer, email: &str, password: &str) -> Reply {
    s.login(email, password, None).await
}

#[tokio::test]
async fn strangers_cannot_lock_out_the_only_admin() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let (_, rt) = s.admin_tokens().await;
    let cookie = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // The default limit is 25: the 26th attempt is the one that would suspend.
    for _ in 0..30 {
        let r = guess(&s, ADMIN_EMAIL, WRONG).await;
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    }
    let (admin_id, _) = s.admin_identity().await;
    assert_eq!(status_of(&s, &admin_id).await, "active");
    // Its static token, refresh token and session cookie all still work.
    assert_eq!(s.admin("GET", "/users/me", None).await.status, 200);
    assert_eq!(s.refresh_json(&rt).await.status, 200);
    assert_eq!(me_by_cookie(&s, &cookie).await.status, 200);
    // Password logins are paused, the right password included, with the same answer.
    let r = guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    // After the window the right password works again, and clears the count: the admin
    // has its full allowance of attempts again.
    clock.advance_ms(60_001);
    assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 200);
    for _ in 0..24 {
        assert_eq!(guess(&s, ADMIN_EMAIL, WRONG).await.status, 401);
    }
    assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn the_admin_lock_grows_with_every_failure_after_it() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    attempt_limit(&s, 2).await;
    for _ in 0..3 {
        guess(&s, ADMIN_EMAIL, WRONG).await;
    }
    // Locked for one minute: refused even with the right password, and not counted.
    for _ in 0..5 {
        assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 401);
    }
    clock.advance_ms(60_001);
    // One checked guess after the window; it fails and locks for two minutes.
    assert_eq!(guess(&s, ADMIN_EMAIL, WRONG).await.status, 401);
    clock.advance_ms(60_001);
    assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 401);
    clock.advance_ms(60_001);
    assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn ordinary_users_are_suspended_by_the_attempt_after_the_limit() {
    let s = TestServer::spawn(&[]).await;
    attempt_limit(&s, 3).await;
    let id = s
        .create_user(json!({
            "email": "victim@example.com",
            "password": "Victim-Password-1",
            "token": "victim-static-token-0123456789",
        }))
        .await;
    let rt = refresh_of(&guess(&s, "victim@example.com", "Victim-Password-1").await);
    for _ in 0..3 {
        assert_eq!(guess(&s, "victim@example.com", WRONG).await.status, 401);
    }
    assert_eq!(status_of(&s, &id).await, "active");
    // The fourth attempt suspends, and is refused even with the right password.
    let r = guess(&s, "victim@example.com", "Victim-Password-1").await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(status_of(&s, &id).await, "suspended");
    // Its static token and sessions end with it.
    assert_eq!(
        s.get_as("/users/me", "victim-static-token-0123456789")
            .await
            .status,
        401
    );
    assert_eq!(s.refresh_json(&rt).await.status, 401);
    // An admin reactivating the user forgives the count: the next login works.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        guess(&s, "victim@example.com", "Victim-Password-1")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_second_admin_is_locked_like_the_last_one_never_suspended() {
    let s = TestServer::spawn(&[]).await;
    attempt_limit(&s, 2).await;
    let (_, role) = s.admin_identity().await;
    let id = s
        .create_user(json!({
            "email": "second-admin@example.com",
            "password": "Second-Admin-1",
            "role": role,
        }))
        .await;
    for _ in 0..6 {
        guess(&s, "second-admin@example.com", WRONG).await;
        guess(&s, ADMIN_EMAIL, WRONG).await;
    }
    // Both admins attacked at once: neither is suspended, so no race between two
    // "another admin remains" checks can leave none.
    assert_eq!(status_of(&s, &id).await, "active");
    let (admin_id, _) = s.admin_identity().await;
    assert_eq!(status_of(&s, &admin_id).await, "active");
}
