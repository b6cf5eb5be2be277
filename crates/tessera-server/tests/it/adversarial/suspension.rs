//! A suspension (or a password change) against logins already in flight: a login that checked
//! the password before the change must not open a session after it, however many run at once,
//! and a session whose user is no longer active stops working at once.

use std::sync::Arc;

use serde_json::json;
use tessera_core::probe::{Gate, Point};

use super::*;

const EMAIL: &str = "inflight@example.com";
const PASSWORD: &str = "Inflight-Password-1";

/// A server whose logins stop after their password check until the gate opens.
async fn held_logins() -> (Arc<Gate>, Arc<TestServer>, String) {
    let gate = Gate::new(Point::PasswordVerified);
    let s = Arc::new(TestServer::spawn_with(&[], with_gate(&gate)).await);
    let id = s.user(EMAIL, PASSWORD).await;
    (gate, s, id)
}

fn login_in_background(s: &Arc<TestServer>, mode: &'static str) -> tokio::task::JoinHandle<Reply> {
    let s = s.clone();
    tokio::spawn(async move { s.login(EMAIL, PASSWORD, Some(mode)).await })
}

#[tokio::test]
async fn a_login_in_flight_when_the_user_is_suspended_gets_no_session() {
    let (gate, s, id) = held_logins().await;
    let login = login_in_background(&s, "session");
    gate.arrivals(1).await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    gate.open();
    let r = login.await.unwrap();
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert!(r.cookie(SESSION).is_none());
}

#[tokio::test]
async fn a_login_in_flight_when_the_password_changes_gets_no_session() {
    let (gate, s, id) = held_logins().await;
    let login = login_in_background(&s, "json");
    gate.arrivals(1).await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"password": "Changed-Password-2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    gate.open();
    assert_eq!(login.await.unwrap().text, INVALID_CREDENTIALS_BODY);
    assert_eq!(s.login(EMAIL, "Changed-Password-2", None).await.status, 200);
}

#[tokio::test]
async fn parallel_logins_started_before_a_lockout_get_no_session() {
    let (gate, s, id) = held_logins().await;
    attempt_limit(&s, 6).await;
    // Six right-password logins are counted and checked, then held before their session.
    let logins: Vec<_> = (0..6).map(|_| login_in_background(&s, "session")).collect();
    gate.arrivals(6).await;
    // The seventh attempt exceeds the limit and suspends the user.
    assert_eq!(s.login(EMAIL, "wrong", None).await.status, 401);
    assert_eq!(status_of(&s, &id).await, "suspended");
    gate.open();
    for l in logins {
        let r = l.await.unwrap();
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
        assert!(r.cookie(SESSION).is_none());
    }
}

#[tokio::test]
async fn a_success_forgives_only_the_attempts_counted_before_it() {
    let (gate, s, id) = held_logins().await;
    attempt_limit(&s, 4).await;
    // The owner's login is counted (1) and held; the attacker's two guesses count 2 and 3.
    let owner = login_in_background(&s, "json");
    gate.arrivals(1).await;
    for _ in 0..2 {
        assert_eq!(s.login(EMAIL, "guess", None).await.status, 401);
    }
    gate.open();
    assert_eq!(owner.await.unwrap().status, 200);
    // Had the success reset the count to 0, four more guesses would pass; it forgave one.
    for _ in 0..2 {
        assert_eq!(s.login(EMAIL, "guess", None).await.status, 401);
    }
    assert_eq!(status_of(&s, &id).await, "active");
    assert_eq!(s.login(EMAIL, "guess", None).await.status, 401);
    assert_eq!(status_of(&s, &id).await, "suspended");
}

#[tokio::test]
async fn a_session_of_a_user_made_inactive_behind_the_servers_back_stops_working() {
    let s = TestServer::spawn(&[]).await;
    let id = s.user(EMAIL, PASSWORD).await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    // Another writer (an operator's SQL, another instance) suspends the user without ending
    // its sessions; the next check of the cookie sees the status.
    let db = rusqlite::Connection::open(s.dir.path().join("data.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE directus_users SET status = 'suspended' WHERE id = ?1",
        [&id],
    )
    .unwrap();
    let r = me_by_cookie(&s, &cookie).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(r.cookie(SESSION).as_deref(), Some(""));
}
