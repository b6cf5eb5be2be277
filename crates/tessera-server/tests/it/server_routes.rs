//! `/server/*` and `GET /auth`, plus the headers every answer carries.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn ping_is_pong_whatever_the_token() {
    let s = TestServer::spawn(&[]).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer garbage")],
        vec![("authorization", "Bearer a.b.c")],
        vec![("cookie", "directus_session_token=garbage")],
    ] {
        let r = s.call("GET", "/server/ping", &headers, None).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text);
        assert_eq!(r.text, "pong");
        assert_eq!(
            r.headers.get("content-type").unwrap().to_str().unwrap(),
            "text/html; charset=utf-8"
        );
        assert!(r.set_cookies().is_empty());
    }
}

#[tokio::test]
async fn health_by_caller() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/server/health", &[], None).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    let r = s.admin("GET", "/server/health", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], json!("ok"));
    assert!(r.body["checks"].is_object());
    // Keyed by DB_CLIENT, as Directus keys it.
    let key = if on_postgres() {
        "pg:responseTime"
    } else {
        "sqlite3:responseTime"
    };
    assert_eq!(
        r.body["checks"][key][0]["status"],
        json!("ok"),
        "{}",
        r.text
    );
    assert!(r.body["releaseId"].is_string());
    assert!(
        r.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/health+json")
    );
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-cache");
    s.user("health@example.com", "Password-123").await;
    let login = s.login("health@example.com", "Password-123", None).await;
    let at = login.body["data"]["access_token"].as_str().unwrap();
    let r = s.get_as("/server/health", at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn info_by_caller() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/server/info", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let project = r.body["data"]["project"].as_object().unwrap();
    assert!(project.contains_key("project_name"));
    assert!(r.body["data"].get("version").is_none(), "{}", r.text);
    assert!(r.body["data"].get("queryLimit").is_none());
    let r = s.admin("GET", "/server/info", None).await;
    assert!(r.body["data"]["version"].is_string(), "{}", r.text);
    assert!(r.body["data"]["project"].is_object());
    assert_eq!(r.body["data"]["queryLimit"]["max"], json!(-1));
}

#[tokio::test]
async fn auth_providers_and_headers() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/auth", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, r#"{"data":[],"disableDefault":false}"#);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-cache");
    assert_eq!(r.headers.get("vary").unwrap(), "Origin, Cache-Control");
    // Errors skip Directus's `respond` and carry no cache headers; neither does the ping.
    let r = s.call("POST", "/auth/login", &[], Some(json!({}))).await;
    assert_eq!(r.status, 400);
    assert!(r.headers.get("cache-control").is_none());
    assert!(
        s.call("GET", "/server/ping", &[], None)
            .await
            .headers
            .get("vary")
            .is_none()
    );
    // Every successful answer is marked uncacheable, with JSON's charset.
    let r = s
        .admin("GET", "/users?meta=total_count&fields=id", None)
        .await;
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-cache");
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    let r = s.login(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-cache");
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    assert_eq!(r.headers.get("x-powered-by").unwrap(), "Tessera");
}

#[tokio::test]
async fn health_can_be_disabled() {
    let s = TestServer::spawn(&[("HEALTHCHECK_ENABLED", "false")]).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer admin-static-token-0123456789")],
    ] {
        let r = s.call("GET", "/server/health", &headers, None).await;
        assert_error(
            &r,
            404,
            "ROUTE_NOT_FOUND",
            "Route /server/health doesn't exist.",
        );
    }
    assert_eq!(s.call("GET", "/server/ping", &[], None).await.status, 200);
}

#[tokio::test]
async fn options_on_a_known_route_lists_its_methods() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("OPTIONS", "/auth/login", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["allow"], "POST");
    let r = s.call("OPTIONS", "/nope", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "ROUTE_NOT_FOUND");
}
