//! The attacker's tests: what a hostile client can try against a running server, each written
//! to fail on the defect it guards against. Races hold one side at a known point (a probe
//! gate) instead of hoping for a timing; time-dependent rules move an injected clock instead
//! of sleeping. Later features add their files here.

mod bounded;
mod database;
mod files;
mod input;
mod instances;
mod interleavings;
mod lockout;
mod permissions;
mod reset;
mod reuse;
mod rights;
mod storage;
mod suspension;
mod text;
mod tfa;
mod throttle;
mod writes;

use std::sync::Arc;

use serde_json::json;
use tessera_core::clock::{Clock, ManualClock, SystemClock};
use tessera_core::probe::{Gate, NoProbe, Probe};
use tessera_server::Hooks;

use crate::common::*;

pub const SESSION: &str = "directus_session_token";

/// A clock standing at the real time until a test moves it.
pub fn manual_clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

/// Hooks with `clock` and no probe.
pub fn with_clock(clock: &ManualClock) -> Hooks {
    Hooks {
        clock: Arc::new(clock.clone()),
        probe: Arc::new(NoProbe),
    }
}

/// Hooks with the real clock and `gate` as the probe.
pub fn with_gate(gate: &Arc<Gate>) -> Hooks {
    Hooks {
        probe: gate.clone() as Arc<dyn Probe>,
        ..Hooks::default()
    }
}

/// Logs in in session mode; returns the session cookie's value.
pub async fn session_login(s: &TestServer, email: &str, password: &str) -> String {
    let r = s.login(email, password, Some("session")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.cookie(SESSION).expect("session cookie")
}

/// `POST /auth/refresh {"mode":"session"}` with a session cookie.
pub async fn refresh_session(s: &TestServer, cookie: &str) -> Reply {
    s.with_cookie(
        "POST",
        "/auth/refresh",
        SESSION,
        cookie,
        Some(json!({"mode": "session"})),
    )
    .await
}

/// `GET /users/me` with a session cookie.
pub async fn me_by_cookie(s: &TestServer, cookie: &str) -> Reply {
    s.with_cookie("GET", "/users/me?fields=id,email", SESSION, cookie, None)
        .await
}

/// The refresh token of a json-mode answer.
pub fn refresh_of(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["refresh_token"].as_str().unwrap().to_owned()
}

/// The access token of a json- or cookie-mode answer.
pub fn access_of(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

/// Sets `auth_login_attempts`.
pub async fn attempt_limit(s: &TestServer, limit: i64) {
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": limit})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A user's status as the admin reads it.
pub async fn status_of(s: &TestServer, id: &str) -> String {
    let r = s
        .admin("GET", &format!("/users/{id}?fields=status"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["status"].as_str().unwrap().to_owned()
}

/// The failed password checks counted for `email` since its last success.
pub fn failed_logins(s: &TestServer, email: &str) -> i64 {
    s.database().one(
        "SELECT failed_logins FROM directus_users WHERE lower(email) = $1",
        &[email],
    )
}
