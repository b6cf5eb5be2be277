//! `POST /auth/login`: bodies per mode, cookies, JWT claims, validation, stall, lockout.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn json_mode_body_shape_and_key_order() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.set_cookies().is_empty());
    let data = r.body["data"].as_object().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["expires", "refresh_token", "access_token"]);
    assert!(
        r.text
            .starts_with(r#"{"data":{"expires":900000,"refresh_token":""#),
        "{}",
        r.text
    );
    let refresh = data["refresh_token"].as_str().unwrap();
    assert!(is_refresh_token(refresh), "{refresh}");
    let i_refresh = r.text.find("\"refresh_token\"").unwrap();
    let i_access = r.text.find("\"access_token\"").unwrap();
    assert!(i_refresh < i_access);
    // Explicit mode json gives the same shape.
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("json")).await;
    assert_eq!(r.status, 200);
    assert!(r.body["data"]["refresh_token"].is_string());
}

#[tokio::test]
async fn jwt_claims() {
    let s = TestServer::spawn(&[]).await;
    let (id, role) = s.admin_identity().await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    let p = jwt_payload(r.body["data"]["access_token"].as_str().unwrap());
    assert_eq!(p["id"], json!(id));
    assert_eq!(p["role"], json!(role));
    assert_eq!(p["app_access"], json!(true));
    assert_eq!(p["admin_access"], json!(true));
    assert_eq!(p["iss"], json!("directus"));
    assert_eq!(p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(), 900);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((p["iat"].as_i64().unwrap() - now).abs() <= 5);
    assert!(p.get("session").is_none(), "{p}");

    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("cookie")).await;
    let p = jwt_payload(r.body["data"]["access_token"].as_str().unwrap());
    assert!(p.get("session").is_none(), "{p}");

    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    let jwt = r.cookie("directus_session_token").unwrap();
    let p = jwt_payload(&jwt);
    assert!(is_refresh_token(p["session"].as_str().unwrap()), "{p}");
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        86_400
    );
    assert_eq!(p["id"], json!(id));
}

#[tokio::test]
async fn custom_ttl_shows_in_expires_and_claims() {
    let s = TestServer::spawn(&[("ACCESS_TOKEN_TTL", "2m")]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.body["data"]["expires"], json!(120_000));
    let p = jwt_payload(r.body["data"]["access_token"].as_str().unwrap());
    assert_eq!(p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(), 120);
}

#[tokio::test]
async fn cookie_mode_sets_refresh_cookie() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("cookie")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys: Vec<&str> = r.body["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["expires", "access_token"]);
    assert_eq!(r.body["data"]["expires"], json!(900_000));
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    let tok = r.cookie("directus_refresh_token").unwrap();
    assert!(is_refresh_token(&tok));
    let prefix = format!("directus_refresh_token={tok}; Max-Age=604800; Path=/; Expires=");
    assert!(c.starts_with(&prefix), "{c}");
    assert!(c.ends_with("; HttpOnly; SameSite=Lax"), "{c}");
    assert!(c.contains(" GMT; HttpOnly"), "{c}");
    assert!(!c.contains("Secure"), "{c}");
}

#[tokio::test]
async fn session_mode_sets_session_cookie() {
    let s = TestServer::spawn(&[]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("session")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, r#"{"data":{"expires":86400000}}"#);
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let jwt = r.cookie("directus_session_token").unwrap();
    assert_eq!(jwt.split('.').count(), 3);
    let c = &cookies[0];
    assert!(
        c.starts_with(&format!(
            "directus_session_token={jwt}; Max-Age=86400; Path=/; Expires="
        )),
        "{c}"
    );
    assert!(c.ends_with("; HttpOnly; SameSite=Lax"), "{c}");
    // The session cookie authenticates.
    let me = s
        .with_cookie(
            "GET",
            "/users/me?fields=email",
            "directus_session_token",
            &jwt,
            None,
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["data"]["email"], json!(ADMIN_EMAIL));
}

#[tokio::test]
async fn https_public_url_makes_cookies_secure() {
    let s = TestServer::spawn(&[("PUBLIC_URL", "https://auth.example.com")]).await;
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, Some("cookie")).await;
    let c = &r.set_cookies()[0];
    assert!(c.ends_with("; HttpOnly; Secure; SameSite=Lax"), "{c}");
}

#[tokio::test]
async fn bad_credentials_are_invalid_credentials() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user("suspended@example.com", "Password-123").await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (email, password) in [
        (ADMIN_EMAIL, "wrong-password"),
        ("nobody@example.com", ADMIN_PASSWORD),
        ("suspended@example.com", "Password-123"),
    ] {
        for mode in [None, Some("cookie"), Some("session")] {
            let r = s.login(email, password, mode).await;
            assert_eq!(r.status, 401, "{email} {mode:?}: {}", r.text);
            assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
            assert!(r.set_cookies().is_empty());
        }
    }
}

#[tokio::test]
async fn email_is_case_insensitive() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .login(&ADMIN_EMAIL.to_uppercase(), ADMIN_PASSWORD, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.login("Admin@Example.COM", ADMIN_PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn validation_messages() {
    let s = TestServer::spawn(&[]).await;
    let cases = [
        (
            json!({"password": "x"}),
            "Invalid payload. \"email\" is required.",
        ),
        (
            json!({"email": "invalidEmail", "password": "x"}),
            "Invalid payload. \"email\" must be a valid email.",
        ),
        (
            json!({"email": "admin@localhost", "password": "x"}),
            "Invalid payload. \"email\" must be a valid email.",
        ),
        (
            json!({"email": ADMIN_EMAIL}),
            "Invalid payload. \"password\" is required.",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": 123}),
            "Invalid payload. \"password\" must be a string.",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": ""}),
            "Invalid payload. \"password\" is not allowed to be empty.",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "mode": "bogus"}),
            "Invalid payload. \"mode\" must be one of [cookie, json, session].",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "mode": 1}),
            "Invalid payload. \"mode\" must be one of [cookie, json, session].",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": 5}),
            "Invalid payload. \"otp\" must be a string.",
        ),
        (
            json!({"email": 42, "password": "x"}),
            "Invalid payload. \"email\" must be a string.",
        ),
        (json!({}), "Invalid payload. \"email\" is required."),
    ];
    for (body, msg) in cases {
        let r = s.call("POST", "/auth/login", &[], Some(body.clone())).await;
        assert_error(&r, 400, "INVALID_PAYLOAD", msg);
        assert!(!r.text.contains(ADMIN_PASSWORD), "{body}: {}", r.text);
    }
    // Unknown keys are allowed.
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "extra": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn form_body_reads_as_empty() {
    let s = TestServer::spawn(&[]).await;
    let form = format!("email={ADMIN_EMAIL}&password={ADMIN_PASSWORD}");
    let r = s
        .call_raw(
            "POST",
            "/auth/login",
            &[],
            "application/x-www-form-urlencoded",
            form.into_bytes(),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"email\" is required.",
    );
    let r = s
        .call_raw("POST", "/auth/login", &[], "text/plain", b"{}".to_vec())
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"email\" is required.",
    );
}

#[tokio::test]
async fn login_stall_time_pads_failures() {
    let s = TestServer::spawn(&[("LOGIN_STALL_TIME", "300")]).await;
    for (email, password) in [
        (ADMIN_EMAIL, "wrong-password"),
        ("nobody@example.com", "whatever"),
    ] {
        let t = Instant::now();
        let r = s.login(email, password, None).await;
        let took = t.elapsed();
        assert_eq!(r.status, 401);
        assert!(took >= Duration::from_millis(300), "{email}: {took:?}");
    }
    let t = Instant::now();
    let r = s
        .call("POST", "/auth/login", &[], Some(json!({"password": "x"})))
        .await;
    assert_eq!(r.status, 400);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

async fn status_of(s: &TestServer, uid: &str) -> String {
    let r = s
        .admin("GET", &format!("/users/{uid}?fields=status"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn login_attempts_suspend_on_the_tripping_attempt() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["auth_login_attempts"], json!(2));
    let uid = s.user("lock@example.com", "Right-Password-1").await;
    for _ in 0..2 {
        let r = s.login("lock@example.com", "wrong", None).await;
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
        assert_eq!(status_of(&s, &uid).await, "active");
    }
    // The third attempt trips the limit and is refused even with the right password.
    let r = s.login("lock@example.com", "Right-Password-1", None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(status_of(&s, &uid).await, "suspended");
    let r = s.login("lock@example.com", "Right-Password-1", None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn successful_login_resets_attempt_counter() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let uid = s.user("reset@example.com", "Right-Password-1").await;
    // wrong, right, wrong, right, wrong, wrong: four failures in all, never two in a row
    // before a success, so the user stays active.
    for _ in 0..2 {
        let r = s.login("reset@example.com", "wrong", None).await;
        assert_eq!(r.status, 401);
        let r = s.login("reset@example.com", "Right-Password-1", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for _ in 0..2 {
        let r = s.login("reset@example.com", "wrong", None).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(status_of(&s, &uid).await, "active");
    // The next attempt trips the limit.
    let r = s.login("reset@example.com", "Right-Password-1", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(status_of(&s, &uid).await, "suspended");
}

#[tokio::test]
async fn invalid_bearer_blocks_login() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[("authorization", "Bearer not-a-known-token")],
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
}

#[tokio::test]
async fn non_ascii_email_logs_in_as_stored() {
    let s = TestServer::spawn(&[]).await;
    s.user("JÜRGEN@example.com", "Password-123").await;
    let r = s.login("JÜRGEN@example.com", "Password-123", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.login("jÜrgen@EXAMPLE.com", "Password-123", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn only_active_default_provider_users_with_a_password_log_in() {
    let s = TestServer::spawn(&[NO_THROTTLE]).await;
    let uid = s.create_user(json!({"email": "nopw@example.com"})).await;
    let r = s
        .admin(
            "GET",
            &format!("/users/{uid}?fields=status,provider,password"),
            None,
        )
        .await;
    assert_eq!(
        r.body["data"],
        json!({"status": "active", "provider": "default", "password": null})
    );
    assert_eq!(
        s.login("nopw@example.com", "anything", None).await.text,
        INVALID_CREDENTIALS_BODY
    );
    let patch = |body: serde_json::Value| {
        let path = format!("/users/{uid}");
        let s = &s;
        async move {
            let r = s.admin("PATCH", &path, Some(body)).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    patch(json!({"password": "Password-123", "provider": "ldap"})).await;
    assert_eq!(
        s.login("nopw@example.com", "Password-123", None).await.text,
        INVALID_CREDENTIALS_BODY
    );
    for status in ["draft", "invited", "unverified", "archived", "suspended"] {
        patch(json!({"provider": "default", "status": status})).await;
        let r = s.login("nopw@example.com", "Password-123", None).await;
        assert_eq!(r.text, INVALID_CREDENTIALS_BODY, "{status}");
    }
    patch(json!({"status": "active"})).await;
    assert_eq!(
        s.login("nopw@example.com", "Password-123", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn zero_login_attempts_suspends_on_first_attempt() {
    let s = TestServer::spawn(&[NO_THROTTLE]).await;
    let uid = s.user("zero@example.com", "Password-123").await;
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.login("zero@example.com", "Password-123", None).await;
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    assert_eq!(status_of(&s, &uid).await, "suspended");
    // null means unlimited.
    s.admin(
        "PATCH",
        "/settings",
        Some(json!({"auth_login_attempts": null})),
    )
    .await;
    s.admin(
        "PATCH",
        &format!("/users/{uid}"),
        Some(json!({"status": "active"})),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(s.login("zero@example.com", "wrong", None).await.status, 401);
    }
    assert_eq!(
        s.login("zero@example.com", "Password-123", None)
            .await
            .status,
        200
    );
}
