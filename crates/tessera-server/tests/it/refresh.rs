//! `POST /auth/refresh`: mode resolution, rotation with grace window and reuse detection,
//! concurrency, dead tokens.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

const MISSING: &str =
    "Invalid payload. The refresh token is required in either the payload or cookie.";

async fn refresh_json(s: &TestServer, token: &str) -> Reply {
    s.refresh_json(&token).await
}

fn refresh_of(r: &Reply) -> String {
    r.body["data"]["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn json_mode_via_body_token() {
    let s = TestServer::spawn(&[]).await;
    let (_, rt) = s.admin_tokens().await;
    let r = refresh_json(&s, &rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys: Vec<&str> = r.body["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["expires", "refresh_token", "access_token"]);
    assert_eq!(r.body["data"]["expires"], json!(900_000));
    let next = refresh_of(&r);
    assert!(is_refresh_token(&next));
    assert_ne!(next, rt);
    assert!(r.set_cookies().is_empty());
    assert_eq!(
        r.headers.get("cache-control").unwrap().to_str().unwrap(),
        "no-cache"
    );
    // The new access token works.
    let at = r.body["data"]["access_token"].as_str().unwrap();
    let me = s.get_as("/users/me?fields=email", at).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["data"]["email"], json!(ADMIN_EMAIL));
    // And the successor refreshes in turn.
    let r2 = refresh_json(&s, &next).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    assert_ne!(refresh_of(&r2), next);
}

#[tokio::test]
async fn cookie_mode_is_the_default() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("cookie")).await;
    let rt = r.cookie("directus_refresh_token").unwrap();
    let cookie = format!("directus_refresh_token={rt}");
    let r = s
        .call("POST", "/auth/refresh", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys: Vec<&str> = r.body["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["expires", "access_token"]);
    let next = r.cookie("directus_refresh_token").unwrap();
    assert!(is_refresh_token(&next));
    assert_ne!(next, rt);
    let c = &r.set_cookies()[0];
    assert!(
        c.starts_with(&format!(
            "directus_refresh_token={next}; Max-Age=604800; Path=/; Expires="
        )),
        "{c}"
    );
    // `{}` with the cookie, and an explicit mode, both refresh.
    let r = s
        .with_cookie(
            "POST",
            "/auth/refresh",
            "directus_refresh_token",
            &next,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let next2 = r.cookie("directus_refresh_token").unwrap();
    let r = s
        .with_cookie(
            "POST",
            "/auth/refresh",
            "directus_refresh_token",
            &next2,
            Some(json!({"mode": "cookie"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A json-mode token can be refreshed in cookie mode (the body mode decides the answer).
    let (_, jrt) = s.admin_tokens().await;
    let r = s
        .with_cookie(
            "POST",
            "/auth/refresh",
            "directus_refresh_token",
            &jrt,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["data"].get("refresh_token").is_none());
}

#[tokio::test]
async fn session_mode_needs_explicit_mode() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let jwt = r.cookie("directus_session_token").unwrap();
    let cookie = format!("directus_session_token={jwt}");
    // Without mode the session cookie is not a refresh token.
    for body in [None, Some(json!({})), Some(json!({"mode": "bogus"}))] {
        let r = s
            .call(
                "POST",
                "/auth/refresh",
                &[("cookie", &cookie)],
                body.clone(),
            )
            .await;
        assert_error(&r, 400, "INVALID_PAYLOAD", MISSING);
    }
    let r = s
        .call(
            "POST",
            "/auth/refresh",
            &[("cookie", &cookie)],
            Some(json!({"mode": "session"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, r#"{"data":{"expires":86400000}}"#);
    let next = r.cookie("directus_session_token").unwrap();
    assert_ne!(next, jwt);
    let p = jwt_payload(&next);
    assert!(is_refresh_token(p["session"].as_str().unwrap()));
    assert_ne!(p["session"], jwt_payload(&jwt)["session"]);
    let me = s
        .with_cookie(
            "GET",
            "/users/me?fields=email",
            "directus_session_token",
            &next,
            None,
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
}

#[tokio::test]
async fn missing_token_is_400() {
    let s = TestServer::spawn(&[]).await;
    for body in [
        None,
        Some(json!({})),
        Some(json!({"mode": "bogus"})),
        Some(json!({"mode": "json"})),
        Some(json!({"mode": "cookie"})),
        Some(json!({"mode": "session"})),
        Some(json!({"refresh_token": ""})),
        Some(json!({"refresh_token": null})),
    ] {
        let r = s.call("POST", "/auth/refresh", &[], body.clone()).await;
        assert_error(&r, 400, "INVALID_PAYLOAD", MISSING);
        assert_eq!(
            r.body["errors"][0]["extensions"]["reason"],
            json!("The refresh token is required in either the payload or cookie")
        );
    }
}

#[tokio::test]
async fn unknown_tokens_are_invalid_credentials() {
    let s = TestServer::spawn(&[]).await;
    for body in [
        json!({"refresh_token": "garbage"}),
        json!({"refresh_token": "x".repeat(64)}),
        json!({"refresh_token": 12345}),
    ] {
        let r = s.call("POST", "/auth/refresh", &[], Some(body)).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    }
    let r = s
        .call(
            "POST",
            "/auth/refresh",
            &[("cookie", "directus_refresh_token=nope")],
            None,
        )
        .await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn reuse_within_grace_returns_the_same_successor() {
    let s = TestServer::spawn(&[]).await;
    let (_, rt) = s.admin_tokens().await;
    let a = refresh_json(&s, &rt).await;
    let b = refresh_json(&s, &rt).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(refresh_of(&a), refresh_of(&b));
    // Both access tokens work; the successor refreshes.
    let me = s
        .get_as(
            "/users/me",
            b.body["data"]["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(me.status, 200);
    let c = refresh_json(&s, &refresh_of(&a)).await;
    assert_eq!(c.status, 200, "{}", c.text);
}

#[tokio::test]
async fn reuse_after_grace_revokes_the_session() {
    let s = TestServer::spawn(&[("SESSION_REFRESH_GRACE_PERIOD", "1s")]).await;
    let (_, rt) = s.admin_tokens().await;
    let a = refresh_json(&s, &rt).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let next = refresh_of(&a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replay = refresh_json(&s, &rt).await;
    assert_eq!(replay.status, 401, "{}", replay.text);
    assert_eq!(replay.text, INVALID_CREDENTIALS_BODY);
    // The whole session is gone: the successor is dead too.
    let r = refresh_json(&s, &next).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    // Other sessions of the same user are untouched.
    let (_, other) = s.admin_tokens().await;
    assert_eq!(refresh_json(&s, &other).await.status, 200);
}

#[tokio::test]
async fn successor_refresh_then_old_token_after_grace_revokes() {
    let s = TestServer::spawn(&[("SESSION_REFRESH_GRACE_PERIOD", "1s")]).await;
    let (_, rt) = s.admin_tokens().await;
    let n1 = refresh_of(&refresh_json(&s, &rt).await);
    let n2 = refresh_of(&refresh_json(&s, &n1).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // n1 was rotated more than a grace period ago: replay.
    assert_eq!(refresh_json(&s, &n1).await.status, 401);
    assert_eq!(refresh_json(&s, &n2).await.status, 401);
}

#[tokio::test]
async fn session_mode_grace_and_reuse() {
    let s = TestServer::spawn(&[("SESSION_REFRESH_GRACE_PERIOD", "1s")]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let jwt = r.cookie("directus_session_token").unwrap();
    let cookie = format!("directus_session_token={jwt}");
    let body = Some(json!({"mode": "session"}));
    let a = s
        .call(
            "POST",
            "/auth/refresh",
            &[("cookie", &cookie)],
            body.clone(),
        )
        .await;
    let b = s
        .call(
            "POST",
            "/auth/refresh",
            &[("cookie", &cookie)],
            body.clone(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    let sa = jwt_payload(&a.cookie("directus_session_token").unwrap())["session"].clone();
    let sb = jwt_payload(&b.cookie("directus_session_token").unwrap())["session"].clone();
    assert_eq!(sa, sb);
    // Within the grace window the old session JWT still authenticates.
    let me = s
        .call("GET", "/users/me", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // After it, the old JWT is a replay: refused, its cookie cleared, and its whole session
    // revoked, so the newer cookie is dead too.
    let me = s
        .call("GET", "/users/me", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(me.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(me.cookie("directus_session_token").as_deref(), Some(""));
    let new_cookie = format!(
        "directus_session_token={}",
        a.cookie("directus_session_token").unwrap()
    );
    let me = s
        .call("GET", "/users/me", &[("cookie", &new_cookie)], None)
        .await;
    assert_eq!(me.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_successor() {
    let s = Arc::new(TestServer::spawn(&[]).await);
    let (_, rt) = s.admin_tokens().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let s = s.clone();
        let rt = rt.clone();
        set.spawn(async move { refresh_json(&s, &rt).await });
    }
    let mut successors = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        successors.push(refresh_of(&r));
    }
    assert_eq!(successors.len(), 10);
    assert!(
        successors.iter().all(|t| *t == successors[0]),
        "{successors:?}"
    );
    assert_eq!(refresh_json(&s, &successors[0]).await.status, 200);
}

#[tokio::test]
async fn suspended_user_cannot_refresh() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user("sus@example.com", "Password-123").await;
    let r = s.login("sus@example.com", "Password-123", None).await;
    let rt = refresh_of(&r);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Suspension via PATCH ends the sessions.
    let r = refresh_json(&s, &rt).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    // Re-activation does not resurrect them.
    s.admin(
        "PATCH",
        &format!("/users/{uid}"),
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(refresh_json(&s, &rt).await.status, 401);
}

#[tokio::test]
async fn expired_access_token_blocks_refresh_with_header() {
    let s = TestServer::spawn(&[("ACCESS_TOKEN_TTL", "1s")]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.body["data"]["expires"], json!(1000));
    let at = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let rt = refresh_of(&r);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let me = s.get_as("/users/me", &at).await;
    assert_error(&me, 401, "TOKEN_EXPIRED", "Token expired.");
    let r = s
        .call(
            "POST",
            "/auth/refresh",
            &[("authorization", &format!("Bearer {at}"))],
            Some(json!({"refresh_token": rt})),
        )
        .await;
    assert_error(&r, 401, "TOKEN_EXPIRED", "Token expired.");
    // The failed attempt did not spend the refresh token.
    let r = refresh_json(&s, &rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn refresh_picks_up_the_current_role() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("POST", "/roles", Some(json!({"name": "Later"})))
        .await;
    let role = r.body["data"]["id"].as_str().unwrap().to_owned();
    let uid = s.user("role@example.com", "Password-123").await;
    let r = s.login("role@example.com", "Password-123", None).await;
    let p = jwt_payload(r.body["data"]["access_token"].as_str().unwrap());
    assert_eq!(p["role"], serde_json::Value::Null);
    let r2 = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    let r = refresh_json(&s, &refresh_of(&r)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = jwt_payload(r.body["data"]["access_token"].as_str().unwrap());
    assert_eq!(p["role"], json!(role));
    assert_eq!(p["admin_access"], json!(false));
    assert!(p.get("enforce_tfa").is_none());
}
