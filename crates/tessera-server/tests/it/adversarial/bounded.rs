//! Bounded work: a full hashing queue answers 503 at once, a client that hangs up leaves the
//! queue without costing a hash, and slow or idle connections are closed by the header,
//! body and keep-alive timeouts, under a cap on open connections.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tessera_core::probe::{Gate, Point};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const EMAIL: &str = "queued@example.com";
const PASSWORD: &str = "Queued-Password-1";

/// How long a test waits for something that must happen, before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; what it sent on the way.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out))
        .await
        .expect("the server should have closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `done` holds, polling.
async fn eventually(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition never held");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_at_once_and_deserters_cost_no_hash() {
    let gate = Gate::new(Point::Hashing);
    gate.open();
    let s = Arc::new(TestServer::spawn_with(&[("HASH_QUEUE_LIMIT", "2")], with_gate(&gate)).await);
    s.user(EMAIL, PASSWORD).await;
    let passwords = s.state.auth.passwords().clone();
    let threads = passwords.concurrency();
    let hashed_before = passwords.stats().hashed;
    gate.close();
    let arrived = gate.arrived();
    let login = |s: &Arc<TestServer>| {
        let s = s.clone();
        tokio::spawn(async move { s.login(EMAIL, PASSWORD, None).await })
    };
    // Every hashing thread is taken by a login held at the gate…
    let held: Vec<_> = (0..threads).map(|_| login(&s)).collect();
    gate.arrivals(arrived + threads).await;
    // …two more wait in the queue…
    let queued = [login(&s), login(&s)];
    eventually(|| passwords.stats().waiting == 2).await;
    // …and the next is refused at once, with Directus's pressure answer.
    let r = s.login(EMAIL, PASSWORD, None).await;
    assert_eq!(
        r.text,
        r#"{"errors":[{"message":"Service \"api\" is unavailable. Under pressure.","extensions":{"service":"api","reason":"Under pressure","code":"SERVICE_UNAVAILABLE"}}]}"#
    );
    assert_eq!(r.status, 503);
    // The queued clients hang up: their places free up without a hash being run.
    for q in queued {
        q.abort();
    }
    eventually(|| passwords.stats().waiting == 0).await;
    gate.open();
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
    assert_eq!(passwords.stats().hashed, hashed_before + threads as u64 + 1);
}

#[tokio::test]
async fn logins_refused_under_pressure_are_not_counted() {
    let gate = Gate::new(Point::Hashing);
    gate.open();
    let s = Arc::new(TestServer::spawn_with(&[("HASH_QUEUE_LIMIT", "1")], with_gate(&gate)).await);
    attempt_limit(&s, 2).await;
    s.user(EMAIL, PASSWORD).await;
    let threads = s.state.auth.passwords().concurrency();
    gate.close();
    let arrived = gate.arrived();
    // Strangers' logins take every hashing thread, then the one place in the queue…
    let stranger = |s: &Arc<TestServer>| {
        let s = s.clone();
        tokio::spawn(async move { s.login("ghost@example.com", "x", None).await.status })
    };
    let mut flood: Vec<_> = (0..threads).map(|_| stranger(&s)).collect();
    gate.arrivals(arrived + threads).await;
    flood.push(stranger(&s));
    let passwords = s.state.auth.passwords().clone();
    eventually(|| passwords.stats().waiting == 1).await;
    // …so the owner's logins are refused at once, before they are counted.
    for _ in 0..5 {
        assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 503);
    }
    gate.open();
    for f in flood {
        assert_eq!(f.await.unwrap(), 401);
    }
    assert_eq!(failed_logins(&s, EMAIL), 0);
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn a_guess_abandoned_during_its_check_counts_as_failed() {
    let gate = Gate::new(Point::Hashing);
    gate.open();
    let s = Arc::new(TestServer::spawn_with(&[], with_gate(&gate)).await);
    attempt_limit(&s, 3).await;
    s.user(EMAIL, PASSWORD).await;
    gate.close();
    let arrived = gate.arrived();
    // A guess whose client hangs up while its password is being checked…
    let guess = {
        let s = s.clone();
        tokio::spawn(async move { s.login(EMAIL, "a-guess", None).await })
    };
    gate.arrivals(arrived + 1).await;
    guess.abort();
    // …is counted all the same: hanging up neither guesses for free nor holds the user's
    // allowance of checks in flight.
    eventually(|| failed_logins(&s, EMAIL) == 1).await;
    gate.open();
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
    assert_eq!(failed_logins(&s, EMAIL), 0);
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_and_do_not_starve_other_clients() {
    let s = TestServer::spawn(&[
        ("SERVER_HEADERS_TIMEOUT", "300ms"),
        ("SERVER_MAX_CONNECTIONS", "50"),
    ])
    .await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut c = connect(&s).await;
        c.write_all(b"GET /server/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    // Six times as many as the server takes at once: the header timeout frees their places,
    // and a normal client behind them is served.
    let r = tokio::time::timeout(PATIENCE, s.call("GET", "/server/ping", &[], None))
        .await
        .expect("a normal client should be served");
    assert_eq!(r.status, 200);
    // And every half request is closed by the server.
    for mut c in slow {
        let answer = read_to_close(&mut c).await;
        assert!(!answer.contains("pong"), "{answer}");
    }
}

#[tokio::test]
async fn a_trickled_header_does_not_outlive_the_header_timeout() {
    let s = TestServer::spawn(&[
        ("SERVER_HEADERS_TIMEOUT", "400ms"),
        ("SERVER_KEEP_ALIVE_TIMEOUT", "5s"),
    ])
    .await;
    let mut c = connect(&s).await;
    c.write_all(b"GET /server/ping HTTP/1.1\r\n").await.unwrap();
    // One byte every 100 ms keeps the connection busy but never finishes the head.
    let trickle = async {
        loop {
            if c.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, trickle)
        .await
        .expect("the server should have closed the trickling connection");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = TestServer::spawn(&[("SERVER_KEEP_ALIVE_TIMEOUT", "200ms")]).await;
    let mut c = connect(&s).await;
    c.write_all(b"GET /server/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("pong"), "{answer}");
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_a_closed_connection() {
    let s = TestServer::spawn(&[("SERVER_REQUEST_TIMEOUT", "300ms")]).await;
    let mut c = connect(&s).await;
    c.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer}");
}

#[tokio::test]
async fn the_connection_cap_holds_new_clients_until_a_place_frees() {
    let s = TestServer::spawn(&[("SERVER_MAX_CONNECTIONS", "3")]).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&s).await;
        c.write_all(b"GET /server/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(c);
    }
    let http = reqwest::Client::new();
    let url = format!("{}/server/ping", s.url);
    let fourth = tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth connection was served over the cap"
    );
    drop(idle.pop());
    let status = tokio::time::timeout(PATIENCE, fourth)
        .await
        .expect("the fourth client should be served once a place frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn login_bodies_of_any_size_or_shape_never_hash_more_than_once() {
    let s = TestServer::spawn(&[]).await;
    let passwords = s.state.auth.passwords().clone();
    let before = passwords.stats().hashed;
    for body in [
        json!({"email": ADMIN_EMAIL, "password": "x".repeat(500_000)}),
        json!({"email": "nobody@example.com", "password": "x"}),
        json!({"email": ADMIN_EMAIL}),
        json!({"email": ["array"], "password": {"a": 1}}),
    ] {
        let r = s.call("POST", "/auth/login", &[], Some(body)).await;
        assert!(r.status == 400 || r.status == 401, "{}", r.text);
    }
    // Two reached a password check (the unknown user's against a dummy hash); the invalid
    // bodies were refused before anything was hashed.
    assert_eq!(passwords.stats().hashed - before, 2);
}
