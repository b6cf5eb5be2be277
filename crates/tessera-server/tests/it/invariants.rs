//! The invariant checks on a populated database: thousands of users, and checks that read a
//! bounded number of rows whatever their number (counted by the store: the rows the database
//! returned). Before the last-admin check stopped scanning users, deleting an empty role read
//! every active user twice. A role's `users` list is bounded the same way: a hundred ids
//! unless `deep` asks for more. A page of items reads its items' lists in one statement per
//! alias, and each item still lists exactly its own.

use serde_json::json;

use crate::common::*;

const USERS: i64 = 5_000;

/// The most rows one of the requests below may read (its authentication, permission checks
/// and the invariant's few indexed reads), far below the number of users.
const BOUND: u64 = 200;

/// Inserts `USERS` active users into `role` in one statement.
fn populate(s: &TestServer, role: &str) {
    let sql = if on_postgres() {
        "INSERT INTO directus_users (id, email, status, role, provider) \
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, \
                'member' || i || '@example.com', 'active', $1::text::uuid, 'default' \
         FROM generate_series(1, 5000) AS i"
    } else {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
         INSERT INTO directus_users (id, email, status, role, provider) \
         SELECT printf('00000000-0000-4000-8000-%012d', i), 'member' || i || '@example.com', \
                'active', $1, 'default' FROM n"
    };
    assert_eq!(s.database().execute(sql, &[role]), USERS as u64);
}

/// Makes a role through the API; its id.
async fn role(s: &TestServer, body: serde_json::Value) -> String {
    s.make("/roles", body).await.as_str().unwrap().to_owned()
}

/// Rows the server's store read while `f` ran.
async fn rows_read<F: std::future::Future<Output = Reply>>(s: &TestServer, f: F) -> (u64, Reply) {
    let before = s.state.store.rows_read();
    let r = f.await;
    (s.state.store.rows_read() - before, r)
}

#[tokio::test]
async fn last_admin_and_cycle_checks_read_a_bounded_number_of_rows() {
    let s = TestServer::spawn(&[]).await;
    let members = role(&s, json!({"name": "Members"})).await;
    populate(&s, &members);
    let child = role(&s, json!({"name": "Child", "parent": members})).await;
    let empty = role(&s, json!({"name": "Empty"})).await;

    // Deleting an empty role: the last-admin check runs before and after the write.
    let (read, r) = rows_read(&s, s.admin("DELETE", &format!("/roles/{empty}"), None)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(read < BOUND, "deleting an empty role read {read} rows");

    // Demoting the only admin is refused, just as cheaply.
    let me = s.admin("GET", "/users/me?fields=id", None).await.body["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (read, r) = rows_read(
        &s,
        s.admin(
            "PATCH",
            &format!("/users/{me}"),
            Some(json!({"role": members})),
        ),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        read < BOUND,
        "refusing to demote the last admin read {read} rows"
    );

    // A cycle in the role tree is refused by following parents, not members.
    let (read, r) = rows_read(
        &s,
        s.admin(
            "PATCH",
            &format!("/roles/{members}"),
            Some(json!({"parent": child})),
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(read < BOUND, "refusing a role cycle read {read} rows");

    // Suspending one member is a guarded write too.
    let one = "00000000-0000-4000-8000-000000000042";
    let (read, r) = rows_read(
        &s,
        s.admin(
            "PATCH",
            &format!("/users/{one}"),
            Some(json!({"status": "suspended"})),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(read < BOUND, "suspending one member read {read} rows");
    assert_eq!(
        s.database().one(
            "SELECT count(*) FROM directus_users WHERE status = 'active'",
            &[]
        ),
        USERS
    );
}

#[tokio::test]
async fn a_role_lists_a_hundred_of_its_users_unless_deep_asks_for_more() {
    let s = TestServer::spawn(&[]).await;
    let members = role(&s, json!({"name": "Members"})).await;
    populate(&s, &members);
    // Any write through the API drops the caches that still hold the role's list as it was
    // before the users were inserted behind the server's back.
    let r = s
        .admin(
            "PATCH",
            &format!("/roles/{members}"),
            Some(json!({"description": "populated"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The first hundred ids in key order (populate numbers them in that order).
    let first: Vec<String> = (1..=100)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().or_else(|| x["id"].as_str()).unwrap().to_owned())
            .collect()
    };
    for path in [
        format!("/roles/{members}"),
        format!("/roles/{members}?fields=users.id"),
    ] {
        let (read, r) = rows_read(&s, s.admin("GET", &path, None)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(ids(&r.body["data"]["users"]), first, "{path}");
        assert!(read < BOUND, "{path} read {read} rows");
    }
    let r = s.admin("GET", "/roles", None).await;
    let listed = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|role| role["id"] == members.as_str())
        .unwrap()
        .clone();
    assert_eq!(ids(&listed["users"]), first);
    // `deep` sets the window, up to every user.
    let r = s
        .admin(
            "GET",
            &format!("/roles/{members}?deep[users][_limit]=3&deep[users][_offset]=100"),
            None,
        )
        .await;
    assert_eq!(
        ids(&r.body["data"]["users"]),
        (101..=103)
            .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
            .collect::<Vec<_>>()
    );
    let r = s
        .admin(
            "GET",
            &format!("/roles/{members}?deep[users][_limit]=-1"),
            None,
        )
        .await;
    assert_eq!(ids(&r.body["data"]["users"]).len(), USERS as usize);
}

#[tokio::test]
async fn a_page_of_users_lists_each_users_own_policies() {
    let s = TestServer::spawn(&[]).await;
    let mut users = Vec::new();
    for i in 0..4 {
        let mut policies = Vec::new();
        for _ in 0..i {
            let policy = s.make("/policies", json!({"name": format!("P{i}")})).await;
            policies.push(json!({ "policy": policy }));
        }
        let id = s
            .make(
                "/users",
                json!({"email": format!("own{i}@example.com"),
                       "policies": {"create": policies}}),
            )
            .await;
        users.push(id.as_str().unwrap().to_owned());
    }
    let r = s
        .admin("GET", "/users?fields=id,policies&limit=-1", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for item in r.body["data"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let one = s
            .admin("GET", &format!("/users/{id}?fields=policies"), None)
            .await;
        assert_eq!(item["policies"], one.body["data"]["policies"], "{id}");
    }
    for (i, id) in users.iter().enumerate() {
        let one = s
            .admin("GET", &format!("/users/{id}?fields=policies"), None)
            .await;
        assert_eq!(one.body["data"]["policies"].as_array().unwrap().len(), i);
    }
}
