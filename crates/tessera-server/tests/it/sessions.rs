//! Sessions a user can see and end: `GET /auth/sessions`, `DELETE /auth/sessions/:id`,
//! `POST /auth/logout {"scope": "all"}`, and an admin doing the same for anyone.

use serde_json::json;

use crate::adversarial::{SESSION, refresh_of, session_login};
use crate::common::*;

const EMAIL: &str = "sessions@example.com";
const PASSWORD: &str = "Sessions-Pass-1";

async fn refresh_token_of(s: &TestServer) -> String {
    let r = s.login(EMAIL, PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_user_sees_its_sessions_never_their_tokens_and_knows_its_own() {
    let s = TestServer::spawn(&[]).await;
    s.user(EMAIL, PASSWORD).await;
    let refresh = refresh_token_of(&s).await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    let r = s
        .with_cookie("GET", "/auth/sessions", SESSION, &cookie, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.body["data"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", r.text);
    assert_eq!(list.iter().filter(|x| x["current"] == true).count(), 1);
    for x in list {
        for key in ["id", "created", "last_used", "expires", "ip", "user_agent"] {
            assert!(x.get(key).is_some(), "{key} missing: {x}");
        }
    }
    assert!(!r.text.contains(&refresh), "a refresh token leaked");
    assert!(!r.text.contains(&cookie), "a session token leaked");
    // A plain JWT belongs to no session.
    let jwt = s.login(EMAIL, PASSWORD, None).await.body["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.get_as("/auth/sessions", &jwt).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["current"] == false)
    );
    assert_eq!(s.call("GET", "/auth/sessions", &[], None).await.status, 401);
}

#[tokio::test]
async fn ending_one_session_kills_its_tokens_and_nobody_ends_anothers() {
    let s = TestServer::spawn(&[]).await;
    s.user(EMAIL, PASSWORD).await;
    let other = s.user("other@example.com", "Other-Pass-12").await;
    let refresh = refresh_token_of(&s).await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    let list = s
        .with_cookie("GET", "/auth/sessions", SESSION, &cookie, None)
        .await;
    let json_session = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another user cannot end it, nor list this user's sessions.
    let theirs = s
        .login("other@example.com", "Other-Pass-12", None)
        .await
        .body["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {theirs}");
    let auth = [("authorization", bearer.as_str())];
    let r = s
        .call(
            "DELETE",
            &format!("/auth/sessions/{json_session}"),
            &auth,
            None,
        )
        .await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    let (me, _) = {
        let r = s
            .with_cookie("GET", "/users/me?fields=id", SESSION, &cookie, None)
            .await;
        (r.body["data"]["id"].as_str().unwrap().to_owned(), ())
    };
    let r = s
        .call("GET", &format!("/auth/sessions?user={me}"), &auth, None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    for bad in ["not-a-uuid", "00000000-0000-4000-8000-000000000000"] {
        let r = s
            .with_cookie(
                "DELETE",
                &format!("/auth/sessions/{bad}"),
                SESSION,
                &cookie,
                None,
            )
            .await;
        assert_eq!(r.status, 403, "{bad}: {}", r.text);
    }
    // Its owner can.
    let r = s
        .with_cookie(
            "DELETE",
            &format!("/auth/sessions/{json_session}"),
            SESSION,
            &cookie,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.refresh_json(&refresh).await.status, 401);
    let r = s
        .with_cookie("GET", "/users/me", SESSION, &cookie, None)
        .await;
    assert_eq!(
        r.status, 200,
        "the caller's own session lives on: {}",
        r.text
    );
    // An admin lists and ends anyone's.
    let mine = s
        .admin("GET", &format!("/auth/sessions?user={me}"), None)
        .await;
    let id = mine.body["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.admin("DELETE", &format!("/auth/sessions/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.with_cookie("GET", "/users/me", SESSION, &cookie, None)
            .await
            .status,
        401
    );
    let r = s
        .admin("GET", &format!("/auth/sessions?user={other}"), None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{}", r.text);
}

#[tokio::test]
async fn logout_with_scope_all_ends_every_session_of_the_user() {
    let s = TestServer::spawn(&[]).await;
    s.user(EMAIL, PASSWORD).await;
    s.user("bystander@example.com", "Bystander-1").await;
    let first = refresh_token_of(&s).await;
    let second = refresh_token_of(&s).await;
    let cookie = session_login(&s, EMAIL, PASSWORD).await;
    let bystander = s
        .login("bystander@example.com", "Bystander-1", None)
        .await
        .body["data"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .call(
            "POST",
            "/auth/logout",
            &[],
            Some(json!({"refresh_token": first, "scope": "nope"})),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"scope\" must be one of [session, all].",
    );
    assert_eq!(s.refresh_json(&second).await.status, 200);
    let second = refresh_token_of(&s).await;
    let r = s
        .call(
            "POST",
            "/auth/logout",
            &[],
            Some(json!({"refresh_token": first, "scope": "all"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.refresh_json(&first).await.status, 401);
    assert_eq!(s.refresh_json(&second).await.status, 401);
    assert_eq!(
        s.with_cookie("GET", "/users/me", SESSION, &cookie, None)
            .await
            .status,
        401
    );
    assert_eq!(
        s.refresh_json(&bystander).await.status,
        200,
        "another user's session lives on"
    );
    // A forged or spent token ends nothing.
    let again = refresh_token_of(&s).await;
    let r = s
        .call(
            "POST",
            "/auth/logout",
            &[],
            Some(json!({"refresh_token": first, "scope": "all"})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.refresh_json(&again).await.status, 200);
}

#[tokio::test]
async fn a_spent_token_ends_at_most_its_own_session_never_the_users_others() {
    let s = TestServer::spawn(&[]).await;
    s.user(EMAIL, PASSWORD).await;
    let other = refresh_token_of(&s).await;
    let old = refresh_token_of(&s).await;
    let live = refresh_of(&s.refresh_json(&old).await);
    // `old` is spent (inside its grace window): with scope all it still ends nothing beyond
    // its own session.
    let r = s
        .call(
            "POST",
            "/auth/logout",
            &[],
            Some(json!({"refresh_token": old, "scope": "all"})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.refresh_json(&live).await.status,
        401,
        "its own session ended"
    );
    assert_eq!(
        s.refresh_json(&other).await.status,
        200,
        "the user's other session lives on"
    );
}
