//! Presenting access tokens (carriers, malformed headers, forged JWTs) and static tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::*;

const SECRET: &str = "integration-test-secret-0123456789abcdef";
const TWO_METHODS: &str =
    "Invalid payload. The request uses more than one method for including an access token.";

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn me_status(s: &TestServer, token: &str) -> Reply {
    s.get_as("/users/me?fields=id", token).await
}

#[tokio::test]
async fn every_carrier_works() {
    let s = TestServer::spawn(&[]).await;
    let (at, _) = s.admin_tokens().await;
    let (id, _) = s.admin_identity().await;
    let carriers: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "/users/me?fields=id".into(),
            vec![("authorization", format!("Bearer {at}"))],
        ),
        (
            "/users/me?fields=id".into(),
            vec![("authorization", format!("bearer {at}"))],
        ),
        (format!("/users/me?fields=id&access_token={at}"), vec![]),
        (
            "/users/me?fields=id".into(),
            vec![("cookie", format!("directus_session_token={at}"))],
        ),
        // Header wins over a bad session cookie.
        (
            "/users/me?fields=id".into(),
            vec![
                ("authorization", format!("Bearer {at}")),
                ("cookie", "directus_session_token=garbage".to_owned()),
            ],
        ),
    ];
    for (path, headers) in carriers {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.call("GET", &path, &h, None).await;
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.text);
        assert_eq!(r.body["data"]["id"], json!(id));
    }
}

#[tokio::test]
async fn query_and_header_together_is_400() {
    let s = TestServer::spawn(&[]).await;
    let (at, _) = s.admin_tokens().await;
    for path in ["/users/me", "/server/ping", "/auth/login"] {
        let method = if path == "/auth/login" { "POST" } else { "GET" };
        let r = s
            .call(
                method,
                &format!("{path}?access_token={at}"),
                &[("authorization", &format!("Bearer {at}"))],
                None,
            )
            .await;
        assert_error(&r, 400, "INVALID_PAYLOAD", TWO_METHODS);
    }
    // Query plus session cookie is fine.
    let r = s
        .call(
            "GET",
            &format!("/users/me?access_token={at}"),
            &[("cookie", "directus_session_token=garbage")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn malformed_authorization_headers_are_ignored() {
    let s = TestServer::spawn(&[]).await;
    let (at, _) = s.admin_tokens().await;
    for h in [
        "Basic x".to_owned(),
        format!("Bearer {at} extra"),
        "Bearer a b".to_owned(),
        "Token x".to_owned(),
        "Bearer".to_owned(),
        format!("Bearer  {at}"),
    ] {
        let r = s
            .call("GET", "/users/me", &[("authorization", &h)], None)
            .await;
        assert_eq!(r.status, 401, "{h}: {}", r.text);
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY, "{h}");
        // Public, not an error: /server/info answers without version.
        let r = s
            .call("GET", "/server/info", &[("authorization", &h)], None)
            .await;
        assert_eq!(r.status, 200, "{h}");
        assert!(r.body["data"].get("version").is_none());
    }
}

#[tokio::test]
async fn forged_and_odd_jwts() {
    let s = TestServer::spawn(&[("SECRET", SECRET)]).await;
    let (id, role) = s.admin_identity().await;
    let claims = json!({
        "id": id, "role": role, "app_access": true, "admin_access": true,
        "iat": now(), "exp": now() + 600, "iss": "directus"
    });
    // A correctly signed token works.
    let good = sign(&claims, SECRET);
    let r = me_status(&s, &good).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["id"], json!(id));

    // Another secret.
    let r = me_status(&s, &sign(&claims, "some-other-secret")).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    assert_eq!(
        r.text,
        r#"{"errors":[{"message":"Invalid token.","extensions":{"code":"INVALID_TOKEN"}}]}"#
    );
    // Another secret and expired: still INVALID_TOKEN, not TOKEN_EXPIRED.
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 60);
    let r = me_status(&s, &sign(&expired, "some-other-secret")).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    // Right secret, expired.
    let r = me_status(&s, &sign(&expired, SECRET)).await;
    assert_error(&r, 401, "TOKEN_EXPIRED", "Token expired.");

    // Tampered signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    sig[0] ^= 1;
    parts[2] = URL_SAFE_NO_PAD.encode(sig);
    let r = me_status(&s, &parts.join(".")).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    // Tampered payload (role swapped) with the original signature.
    let mut forged = claims.clone();
    forged["admin_access"] = json!(false);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let good_parts: Vec<&str> = good.split('.').collect();
    let r = me_status(&s, &format!("{}.{p}.{}", good_parts[0], good_parts[2])).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");

    // alg none.
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    for none in [format!("{h}.{p}."), format!("{h}.{p}")] {
        let r = me_status(&s, &none).await;
        if none.ends_with('.') {
            assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
        } else {
            // Two segments is not a JWT: looked up as a static token.
            assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
        }
    }

    // Another issuer: treated as a static token.
    let mut other = claims.clone();
    other["iss"] = json!("someone-else");
    let r = me_status(&s, &sign(&other, SECRET)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    let mut no_iss = claims.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let r = me_status(&s, &sign(&no_iss, SECRET)).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);

    // Required claims.
    for key in ["role", "app_access", "admin_access"] {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(key);
        let r = me_status(&s, &sign(&c, SECRET)).await;
        assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    }
    // Bad id shape.
    let mut c = claims.clone();
    c["id"] = json!("not-a-uuid");
    let r = me_status(&s, &sign(&c, SECRET)).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");

    // No exp: accepted.
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    let r = me_status(&s, &sign(&c, SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["id"], json!(id));

    // HS512 with the right secret is accepted too.
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(me_status(&s, &t).await.status, 200);

    // A session claim that is not in the database.
    let mut c = claims.clone();
    c["session"] = json!("x".repeat(64));
    let r = me_status(&s, &sign(&c, SECRET)).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn garbage_session_cookie_is_cleared() {
    let s = TestServer::spawn(&[]).await;
    for value in ["garbage", "a.b.c"] {
        let r = s
            .with_cookie("GET", "/users/me", "directus_session_token", value, None)
            .await;
        assert!(r.status == 401 || r.status == 403, "{}", r.text);
        let cookies = r.set_cookies();
        assert_eq!(cookies.len(), 1, "{value}: {cookies:?}");
        assert!(
            cookies[0].starts_with("directus_session_token=; Max-Age=0; Path=/;"),
            "{}",
            cookies[0]
        );
    }
    let r = s
        .call(
            "GET",
            "/users/me",
            &[("cookie", "directus_session_token=garbage")],
            None,
        )
        .await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    // A garbage session cookie also blocks login (and is cleared, so the next try works).
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[("cookie", "directus_session_token=garbage")],
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.cookie("directus_session_token").as_deref(), Some(""));
}

#[tokio::test]
async fn expired_session_cookie_is_not_cleared() {
    let s = TestServer::spawn(&[("SESSION_COOKIE_TTL", "1s")]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    assert_eq!(r.body["data"]["expires"], json!(1000));
    let jwt = r.cookie("directus_session_token").unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = s
        .with_cookie("GET", "/users/me", "directus_session_token", &jwt, None)
        .await;
    assert_error(&r, 401, "TOKEN_EXPIRED", "Token expired.");
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn admin_static_token() {
    let s = TestServer::spawn(&[]).await;
    let r = s.get_as("/users/me?fields=email", ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["email"], json!(ADMIN_EMAIL));
    let r = s
        .call(
            "GET",
            &format!("/users/me?fields=email&access_token={ADMIN_TOKEN}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get_as("/users/me", "admin-static-token-wrong").await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn static_token_lifecycle() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user("static@example.com", "Password-123").await;
    let t1 = "static-token-one-0123456789";
    let t2 = "static-token-two-0123456789";
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"token": t1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["token"], json!("**********"));
    assert_eq!(r.body["data"]["password"], json!("**********"));
    assert!(!r.text.contains(t1));
    let r = s
        .admin("GET", &format!("/users/{uid}?fields=id,token"), None)
        .await;
    assert_eq!(r.body["data"], json!({"id": uid, "token": "**********"}));

    let r = s.get_as("/users/me", t1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!({"id": uid}));

    // Rotate.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"token": t2})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get_as("/users/me", t1).await.text,
        INVALID_CREDENTIALS_BODY
    );
    assert_eq!(s.get_as("/users/me", t2).await.status, 200);

    // Duplicate on another user: concealed message, token never echoed.
    let other = s.user("other@example.com", "Password-123").await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{other}"),
            Some(json!({"token": t2})),
        )
        .await;
    assert_error(
        &r,
        400,
        "RECORD_NOT_UNIQUE",
        "Value \"**********\" for field \"token\" in collection \"directus_users\" has to be unique.",
    );
    assert_eq!(
        r.body["errors"][0]["extensions"],
        json!({"code": "RECORD_NOT_UNIQUE", "collection": "directus_users", "field": "token", "value": "**********"})
    );
    assert!(!r.text.contains(t2), "{}", r.text);
    // Also on create, and with the admin's token.
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "third@example.com", "token": ADMIN_TOKEN})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "RECORD_NOT_UNIQUE");
    assert!(!r.text.contains(ADMIN_TOKEN));

    // Suspension stops the token at once; re-activation restores it.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get_as("/users/me", t2).await.text,
        INVALID_CREDENTIALS_BODY
    );
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.get_as("/users/me", t2).await.status, 200);

    // Empty string and null remove it.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"token": null})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["token"], Value::Null);
    assert_eq!(
        s.get_as("/users/me", t2).await.text,
        INVALID_CREDENTIALS_BODY
    );
    s.admin(
        "PATCH",
        &format!("/users/{uid}"),
        Some(json!({"token": t1})),
    )
    .await;
    assert_eq!(s.get_as("/users/me", t1).await.status, 200);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"token": ""})),
        )
        .await;
    assert_eq!(r.body["data"]["token"], Value::Null);
    assert_eq!(s.get_as("/users/me", t1).await.status, 401);
}

#[tokio::test]
async fn static_token_as_session_cookie() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .with_cookie(
            "GET",
            "/users/me?fields=email",
            "directus_session_token",
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["email"], json!(ADMIN_EMAIL));
}

#[tokio::test]
async fn deleting_a_user_kills_its_tokens() {
    let s = TestServer::spawn(&[]).await;
    let uid = s
        .create_user(json!({"email": "gone@example.com", "password": "Password-123", "token": "gone-token-0123456789"}))
        .await;
    assert_eq!(
        s.get_as("/users/me", "gone-token-0123456789").await.status,
        200
    );
    let r = s.login("gone@example.com", "Password-123", None).await;
    let rt = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let at = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let session = s
        .login("gone@example.com", "Password-123", Some("session"))
        .await;
    let jwt = session.cookie("directus_session_token").unwrap();
    let r = s.admin("DELETE", &format!("/users/{uid}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.text, "");
    assert_eq!(
        s.get_as("/users/me", "gone-token-0123456789").await.text,
        INVALID_CREDENTIALS_BODY
    );
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(
        s.get_as("/users/me", &jwt).await.text,
        INVALID_CREDENTIALS_BODY
    );
    // A stateless JWT of the deleted user still verifies; /users/me answers {id} only.
    let r = s.get_as("/users/me", &at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"data": {"id": uid}}));
    let r = s.admin("GET", &format!("/users/{uid}"), None).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    let r = s.login("gone@example.com", "Password-123", None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn password_change_ends_sessions_of_another_user() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user("pw@example.com", "Old-Password-1").await;
    let r = s.login("pw@example.com", "Old-Password-1", None).await;
    let at = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let rt = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let session = s
        .login("pw@example.com", "Old-Password-1", Some("session"))
        .await;
    let jwt = session.cookie("directus_session_token").unwrap();
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"password": "New-Password-2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("New-Password-2"));
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(s.get_as("/users/me", &jwt).await.status, 401);
    // Stateless JWTs live on.
    assert_eq!(s.get_as("/users/me", &at).await.status, 200);
    assert_eq!(
        s.login("pw@example.com", "Old-Password-1", None)
            .await
            .status,
        401
    );
    assert_eq!(
        s.login("pw@example.com", "New-Password-2", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn own_password_change_keeps_the_current_session() {
    let s = TestServer::spawn(&[]).await;
    let a = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let keep = a.cookie("directus_session_token").unwrap();
    let (_, other_rt) = s.admin_tokens().await;
    let r = s
        .with_cookie(
            "PATCH",
            "/users/me",
            "directus_session_token",
            &keep,
            Some(json!({"password": "Brand-New-Password-3"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.get_as("/users/me", &keep).await.status, 200);
    let r = s.refresh_json(&other_rt).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn suspension_ends_sessions() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user("end@example.com", "Password-123").await;
    let session = s
        .login("end@example.com", "Password-123", Some("session"))
        .await;
    let jwt = session.cookie("directus_session_token").unwrap();
    assert_eq!(s.get_as("/users/me", &jwt).await.status, 200);
    s.admin(
        "PATCH",
        &format!("/users/{uid}"),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(
        s.get_as("/users/me", &jwt).await.text,
        INVALID_CREDENTIALS_BODY
    );
}
