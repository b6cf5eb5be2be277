//! `POST /auth/logout` in every mode.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn json_logout_ends_the_refresh_token() {
    let s = TestServer::spawn(&[]).await;
    let (at, rt) = s.admin_tokens().await;
    let r = s.logout_json(&rt).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.text, "");
    assert!(r.set_cookies().is_empty());
    assert_eq!(
        r.headers.get("cache-control").unwrap().to_str().unwrap(),
        "no-cache"
    );
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    // A stateless access token lives on until exp.
    let me = s.get_as("/users/me?fields=email", &at).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["data"]["email"], json!(ADMIN_EMAIL));
}

#[tokio::test]
async fn logout_ends_rotated_family() {
    let s = TestServer::spawn(&[]).await;
    let (_, rt) = s.admin_tokens().await;
    let r = s.refresh_json(&rt).await;
    let next = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    // Logging out with the (still in grace) old token ends the successor too.
    let r = s.logout_json(&rt).await;
    assert_eq!(r.status, 204);
    let r = s.refresh_json(&next).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn unknown_token_is_204_and_missing_is_400() {
    let s = TestServer::spawn(&[]).await;
    let r = s.logout_json(&"not-a-token").await;
    assert_eq!(r.status, 204, "{}", r.text);
    for body in [None, Some(json!({})), Some(json!({"mode": "session"}))] {
        let r = s.call("POST", "/auth/logout", &[], body).await;
        assert_error(
            &r,
            400,
            "INVALID_PAYLOAD",
            "Invalid payload. The refresh token is required in either the payload or cookie.",
        );
    }
}

#[tokio::test]
async fn cookie_logout_clears_the_refresh_cookie() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("cookie")).await;
    let rt = r.cookie("directus_refresh_token").unwrap();
    let cookie = format!("directus_refresh_token={rt}");
    let r = s
        .call("POST", "/auth/logout", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].starts_with("directus_refresh_token=; Max-Age=0; Path=/; Expires="),
        "{}",
        cookies[0]
    );
    assert!(cookies[0].ends_with("; HttpOnly; SameSite=Lax"));
    let r = s
        .call("POST", "/auth/refresh", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn session_logout_kills_the_session_jwt_at_once() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let jwt = r.cookie("directus_session_token").unwrap();
    let cookie = format!("directus_session_token={jwt}");
    assert_eq!(s.get_as("/users/me", &jwt).await.status, 200);
    // Without mode the session cookie is not used, and the session survives.
    let r = s
        .call("POST", "/auth/logout", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(s.get_as("/users/me", &jwt).await.status, 200);
    let r = s
        .call(
            "POST",
            "/auth/logout",
            &[("cookie", &cookie)],
            Some(json!({"mode": "session"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let cleared = r.cookie("directus_session_token");
    assert_eq!(cleared.as_deref(), Some(""), "{:?}", r.set_cookies());
    let me = s
        .call("GET", "/users/me", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(me.status, 401);
    assert_eq!(me.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(me.cookie("directus_session_token").as_deref(), Some(""));
    let me = s.get_as("/users/me", &jwt).await;
    assert_eq!(me.text, INVALID_CREDENTIALS_BODY);
    // Bearer failure does not clear the cookie.
    assert!(me.set_cookies().is_empty());
    let r = s
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"mode": "session"})),
        )
        .await;
    assert_eq!(r.status, 400);
}
