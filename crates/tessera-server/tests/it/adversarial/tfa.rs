//! A second factor under attack: one code sent twice at once logs in once, every time.

use serde_json::Value;

use super::*;

const EMAIL: &str = "second@example.com";
const PASSWORD: &str = "Second-Factor-1";
const SECRET: &str = "JBSWY3DPEHPK3PXP";

#[tokio::test]
async fn one_code_sent_twice_at_once_logs_in_once() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let uid = s.user(EMAIL, PASSWORD).await;
    s.database().execute(
        "UPDATE directus_users SET tfa_secret = $1 WHERE id = $2",
        &[SECRET, &uid],
    );
    for _ in 0..5 {
        clock.advance_ms(30_000);
        let code = tessera_core::tfa::current_code(SECRET, clock.now_ms()).unwrap();
        let body = json!({"email": EMAIL, "password": PASSWORD, "otp": code});
        let (a, b) = tokio::join!(
            s.call("POST", "/auth/login", &[], Some(body.clone())),
            s.call("POST", "/auth/login", &[], Some(body)),
        );
        let wins = [a.status, b.status].iter().filter(|st| **st == 200).count();
        assert_eq!(wins, 1, "{} / {}", a.text, b.text);
        for r in [&a, &b].into_iter().filter(|r| r.status != 200) {
            assert_eq!(r.code(), "INVALID_OTP", "{}", r.text);
        }
    }
}

#[tokio::test]
async fn wrong_codes_count_against_the_attempt_limit() {
    let s = TestServer::spawn(&[]).await;
    attempt_limit(&s, 3).await;
    let uid = s.user(EMAIL, PASSWORD).await;
    s.database().execute(
        "UPDATE directus_users SET tfa_secret = $1 WHERE id = $2",
        &[SECRET, &uid],
    );
    for otp in [json!("000000"), json!("111111"), Value::Null] {
        let mut body = json!({"email": EMAIL, "password": PASSWORD});
        if !otp.is_null() {
            body["otp"] = otp;
        }
        let r = s.call("POST", "/auth/login", &[], Some(body)).await;
        assert_eq!(r.code(), "INVALID_OTP", "{}", r.text);
    }
    // Past the limit even the right code gets nowhere: guessing codes is as slow as guessing
    // passwords.
    let code = tessera_core::tfa::current_code(SECRET, SystemClock.now_ms()).unwrap();
    let r = s
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(json!({"email": EMAIL, "password": PASSWORD, "otp": code})),
        )
        .await;
    assert_eq!(r.code(), "INVALID_CREDENTIALS", "{}", r.text);
    let status = s.database().one(
        "SELECT count(*) FROM directus_users WHERE id = $1 AND status = 'suspended'",
        &[&uid],
    );
    assert_eq!(status, 1);
}

#[tokio::test]
async fn generate_is_no_free_password_oracle_for_a_stolen_token() {
    let s = TestServer::spawn(&[]).await;
    attempt_limit(&s, 3).await;
    let uid = s
        .create_user(
            json!({"email": EMAIL, "password": PASSWORD, "token": "stolen-token-0123456789"}),
        )
        .await;
    let stolen = [("authorization", "Bearer stolen-token-0123456789")];
    for guess in ["guess-1", "guess-2", "guess-3"] {
        let r = s
            .call(
                "POST",
                "/users/me/tfa/generate",
                &stolen,
                Some(json!({"password": guess})),
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = s
        .call(
            "POST",
            "/users/me/tfa/generate",
            &stolen,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(
        r.status, 401,
        "past the limit the right password is refused too: {}",
        r.text
    );
    let suspended = s.database().one(
        "SELECT count(*) FROM directus_users WHERE id = $1 AND status = 'suspended'",
        &[&uid],
    );
    assert_eq!(suspended, 1);
}

#[tokio::test]
async fn a_generated_secret_expires_and_a_flood_of_generates_keeps_one() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let policy = s.make("/policies", json!({"name": "Own TFA"})).await;
    s.make(
        "/permissions",
        json!({"policy": policy, "collection": "directus_users", "action": "update",
            "fields": ["tfa_secret"], "permissions": {"id": {"_eq": "$CURRENT_USER"}}}),
    )
    .await;
    s.create_user(
        json!({"email": EMAIL, "password": PASSWORD, "token": "own-token-0123456789",
        "policies": {"create": [{"policy": policy}]}}),
    )
    .await;
    let auth = [("authorization", "Bearer own-token-0123456789")];
    let generate = || {
        s.call(
            "POST",
            "/users/me/tfa/generate",
            &auth,
            Some(json!({"password": PASSWORD})),
        )
    };
    let (r1, r2, r3) = tokio::join!(generate(), generate(), generate());
    let secrets: Vec<String> = [r1, r2, r3]
        .iter()
        .map(|r| r.body["data"]["secret"].as_str().unwrap().to_owned())
        .collect();
    // Only one of the secrets handed out at once can be enabled: the one kept last.
    let enable = |secret: &str| {
        let otp = tessera_core::tfa::current_code(secret, clock.now_ms()).unwrap();
        s.call(
            "POST",
            "/users/me/tfa/enable",
            &auth,
            Some(json!({"secret": secret, "otp": otp})),
        )
    };
    let mut enabled = 0;
    for secret in &secrets {
        if enable(secret).await.status == 204 {
            enabled += 1;
            break;
        }
    }
    assert_eq!(enabled, 1);
    // A secret generated and left waiting expires.
    let other = s.user("late@example.com", "Late-Password-1").await;
    s.make("/access", json!({"user": other, "policy": policy}))
        .await;
    let jwt = access_of(&s.login("late@example.com", "Late-Password-1", None).await);
    let bearer = format!("Bearer {jwt}");
    let late = [("authorization", bearer.as_str())];
    let r = s
        .call(
            "POST",
            "/users/me/tfa/generate",
            &late,
            Some(json!({"password": "Late-Password-1"})),
        )
        .await;
    let secret = r.body["data"]["secret"].as_str().unwrap().to_owned();
    clock.advance_ms(11 * 60 * 1000);
    let otp = tessera_core::tfa::current_code(&secret, clock.now_ms()).unwrap();
    let r = s
        .call(
            "POST",
            "/users/me/tfa/enable",
            &late,
            Some(json!({"secret": secret, "otp": otp})),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"secret\" is not the one generated for this user.",
    );
}
