//! Hostile or extreme input: deep `fields` and filters, huge offsets, role cycles, the last
//! admin.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn deep_queries_and_huge_offsets_are_400() {
    let s = TestServer::spawn(&[]).await;
    let deep = vec!["role"; 10_000].join(".");
    let r = s.admin("GET", &format!("/users?fields={deep}"), None).await;
    assert_error(
        &r,
        400,
        "INVALID_QUERY",
        "Invalid query. Max relational depth exceeded.",
    );
    let anonymous = s
        .call("GET", &format!("/users?fields={deep}"), &[], None)
        .await;
    assert_eq!(anonymous.status, 400);
    let filter = format!("filter{}=1", "[_and][0]".repeat(5_000));
    let r = s.admin("GET", &format!("/users?{filter}"), None).await;
    assert_eq!(r.code(), "INVALID_QUERY");
    for q in [
        "offset=18446744073709551615",
        "page=18446744073709551615&limit=100",
    ] {
        let r = s.admin("GET", &format!("/users?{q}"), None).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(r.code(), "INVALID_QUERY");
    }
}

#[tokio::test]
async fn role_cycles_are_refused() {
    let s = TestServer::spawn(&[]).await;
    let a = s.admin("POST", "/roles", Some(json!({"name": "A"}))).await;
    let a = a.body["data"]["id"].as_str().unwrap().to_owned();
    let b = s
        .admin("POST", "/roles", Some(json!({"name": "B", "parent": a})))
        .await;
    let b = b.body["data"]["id"].as_str().unwrap().to_owned();
    let own = s
        .admin("PATCH", &format!("/roles/{a}"), Some(json!({"parent": a})))
        .await;
    assert_error(
        &own,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. \"parent\" can't be the role itself or one of its descendants.",
    );
    let loop_ = s
        .admin("PATCH", &format!("/roles/{a}"), Some(json!({"parent": b})))
        .await;
    assert_eq!(loop_.status, 400, "{}", loop_.text);
    let ok = s
        .admin(
            "PATCH",
            &format!("/roles/{b}"),
            Some(json!({"parent": null})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let s = TestServer::spawn(&[]).await;
    let (admin_id, admin_role) = s.admin_identity().await;
    let last = "Can't process content. Cannot remove the last admin user from the system.";
    for (method, path, body) in [
        ("DELETE", format!("/users/{admin_id}"), None),
        (
            "PATCH",
            format!("/users/{admin_id}"),
            Some(json!({"status": "suspended"})),
        ),
        (
            "PATCH",
            format!("/users/{admin_id}"),
            Some(json!({"role": null})),
        ),
        ("DELETE", format!("/roles/{admin_role}"), None),
    ] {
        let r = s.admin(method, &path, body).await;
        assert_error(&r, 422, "UNPROCESSABLE_CONTENT", last);
    }
    // With a second admin, the first may go.
    let second = s
        .create_user(
            json!({"email": "second@example.com", "password": "pw-second-1", "role": admin_role}),
        )
        .await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{second}"),
            Some(json!({"first_name": "Two"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{admin_id}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
