//! Input built to break things: nulls for `NOT NULL` columns, queries too large for the
//! database, and search terms written in the trigram index's own query language. Each must be
//! a 4xx with Directus's envelope or the exact answer, never a 500.

use serde_json::{Value, json};

use super::*;

fn nnull(field: &str) -> Value {
    json!({
        "message": format!("Validation failed for field \"{field}\". Value can't be null."),
        "extensions": {"field": field, "path": [], "type": "nnull", "code": "FAILED_VALIDATION"}
    })
}

#[track_caller]
fn assert_failed(r: &Reply, expected: Vec<Value>) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body, json!({ "errors": expected }), "{}", r.text);
}

#[tokio::test]
async fn null_for_a_not_null_field_is_a_failed_validation_and_saves_nothing() {
    let s = TestServer::spawn(&[]).await;
    let role = s
        .admin(
            "POST",
            "/roles",
            Some(json!({"name": "Kept", "icon": "star"})),
        )
        .await;
    let role = role.body["data"]["id"].as_str().unwrap().to_owned();
    let user = s.user("nulls@example.com", "Nulls-Password-1").await;
    for (path, body, field) in [
        (format!("/roles/{role}"), json!({"name": null}), "name"),
        (format!("/roles/{role}"), json!({"icon": null}), "icon"),
        (
            format!("/users/{user}"),
            json!({"provider": null}),
            "provider",
        ),
        (
            format!("/users/{user}"),
            json!({"text_direction": null}),
            "text_direction",
        ),
        (format!("/users/{user}"), json!({"status": null}), "status"),
        (
            "/settings".into(),
            json!({"project_name": null}),
            "project_name",
        ),
        (
            "/settings".into(),
            json!({"project_color": null}),
            "project_color",
        ),
        (
            "/settings".into(),
            json!({"default_language": null}),
            "default_language",
        ),
        (
            "/settings".into(),
            json!({"default_appearance": null}),
            "default_appearance",
        ),
        (
            "/settings".into(),
            json!({"public_registration": null}),
            "public_registration",
        ),
        (
            "/settings".into(),
            json!({"public_registration_verify_email": null}),
            "public_registration_verify_email",
        ),
    ] {
        let r = s.admin("PATCH", &path, Some(body)).await;
        assert_failed(&r, vec![nnull(field)]);
    }
    // Nothing was saved.
    let r = s
        .admin("GET", &format!("/roles/{role}?fields=name,icon"), None)
        .await;
    assert_eq!(r.body["data"], json!({"name": "Kept", "icon": "star"}));
    let r = s.admin("GET", "/settings?fields=project_name", None).await;
    assert_eq!(r.body["data"]["project_name"], "Directus");
    // Every failing field is reported, in one answer.
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{user}"),
            Some(json!({"status": null, "provider": null})),
        )
        .await;
    assert_failed(&r, vec![nnull("status"), nnull("provider")]);
    // Nullable columns take null, as in Directus.
    for (path, body) in [
        (
            format!("/users/{user}"),
            json!({"email_notifications": null}),
        ),
        ("/settings".into(), json!({"auth_login_attempts": null})),
    ] {
        assert_eq!(s.admin("PATCH", &path, Some(body)).await.status, 200);
    }
}

#[tokio::test]
async fn the_attempt_limit_cannot_be_negative() {
    let s = TestServer::spawn(&[]).await;
    for v in [json!(-1), json!("-1"), json!(-0.5), json!(1e300)] {
        let r = s
            .admin(
                "PATCH",
                "/settings",
                Some(json!({"auth_login_attempts": v})),
            )
            .await;
        assert_eq!(r.status, 400, "{v}: {}", r.text);
    }
}

#[tokio::test]
async fn a_role_needs_a_name_at_creation() {
    let s = TestServer::spawn(&[]).await;
    let r = s.admin("POST", "/roles", Some(json!({}))).await;
    assert_failed(
        &r,
        vec![json!({
            "message": "Validation failed for field \"name\". Value is required.",
            "extensions": {"field": "name", "path": [], "type": "required", "code": "FAILED_VALIDATION"}
        })],
    );
    let r = s.admin("POST", "/roles", Some(json!({"name": null}))).await;
    assert_failed(&r, vec![nnull("name")]);
    let r = s.admin("GET", "/roles?fields=id", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
}

fn invalid_query(r: &Reply, message: &str) {
    assert_error(r, 400, "INVALID_QUERY", message);
}

#[tokio::test]
async fn queries_too_large_for_the_database_are_refused_as_invalid() {
    let s = TestServer::spawn(&[]).await;
    let ints = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let r = s
        .admin(
            "GET",
            &format!("/users?filter[id][_in]={}", ints(10_001)),
            None,
        )
        .await;
    invalid_query(
        &r,
        "Invalid query. \"filter\" may hold at most 10000 values.",
    );
    let or = |n: usize| {
        let terms: Vec<Value> = (0..n).map(|_| json!({"email": {"_eq": "x"}})).collect();
        url::form_urlencoded::byte_serialize(json!({ "_or": terms }).to_string().as_bytes())
            .collect::<String>()
    };
    let r = s
        .admin("GET", &format!("/users?filter={}", or(1_100)), None)
        .await;
    invalid_query(
        &r,
        "Invalid query. \"filter\" may hold at most 500 conditions.",
    );
    let r = s
        .admin(
            "GET",
            &format!("/users?sort={}", vec!["email"; 3_000].join(",")),
            None,
        )
        .await;
    invalid_query(&r, "Invalid query. \"sort\" may name at most 100 fields.");
    let r = s
        .admin(
            "GET",
            &format!("/users?fields={}", vec!["id"; 5_000].join(",")),
            None,
        )
        .await;
    invalid_query(
        &r,
        "Invalid query. \"fields\" may name at most 1000 fields.",
    );
    // Patterns past SQLite's LIKE limit, however they are asked for.
    for q in [
        format!("search={}", "a".repeat(50_001)),
        format!("search={}", "%25".repeat(20_000)),
        format!("filter[email][_contains]={}", "a".repeat(50_001)),
        format!("filter[email][_in]=a,{}", "b".repeat(5_000)),
    ] {
        let r = s.admin("GET", &format!("/users?{q}"), None).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.code(), "INVALID_QUERY", "{}", r.text);
    }
    // Operands that are no single value: objects and nested lists.
    for q in [
        format!("filter[email][_contains][x]={}", "_".repeat(26_000)),
        r#"filter={"email":{"_contains":{"x":"y"}}}"#.to_owned(),
        r#"filter={"email":{"_eq":["a"]}}"#.to_owned(),
        r#"filter={"email":{"_in":[["a"]]}}"#.to_owned(),
    ] {
        let r = s.admin("GET", &format!("/users?{q}"), None).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.code(), "INVALID_QUERY", "{}", r.text);
    }
    // Just under the limits, the same shapes work.
    for q in [
        format!("filter[id][_in]={}", ints(5_000)),
        format!("filter={}", or(400)),
        format!("sort={}", vec!["email"; 100].join(",")),
        format!("search={}", "%25".repeat(4_096)),
        format!("filter[email][_contains]={}", "a".repeat(4_096)),
    ] {
        let r = s.admin("GET", &format!("/users?{q}&fields=id"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // Anonymous callers are refused before any of it reaches the database.
    let r = s
        .call("GET", &format!("/users?filter={}", or(1_100)), &[], None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

/// Sends a raw request line for `path` (too long for an HTTP client library to accept) and
/// returns the status line of the answer.
async fn raw_status(s: &TestServer, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
    // The server may answer and close before it has read everything.
    let _ = c.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn requests_larger_than_any_client_sends_are_refused_by_http() {
    let s = TestServer::spawn(&[]).await;
    let uuids: Vec<String> = (0..40_001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let status = raw_status(&s, &format!("/users?filter[id][_in]={}", uuids.join(","))).await;
    assert!(
        status.starts_with("HTTP/1.1 414") || status.starts_with("HTTP/1.1 431"),
        "{status}"
    );
    let r = s
        .call(
            "GET",
            "/server/ping",
            &[("x-big", &"b".repeat(200_000))],
            None,
        )
        .await;
    assert_eq!(r.status, 431);
    // The server is fine afterwards.
    assert_eq!(s.call("GET", "/server/ping", &[], None).await.status, 200);
}

#[tokio::test]
async fn search_terms_in_the_text_index_syntax_are_only_text() {
    let s = TestServer::spawn(&[]).await;
    // Names made of FTS5 and LIKE syntax, each found by itself and by nothing else.
    let names = [
        "ada\" OR \"x",
        "NEAR(ada lovelace)",
        "ada* -lovelace",
        "first_name:ada",
        "^ada AND NOT b",
        "50%_off\\",
        "{email} : ada",
    ];
    for (i, name) in names.iter().enumerate() {
        let r = s
            .admin(
                "POST",
                "/users",
                Some(json!({"email": format!("syntax{i}@example.com"), "first_name": name})),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
    }
    for (i, name) in names.iter().enumerate() {
        for query in [
            vec![("search", name.to_string())],
            vec![("filter[first_name][_contains]", name.to_string())],
            vec![("filter[first_name][_istarts_with]", name.to_uppercase())],
        ] {
            let mut pairs = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &query {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("fields", "email");
            let r = s
                .admin("GET", &format!("/users?{}", pairs.finish()), None)
                .await;
            assert_eq!(r.status, 200, "{query:?}: {}", r.text);
            assert_eq!(
                r.body["data"],
                json!([{"email": format!("syntax{i}@example.com")}]),
                "{query:?}"
            );
        }
    }
    // No stored text holds a NUL (payloads refuse it); a term with one finds nothing.
    let r = s.admin("GET", "/users?search=ada%00ada", None).await;
    assert!(
        r.status == 400 || r.body["data"] == json!([]),
        "{}: {}",
        r.status,
        r.text
    );
}
