//! Access control through Directus's policy model: permission rows decide what each token
//! may read and write, the same for a JWT, a session cookie and a static token of one user;
//! the management API for policies, access rows and permissions; batch forms; nested
//! `policies` writes.

use serde_json::{Value, json};

use crate::adversarial::{SESSION, session_login};
use crate::common::*;

/// One way of presenting a user's credentials.
enum Cred {
    Jwt(String),
    Cookie(String),
    Static(String),
}

impl Cred {
    async fn call(&self, s: &TestServer, method: &str, path: &str, body: Option<Value>) -> Reply {
        match self {
            Cred::Jwt(t) | Cred::Static(t) => {
                s.call(
                    method,
                    path,
                    &[("authorization", &format!("Bearer {t}"))],
                    body,
                )
                .await
            }
            Cred::Cookie(c) => s.with_cookie(method, path, SESSION, c, body).await,
        }
    }

    async fn get(&self, s: &TestServer, path: &str) -> Reply {
        self.call(s, "GET", path, None).await
    }

    fn name(&self) -> &'static str {
        match self {
            Cred::Jwt(_) => "jwt",
            Cred::Cookie(_) => "session cookie",
            Cred::Static(_) => "static token",
        }
    }
}

/// A JWT, a session cookie and the static token of one user.
async fn creds(s: &TestServer, email: &str, password: &str, token: &str) -> Vec<Cred> {
    let r = s.login(email, password, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let jwt = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    vec![
        Cred::Jwt(jwt),
        Cred::Cookie(session_login(s, email, password).await),
        Cred::Static(token.to_owned()),
    ]
}

/// A role with one policy attached (app access as given); returns (role, policy).
async fn role_with_policy(s: &TestServer, name: &str, app: bool) -> (String, String) {
    let policy = s
        .make("/policies", json!({"name": name, "app_access": app}))
        .await;
    let role = s
        .make(
            "/roles",
            json!({"name": name, "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    (
        role.as_str().unwrap().to_owned(),
        policy.as_str().unwrap().to_owned(),
    )
}

async fn grant(
    s: &TestServer,
    policy: &str,
    collection: &str,
    action: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"policy": policy, "collection": collection, "action": action});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.make("/permissions", body).await
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn a_custom_read_rule_limits_items_and_fields_for_every_kind_of_token() {
    let s = TestServer::spawn(&[]).await;
    let (role, policy) = role_with_policy(&s, "Readers", false).await;
    grant(
        &s,
        &policy,
        "directus_users",
        "read",
        json!({"permissions": {"id": {"_eq": "$CURRENT_USER"}}, "fields": ["id", "email", "first_name"]}),
    )
    .await;
    let me = s
        .create_user(
            json!({"email": "reader@example.com", "password": "Reader-Pass-1",
            "role": role, "token": "reader-static-token-0001", "first_name": "Rea"}),
        )
        .await;
    let (admin_id, _) = s.admin_identity().await;
    for c in creds(
        &s,
        "reader@example.com",
        "Reader-Pass-1",
        "reader-static-token-0001",
    )
    .await
    {
        let r = c.get(&s, "/users").await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        let list = r.body["data"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{}", c.name());
        assert_eq!(list[0]["id"], json!(me));
        assert_eq!(
            keys(&list[0]),
            ["email", "first_name", "id"],
            "{}",
            c.name()
        );
        let r = c.get(&s, &format!("/users/{admin_id}")).await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access this.",
        );
        let r = c.get(&s, "/users?fields=last_name").await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access field \"last_name\" in collection \"directus_users\" or it does not exist. Queried in root.",
        );
        let r = c.get(&s, "/users?filter[last_name][_eq]=x").await;
        assert_eq!(r.status, 403, "{}: {}", c.name(), r.text);
        let r = c.get(&s, "/users/me").await;
        assert_eq!(r.status, 200);
        assert_eq!(keys(&r.body["data"]), ["email", "first_name", "id"]);
        let r = c.get(&s, "/roles").await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access collection \"directus_roles\" or it does not exist. Queried in root.",
        );
        let r = c
            .call(&s, "PATCH", "/users/me", Some(json!({"first_name": "X"})))
            .await;
        assert_eq!(r.status, 403, "{}: {}", c.name(), r.text);
    }
}

#[tokio::test]
async fn attaching_and_detaching_a_policy_takes_effect_at_once_even_for_an_issued_jwt() {
    let s = TestServer::spawn(&[]).await;
    let role = s.make("/roles", json!({"name": "Late"})).await;
    let policy = s.make("/policies", json!({"name": "Roles reader"})).await;
    grant(
        &s,
        policy.as_str().unwrap(),
        "directus_roles",
        "read",
        json!({"fields": ["id", "name"]}),
    )
    .await;
    s.create_user(
        json!({"email": "late@example.com", "password": "Late-Pass-12",
        "role": role, "token": "late-static-token-000001"}),
    )
    .await;
    let creds = creds(
        &s,
        "late@example.com",
        "Late-Pass-12",
        "late-static-token-000001",
    )
    .await;
    for c in &creds {
        assert_eq!(c.get(&s, "/roles").await.status, 403, "{}", c.name());
    }
    let access = s
        .make("/access", json!({"role": role, "policy": policy}))
        .await;
    for c in &creds {
        let r = c.get(&s, "/roles").await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    }
    // Narrowing the permission narrows every token at once too.
    let perms = s
        .admin(
            "GET",
            &format!(
                "/permissions?filter[policy][_eq]={}",
                policy.as_str().unwrap()
            ),
            None,
        )
        .await;
    let pid = perms.body["data"][0]["id"].clone();
    let r = s
        .admin(
            "PATCH",
            &format!("/permissions/{pid}"),
            Some(json!({"permissions": {"name": {"_eq": "Late"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for c in &creds {
        let r = c.get(&s, "/roles").await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{}", c.name());
    }
    let r = s
        .admin(
            "DELETE",
            &format!("/access/{}", access.as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for c in &creds {
        assert_eq!(c.get(&s, "/roles").await.status, 403, "{}", c.name());
    }
}

#[tokio::test]
async fn the_public_policy_serves_anonymous_and_role_less_callers() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/users", &[], None).await;
    assert_eq!(r.status, 403);
    s.create_user(
        json!({"email": "loner@example.com", "password": "Loner-Pass-1",
        "token": "loner-static-token-00001", "first_name": "Lone"}),
    )
    .await;
    grant(
        &s,
        PUBLIC_POLICY,
        "directus_users",
        "read",
        json!({"permissions": {"first_name": {"_eq": "Lone"}}, "fields": ["id", "first_name"]}),
    )
    .await;
    let r = s.call("GET", "/users", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys(&r.body["data"][0]), ["first_name", "id"]);
    for c in creds(
        &s,
        "loner@example.com",
        "Loner-Pass-1",
        "loner-static-token-00001",
    )
    .await
    {
        let r = c.get(&s, "/users").await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        assert_eq!(r.body["data"][0]["first_name"], "Lone");
    }
    let r = s.call("GET", "/policies/me/globals", &[], None).await;
    assert_eq!(
        r.body["data"],
        json!({"app_access": false, "admin_access": false, "enforce_tfa": false})
    );
    assert_eq!(
        s.call("GET", "/permissions/me", &[], None).await.status,
        403
    );
}

#[tokio::test]
async fn validation_presets_and_field_level_writes() {
    let s = TestServer::spawn(&[]).await;
    let (role, policy) = role_with_policy(&s, "Makers", false).await;
    grant(
        &s,
        &policy,
        "directus_roles",
        "create",
        json!({"fields": ["name", "description"], "validation": {"name": {"_contains": "team-"}},
            "presets": {"description": "made by a maker"}}),
    )
    .await;
    grant(
        &s,
        &policy,
        "directus_roles",
        "read",
        json!({"fields": ["*"]}),
    )
    .await;
    s.create_user(
        json!({"email": "maker@example.com", "password": "Maker-Pass-1",
        "role": role, "token": "maker-static-token-00001"}),
    )
    .await;
    for (i, c) in creds(
        &s,
        "maker@example.com",
        "Maker-Pass-1",
        "maker-static-token-00001",
    )
    .await
    .iter()
    .enumerate()
    {
        let r = c
            .call(&s, "POST", "/roles", Some(json!({"name": "plain"})))
            .await;
        assert_eq!(r.status, 400, "{}: {}", c.name(), r.text);
        let e = &r.body["errors"][0];
        assert_eq!(
            e["message"],
            "Validation failed for field \"name\". Value has to contain \"team-\"."
        );
        assert_eq!(e["extensions"]["code"], "FAILED_VALIDATION");
        assert_eq!(e["extensions"]["field"], "name");
        assert_eq!(e["extensions"]["type"], "contains");
        let r = c
            .call(
                &s,
                "POST",
                "/roles",
                Some(json!({"name": "team-a", "icon": "star"})),
            )
            .await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access field \"icon\" in collection \"directus_roles\" or it does not exist.",
        );
        let name = format!("team-{i}");
        let r = c
            .call(&s, "POST", "/roles", Some(json!({"name": name})))
            .await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        assert_eq!(r.body["data"]["description"], "made by a maker");
        let r = c
            .call(
                &s,
                "POST",
                "/roles",
                Some(json!({"name": format!("team-x{i}"), "description": "mine"})),
            )
            .await;
        assert_eq!(r.body["data"]["description"], "mine");
        // No update or delete was granted.
        let id = r.body["data"]["id"].as_str().unwrap().to_owned();
        let r = c
            .call(
                &s,
                "PATCH",
                &format!("/roles/{id}"),
                Some(json!({"name": "team-z"})),
            )
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(
            c.call(&s, "DELETE", &format!("/roles/{id}"), None)
                .await
                .status,
            403
        );
    }
}

#[tokio::test]
async fn fields_granted_under_a_filter_show_on_those_items_only() {
    let s = TestServer::spawn(&[]).await;
    let (role, policy) = role_with_policy(&s, "Peers", false).await;
    let other = s.make("/policies", json!({"name": "Own row"})).await;
    s.make("/access", json!({"role": role, "policy": other}))
        .await;
    grant(
        &s,
        &policy,
        "directus_users",
        "read",
        json!({"fields": ["id", "email"], "permissions": {"role": {"_eq": "$CURRENT_ROLE"}}}),
    )
    .await;
    grant(
        &s,
        other.as_str().unwrap(),
        "directus_users",
        "read",
        json!({"fields": ["*"], "permissions": {"id": {"_eq": "$CURRENT_USER"}}}),
    )
    .await;
    let me = s
        .create_user(
            json!({"email": "peer1@example.com", "password": "Peer-Pass-12", "role": role,
            "token": "peer-static-token-000001", "first_name": "One"}),
        )
        .await;
    s.create_user(json!({"email": "peer2@example.com", "password": "Peer-Pass-12", "role": role, "first_name": "Two"}))
        .await;
    for c in creds(
        &s,
        "peer1@example.com",
        "Peer-Pass-12",
        "peer-static-token-000001",
    )
    .await
    {
        let r = c
            .get(&s, "/users?fields=id,email,first_name&sort=email")
            .await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        let list = r.body["data"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], json!(me));
        assert_eq!(list[0]["first_name"], "One");
        assert_eq!(list[1]["first_name"], Value::Null);
        assert_eq!(list[1]["email"], "peer2@example.com");
    }
}

#[tokio::test]
async fn relational_and_time_filters_in_rules_and_queries() {
    let s = TestServer::spawn(&[]).await;
    let (role, policy) = role_with_policy(&s, "Relational", false).await;
    grant(
        &s,
        &policy,
        "directus_users",
        "read",
        json!({"fields": ["id", "email"], "permissions": {"_and": [
            {"role": {"name": {"_eq": "Relational"}}},
            {"last_access": {"_gte": "$NOW(-1 day)"}}
        ]}}),
    )
    .await;
    s.create_user(
        json!({"email": "rel@example.com", "password": "Rel-Pass-123", "role": role,
        "token": "rel-static-token-0000001"}),
    )
    .await;
    // Same role, never logged in: outside the time window.
    s.create_user(json!({"email": "idle@example.com", "password": "Rel-Pass-123", "role": role}))
        .await;
    for c in creds(
        &s,
        "rel@example.com",
        "Rel-Pass-123",
        "rel-static-token-0000001",
    )
    .await
    {
        let r = c.get(&s, "/users").await;
        assert_eq!(r.status, 200, "{}: {}", c.name(), r.text);
        let emails: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap())
            .collect();
        assert_eq!(emails, ["rel@example.com"], "{}", c.name());
    }
    // A query through two relations: users holding the policy directly.
    let uid = s
        .create_user(
            json!({"email": "direct@example.com", "password": "Rel-Pass-123",
            "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    let path = format!("/users?filter[policies][policy][id][_eq]={policy}&fields=id");
    let r = s.admin("GET", &path, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!([{"id": uid}]));
    let r = s
        .admin(
            "GET",
            &format!("/users/{uid}?fields=policies.policy.name"),
            None,
        )
        .await;
    assert_eq!(
        r.body["data"]["policies"],
        json!([{"policy": {"name": "Relational"}}])
    );
}

#[tokio::test]
async fn batch_updates_and_deletes_in_every_form() {
    let s = TestServer::spawn(&[]).await;
    let a = s.user("a@example.com", "Batch-Pass-1").await;
    let b = s.user("b@example.com", "Batch-Pass-1").await;
    let c = s.user("c@example.com", "Batch-Pass-1").await;
    let r = s
        .admin(
            "PATCH",
            "/users?fields=id,first_name",
            Some(json!({"keys": [a, b], "data": {"first_name": "Batch"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    let r = s
        .admin(
            "PATCH",
            "/users",
            Some(json!([{"id": a, "last_name": "One"}, {"id": c, "last_name": "Three"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .admin(
            "PATCH",
            "/users",
            Some(json!({"query": {"filter": {"first_name": {"_eq": "Batch"}}}, "data": {"title": "Q"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let titled = s
        .admin(
            "GET",
            "/users?filter[title][_eq]=Q&fields=id&sort=email",
            None,
        )
        .await;
    assert_eq!(titled.body["data"], json!([{"id": a}, {"id": b}]));
    for (body, message) in [
        (json!({"keys": [a]}), "\"data\" is required"),
        (
            json!({"data": {}}),
            "\"value\" must contain at least one of [query, keys]",
        ),
        (
            json!({"data": {}, "keys": [a], "query": {}}),
            "\"value\" contains a conflict between exclusive peers [query, keys]",
        ),
        (json!({"data": {}, "keys": a}), "\"keys\" must be an array"),
        (
            json!({"data": {}, "keys": [a], "extra": 1}),
            "\"extra\" is not allowed",
        ),
    ] {
        let r = s.admin("PATCH", "/users", Some(body)).await;
        assert_error(
            &r,
            400,
            "INVALID_PAYLOAD",
            &format!("Invalid payload. {message}."),
        );
    }
    assert_eq!(
        s.admin("DELETE", "/users", Some(json!([a]))).await.status,
        204
    );
    assert_eq!(
        s.admin("DELETE", "/users", Some(json!({"keys": [b]})))
            .await
            .status,
        204
    );
    let r = s
        .admin(
            "DELETE",
            "/users",
            Some(json!({"query": {"filter": {"last_name": {"_eq": "Three"}}}})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let left = s.admin("GET", "/users?fields=email", None).await;
    assert_eq!(left.body["data"], json!([{"email": ADMIN_EMAIL}]));
    // A batch that fails anywhere changes nothing.
    let d = s.user("d@example.com", "Batch-Pass-1").await;
    let r = s
        .admin(
            "PATCH",
            "/users",
            Some(json!([{"id": d, "first_name": "Kept"}, {"id": d, "email": "not-an-email"}])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .admin("GET", &format!("/users/{d}?fields=first_name"), None)
        .await;
    assert_eq!(r.body["data"]["first_name"], Value::Null);
}

#[tokio::test]
async fn nested_policies_are_created_and_deleted_through_the_user() {
    let s = TestServer::spawn(&[]).await;
    let policy = s.make("/policies", json!({"name": "Nested"})).await;
    let uid = s.user("nested@example.com", "Nested-Pass-1").await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"policies": {"create": [{"policy": policy}], "update": [], "delete": []}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .admin(
            "GET",
            &format!("/users/{uid}?fields=policies.id,policies.policy.*"),
            None,
        )
        .await;
    let attached = r.body["data"]["policies"].as_array().unwrap().clone();
    assert_eq!(attached.len(), 1, "{}", r.text);
    assert_eq!(attached[0]["policy"]["id"], policy);
    let access = attached[0]["id"].clone();
    // Another user's access row cannot be deleted through this one.
    let other = s
        .create_user(
            json!({"email": "other@example.com", "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    let theirs = s
        .admin("GET", &format!("/users/{other}?fields=policies"), None)
        .await;
    let theirs = theirs.body["data"]["policies"][0].clone();
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"policies": {"delete": [theirs]}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{uid}"),
            Some(json!({"policies": {"delete": [access]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["policies"], json!([]));
}

#[tokio::test]
async fn the_last_admin_cannot_lose_admin_access_through_access_rows_or_policies() {
    let s = TestServer::spawn(&[]).await;
    let (_, role) = s.admin_identity().await;
    let r = s
        .admin("GET", &format!("/access?filter[role][_eq]={role}"), None)
        .await;
    let row = r.body["data"][0].clone();
    let r = s
        .admin(
            "DELETE",
            &format!("/access/{}", row["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_error(
        &r,
        422,
        "UNPROCESSABLE_CONTENT",
        "Can't process content. Cannot remove the last admin user from the system.",
    );
    let r = s
        .admin(
            "PATCH",
            &format!("/policies/{}", row["policy"].as_str().unwrap()),
            Some(json!({"admin_access": false})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = s
        .admin(
            "DELETE",
            &format!("/policies/{}", row["policy"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(s.admin("GET", "/users/me", None).await.status, 200);
}

#[tokio::test]
async fn the_callers_own_views() {
    let s = TestServer::spawn(&[]).await;
    let (role, _) = role_with_policy(&s, "App users", true).await;
    s.create_user(
        json!({"email": "app@example.com", "password": "App-Pass-123", "role": role,
        "token": "app-static-token-0000001"}),
    )
    .await;
    for c in creds(
        &s,
        "app@example.com",
        "App-Pass-123",
        "app-static-token-0000001",
    )
    .await
    {
        let r = c.get(&s, "/roles/me?fields=id,name").await;
        assert_eq!(
            r.body["data"],
            json!([{"id": role, "name": "App users"}]),
            "{}",
            c.name()
        );
        let r = c.get(&s, "/policies/me/globals").await;
        assert_eq!(
            r.body["data"],
            json!({"app_access": true, "admin_access": false, "enforce_tfa": false})
        );
        let r = c.get(&s, "/permissions/me").await;
        assert_eq!(
            r.body["data"]["directus_users"]["read"]["access"],
            "partial"
        );
        assert_eq!(
            r.body["data"]["directus_roles"]["read"]["fields"],
            json!(["*"])
        );
        assert_eq!(
            r.body["data"]["directus_users"]["update"],
            json!({"access": "none"})
        );
        // The minimal app permissions: one's own row, 19 columns, password concealed.
        let r = c.get(&s, "/users").await;
        let list = r.body["data"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(keys(&list[0]).len(), 19, "{}", r.text);
        assert_eq!(list[0]["password"], "**********");
    }
    let admin = s.admin("GET", "/permissions/me", None).await;
    assert_eq!(
        admin.body["data"]["directus_users"]["delete"]["access"],
        "full"
    );
}

#[tokio::test]
async fn bad_permission_rows_and_queries_are_refused_without_a_server_error() {
    let s = TestServer::spawn(&[]).await;
    let policy = s.make("/policies", json!({"name": "Bad"})).await;
    for body in [
        json!({"policy": policy, "collection": "directus_users", "action": "fly"}),
        json!({"policy": policy, "collection": "directus_users", "action": "read", "permissions": []}),
        json!({"policy": policy, "collection": "directus_users", "action": "read", "permissions": {"nope": {"_eq": 1}}}),
        json!({"policy": policy, "collection": "directus_users", "action": "read", "fields": 5}),
        json!({"policy": "not-a-uuid", "collection": "directus_users", "action": "read"}),
        json!({"policy": "00000000-0000-4000-8000-000000000000", "collection": "directus_users", "action": "read"}),
    ] {
        let r = s.admin("POST", "/permissions", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    let r = s
        .admin(
            "POST",
            "/permissions",
            Some(json!({"collection": "directus_users", "action": "read"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["errors"][0]["extensions"]["field"], "policy");
    for path in [
        "/permissions/abc",
        "/permissions/99999999999999999999",
        "/access/%00",
        "/policies?filter[permissions][nope][_eq]=1",
        "/users?filter[role][name][_foo]=1",
        "/users?filter[policies][_some][policy][admin_access][_eq]=maybe",
    ] {
        let r = s.admin("GET", path, None).await;
        assert!(r.status == 400 || r.status == 403, "{path}: {}", r.text);
    }
    // The admin holds its policies through its role, none directly.
    for (quantifier, expected) in [
        ("_none", json!([{"email": ADMIN_EMAIL}])),
        ("_some", json!([])),
    ] {
        let path = format!(
            "/users?filter[policies][{quantifier}][policy][admin_access][_eq]=true&fields=email"
        );
        let r = s.admin("GET", &path, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["data"], expected, "{quantifier}");
    }
    let deep = (0..40).fold(json!({"id": {"_nnull": true}}), |f, _| json!({"parent": f}));
    let deep = json!({"role": deep});
    let r = s.admin("GET", &format!("/users?filter={deep}"), None).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

const PUBLIC_POLICY: &str = "abf8a154-5b1c-4a46-ac9c-7300570f4f17";

#[tokio::test]
async fn deep_queries_shape_relations_and_are_checked_like_any_query() {
    let s = TestServer::spawn(&[]).await;
    let one = s.make("/policies", json!({"name": "Deep one"})).await;
    let two = s.make("/policies", json!({"name": "Deep two"})).await;
    let uid = s
        .create_user(json!({"email": "deep@example.com",
            "policies": {"create": [{"policy": one, "sort": 1}, {"policy": two, "sort": 2}]}}))
        .await;
    let base = format!("/users/{uid}?fields=policies.sort,policies.policy.name");
    let r = s
        .admin(
            "GET",
            &format!("{base}&deep[policies][_limit]=1&deep[policies][_sort]=-sort"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["data"]["policies"],
        json!([{"sort": 2, "policy": {"name": "Deep two"}}])
    );
    let filtered = json!({"policies": {"_filter": {"policy": {"name": {"_eq": "Deep one"}}}}});
    let r = s
        .admin("GET", &format!("{base}&deep={filtered}"), None)
        .await;
    assert_eq!(
        r.body["data"]["policies"],
        json!([{"sort": 1, "policy": {"name": "Deep one"}}]),
        "{}",
        r.text
    );
    for (deep, status) in [
        ("deep[nope][_limit]=1", 403),
        ("deep[policies][_filter][nope][_eq]=1", 403),
        ("deep[policies][_sort]=nope", 403),
        ("deep[policies][_limit]=many", 400),
        ("deep={broken", 400),
        ("deep[policies][_filter][sort][_eq]=not-a-number", 400),
    ] {
        let r = s.admin("GET", &format!("{base}&{deep}"), None).await;
        assert_eq!(r.status, status, "{deep}: {}", r.text);
    }
    // /users/me honours it too (uncached).
    let r = s
        .admin("GET", "/users/me?fields=email&deep[role][_limit]=1", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn items_of_any_collection_are_refused() {
    let s = TestServer::spawn(&[]).await;
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        let r = s.admin(method, "/items/articles", Some(json!({}))).await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access collection \"articles\" or it does not exist. Queried in root.",
        );
        let r = s
            .admin(method, "/items/directus_users/1", Some(json!({})))
            .await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access this.",
        );
    }
}

#[tokio::test]
async fn ip_access_drops_a_policy_for_requests_from_elsewhere() {
    let s = TestServer::spawn(&[]).await;
    let policy = s
        .make(
            "/policies",
            json!({"name": "Office only", "ip_access": ["10.0.0.0/8"]}),
        )
        .await;
    let role = s
        .make(
            "/roles",
            json!({"name": "Office", "policies": {"create": [{"policy": policy}]}}),
        )
        .await;
    grant(
        &s,
        policy.as_str().unwrap(),
        "directus_roles",
        "read",
        json!({"fields": ["id"]}),
    )
    .await;
    s.create_user(
        json!({"email": "office@example.com", "password": "Office-Pass-1",
        "role": role, "token": "office-static-token-0001"}),
    )
    .await;
    let creds = creds(
        &s,
        "office@example.com",
        "Office-Pass-1",
        "office-static-token-0001",
    )
    .await;
    // The tests call from 127.0.0.1, outside the policy's network.
    for c in &creds {
        assert_eq!(c.get(&s, "/roles").await.status, 403, "{}", c.name());
    }
    let r = s
        .admin(
            "PATCH",
            &format!("/policies/{}", policy.as_str().unwrap()),
            Some(json!({"ip_access": "127.0.0.1,10.0.0.0/8"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["data"]["ip_access"],
        json!(["127.0.0.1", "10.0.0.0/8"])
    );
    for c in &creds {
        assert_eq!(c.get(&s, "/roles").await.status, 200, "{}", c.name());
    }
}
