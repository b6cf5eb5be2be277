//! Password guessing against the attempt limit: ordinary users are suspended as in Directus,
//! while no stranger can lock out an admin — its password logins pause for a growing window
//! and its static token and sessions keep working. The login throttle, which would slow
//! these guesses down first, is off: what is tested here is the limit beneath it.

use std::sync::Arc;

use serde_json::json;
use tessera_core::probe::{Gate, Point};

use super::*;

const WRONG: &str = "not-the-password";

async fn guess(s: &TestServer, email: &str, password: &str) -> Reply {
    s.login(email, password, None).await
}

#[tokio::test]
async fn strangers_cannot_lock_out_the_only_admin() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[NO_THROTTLE], with_clock(&clock)).await;
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
    let s = TestServer::spawn_with(&[NO_THROTTLE], with_clock(&clock)).await;
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
    let s = TestServer::spawn(&[NO_THROTTLE]).await;
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

fn locked_until(s: &TestServer, email: &str) -> Option<i64> {
    // -1 stands for "no lock" (NULL) in the one-integer query.
    let until = s.database().one(
        "SELECT coalesce(login_locked_until, -1) FROM directus_users WHERE email = $1",
        &[email],
    );
    (until >= 0).then_some(until)
}

#[tokio::test]
async fn two_admins_guessed_at_once_are_both_locked_never_suspended() {
    let clock = manual_clock();
    let s = Arc::new(TestServer::spawn_with(&[NO_THROTTLE], with_clock(&clock)).await);
    attempt_limit(&s, 2).await;
    let (_, role) = s.admin_identity().await;
    let second = "second-admin@example.com";
    let id = s
        .create_user(json!({"email": second, "password": "Second-Admin-1", "role": role}))
        .await;
    // Both admins attacked in parallel: neither is suspended, so no race between two
    // "another admin remains" checks can leave none.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..24 {
        let s = s.clone();
        let email = if i % 2 == 0 { ADMIN_EMAIL } else { second };
        set.spawn(async move { guess(&s, email, WRONG).await.status });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 401);
    }
    let (admin_id, _) = s.admin_identity().await;
    assert_eq!(status_of(&s, &id).await, "active");
    assert_eq!(status_of(&s, &admin_id).await, "active");
    // However many of the parallel guesses were checked, a few more lock each of them (the
    // first attempt to find the limit reached locks); once the window has passed, both log in
    // with their passwords.
    for email in [ADMIN_EMAIL, second] {
        while locked_until(&s, email).is_none() {
            assert_eq!(guess(&s, email, WRONG).await.status, 401);
        }
    }
    assert_eq!(status_of(&s, &id).await, "active");
    assert_eq!(status_of(&s, &admin_id).await, "active");
    clock.advance_ms(60_001);
    assert_eq!(guess(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 200);
    assert_eq!(guess(&s, second, "Second-Admin-1").await.status, 200);
}

#[tokio::test]
async fn parallel_guesses_get_no_more_checks_than_the_limit() {
    let gate = Gate::new(Point::AttemptJudged);
    gate.open();
    let s = Arc::new(TestServer::spawn_with(&[NO_THROTTLE], with_gate(&gate)).await);
    attempt_limit(&s, 3).await;
    let email = "target@example.com";
    let id = s.user(email, "Right-Password-1").await;
    gate.close();
    let arrived = gate.arrived();
    // Ten guesses are judged while all ten are in flight: three get a password check.
    let guesses: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { guess(&s, email, &format!("wrong-{i}")).await.text })
        })
        .collect();
    gate.arrivals(arrived + 10).await;
    gate.open();
    for g in guesses {
        assert_eq!(g.await.unwrap(), INVALID_CREDENTIALS_BODY);
    }
    assert_eq!(failed_logins(&s, email), 3);
    assert_eq!(status_of(&s, &id).await, "active");
    // The next attempt finds the limit reached: suspended, and refused.
    assert_eq!(guess(&s, email, "Right-Password-1").await.status, 401);
    assert_eq!(status_of(&s, &id).await, "suspended");
}

#[tokio::test]
async fn parallel_right_passwords_do_not_count_against_the_user() {
    let gate = Gate::new(Point::AttemptJudged);
    gate.open();
    let s = Arc::new(TestServer::spawn_with(&[NO_THROTTLE], with_gate(&gate)).await);
    attempt_limit(&s, 3).await;
    let email = "robot@example.com";
    let id = s.user(email, "Robot-Password-1").await;
    gate.close();
    let arrived = gate.arrived();
    let logins: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { guess(&s, email, "Robot-Password-1").await.status })
        })
        .collect();
    gate.arrivals(arrived + 6).await;
    gate.open();
    let mut statuses = Vec::new();
    for l in logins {
        statuses.push(l.await.unwrap());
    }
    statuses.sort_unstable();
    // As many as the limit allows in flight get in; the rest are refused, uncounted.
    assert_eq!(statuses, [200, 200, 200, 401, 401, 401]);
    assert_eq!(status_of(&s, &id).await, "active");
    assert_eq!(failed_logins(&s, email), 0);
    assert_eq!(guess(&s, email, "Robot-Password-1").await.status, 200);
}

#[tokio::test]
async fn every_refusal_costs_one_hash_like_a_wrong_password() {
    let s = TestServer::spawn(&[NO_THROTTLE]).await;
    attempt_limit(&s, 1).await;
    let hashed = || s.state.auth.passwords().stats().hashed;
    let costs = async |email: &str, password: &str| {
        let before = hashed();
        assert_eq!(guess(&s, email, password).await.status, 401);
        hashed() - before
    };
    assert_eq!(costs(ADMIN_EMAIL, WRONG).await, 1, "a wrong password");
    assert_eq!(
        costs("nobody@example.com", WRONG).await,
        1,
        "an unknown e-mail"
    );
    assert_eq!(costs(ADMIN_EMAIL, WRONG).await, 1, "the attempt that locks");
    assert_eq!(
        costs(ADMIN_EMAIL, ADMIN_PASSWORD).await,
        1,
        "a locked admin"
    );
    s.user("plain@example.com", "Plain-Password-1").await;
    assert_eq!(
        costs("plain@example.com", WRONG).await,
        1,
        "a wrong password"
    );
    assert_eq!(
        costs("plain@example.com", WRONG).await,
        1,
        "the suspending attempt"
    );
    assert_eq!(
        costs("plain@example.com", WRONG).await,
        1,
        "a suspended user"
    );
}
