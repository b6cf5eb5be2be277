//! A suspension or a change of credentials against logins already in flight: a login that
//! checked the password before the change must not open a session after it, however many run
//! at once; a success forgives only what it saw; a session check reads the user's status.

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

/// Holds a session-mode login after its password check, applies `change` to the user as the
/// admin, lets the login go on, and returns its answer (and the server).
async fn login_across(change: serde_json::Value) -> (Reply, Arc<TestServer>) {
    let (gate, s, id) = held_logins().await;
    let login = login_in_background(&s, "session");
    gate.arrivals(1).await;
    let r = s
        .admin("PATCH", &format!("/users/{id}"), Some(change))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    gate.open();
    let r = login.await.unwrap();
    assert!(r.cookie(SESSION).is_none(), "{:?}", r.set_cookies());
    (r, s)
}

#[tokio::test]
async fn a_login_in_flight_when_the_user_is_suspended_gets_no_session() {
    let (r, _) = login_across(json!({"status": "suspended"})).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn a_login_in_flight_when_the_password_changes_gets_no_session() {
    let (r, s) = login_across(json!({"password": "Changed-Password-2"})).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(s.login(EMAIL, "Changed-Password-2", None).await.status, 200);
}

#[tokio::test]
async fn a_login_in_flight_when_the_email_changes_gets_no_session() {
    let (r, s) = login_across(json!({"email": "moved@example.com"})).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(
        s.login("moved@example.com", PASSWORD, None).await.status,
        200
    );
}

#[tokio::test]
async fn parallel_logins_in_flight_when_another_writer_suspends_get_no_session() {
    let (gate, s, id) = held_logins().await;
    // Six right-password logins are checked, then held before their sessions open…
    let logins: Vec<_> = (0..6).map(|_| login_in_background(&s, "session")).collect();
    gate.arrivals(6).await;
    // …while another writer (another instance, an operator) suspends the user.
    s.database().execute(
        "UPDATE directus_users SET status = 'suspended' WHERE id = $1",
        &[&id],
    );
    gate.open();
    for l in logins {
        let r = l.await.unwrap();
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
        assert!(r.cookie(SESSION).is_none());
    }
    assert_eq!(
        s.database()
            .one("SELECT COUNT(*) FROM directus_sessions", &[]),
        0
    );
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
async fn a_session_check_reads_the_users_status() {
    let s = TestServer::spawn(&[]).await;
    let id = s.user(EMAIL, PASSWORD).await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    // Another writer suspends the user without ending its sessions. The check of the cookie
    // reads the user's status with the session (a change made outside this server is seen
    // once its cache entry, at most 2 s old, is gone; this cookie was never checked before).
    s.database().execute(
        "UPDATE directus_users SET status = 'suspended' WHERE id = $1",
        &[&id],
    );
    let r = me_by_cookie(&s, &cookie).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(r.cookie(SESSION).as_deref(), Some(""));
}
