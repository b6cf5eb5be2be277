//! Replayed refresh tokens and session cookies: reuse detection in every mode, the grace
//! window that never hands out a spent token, and the switch that keeps the family alive.

use std::sync::Arc;

use serde_json::json;

use super::*;

/// Grace is 10 s by default; this is one past it.
const PAST_GRACE_MS: i64 = 10_001;

#[tokio::test]
async fn a_session_cookie_replayed_on_refresh_revokes_every_token_of_its_family() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let a = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = refresh_session(&s, &a).await.cookie(SESSION).unwrap();
    assert_eq!(me_by_cookie(&s, &b).await.status, 200);
    clock.advance_ms(PAST_GRACE_MS);
    let replay = refresh_session(&s, &a).await;
    assert_eq!(replay.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(replay.cookie(SESSION).as_deref(), Some(""));
    // Every token of the family is dead: the newer cookie, and a refresh with it.
    let me = me_by_cookie(&s, &b).await;
    assert_eq!(me.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(me.cookie(SESSION).as_deref(), Some(""));
    assert_eq!(refresh_session(&s, &b).await.status, 401);
    // Another session of the same user is untouched.
    let other = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(me_by_cookie(&s, &other).await.status, 200);
}

#[tokio::test]
async fn a_session_cookie_replayed_on_any_route_revokes_its_family() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let a = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = refresh_session(&s, &a).await.cookie(SESSION).unwrap();
    // Inside the window the old cookie still works (a request in flight during a refresh).
    assert_eq!(me_by_cookie(&s, &a).await.status, 200);
    clock.advance_ms(PAST_GRACE_MS);
    assert_eq!(me_by_cookie(&s, &a).await.status, 401);
    assert_eq!(me_by_cookie(&s, &b).await.status, 401);
    assert_eq!(refresh_session(&s, &b).await.status, 401);
}

#[tokio::test]
async fn a_json_token_replayed_after_the_window_revokes_its_family() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let (_, t) = s.admin_tokens().await;
    let s1 = refresh_of(&s.refresh_json(&t).await);
    clock.advance_ms(PAST_GRACE_MS);
    let replay = s.refresh_json(&t).await;
    assert_eq!(replay.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(s.refresh_json(&s1).await.status, 401);
    // Logging out with a token of the ended family is not an error.
    assert_eq!(s.logout_json(&s1).await.status, 204);
}

#[tokio::test]
async fn inside_the_window_a_replay_gets_the_live_token_never_a_spent_one() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let (_, t) = s.admin_tokens().await;
    // Tab A refreshes twice: T → S1 → S2.
    let s1 = refresh_of(&s.refresh_json(&t).await);
    clock.advance_ms(1_000);
    let s2 = refresh_of(&s.refresh_json(&s1).await);
    assert_ne!(s1, s2);
    // Tab B replays T inside T's window: it gets S2, the live token, not S1.
    clock.advance_ms(1_000);
    let b = s.refresh_json(&t).await;
    assert_eq!(refresh_of(&b), s2);
    // S1 replayed inside its own window gets S2 too.
    assert_eq!(refresh_of(&s.refresh_json(&s1).await), s2);
    // Nothing was revoked: S2 is live and rotates on.
    let s3 = refresh_of(&s.refresh_json(&s2).await);
    assert_eq!(refresh_of(&s.refresh_json(&s3).await).len(), 64);
}

#[tokio::test]
async fn a_replay_older_than_the_family_remembers_is_refused_without_revoking() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let (_, t) = s.admin_tokens().await;
    // Three refreshes inside T's window: T is three generations behind the live token.
    let mut live = t.clone();
    for _ in 0..3 {
        clock.advance_ms(100);
        live = refresh_of(&s.refresh_json(&live).await);
    }
    clock.advance_ms(100);
    // Too old to judge exactly while the window may still be open: a plain 401.
    assert_eq!(s.refresh_json(&t).await.text, INVALID_CREDENTIALS_BODY);
    let next = refresh_of(&s.refresh_json(&live).await);
    // Once even the older remembered refresh is past the window, T is a replay.
    clock.advance_ms(PAST_GRACE_MS);
    assert_eq!(s.refresh_json(&t).await.status, 401);
    assert_eq!(s.refresh_json(&next).await.status, 401);
}

#[tokio::test]
async fn session_mode_grace_answers_with_the_live_session() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let a = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = refresh_session(&s, &a).await.cookie(SESSION).unwrap();
    clock.advance_ms(1_000);
    let c = refresh_session(&s, &b).await.cookie(SESSION).unwrap();
    // A replay of A inside its window names the live session (C's), not B's spent one.
    let again = refresh_session(&s, &a).await.cookie(SESSION).unwrap();
    assert_eq!(
        jwt_payload(&again)["session"],
        jwt_payload(&c)["session"],
        "a grace answer must carry the live token"
    );
    assert_eq!(me_by_cookie(&s, &again).await.status, 200);
    assert_eq!(me_by_cookie(&s, &c).await.status, 200);
}

/// A server whose replays are refused without ending their session.
async fn spawn_without_revocation(clock: &tessera_core::clock::ManualClock) -> TestServer {
    TestServer::spawn_with(
        &[("SESSION_REFRESH_REVOKE_ON_REUSE", "false")],
        with_clock(clock),
    )
    .await
}

#[tokio::test]
async fn with_revocation_off_a_replay_fails_but_the_family_lives() {
    let clock = manual_clock();
    let s = spawn_without_revocation(&clock).await;
    let (_, t) = s.admin_tokens().await;
    let s1 = refresh_of(&s.refresh_json(&t).await);
    let a = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = refresh_session(&s, &a).await.cookie(SESSION).unwrap();
    clock.advance_ms(PAST_GRACE_MS);
    // The stored token an automation job replays: refused, as on Directus…
    assert_eq!(s.refresh_json(&t).await.text, INVALID_CREDENTIALS_BODY);
    let replay = me_by_cookie(&s, &a).await;
    assert_eq!(replay.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(replay.cookie(SESSION).as_deref(), Some(""));
    // …and the live successors keep working.
    assert_eq!(s.refresh_json(&s1).await.status, 200);
    assert_eq!(me_by_cookie(&s, &b).await.status, 200);
}

#[tokio::test]
async fn with_revocation_off_a_logout_with_a_stale_token_spares_the_live_one() {
    let clock = manual_clock();
    let s = spawn_without_revocation(&clock).await;
    let (_, t) = s.admin_tokens().await;
    let live = refresh_of(&s.refresh_json(&t).await);
    clock.advance_ms(PAST_GRACE_MS);
    // A job logging out with the token it stored long ago: answered, but the session lives.
    assert_eq!(s.logout_json(&t).await.status, 204);
    let live = refresh_of(&s.refresh_json(&live).await);
    // The live token ends it.
    assert_eq!(s.logout_json(&live).await.status, 204);
    assert_eq!(s.refresh_json(&live).await.status, 401);
}

#[tokio::test]
async fn with_revocation_on_a_logout_with_a_stale_token_ends_the_session() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let (_, t) = s.admin_tokens().await;
    let live = refresh_of(&s.refresh_json(&t).await);
    clock.advance_ms(PAST_GRACE_MS);
    assert_eq!(s.logout_json(&t).await.status, 204);
    assert_eq!(s.refresh_json(&live).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_checked_while_its_session_rotates_is_never_refused() {
    const READERS: usize = 4;
    let s = Arc::new(TestServer::spawn(&[]).await);
    let mut cookie = session_login(&s, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (latest, watch) = tokio::sync::watch::channel((0usize, cookie.clone()));
    // The newest cookie version each reader has finished a check of.
    let done: Arc<Vec<std::sync::atomic::AtomicUsize>> =
        Arc::new((0..READERS).map(|_| Default::default()).collect());
    // Readers keep checking the newest cookie while it rotates under them; a read that
    // loaded the family just before a rotation must not make the newer cookie look stale.
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (s, watch, done) = (s.clone(), watch.clone(), done.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                loop {
                    let (version, c) = watch.borrow().clone();
                    if c.is_empty() {
                        break;
                    }
                    let r = me_by_cookie(&s, &c).await;
                    if r.status != 200 {
                        refused.push(format!("{} {}", r.status, r.text));
                    }
                    done[i].fetch_max(version, std::sync::atomic::Ordering::SeqCst);
                }
                refused
            })
        })
        .collect();
    for version in 1..=100 {
        let r = refresh_session(&s, &cookie).await;
        assert_eq!(r.status, 200, "{}", r.text);
        cookie = r.cookie(SESSION).unwrap();
        latest.send_replace((version, cookie.clone()));
        // The next rotation waits until every reader has checked this cookie, so that no
        // check is ever more than one rotation behind (a cookie two rotations old is a
        // different case: see `verdicts_follow_the_grace_window_of_each_spent_token`).
        while done
            .iter()
            .any(|d| d.load(std::sync::atomic::Ordering::SeqCst) < version)
        {
            tokio::task::yield_now().await;
        }
    }
    latest.send_replace((0, String::new()));
    for r in readers {
        let refused = r.await.unwrap();
        assert!(refused.is_empty(), "live cookies were refused: {refused:?}");
    }
}

#[tokio::test]
async fn forged_tokens_naming_a_real_family_change_nothing() {
    let s = TestServer::spawn(&[]).await;
    let (_, t) = s.admin_tokens().await;
    // Same family and a later generation, but a MAC the attacker had to guess.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = b64.decode(&t).unwrap();
    raw[23] = raw[23].wrapping_add(1);
    raw[40] ^= 0x55;
    let forged = b64.encode(&raw);
    assert_eq!(s.refresh_json(&forged).await.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(s.logout_json(&forged).await.status, 204);
    // The real token is untouched by either.
    assert_eq!(s.refresh_json(&t).await.status, 200);
    for junk in [
        json!("x".repeat(64)),
        json!("é".repeat(32)),
        json!("a".repeat(10_000)),
    ] {
        assert_eq!(
            s.call(
                "POST",
                "/auth/refresh",
                &[],
                Some(json!({"refresh_token": junk}))
            )
            .await
            .text,
            INVALID_CREDENTIALS_BODY
        );
    }
}

#[tokio::test]
async fn a_new_secret_keeps_live_refresh_tokens_but_not_spent_ones() {
    let s = TestServer::spawn(&[("SECRET", "first-secret-0123456789abcdef0123")]).await;
    let (_, t) = s.admin_tokens().await;
    let live = refresh_of(&s.refresh_json(&t).await);
    let db = s.dir.path().join("data.db").display().to_string();
    let dir = s.shutdown().await;
    let s =
        TestServer::spawn_in(dir, &db, &[("SECRET", "second-secret-0123456789abcdef012")]).await;
    // The spent token cannot be told from a forgery any more: refused, nothing revoked.
    assert_eq!(s.refresh_json(&t).await.status, 401);
    let next = refresh_of(&s.refresh_json(&live).await);
    assert_eq!(s.refresh_json(&next).await.status, 200);
}

#[tokio::test]
async fn a_second_instance_on_the_same_database_agrees_on_every_verdict() {
    const SECRET: &str = "shared-secret-0123456789abcdef0123456789";
    let clock = manual_clock();
    let a = TestServer::spawn_with(&[("SECRET", SECRET)], with_clock(&clock)).await;
    let db = a.dir.path().join("data.db").display().to_string();
    let b = TestServer::spawn_in_with(
        tempfile::tempdir().unwrap(),
        &db,
        &[("SECRET", SECRET)],
        with_clock(&clock),
    )
    .await;
    let (_, t) = a.admin_tokens().await;
    let s1 = refresh_of(&a.refresh_json(&t).await);
    // Inside the window the other instance hands out the same live token…
    assert_eq!(refresh_of(&b.refresh_json(&t).await), s1);
    // …and after it, a replay on one instance ends the session on both.
    clock.advance_ms(PAST_GRACE_MS);
    assert_eq!(b.refresh_json(&t).await.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(a.refresh_json(&s1).await.text, INVALID_CREDENTIALS_BODY);
    // A logout on one instance ends a session the other refreshes.
    let (_, u) = b.admin_tokens().await;
    assert_eq!(a.logout_json(&u).await.status, 204);
    assert_eq!(b.refresh_json(&u).await.status, 401);
}
