//! A user with narrow permissions trying to reach past them: escalating its own role or
//! policies, reading unreadable fields through filters, sorts, search or relations, batches
//! that smuggle one unreachable key, and secrets probed through filter operators.

use serde_json::{Value, json};

use super::*;

const EMAIL: &str = "narrow@example.com";
const PASSWORD: &str = "Narrow-Pass-12";

/// A user whose policy reads users' `id` and `first_name` and updates its own `first_name`;
/// returns (user id, its JWT).
async fn narrow_user(s: &TestServer) -> (String, String) {
    let policy = s.make("/policies", json!({"name": "Narrow"})).await;
    let role = s
        .make(
            "/roles",
            json!({"name": "Narrow", "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    for (action, extra) in [
        ("read", json!({"fields": ["id", "first_name"]})),
        (
            "update",
            json!({"fields": ["first_name"], "permissions": {"id": {"_eq": "$CURRENT_USER"}}}),
        ),
    ] {
        let mut body = json!({"policy": policy, "collection": "directus_users", "action": action});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.make("/permissions", body).await;
    }
    let id = s
        .create_user(json!({"email": EMAIL, "password": PASSWORD, "role": role}))
        .await;
    let jwt = access_of(&s.login(EMAIL, PASSWORD, None).await);
    (id, jwt)
}

async fn as_user(
    s: &TestServer,
    jwt: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    s.call(
        method,
        path,
        &[("authorization", &format!("Bearer {jwt}"))],
        body,
    )
    .await
}

#[tokio::test]
async fn a_narrow_user_cannot_grant_itself_a_role_or_a_policy() {
    let s = TestServer::spawn(&[]).await;
    let (_, admin_role) = s.admin_identity().await;
    let (id, jwt) = narrow_user(&s).await;
    let admin_policy = s
        .admin(
            "GET",
            &format!("/access?filter[role][_eq]={admin_role}"),
            None,
        )
        .await
        .body["data"][0]["policy"]
        .clone();
    for body in [
        json!({"role": admin_role}),
        json!({"policies": {"create": [{"policy": admin_policy}]}}),
        json!({"policies": [{"policy": admin_policy}]}),
        json!({"first_name": "ok", "status": "active"}),
    ] {
        for path in ["/users/me".to_owned(), format!("/users/{id}")] {
            let r = as_user(&s, &jwt, "PATCH", &path, Some(body.clone())).await;
            assert_eq!(r.status, 403, "{path} {body}: {}", r.text);
        }
    }
    for (path, body) in [
        ("/access", json!({"user": id, "policy": admin_policy})),
        (
            "/permissions",
            json!({"policy": admin_policy, "collection": "directus_users", "action": "read"}),
        ),
        ("/policies", json!({"name": "Mine", "admin_access": true})),
    ] {
        let r = as_user(&s, &jwt, "POST", path, Some(body)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    let r = s
        .admin("GET", &format!("/users/{id}?fields=role,policies"), None)
        .await;
    assert_eq!(r.body["data"]["policies"], json!([]));
    assert_ne!(r.body["data"]["role"], json!(admin_role));
    let r = as_user(&s, &jwt, "GET", "/policies/me/globals", None).await;
    assert_eq!(r.body["data"]["admin_access"], false);
    // What it was granted still works.
    let r = as_user(
        &s,
        &jwt,
        "PATCH",
        "/users/me",
        Some(json!({"first_name": "Allowed"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!({"id": id, "first_name": "Allowed"}));
}

#[tokio::test]
async fn unreadable_fields_cannot_be_probed_through_filters_sorts_search_or_relations() {
    let s = TestServer::spawn(&[]).await;
    let (_, jwt) = narrow_user(&s).await;
    for path in [
        "/users?filter[email][_starts_with]=admin",
        "/users?filter[_or][0][first_name][_eq]=x&filter[_or][1][email][_eq]=admin@example.com",
        "/users?sort=email",
        "/users?sort=-last_access",
        "/users?filter[role][name][_eq]=Administrator",
        "/users?filter[policies][_some][policy][admin_access][_eq]=true",
        "/users?fields=role.name",
        "/users?fields=email",
    ] {
        let r = as_user(&s, &jwt, "GET", path, None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    // `search` looks at readable fields only: the admin's e-mail finds nobody.
    let r = as_user(&s, &jwt, "GET", "/users?search=admin@example", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!([]));
    // Secrets take null checks only, admin or not.
    for path in [
        "/users?filter[token][_eq]=admin-static-token-0123456789",
        "/users?filter[password][_starts_with]=$argon2",
        "/users?filter[tfa_secret][_contains]=A",
    ] {
        let r = s.admin("GET", path, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn a_batch_smuggling_one_unreachable_key_changes_nothing() {
    let s = TestServer::spawn(&[]).await;
    let (id, jwt) = narrow_user(&s).await;
    let (admin_id, _) = s.admin_identity().await;
    let batch = json!({"keys": [id, admin_id], "data": {"first_name": "Pwned"}});
    let r = as_user(&s, &jwt, "PATCH", "/users", Some(batch)).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to \"update\" from collection \"directus_users\" or it does not exist.",
    );
    let list = json!([{"id": id, "first_name": "Mine"}, {"id": admin_id, "first_name": "Pwned"}]);
    let r = as_user(&s, &jwt, "PATCH", "/users", Some(list)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let by_query =
        json!({"query": {"filter": {"id": {"_nnull": true}}}, "data": {"first_name": "Pwned"}});
    let r = as_user(&s, &jwt, "PATCH", "/users", Some(by_query)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s.admin("GET", "/users?fields=first_name", None).await;
    for u in r.body["data"].as_array().unwrap() {
        assert_ne!(u["first_name"], "Pwned");
        assert_ne!(u["first_name"], "Mine");
    }
    // Deleting is not granted at all, in any form.
    for body in [
        json!([admin_id]),
        json!({"keys": [id]}),
        json!({"query": {}}),
    ] {
        let r = as_user(&s, &jwt, "DELETE", "/users", Some(body)).await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    assert_eq!(
        as_user(&s, &jwt, "DELETE", &format!("/users/{admin_id}"), None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn rules_naming_the_callers_data_follow_it_and_a_write_it_cannot_read_back_answers_204() {
    let s = TestServer::spawn(&[]).await;
    let policy = s.make("/policies", json!({"name": "Team"})).await;
    let role = s
        .make(
            "/roles",
            json!({"name": "Team blue", "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    s.make("/permissions",
        json!({"policy": policy, "collection": "directus_roles", "action": "read", "fields": ["id", "name"],
            "permissions": {"name": {"_eq": "$CURRENT_USER.role.name"}}}),
    )
    .await;
    s.make("/permissions",
        json!({"policy": policy, "collection": "directus_roles", "action": "create", "fields": ["name"]}),
    )
    .await;
    s.make("/roles", json!({"name": "Team red"})).await;
    s.create_user(json!({"email": EMAIL, "password": PASSWORD, "role": role}))
        .await;
    let jwt = access_of(&s.login(EMAIL, PASSWORD, None).await);
    let r = as_user(&s, &jwt, "GET", "/roles", None).await;
    assert_eq!(
        r.body["data"],
        json!([{"id": role, "name": "Team blue"}]),
        "{}",
        r.text
    );
    // Created, but not readable under the read rule: saved, and answered 204.
    let r = as_user(
        &s,
        &jwt,
        "POST",
        "/roles",
        Some(json!({"name": "Team green"})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let all = s
        .admin("GET", "/roles?filter[name][_eq]=Team green", None)
        .await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 1);
    // The rule follows a rename of the caller's role at once.
    let r = s
        .admin(
            "PATCH",
            &format!("/roles/{}", role.as_str().unwrap()),
            Some(json!({"name": "Team red"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = as_user(&s, &jwt, "GET", "/roles?sort=id", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2, "{}", r.text);
}

#[tokio::test]
async fn an_admin_policy_attached_to_nobody_makes_no_anonymous_admin() {
    let s = TestServer::spawn(&[]).await;
    let (_, admin_role) = s.admin_identity().await;
    // Role-less users take the policies attached to nobody too.
    s.user("roleless@example.com", "Roleless-Pass-1").await;
    let row = s
        .admin(
            "GET",
            &format!("/access?filter[role][_eq]={admin_role}"),
            None,
        )
        .await
        .body["data"][0]
        .clone();
    let policy = row["policy"].clone();
    // Moving the admin policy off the admin role would leave no admin: refused.
    let r = s
        .admin(
            "PATCH",
            &format!("/access/{}", row["id"].as_str().unwrap()),
            Some(json!({"role": null})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // Attached to nobody as well: neither anonymous callers nor role-less users become admins.
    s.make("/access", json!({"policy": policy})).await;
    // (Its app access does apply: the minimal app rules show an anonymous caller no user.)
    let r = s.call("GET", "/users", &[], None).await;
    assert_eq!(r.body["data"], json!([]), "{}", r.text);
    assert_eq!(
        s.call("GET", "/settings?fields=project_name", &[], None)
            .await
            .status,
        403
    );
    assert_eq!(
        s.call("GET", "/policies/me/globals", &[], None).await.body["data"]["admin_access"],
        false
    );
    let jwt = access_of(
        &s.login("roleless@example.com", "Roleless-Pass-1", None)
            .await,
    );
    let r = as_user(&s, &jwt, "GET", "/policies/me/globals", None).await;
    assert_eq!(r.body["data"]["admin_access"], false, "{}", r.text);
    assert_eq!(
        as_user(&s, &jwt, "GET", "/settings?fields=project_name", None)
            .await
            .status,
        403
    );
}

/// A role with app access whose users also get `extra` permission rows on `directus_users`;
/// returns the role.
async fn role_with_rows(s: &TestServer, name: &str, rows: &[(&str, Value)]) -> Value {
    let policy = s
        .make("/policies", json!({"name": name, "app_access": true}))
        .await;
    for (action, extra) in rows {
        let mut body = json!({"policy": policy, "collection": "directus_users", "action": action});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.make("/permissions", body).await;
    }
    s.make(
        "/roles",
        json!({"name": name, "policies": {"create": [{"policy": policy}]}}),
    )
    .await
}

#[tokio::test]
async fn fields_granted_on_ones_own_row_cannot_be_written_on_anothers() {
    let s = TestServer::spawn(&[]).await;
    let role = role_with_rows(
        &s,
        "Team",
        &[
            (
                "update",
                json!({"fields": ["first_name", "password"], "permissions": {"id": {"_eq": "$CURRENT_USER"}}}),
            ),
            (
                "update",
                json!({"fields": ["title"], "permissions": {"role": {"_eq": "$CURRENT_ROLE"}}}),
            ),
        ],
    )
    .await;
    s.create_user(json!({"email": EMAIL, "password": PASSWORD, "role": role}))
        .await;
    let mate = s
        .create_user(
            json!({"email": "mate@example.com", "password": "Mate-Pass-123", "role": role}),
        )
        .await;
    let jwt = access_of(&s.login(EMAIL, PASSWORD, None).await);
    let r = as_user(
        &s,
        &jwt,
        "PATCH",
        &format!("/users/{mate}"),
        Some(json!({"password": "Pwned-123456"})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        s.login("mate@example.com", "Mate-Pass-123", None)
            .await
            .status,
        200
    );
    let r = as_user(
        &s,
        &jwt,
        "PATCH",
        &format!("/users/{mate}"),
        Some(json!({"title": "Colleague"})),
    )
    .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    let r = as_user(
        &s,
        &jwt,
        "PATCH",
        "/users/me",
        Some(json!({"first_name": "Me", "title": "Mine"})),
    )
    .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
}

#[tokio::test]
async fn filters_through_relations_and_variables_read_only_what_the_caller_may_read() {
    let s = TestServer::spawn(&[]).await;
    // App access only: one's own row, and one's roles with every field (the `users` list too).
    let role = role_with_rows(&s, "Minimal", &[]).await;
    s.create_user(json!({"email": "zed@example.com", "password": PASSWORD, "role": role}))
        .await;
    s.create_user(json!({"email": "aaa-secret@example.com", "password": PASSWORD, "role": role}))
        .await;
    let jwt = access_of(&s.login("zed@example.com", PASSWORD, None).await);
    for path in [
        "/users?filter[role][users][email][_starts_with]=aaa&fields=id",
        "/users?filter[role][users][_some][email][_starts_with]=aaa&fields=id",
        "/roles?filter[users][email][_starts_with]=aaa&fields=id",
    ] {
        let r = as_user(&s, &jwt, "GET", path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.body["data"], json!([]), "{path}");
    }
    // A variable is read as the caller: a colleague's e-mail never reaches an answer.
    for path in [
        "/users?filter[last_access][_in]=$CURRENT_ROLE.users.email",
        "/users?filter[email][_in]=$CURRENT_ROLE.users.email&fields=email",
    ] {
        let r = as_user(&s, &jwt, "GET", path, None).await;
        assert!(!r.text.contains("aaa-secret"), "{path}: {}", r.text);
    }
    let r = as_user(
        &s,
        &jwt,
        "GET",
        "/users?filter[id][_in]=$CURRENT_ROLE.users.role.users.role.users.id",
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn fields_shown_on_some_rows_only_cannot_be_filtered_sorted_or_searched() {
    let s = TestServer::spawn(&[]).await;
    // App access (own row, e-mail included) plus a directory: names of everybody.
    let role = role_with_rows(
        &s,
        "Directory",
        &[("read", json!({"fields": ["id", "first_name"]}))],
    )
    .await;
    s.create_user(json!({"email": EMAIL, "password": PASSWORD, "role": role}))
        .await;
    s.create_user(json!({"email": "ceo@example.com", "first_name": "Boss"}))
        .await;
    let jwt = access_of(&s.login(EMAIL, PASSWORD, None).await);
    let r = as_user(
        &s,
        &jwt,
        "GET",
        "/users?fields=id,first_name,email&sort=first_name",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let boss = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["first_name"] == "Boss")
        .cloned()
        .unwrap();
    assert_eq!(boss["email"], Value::Null);
    for path in [
        "/users?filter[email][_starts_with]=ceo",
        "/users?sort=email",
        "/users?filter[tfa_secret][_nnull]=true",
    ] {
        let r = as_user(&s, &jwt, "GET", path, None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    let r = as_user(&s, &jwt, "GET", "/users?search=ceo@example&fields=id", None).await;
    assert_eq!(r.body["data"], json!([]), "{}", r.text);
}

#[tokio::test]
async fn oversized_batches_role_cycles_in_one_batch_and_sorting_on_secrets_are_refused() {
    let s = TestServer::spawn(&[]).await;
    let keys: Vec<String> = (0..10_001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let r = s
        .admin(
            "PATCH",
            "/users",
            Some(json!({"keys": keys, "data": {"title": "x"}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.admin("DELETE", "/users", Some(json!(keys))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let a = s.make("/roles", json!({"name": "A"})).await;
    let b = s.make("/roles", json!({"name": "B"})).await;
    let r = s
        .admin(
            "PATCH",
            "/roles",
            Some(json!([{"id": a, "parent": b}, {"id": b, "parent": a}])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    for field in ["password", "token", "tfa_secret"] {
        let r = s.admin("GET", &format!("/users?sort={field}"), None).await;
        assert_eq!(r.status, 400, "{field}: {}", r.text);
    }
    assert_eq!(s.admin("GET", "/users/not-a-key", None).await.status, 403);
}

#[tokio::test]
async fn huge_and_deeply_nested_permission_input_is_refused_without_a_server_error() {
    let s = TestServer::spawn(&[]).await;
    let policy = s.make("/policies", json!({"name": "Huge"})).await;
    // A permission filter nested past the limit is refused when written, not when used.
    let deep = (0..40).fold(json!({"id": {"_nnull": true}}), |f, _| json!({"_and": [f]}));
    let r = s
        .admin(
            "POST",
            "/permissions",
            Some(json!({"policy": policy, "collection": "directus_users", "action": "read", "permissions": deep})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A nested policies list past the batch bound.
    let many: Vec<Value> = (0..10_001).map(|_| json!({"policy": policy})).collect();
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "many@example.com", "policies": {"create": many}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // deep nested past the depth any relation allows.
    let mut path = String::from("deep");
    for _ in 0..40 {
        path.push_str("[role]");
    }
    let r = s
        .admin("GET", &format!("/users?{path}[_limit]=1"), None)
        .await;
    assert!(r.status == 400 || r.status == 403, "{}", r.text);
    assert_eq!(s.admin("GET", "/users/me", None).await.status, 200);
}
