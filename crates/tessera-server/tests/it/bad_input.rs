//! Malformed and hostile requests never produce a 500.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn malformed_json() {
    let s = TestServer::spawn(&[]).await;
    for (path, method) in [
        ("/auth/login", "POST"),
        ("/auth/refresh", "POST"),
        ("/auth/logout", "POST"),
        ("/users", "POST"),
        ("/settings", "PATCH"),
    ] {
        let r = s
            .call_raw(
                method,
                path,
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                "application/json",
                b"{\"email\": ".to_vec(),
            )
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.code(), "INVALID_PAYLOAD", "{path}");
        assert!(r.message().starts_with("Invalid payload. "), "{}", r.text);
    }
}

#[tokio::test]
async fn oversized_body() {
    let s = TestServer::spawn(&[("MAX_PAYLOAD_SIZE", "1kb")]).await;
    let big = json!({"email": ADMIN_EMAIL, "password": "x".repeat(4096)});
    let r = s.call("POST", "/auth/login", &[], Some(big.clone())).await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. request entity too large.",
    );
    let r = s.admin("POST", "/users", Some(big)).await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. request entity too large.",
    );
    // Under the limit is fine.
    assert_eq!(s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/nope", &[], None).await;
    assert_error(&r, 404, "ROUTE_NOT_FOUND", "Route /nope doesn't exist.");
    assert_eq!(
        r.text,
        r#"{"errors":[{"message":"Route /nope doesn't exist.","extensions":{"path":"/nope","code":"ROUTE_NOT_FOUND"}}]}"#
    );
    for (method, path) in [
        ("GET", "/auth/login"),
        ("GET", "/auth/refresh"),
        ("DELETE", "/server/ping"),
        ("PUT", "/users"),
        ("POST", "/auth/nope"),
    ] {
        let r = s.call(method, path, &[], None).await;
        assert_error(
            &r,
            404,
            "ROUTE_NOT_FOUND",
            &format!("Route {path} doesn't exist."),
        );
        assert_eq!(r.body["errors"][0]["extensions"]["path"], json!(path));
    }
    // The query string is not part of the path.
    let r = s.call("GET", "/nope?x=1", &[], None).await;
    assert_eq!(r.message(), "Route /nope doesn't exist.");
}

#[tokio::test]
async fn non_object_login_bodies() {
    let s = TestServer::spawn(&[]).await;
    for body in [json!([1, 2]), json!("string"), json!(42), json!(null)] {
        let r = s.call("POST", "/auth/login", &[], Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.code(), "INVALID_PAYLOAD");
        let r = s
            .call("POST", "/auth/refresh", &[], Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn wrong_types_in_user_writes() {
    let s = TestServer::spawn(&[]).await;
    let (id, _) = s.admin_identity().await;
    for body in [
        json!({"first_name": 5}),
        json!({"email": 5}),
        json!({"password": 5}),
        json!({"token": 5}),
        json!({"role": "not-a-uuid"}),
        json!({"role": "00000000-0000-4000-8000-000000000000"}),
        json!({"status": null}),
        json!({"status": 3}),
        json!({"email_notifications": "yes"}),
        json!([1, 2]),
        json!("str"),
    ] {
        let r = s
            .admin("PATCH", &format!("/users/{id}"), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(
            r.code() == "INVALID_PAYLOAD" || r.code() == "FAILED_VALIDATION",
            "{body}: {}",
            r.text
        );
    }
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"first_name": 5})),
        )
        .await;
    assert_eq!(
        r.message(),
        "Invalid payload. \"first_name\" must be a string."
    );
    // The admin is unchanged and can still log in.
    assert_eq!(s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await.status, 200);
}

#[tokio::test]
async fn bad_queries_are_not_500() {
    let s = TestServer::spawn(&[]).await;
    for q in [
        "filter={bad",
        "limit=abc",
        "filter[first_name][_foo]=1",
        "filter[token][_eq]=x",
        "filter[password][_eq]=x",
        "fields=nope",
        "sort=nope",
        "meta=bogus",
        "offset=-5",
        "page=x",
        "fields=role.nope",
        "filter[nope][_eq]=1",
        "%ff%fe=1",
    ] {
        let r = s.admin("GET", &format!("/users?{q}"), None).await;
        assert!(r.status < 500, "{q}: {} {}", r.status, r.text);
        assert!(
            r.status == 200 || r.body["errors"].is_array(),
            "{q}: {}",
            r.text
        );
    }
    let r = s.admin("GET", "/users?filter={bad", None).await;
    assert_error(
        &r,
        400,
        "INVALID_QUERY",
        "Invalid query. Invalid JSON for filter object.",
    );
    let r = s.admin("GET", "/users?filter[token][_eq]=x", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "INVALID_QUERY");
}

#[tokio::test]
async fn odd_tokens_and_bodies_are_not_500() {
    let s = TestServer::spawn(&[]).await;
    let weird = [
        "a.b.c".to_owned(),
        "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJkaXJlY3R1cyJ9.x".to_owned(),
        "..".to_owned(),
        "x".repeat(5000),
        "%00".to_owned(),
    ];
    for t in &weird {
        let r = s.get_as("/users/me", t).await;
        assert!(r.status == 401 || r.status == 403, "{t}: {}", r.text);
        let r = s
            .with_cookie(
                "POST",
                "/auth/refresh",
                "directus_session_token",
                t,
                Some(json!({"mode": "session"})),
            )
            .await;
        assert!(r.status < 500 && r.status >= 400, "{t}: {}", r.text);
        let r = s.refresh_json(&t).await;
        assert_eq!(r.status, 401, "{t}: {}", r.text);
    }
    for body in [
        json!({"refresh_token": {"a": 1}}),
        json!({"refresh_token": [1]}),
        json!({"refresh_token": true}),
        json!({"mode": ["json"]}),
    ] {
        let r = s
            .call("POST", "/auth/refresh", &[], Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let r = s
            .call("POST", "/auth/logout", &[], Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
}
