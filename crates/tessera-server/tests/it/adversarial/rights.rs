//! Rights follow the user at once wherever the database is consulted anyway: a demoted admin
//! loses admin rights on its session cookie's and static token's next request. A plain JWT
//! keeps its `role` claim until it expires, as in Directus.

use serde_json::json;

use super::*;

const EMAIL: &str = "deputy@example.com";
const PASSWORD: &str = "Deputy-Password-1";
const TOKEN: &str = "deputy-static-token-0123456789";

async fn settings_by_cookie(s: &TestServer, cookie: &str) -> Reply {
    s.with_cookie("GET", "/settings?fields=id", SESSION, cookie, None)
        .await
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_rights_on_cookie_and_static_token_at_once() {
    let s = TestServer::spawn(&[]).await;
    let (_, admin_role) = s.admin_identity().await;
    let id = s
        .create_user(json!({
            "email": EMAIL, "password": PASSWORD, "role": admin_role, "token": TOKEN,
        }))
        .await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    let jwt = access_of(&s.login(EMAIL, PASSWORD, None).await);
    // Warm every cache with an admin-only read first.
    assert_eq!(settings_by_cookie(&s, &cookie).await.status, 200);
    assert_eq!(s.get_as("/settings?fields=id", TOKEN).await.status, 200);
    assert_eq!(s.get_as("/settings?fields=id", &jwt).await.status, 200);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"role": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(settings_by_cookie(&s, &cookie).await.status, 403);
    assert_eq!(s.get_as("/settings?fields=id", TOKEN).await.status, 403);
    // The session cookie answers with the user's current role, not its claim.
    let me = s
        .with_cookie("GET", "/users/me?fields=id", SESSION, &cookie, None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    // The stateless JWT keeps its claim until it expires (documented).
    assert_eq!(s.get_as("/settings?fields=id", &jwt).await.status, 200);
    // Promoted again: rights come back on the next request too.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"role": admin_role})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(settings_by_cookie(&s, &cookie).await.status, 200);
    assert_eq!(s.get_as("/settings?fields=id", TOKEN).await.status, 200);
}

#[tokio::test]
async fn a_suspended_users_static_token_and_cookie_stop_at_once() {
    let s = TestServer::spawn(&[]).await;
    let id = s
        .create_user(json!({"email": EMAIL, "password": PASSWORD, "token": TOKEN}))
        .await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    assert_eq!(me_by_cookie(&s, &cookie).await.status, 200);
    assert_eq!(s.get_as("/users/me", TOKEN).await.status, 200);
    s.admin(
        "PATCH",
        &format!("/users/{id}"),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(me_by_cookie(&s, &cookie).await.status, 401);
    assert_eq!(s.get_as("/users/me", TOKEN).await.status, 401);
}
