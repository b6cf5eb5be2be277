//! Against the indexes of issue 12: text conditions narrowed through the trigram index, pages
//! found by key, alias lists bounded. A query built to multiply index lookups (hundreds of
//! distinct terms, nested as deep as the language allows, the longest term allowed), absurd
//! windows, a second instance renaming a user while this one searches for it, and a walk of
//! deep pages (continued from remembered rows) while a second instance inserts, renames and
//! deletes ahead of it and behind it, or while another caller walks the same pages with other
//! filter values, and walks whose requests are abandoned mid-flight by the hundred: each
//! answers exactly and never 500.

use serde_json::{Value, json};

use super::*;

fn query(pairs: &[(&str, String)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

fn emails(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_filter_of_hundreds_of_terms_or_nested_to_the_limit_answers_exactly() {
    let s = TestServer::spawn(&[]).await;
    for i in 0..3 {
        s.create_user(
            json!({"email": format!("needle{i}@example.com"), "first_name": format!("Needle{i}")}),
        )
        .await;
    }
    // 498 terms that match nothing and one that matches (with the `_or`, the most a filter
    // may hold): each its own index lookup.
    let mut terms: Vec<Value> = (0..498)
        .map(|i| json!({"first_name": {"_icontains": format!("absent-{i:04}")}}))
        .collect();
    terms.push(json!({"first_name": {"_icontains": "NEEDLE1"}}));
    let filter = json!({"_or": terms}).to_string();
    let r = s
        .admin(
            "GET",
            &format!(
                "/users?{}",
                query(&[("filter", filter), ("fields", "email".into())])
            ),
            None,
        )
        .await;
    assert_eq!(emails(&r), ["needle1@example.com"]);
    // ANDs and ORs nested as deep as the language allows, a text term at every level.
    let mut nested = json!({"email": {"_contains": "needle"}});
    for depth in 0..30 {
        let term = json!({"first_name": {"_icontains": "eedle"}});
        nested = if depth % 2 == 0 {
            json!({"_and": [nested, term]})
        } else {
            json!({"_or": [nested, {"first_name": {"_contains": format!("nothing{depth}")}}]})
        };
    }
    let r = s
        .admin(
            "GET",
            &format!(
                "/users?{}",
                query(&[
                    ("filter", nested.to_string()),
                    ("fields", "email".into()),
                    ("sort", "email".into())
                ])
            ),
            None,
        )
        .await;
    assert_eq!(
        emails(&r),
        [
            "needle0@example.com",
            "needle1@example.com",
            "needle2@example.com"
        ]
    );
    // The longest term allowed: thousands of trigrams, found exactly where it is.
    let long = "ab\"c*".repeat(800);
    s.create_user(json!({"email": "long@example.com", "description": format!("x{long}y")}))
        .await;
    for (k, term) in [
        ("search", long.clone()),
        ("filter[description][_contains]", long.clone()),
        ("filter[description][_contains]", format!("{long}z")),
    ] {
        let r = s
            .admin(
                "GET",
                &format!(
                    "/users?{}",
                    query(&[(k, term.clone()), ("fields", "email".into())])
                ),
                None,
            )
            .await;
        let expected: &[&str] = if term.ends_with('z') {
            &[]
        } else {
            &["long@example.com"]
        };
        assert_eq!(emails(&r), expected, "{k}");
    }
}

#[tokio::test]
async fn windows_past_every_row_or_at_the_bounds_are_empty_or_refused_never_500() {
    let s = TestServer::spawn(&[]).await;
    for i in 0..5 {
        s.create_user(json!({"email": format!("w{i}@example.com")}))
            .await;
    }
    for path in [
        "/users?offset=9223372036854775807&limit=25&sort=email",
        "/users?offset=9223372036854775807&limit=-1",
        "/users?offset=1000000&sort=-last_access&search=example",
        "/users?page=9223372036854775807&limit=25",
        "/roles?deep[users][_limit]=1&deep[users][_offset]=9223372036854775807",
    ] {
        let r = s.admin("GET", path, None).await;
        assert!(
            r.status == 400
                || r.body["data"] == json!([])
                || r.body["data"][0]["users"] == json!([]),
            "{path}: {} {}",
            r.status,
            r.text
        );
    }
    // A page past the first is the same rows `offset` always meant, both ways.
    let all = emails(
        &s.admin("GET", "/users?fields=email&sort=-email", None)
            .await,
    );
    for offset in 1..all.len() {
        let r = s
            .admin(
                "GET",
                &format!("/users?fields=email&sort=-email&offset={offset}&limit=2"),
                None,
            )
            .await;
        let end = (offset + 2).min(all.len());
        assert_eq!(emails(&r), all[offset..end], "offset {offset}");
    }
}

#[tokio::test]
async fn a_second_instance_renaming_a_user_is_seen_by_the_next_search_here() {
    let a = TestServer::spawn(&[]).await;
    let b = TestServer::spawn_in(tempfile::tempdir().unwrap(), &a.db, &[]).await;
    let id = a
        .create_user(json!({"email": "renamed@example.com", "first_name": "Oldname"}))
        .await;
    let find = |s: &'static str| format!("/users?fields=email&search={s}");
    assert_eq!(
        emails(&a.admin("GET", &find("oldname"), None).await),
        ["renamed@example.com"]
    );
    // B renames, then deletes; A's next search sees each at once (the index is the
    // database's, written in the same transaction as the row).
    let r = b
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"first_name": "Newname"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(emails(&a.admin("GET", &find("oldname"), None).await).is_empty());
    assert_eq!(
        emails(&a.admin("GET", &find("newname"), None).await),
        ["renamed@example.com"]
    );
    let r = b.admin("DELETE", &format!("/users/{id}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(emails(&a.admin("GET", &find("newname"), None).await).is_empty());
}

#[tokio::test]
async fn deep_pages_walked_here_follow_a_second_instance_writing_between_them() {
    let server = TestServer::spawn(&[]).await;
    let a = &server;
    let b = TestServer::spawn_in(tempfile::tempdir().unwrap(), &server.db, &[]).await;
    for i in 0..30 {
        let status = if i % 4 == 0 { "suspended" } else { "active" };
        a.create_user(
            json!({"email": format!("walk{:02}@example.com", (i * 7) % 30),
                             "status": status}),
        )
        .await;
    }
    let all = |s: String| async move {
        emails(
            &a.admin("GET", &format!("/users?fields=email&limit=-1&{s}"), None)
                .await,
        )
    };
    let page = |s: String, offset: usize| async move {
        let path = format!("/users?fields=email&limit=4&offset={offset}&{s}");
        emails(&a.admin("GET", &path, None).await)
    };
    let window = |v: Vec<String>, offset: usize| v.into_iter().skip(offset).take(4).collect();
    // B renames and deletes any user but the admin (the last admin cannot go).
    let others = format!("/users?fields=id,email&filter[email][_neq]={ADMIN_EMAIL}");
    for sort in ["sort=email", "sort=-email", "sort=id"] {
        for (step, offset) in [4, 8, 12, 12, 16, 8, 24].into_iter().enumerate() {
            let want: Vec<String> = window(all(sort.into()).await, offset);
            assert_eq!(page(sort.into(), offset).await, want, "{sort} at {offset}");
            // B writes between A's pages: a user sorting first, a rename, a deletion.
            let r = match step % 3 {
                0 => {
                    let body = json!({"email": format!("aa{step}{sort}@example.com")});
                    b.admin("POST", "/users", Some(body)).await
                }
                1 => {
                    let all = emails(&b.admin("GET", &format!("{others}&limit=-1"), None).await);
                    let who = b
                        .admin(
                            "GET",
                            &format!("/users?filter[email][_eq]={}", all[offset]),
                            None,
                        )
                        .await;
                    let id = who.body["data"][0]["id"].as_str().unwrap().to_owned();
                    let body = json!({"email": format!("zz{step}{sort}@example.com")});
                    b.admin("PATCH", &format!("/users/{id}"), Some(body)).await
                }
                _ => {
                    let r = b
                        .admin("GET", &format!("{others}&sort=email&limit=1"), None)
                        .await;
                    let id = r.body["data"][0]["id"].as_str().unwrap().to_owned();
                    b.admin("DELETE", &format!("/users/{id}"), None).await
                }
            };
            assert!(r.status < 300, "{}", r.text);
        }
    }
    // The same walk under two filter values: neither's remembered rows reach the other's pages.
    for (round, offset) in [2, 4, 6, 4, 2].into_iter().enumerate() {
        for status in ["active", "suspended"] {
            let filter = format!("sort=email&filter[status][_eq]={status}");
            let want: Vec<String> = window(all(filter.clone()).await, offset);
            assert_eq!(page(filter, offset).await, want, "{status} round {round}");
        }
    }
}

#[tokio::test]
async fn deep_pages_abandoned_mid_flight_leave_the_next_walk_exact() {
    let s = TestServer::spawn(&[]).await;
    for i in 0..40 {
        s.create_user(json!({"email": format!("gone{:02}@example.com", (i * 11) % 40)}))
            .await;
    }
    let page = |offset: usize| format!("/users?fields=email&sort=-email&limit=5&offset={offset}");
    // Two hundred page requests dropped after a moment, at every offset of the walk, some
    // answered and remembered, some cut off while the store reads them.
    for round in 0..200u64 {
        let path = page(5 + (round as usize * 5) % 30);
        let wait = std::time::Duration::from_micros(50 * (round % 20));
        let _ = tokio::time::timeout(wait, s.admin("GET", &path, None)).await;
    }
    // A write lands between the abandoned walk and the next one.
    s.create_user(json!({"email": "zz-first@example.com"}))
        .await;
    let all = emails(
        &s.admin("GET", "/users?fields=email&sort=-email&limit=-1", None)
            .await,
    );
    for offset in [5, 10, 15, 20, 25, 30, 10] {
        let want: Vec<String> = all.iter().skip(offset).take(5).cloned().collect();
        assert_eq!(emails(&s.admin("GET", &page(offset), None).await), want);
    }
}
