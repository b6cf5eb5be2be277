//! Two-factor login with TOTP: generate, enable with the generated secret only, log in with a
//! code (one step of skew, never the same code twice), disable, an admin disabling it for a
//! user, secrets sealed at rest, and a plain secret imported from Directus still working.

use serde_json::{Value, json};
use tessera_core::clock::Clock;
use tessera_core::tfa::current_code;

use crate::adversarial::{manual_clock, with_clock};
use crate::common::*;

const EMAIL: &str = "tfa@example.com";
const PASSWORD: &str = "Tfa-Password-1";

/// A role whose users may write their own `tfa_secret`, as Directus's recommended app
/// permissions allow.
async fn tfa_role(s: &TestServer) -> Value {
    let policy = s
        .admin(
            "POST",
            "/policies",
            Some(json!({"name": "Own TFA", "app_access": true})),
        )
        .await
        .body["data"]["id"]
        .clone();
    let r = s
        .admin(
            "POST",
            "/permissions",
            Some(
                json!({"policy": policy, "collection": "directus_users", "action": "update",
                "fields": ["tfa_secret"], "permissions": {"id": {"_eq": "$CURRENT_USER"}}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.admin(
        "POST",
        "/roles",
        Some(json!({"name": "TFA users", "policies": {"create": [{"policy": policy}]}})),
    )
    .await
    .body["data"]["id"]
        .clone()
}

async fn post_as(s: &TestServer, jwt: &str, path: &str, body: Value) -> Reply {
    s.call(
        "POST",
        path,
        &[("authorization", &format!("Bearer {jwt}"))],
        Some(body),
    )
    .await
}

fn jwt_of(r: &Reply) -> String {
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn generate_enable_log_in_and_disable() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let role = tfa_role(&s).await;
    let uid = s
        .create_user(json!({"email": EMAIL, "password": PASSWORD, "role": role}))
        .await;
    let jwt = jwt_of(&s.login(EMAIL, PASSWORD, None).await);
    let generate = "/users/me/tfa/generate";
    assert_error(
        &post_as(&s, &jwt, generate, json!({})).await,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"password\" is required.",
    );
    assert_eq!(
        post_as(&s, &jwt, generate, json!({"password": "wrong"}))
            .await
            .status,
        401
    );
    assert_eq!(
        s.call("POST", generate, &[], Some(json!({"password": PASSWORD})))
            .await
            .status,
        401
    );
    let r = post_as(&s, &jwt, generate, json!({"password": PASSWORD})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 16);
    assert_eq!(
        r.body["data"]["otpauth_url"],
        format!(
            "otpauth://totp/Directus:tfa%40example.com?secret={secret}&period=30&digits=6&algorithm=SHA1&issuer=Directus"
        )
    );
    let now = || clock.now_ms();
    let code = |ms: i64| current_code(&secret, ms).unwrap();
    let enable = "/users/me/tfa/enable";
    for (body, message) in [
        (json!({"otp": "123456"}), "\"secret\" is required"),
        (json!({"secret": secret}), "\"otp\" is required"),
        (
            json!({"secret": "JBSWY3DPEHPK3PXP", "otp": current_code("JBSWY3DPEHPK3PXP", now()).unwrap()}),
            "\"secret\" is not the one generated for this user",
        ),
        (
            json!({"secret": secret, "otp": "000000"}),
            "\"otp\" is invalid",
        ),
    ] {
        let r = post_as(&s, &jwt, enable, body).await;
        assert_error(
            &r,
            400,
            "INVALID_PAYLOAD",
            &format!("Invalid payload. {message}."),
        );
    }
    let r = post_as(
        &s,
        &jwt,
        enable,
        json!({"secret": secret, "otp": code(now())}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Concealed on read, sealed at rest.
    let r = s
        .admin("GET", &format!("/users/{uid}?fields=tfa_secret"), None)
        .await;
    assert_eq!(r.body["data"]["tfa_secret"], "**********");
    let stored = s.database().one(
        "SELECT count(*) FROM directus_users WHERE tfa_secret LIKE 'tfa1:%' AND tfa_secret NOT LIKE $1",
        &[&format!("%{secret}%")],
    );
    assert_eq!(stored, 1);
    let r = post_as(&s, &jwt, generate, json!({"password": PASSWORD})).await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. TFA Secret is already set for this user.",
    );
    // Logging in now takes a code: checked after the password, never twice.
    for mode in [None, Some("session")] {
        let r = s.login(EMAIL, PASSWORD, mode).await;
        assert_eq!(
            r.text,
            r#"{"errors":[{"message":"Invalid user OTP.","extensions":{"code":"INVALID_OTP"}}]}"#
        );
        assert_eq!(r.status, 401);
    }
    let with_otp =
        |password: &str, otp: Value| json!({"email": EMAIL, "password": password, "otp": otp});
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp("wrong", json!(code(now())))),
        )
        .await;
    assert_eq!(r.code(), "INVALID_CREDENTIALS");
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(123456))),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"otp\" must be a string.",
    );
    clock.advance_ms(30_000);
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(code(now())))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(code(now())))),
        )
        .await;
    assert_eq!(r.code(), "INVALID_OTP", "a code is good once");
    // One step of clock skew either way, no more.
    clock.advance_ms(60_000);
    let late = code(now() - 30_000);
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(late))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    clock.advance_ms(60_000);
    let stale = code(now() - 60_000);
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(stale))),
        )
        .await;
    assert_eq!(r.code(), "INVALID_OTP");
    // Disabling takes a fresh code too.
    let disable = "/users/me/tfa/disable";
    assert_error(
        &post_as(&s, &jwt, disable, json!({})).await,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"otp\" is required.",
    );
    assert_error(
        &post_as(&s, &jwt, disable, json!({"otp": "000000"})).await,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"otp\" is invalid.",
    );
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(with_otp(PASSWORD, json!(code(now())))),
        )
        .await;
    assert_eq!(r.status, 200);
    let used = code(now());
    assert_eq!(
        post_as(&s, &jwt, disable, json!({"otp": used}))
            .await
            .status,
        400,
        "a used code"
    );
    clock.advance_ms(30_000);
    let r = post_as(&s, &jwt, disable, json!({"otp": code(now())})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = post_as(&s, &jwt, disable, json!({"otp": code(now())})).await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        &format!("Invalid payload. User \"{uid}\" doesn't have TFA enabled."),
    );
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn enabling_needs_the_right_to_write_ones_own_tfa_secret() {
    let s = TestServer::spawn(&[]).await;
    s.user(EMAIL, PASSWORD).await;
    let jwt = jwt_of(&s.login(EMAIL, PASSWORD, None).await);
    let r = post_as(
        &s,
        &jwt,
        "/users/me/tfa/generate",
        json!({"password": PASSWORD}),
    )
    .await;
    let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
    let otp = current_code(&secret, tessera_core::clock::SystemClock.now_ms()).unwrap();
    let r = post_as(
        &s,
        &jwt,
        "/users/me/tfa/enable",
        json!({"secret": secret, "otp": otp}),
    )
    .await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access collection \"directus_users\" or it does not exist. Queried in root.",
    );
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn an_admin_turns_tfa_off_and_a_directus_secret_keeps_working() {
    let s = TestServer::spawn(&[]).await;
    let uid = s.user(EMAIL, PASSWORD).await;
    // As an import from Directus leaves it: the secret in plain text.
    let plain = "JBSWY3DPEHPK3PXP";
    s.database().execute(
        "UPDATE directus_users SET tfa_secret = $1 WHERE id = $2",
        &[plain, &uid],
    );
    let otp = current_code(plain, tessera_core::clock::SystemClock.now_ms()).unwrap();
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(json!({"email": EMAIL, "password": PASSWORD, "otp": otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let jwt = jwt_of(&r);
    let path = format!("/users/{uid}/tfa/disable");
    assert_eq!(s.call("POST", &path, &[], None).await.status, 401);
    let r = post_as(&s, &jwt, &path, json!({})).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    assert_eq!(s.admin("POST", &path, None).await.status, 204);
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"tfa_secret": plain})),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. You can't change the \"tfa_secret\" value manually.",
    );
}
