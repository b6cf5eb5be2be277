//! Writes answer truthfully: a write that was saved but cannot be read back with the fields
//! asked for answers 204 (as Directus does), never an error a client would retry.

use serde_json::json;

use super::*;

async fn count(s: &TestServer, path: &str) -> usize {
    let r = s.admin("GET", path, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn saved_writes_that_cannot_be_read_back_answer_204() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("POST", "/roles?fields=nope", Some(json!({"name": "Once"})))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(
        count(&s, "/roles?filter[name][_eq]=Once&fields=id").await,
        1
    );
    let r = s
        .admin(
            "POST",
            "/roles?fields=nope",
            Some(json!([{"name": "Twin"}, {"name": "Twin"}])),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        count(&s, "/roles?filter[name][_eq]=Twin&fields=id").await,
        2
    );
    let r = s
        .admin(
            "POST",
            "/users?fields=nope",
            Some(json!({"email": "once@example.com", "password": "x"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        count(&s, "/users?filter[email][_eq]=once@example.com&fields=id").await,
        1
    );
    let r = s
        .admin(
            "PATCH",
            "/settings?fields=nope",
            Some(json!({"project_name": "Saved"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.admin("GET", "/settings?fields=project_name", None).await;
    assert_eq!(r.body["data"]["project_name"], "Saved");
    // A query that cannot even be parsed is refused before anything is written.
    let r = s
        .admin("POST", "/roles?limit=abc", Some(json!({"name": "Never"})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        count(&s, "/roles?filter[name][_eq]=Never&fields=id").await,
        0
    );
}
