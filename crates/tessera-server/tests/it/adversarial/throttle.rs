//! Guessing against the throttle: a burst gets no more tries than a patient client, an
//! abandoned attempt still counts, and two instances sharing a store share the count.

use std::sync::Arc;

use tessera_core::probe::{Gate, Point};

use super::*;

const EMAIL: &str = "guessed@example.com";
const PASSWORD: &str = "Guessed-Password-1";

#[tokio::test]
async fn a_burst_of_guesses_gets_no_more_tries_than_a_patient_client() {
    let s = Arc::new(TestServer::spawn(&[]).await);
    s.user(EMAIL, PASSWORD).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let s = s.clone();
        set.spawn(async move { s.login(EMAIL, &format!("guess-{i}"), None).await.status });
    }
    let statuses = set.join_all().await;
    let checked = statuses.iter().filter(|st| **st == 401).count();
    // Five free tries and the one that starts the first wait.
    assert_eq!(checked, 6, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|st| **st == 429).count(), 34);
    assert_eq!(failed_logins(&s, EMAIL), 6);
}

#[tokio::test]
async fn an_abandoned_attempt_counts_from_the_moment_it_starts() {
    let gate = Gate::new(Point::AttemptJudged);
    let s = Arc::new(TestServer::spawn_with(&[], with_gate(&gate)).await);
    s.user(EMAIL, PASSWORD).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        held.push(tokio::spawn(async move {
            s.login(EMAIL, &format!("guess-{i}"), None).await
        }));
    }
    gate.arrivals(6).await;
    // The client gives up on all six before any password is checked.
    for h in held {
        h.abort();
    }
    let r = s.login(EMAIL, PASSWORD, None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    gate.open();
}

#[tokio::test]
async fn two_instances_sharing_a_store_share_the_count() {
    // The address's count is the one under test: 127.0.0.1's own count lives in Redis as long
    // as Redis does, across tests and runs, so it is set out of reach.
    let shared: &[(&str, &str)] = if on_postgres() {
        &[
            ("RATE_LIMITER_STORE", "postgres"),
            ("AUTH_THROTTLE_IP_ATTEMPTS", "1000000"),
        ]
    } else if tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok()
    {
        &[
            ("RATE_LIMITER_STORE", "redis"),
            ("REDIS", "redis://127.0.0.1:6379"),
            ("AUTH_THROTTLE_IP_ATTEMPTS", "1000000"),
        ]
    } else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "Redis is required under CI"
        );
        eprintln!("*** neither PostgreSQL nor Redis: test SKIPPED ***");
        return;
    };
    let a = TestServer::spawn(shared).await;
    let b = TestServer::spawn_in_with(
        tempfile::tempdir().unwrap(),
        &a.db,
        shared,
        Hooks::default(),
    )
    .await;
    // A fresh address per run: Redis outlives the test.
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    for (i, s) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let r = s.login(&email, &format!("guess-{i}"), None).await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    assert_eq!(a.login(&email, "guess", None).await.status, 429);
    assert_eq!(b.login(&email, "guess", None).await.status, 429);
}
