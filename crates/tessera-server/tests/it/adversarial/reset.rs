//! Password reset under attack: one link used twice at once, on one instance or across two;
//! a flood of requests for one address; huge and malformed input; a link outliving the
//! address it was sent to.

use std::sync::Arc;

use tessera_core::probe::{Gate, Point};

use super::*;
use crate::mailbox::Mailbox;
use crate::reset::{request, reset};

const EMAIL: &str = "target@example.com";
const PASSWORD: &str = "Target-Password-1";

fn vars(mail: &Mailbox) -> Vec<(&'static str, String)> {
    let mut v = mail.vars();
    v.push(("PASSWORD_RESET_STALL_TIME", "0".into()));
    v.push((
        "PASSWORD_RESET_URL_ALLOW_LIST",
        "https://app.example.com/reset".into(),
    ));
    v
}

fn borrowed<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn ask(s: &TestServer, email: &str) -> Reply {
    request(s, json!({"email": email})).await
}

/// Asks for a link and returns its token.
async fn token(s: &TestServer, mail: &mut Mailbox, email: &str) -> String {
    assert_eq!(ask(s, email).await.status, 204);
    let link = mail.next().await.link("/admin/reset-password?token=");
    link.rsplit_once("token=").unwrap().1.to_owned()
}

#[tokio::test]
async fn one_link_used_twice_at_once_sets_one_password() {
    let mut mail = Mailbox::start().await;
    let gate = Gate::new(Point::ResetChecked);
    let v = vars(&mail);
    let s = Arc::new(TestServer::spawn_with(&borrowed(&v), with_gate(&gate)).await);
    s.user(EMAIL, PASSWORD).await;
    let t = token(&s, &mut mail, EMAIL).await;
    // Both uses pass every check before either swaps the password.
    let use_link = |password: &'static str| {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move { (password, reset(&s, &t, password).await.status) })
    };
    let (a, b) = (
        use_link("First-New-Password-1"),
        use_link("Second-New-Password-2"),
    );
    gate.arrivals(2).await;
    gate.open();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut statuses = [a.1, b.1];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 403]);
    let (won, lost) = if a.1 == 204 { (a.0, b.0) } else { (b.0, a.0) };
    assert_eq!(s.login(EMAIL, won, None).await.status, 200);
    assert_eq!(s.login(EMAIL, lost, None).await.status, 401);
}

#[tokio::test]
async fn a_link_spent_on_one_instance_is_refused_on_the_other() {
    let mut mail = Mailbox::start().await;
    let v = vars(&mail);
    let a = TestServer::spawn(&borrowed(&v)).await;
    let b = TestServer::spawn_in_with(
        tempfile::tempdir().unwrap(),
        &a.db,
        &borrowed(&v),
        Hooks::default(),
    )
    .await;
    a.user(EMAIL, PASSWORD).await;
    let session = b.login(EMAIL, PASSWORD, None).await;
    let refresh = refresh_of(&session);
    let t = token(&a, &mut mail, EMAIL).await;
    assert_eq!(reset(&b, &t, "New-Password-On-B-1").await.status, 204);
    let again = reset(&a, &t, "New-Password-On-A-2").await;
    assert_eq!(again.code(), "FORBIDDEN", "{}", again.text);
    // The session opened on B before the reset is over on both.
    assert_eq!(a.refresh_json(&refresh).await.status, 401);
    assert_eq!(
        b.login(EMAIL, "New-Password-On-B-1", None).await.status,
        200
    );
}

#[tokio::test]
async fn a_flood_of_requests_for_one_address_sends_a_few_mails() {
    let mut mail = Mailbox::start().await;
    let mut v = vars(&mail);
    v.push(("IP_TRUST_PROXY", "true".into()));
    let s = Arc::new(TestServer::spawn(&borrowed(&v)).await);
    s.user(EMAIL, PASSWORD).await;
    s.user("control@example.com", PASSWORD).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let s = s.clone();
        set.spawn(async move { ask(&s, EMAIL).await.status });
    }
    let statuses = set.join_all().await;
    let accepted = statuses.iter().filter(|st| **st == 204).count();
    assert!(accepted <= 6, "{statuses:?}");
    assert!(
        statuses.iter().all(|st| [204, 429].contains(st)),
        "{statuses:?}"
    );
    // Mail leaves in order: every mail of the flood comes before the control's, asked from
    // another client (the flood's address is waiting now).
    let control = s
        .call(
            "POST",
            "/auth/password/request",
            &[("X-Forwarded-For", "192.0.2.7")],
            Some(json!({"email": "control@example.com"})),
        )
        .await;
    assert_eq!(control.status, 204, "{}", control.text);
    let mut to_target = 0;
    loop {
        let m = mail.next().await;
        if m.to == "control@example.com" {
            break;
        }
        to_target += 1;
    }
    assert_eq!(to_target, accepted);
}

#[tokio::test]
async fn huge_malformed_and_stale_input_changes_nothing() {
    let mut mail = Mailbox::start().await;
    let v = vars(&mail);
    let s = TestServer::spawn(&borrowed(&v)).await;
    let id = s.user(EMAIL, PASSWORD).await;
    let huge = format!("{}@example.com", "a".repeat(500_000));
    assert_eq!(ask(&s, &huge).await.status, 204);
    // Past serde_json's nesting limit of 128 (deeper values overflow this test's own stack).
    let deep = (0..200).fold(json!("x"), |v, _| json!({"a": v}));
    for body in [json!({"email": deep.clone()}), json!({"email": [EMAIL]})] {
        let r = request(&s, body).await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let r = reset(&s, &"x".repeat(500_000), "Whatever-Password-1").await;
    assert_eq!(r.code(), "INVALID_TOKEN", "{}", r.text);
    let r = s
        .call(
            "POST",
            "/auth/password/reset",
            &[],
            Some(json!({"token": deep, "password": "Whatever-Password-1"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A link outlives neither the address it went to nor a forged claim.
    let t = token(&s, &mut mail, EMAIL).await;
    let (head, rest) = t.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_claims = {
        use base64::Engine;
        let mut claims = jwt_payload(&t);
        claims["email"] = json!("admin@example.com");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    let forged = format!("{head}.{forged_claims}.{sig}");
    assert_eq!(
        reset(&s, &forged, "Taken-Over-Password-1").await.code(),
        "INVALID_TOKEN"
    );
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"email": "moved@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        reset(&s, &t, "Taken-Over-Password-1").await.code(),
        "FORBIDDEN"
    );
    assert_eq!(
        s.login("moved@example.com", PASSWORD, None).await.status,
        200
    );
    assert_eq!(mail.waiting(), 0);
}

#[tokio::test]
async fn a_reset_url_cannot_write_into_the_mail_or_choose_the_token() {
    let mut mail = Mailbox::start().await;
    let v = vars(&mail);
    let s = TestServer::spawn(&borrowed(&v)).await;
    s.user(EMAIL, PASSWORD).await;
    // Text that would stand on a line of its own, and a token of the requester's choosing,
    // both inside a URL whose origin and path are allowed.
    let sneaky = "https://app.example.com/reset?token=ATTACKERS&a=\n\nIf the button fails, use: https://evil.io/r?x=";
    let r = request(&s, json!({"email": EMAIL, "reset_url": sneaky})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let m = mail.next().await;
    let text = m.body("text/plain");
    assert!(!text.contains("If the button"), "{text}");
    assert!(!text.contains(" https://evil.io"), "{text}");
    let link = m.link("https://app.example.com/reset?");
    assert_eq!(link.matches("token=").count(), 1, "{link}");
    assert!(!link.contains("ATTACKERS"), "{link}");
    let token = link.rsplit_once("token=").unwrap().1;
    assert_eq!(reset(&s, token, "New-Password-Chosen-1").await.status, 204);
}

#[tokio::test]
async fn a_reset_held_while_another_instance_changes_the_password_is_refused() {
    let mut mail = Mailbox::start().await;
    let gate = Gate::new(Point::ResetChecked);
    let v = vars(&mail);
    let a = Arc::new(TestServer::spawn_with(&borrowed(&v), with_gate(&gate)).await);
    let b = TestServer::spawn_in_with(
        tempfile::tempdir().unwrap(),
        &a.db,
        &borrowed(&v),
        Hooks::default(),
    )
    .await;
    let id = a.user(EMAIL, PASSWORD).await;
    let t = token(&a, &mut mail, EMAIL).await;
    let held = {
        let (a, t) = (a.clone(), t.clone());
        tokio::spawn(async move { reset(&a, &t, "Reset-On-A-Password-1").await })
    };
    // A has checked the link; B's admin sets another password before A writes.
    gate.arrivals(1).await;
    let r = b
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"password": "Chosen-On-B-Password-2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    gate.open();
    let r = held.await.unwrap();
    assert_eq!(r.code(), "FORBIDDEN", "{}", r.text);
    assert_eq!(
        b.login(EMAIL, "Chosen-On-B-Password-2", None).await.status,
        200
    );
    assert_eq!(
        a.login(EMAIL, "Reset-On-A-Password-1", None).await.status,
        401
    );
}

#[tokio::test]
async fn an_abandoned_reset_spends_the_link_at_most_once() {
    let mut mail = Mailbox::start().await;
    let gate = Gate::new(Point::ResetChecked);
    let v = vars(&mail);
    let s = Arc::new(TestServer::spawn_with(&borrowed(&v), with_gate(&gate)).await);
    s.user(EMAIL, PASSWORD).await;
    let t = token(&s, &mut mail, EMAIL).await;
    let held = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move { reset(&s, &t, "Abandoned-Password-1").await })
    };
    gate.arrivals(1).await;
    // The client gives up after every check passed and before the swap.
    held.abort();
    gate.open();
    // Whether the server finished the abandoned reset or not, the link sets one password.
    let again = reset(&s, &t, "Second-Try-Password-2").await;
    let winner = match again.status {
        204 => "Second-Try-Password-2",
        403 => "Abandoned-Password-1",
        other => panic!("unexpected {other}: {}", again.text),
    };
    assert_eq!(s.login(EMAIL, winner, None).await.status, 200);
    assert_eq!(s.login(EMAIL, PASSWORD, None).await.status, 401);
    assert_eq!(
        reset(&s, &t, "Third-Try-Password-3").await.code(),
        "FORBIDDEN"
    );
}
