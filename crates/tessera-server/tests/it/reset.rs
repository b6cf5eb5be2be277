//! Password reset as a user meets it: ask by e-mail, follow the link in the mail that an SMTP
//! sink on 127.0.0.1 received, set a new password; the link works once and every session of
//! the user ends. Also the answers that must not tell whether an account exists.

use serde_json::{Value, json};

use crate::common::*;
use crate::mailbox::Mailbox;

const EMAIL: &str = "forgetful@example.com";
const PASSWORD: &str = "Forgetful-Password-1";
const NEW_PASSWORD: &str = "Remembered-Password-2";

async fn server(mail: &Mailbox, extra: &[(&str, &str)]) -> TestServer {
    let vars = mail.vars();
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("PUBLIC_URL", "http://tessera.test/"));
    all.push((
        "PASSWORD_RESET_URL_ALLOW_LIST",
        "https://app.example.com/reset",
    ));
    all.extend_from_slice(extra);
    TestServer::spawn(&all).await
}

pub(crate) async fn request(s: &TestServer, body: Value) -> Reply {
    s.call("POST", "/auth/password/request", &[], Some(body))
        .await
}

pub(crate) async fn reset(s: &TestServer, token: &str, password: &str) -> Reply {
    s.call(
        "POST",
        "/auth/password/reset",
        &[],
        Some(json!({"token": token, "password": password})),
    )
    .await
}

/// The token of a reset link.
fn token_of(link: &str) -> String {
    link.rsplit_once("token=").expect("a token").1.to_owned()
}

#[tokio::test]
async fn the_link_in_the_mail_sets_a_new_password_once_and_ends_every_session() {
    let mut mail = Mailbox::start().await;
    let s = server(&mail, &[]).await;
    s.user(EMAIL, PASSWORD).await;
    let json_login = s.login(EMAIL, PASSWORD, None).await;
    let refresh = json_login.body["data"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = s
        .login(EMAIL, PASSWORD, Some("session"))
        .await
        .cookie("directus_session_token")
        .unwrap();

    // Any case of the address finds the account.
    let r = request(&s, json!({"email": "Forgetful@EXAMPLE.com"})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let m = mail.next().await;
    assert_eq!(m.to, EMAIL);
    assert_eq!(m.from, "no-reply@example.com");
    assert_eq!(m.subject, "Password Reset Request");
    let link = m.link("http://tessera.test/admin/reset-password?token=");
    let token = token_of(&link);
    assert!(m.body("text/html").contains(&format!("href=\"{link}\"")));
    let claims = jwt_payload(&token);
    assert_eq!(claims["email"], EMAIL);
    assert_eq!(claims["scope"], "password-reset");
    assert_eq!(claims["iss"], "directus");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["hash"].is_string());

    let r = reset(&s, &token, NEW_PASSWORD).await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Every session of the user ended, whatever its mode.
    assert_eq!(s.refresh_json(&refresh).await.status, 401);
    let me = s
        .with_cookie("GET", "/users/me", "directus_session_token", &session, None)
        .await;
    assert_eq!(me.status, 401, "{}", me.text);
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 401);
    assert_eq!(s.login(EMAIL, NEW_PASSWORD, None).await.status, 200);
    // The link works once.
    let again = reset(&s, &token, "Third-Password-3").await;
    assert_error(
        &again,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    assert_eq!(s.login(EMAIL, NEW_PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn a_reset_url_on_the_allow_list_is_the_link_and_others_are_refused() {
    let mut mail = Mailbox::start().await;
    let s = server(&mail, &[]).await;
    s.user(EMAIL, PASSWORD).await;
    let r = request(
        &s,
        json!({"email": EMAIL, "reset_url": "https://app.example.com/reset?lang=fr"}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let m = mail.next().await;
    m.link("https://app.example.com/reset?lang=fr&token=");
    for url in [
        "https://evil.example.com/reset",
        "https://app.example.com.evil.io/reset",
        "http://app.example.com/reset",
    ] {
        // Refused at once, for known and unknown addresses alike.
        for email in [EMAIL, "nobody@example.com"] {
            let r = request(&s, json!({"email": email, "reset_url": url})).await;
            assert_error(
                &r,
                400,
                "INVALID_PAYLOAD",
                &format!("Invalid payload. URL \"{url}\" can't be used to reset passwords."),
            );
        }
    }
    for body in [json!({}), json!({"email": 42}), json!({"email": null})] {
        let r = request(&s, body).await;
        assert_error(
            &r,
            400,
            "INVALID_PAYLOAD",
            "Invalid payload. \"email\" field is required.",
        );
    }
    assert_eq!(mail.waiting(), 0);
}

#[tokio::test]
async fn unknown_and_inactive_accounts_get_the_same_answer_and_no_mail() {
    let mut mail = Mailbox::start().await;
    let s = server(&mail, &[]).await;
    let suspended = s.user("suspended@example.com", PASSWORD).await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{suspended}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.user(EMAIL, PASSWORD).await;
    for email in [
        "nobody@example.com",
        "suspended@example.com",
        "not-an-email",
    ] {
        let started = std::time::Instant::now();
        let r = request(&s, json!({"email": email})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        // The fixed stall runs whatever the request finds.
        assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    }
    // Mail goes out in order: the first to arrive is the known account's, asked for last.
    request(&s, json!({"email": EMAIL})).await;
    assert_eq!(mail.next().await.to, EMAIL);
    assert_eq!(mail.waiting(), 0);
}

#[tokio::test]
async fn bad_tokens_and_passwords_are_refused_as_directus_refuses_them() {
    let mut mail = Mailbox::start().await;
    let s = server(&mail, &[]).await;
    let id = s.user(EMAIL, PASSWORD).await;
    for (body, message) in [
        (
            json!({"password": NEW_PASSWORD}),
            "Invalid payload. \"token\" field is required.",
        ),
        (
            json!({"token": "x"}),
            "Invalid payload. \"password\" field is required.",
        ),
    ] {
        let r = s
            .call("POST", "/auth/password/reset", &[], Some(body))
            .await;
        assert_error(&r, 400, "INVALID_PAYLOAD", message);
    }
    let r = reset(&s, "not-a-token", NEW_PASSWORD).await;
    assert_error(&r, 403, "INVALID_TOKEN", "Invalid token.");
    // A valid access token is not a reset token.
    let access = s.login(EMAIL, PASSWORD, None).await.body["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = reset(&s, &access, NEW_PASSWORD).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );

    request(&s, json!({"email": EMAIL})).await;
    let token = token_of(&mail.next().await.link("http://tessera.test/"));
    // The password policy holds here too, and a refused password spends nothing.
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_password_policy": "/^.{30,}$/"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = reset(&s, &token, "short").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "FAILED_VALIDATION");
    assert!(!r.text.contains("short"), "{}", r.text);
    // Any other change of the password spends the link.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"password": "An-Admin-Chose-This-Password-1234"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = reset(&s, &token, "A-Long-Enough-New-Password-12345").await;
    assert_eq!(r.code(), "FORBIDDEN", "{}", r.text);
}

#[tokio::test]
async fn a_mail_that_cannot_be_delivered_changes_nothing_in_the_answer() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let s = TestServer::spawn(&[
        ("EMAIL_TRANSPORT", "smtp"),
        ("EMAIL_SMTP_HOST", "127.0.0.1"),
        ("EMAIL_SMTP_PORT", &port),
    ])
    .await;
    s.user(EMAIL, PASSWORD).await;
    let r = request(&s, json!({"email": EMAIL})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn sendmail_gets_the_same_mail_on_its_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mail.eml");
    let script = dir.path().join("sendmail");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > '{}.part' && mv '{0}.part' '{0}'\n",
            out.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let path = script.display().to_string();
    let s = TestServer::spawn(&[
        ("EMAIL_TRANSPORT", "sendmail"),
        ("EMAIL_SENDMAIL_PATH", &path),
        ("EMAIL_FROM", "Tessera <auth@example.com>"),
    ])
    .await;
    s.user(EMAIL, PASSWORD).await;
    assert_eq!(request(&s, json!({"email": EMAIL})).await.status, 204);
    let mut raw = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&out) {
            raw = Some(text);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let raw = raw.expect("sendmail ran within 10 s");
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    let from = mail
        .headers
        .iter()
        .find(|h| h.get_key() == "From")
        .unwrap()
        .get_value();
    assert_eq!(from, "Tessera <auth@example.com>");
    let text = mail.subparts[0].get_body().unwrap();
    let token = token_of(
        text.split_whitespace()
            .find(|w| w.contains("token="))
            .unwrap(),
    );
    assert_eq!(reset(&s, &token, NEW_PASSWORD).await.status, 204);
}
