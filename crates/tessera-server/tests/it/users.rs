//! `/users`, `/roles`, `/settings`: the admin item API, `/users/me`, and who may use them.

use serde_json::{Value, json};

use crate::common::*;

fn collection_forbidden(c: &str) -> String {
    format!(
        "You don't have permission to access collection \"{c}\" or it does not exist. Queried in root."
    )
}

#[tokio::test]
async fn list_users_with_query() {
    let s = TestServer::spawn(&[]).await;
    s.user("ada@example.com", "Password-123").await;
    s.user("alan@example.com", "Password-123").await;
    let r = s.admin("GET", "/users?fields=email&sort=email", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"data": [{"email": "ada@example.com"}, {"email": ADMIN_EMAIL}, {"email": "alan@example.com"}]})
    );
    let r = s
        .admin(
            "GET",
            "/users?fields=id,email&filter[email][_eq]=alan@example.com",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["email"], json!("alan@example.com"));
    assert_eq!(data[0].as_object().unwrap().len(), 2);
    let r = s
        .admin("GET", "/users?fields=id&limit=1&meta=total_count", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["meta"], json!({"total_count": 3}));
    let r = s
        .admin(
            "GET",
            "/users?fields=id&filter[email][_eq]=ada@example.com&meta=*",
            None,
        )
        .await;
    assert_eq!(r.body["meta"], json!({"total_count": 3, "filter_count": 1}));
    // No meta unless asked.
    let r = s.admin("GET", "/users?fields=id", None).await;
    assert!(r.body.get("meta").is_none());
}

#[tokio::test]
async fn users_me_fields_and_concealment() {
    let s = TestServer::spawn(&[]).await;
    let (at, _) = s.admin_tokens().await;
    let (id, _) = s.admin_identity().await;
    let r = s.get_as("/users/me?fields=id,email", &at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"data": {"id": id, "email": ADMIN_EMAIL}}));
    let r = s.get_as("/users/me?fields=id,role.name", &at).await;
    assert_eq!(
        r.body,
        json!({"data": {"id": id, "role": {"name": "Administrator"}}}),
        "{}",
        r.text
    );
    let r = s.get_as("/users/me", &at).await;
    let d = &r.body["data"];
    assert_eq!(d["password"], json!("**********"));
    assert_eq!(d["token"], json!("**********"));
    assert_eq!(d["tfa_secret"], Value::Null);
    assert_eq!(d["email"], json!(ADMIN_EMAIL));
    assert_eq!(d["status"], json!("active"));
    assert_eq!(d["provider"], json!("default"));
    assert!(!r.text.contains(ADMIN_TOKEN));
    assert!(!r.text.contains("$argon2"));
    let r = s.admin("GET", "/users?fields=password,token", None).await;
    assert_eq!(
        r.body["data"][0],
        json!({"password": "**********", "token": "**********"})
    );
    // Unknown fields on /users/me fall back to {id}.
    let r = s.get_as("/users/me?fields=id,no_such_field", &at).await;
    assert_eq!(r.body, json!({"data": {"id": id}}));
}

#[tokio::test]
async fn create_user_validation() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("POST", "/users", Some(json!({"email": "not-an-email"})))
        .await;
    assert_error(
        &r,
        400,
        "FAILED_VALIDATION",
        "Validation failed for field \"email\". Value has to be a valid email address.",
    );
    s.user("dup@example.com", "Password-123").await;
    let r = s
        .admin("POST", "/users", Some(json!({"email": "DUP@Example.com"})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "RECORD_NOT_UNIQUE");
    assert!(r.message().contains("for field \"email\""), "{}", r.text);
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "ok@example.com", "status": "bogus"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "INVALID_PAYLOAD");
    // A created user comes back with its fields, the password concealed.
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "new@example.com", "password": "Password-123", "first_name": "New"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["first_name"], json!("New"));
    assert_eq!(r.body["data"]["password"], json!("**********"));
    assert!(!r.text.contains("Password-123"));
    assert_eq!(
        s.login("new@example.com", "Password-123", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn tfa_secret_cannot_be_set() {
    let s = TestServer::spawn(&[]).await;
    let (id, _) = s.admin_identity().await;
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({"tfa_secret": "x"})),
        )
        .await;
    assert_error(
        &r,
        400,
        "INVALID_PAYLOAD",
        "Invalid payload. You can't change the \"tfa_secret\" value manually.",
    );
}

#[tokio::test]
async fn password_policy_is_enforced_without_echo() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_password_policy": "^.{12,}$"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["auth_password_policy"], json!("^.{12,}$"));
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "short@example.com", "password": "Sh0rtPw"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "FAILED_VALIDATION");
    assert_eq!(
        r.message(),
        "Validation failed for field \"password\". Value doesn't have the correct format."
    );
    assert_eq!(
        r.body["errors"][0]["extensions"]["field"],
        json!("password")
    );
    assert!(!r.text.contains("Sh0rtPw"), "{}", r.text);
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "long@example.com", "password": "a-long-enough-password"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // An invalid policy is refused.
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_password_policy": "(unclosed"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "INVALID_PAYLOAD");
}

#[tokio::test]
async fn roles_crud_and_delete_suspends_members() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("POST", "/roles", Some(json!({"name": "Editors"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let role = r.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["data"]["name"], json!("Editors"));
    let r = s
        .admin("GET", &format!("/roles/{role}?fields=name"), None)
        .await;
    assert_eq!(r.body, json!({"data": {"name": "Editors"}}));
    let r = s
        .admin(
            "PATCH",
            &format!("/roles/{role}"),
            Some(json!({"name": "Writers"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["name"], json!("Writers"));
    let r = s.admin("GET", "/roles?fields=name&sort=name", None).await;
    assert_eq!(
        r.body,
        json!({"data": [{"name": "Administrator"}, {"name": "Writers"}]})
    );
    let r = s.admin("POST", "/roles", Some(json!({}))).await;
    assert_eq!(r.status, 400, "{}", r.text);

    let uid = s
        .create_user(
            json!({"email": "member@example.com", "password": "Password-123", "role": role}),
        )
        .await;
    let r = s.login("member@example.com", "Password-123", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        jwt_payload(r.body["data"]["access_token"].as_str().unwrap())["role"],
        json!(role)
    );
    let rt = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();

    let r = s.admin("DELETE", &format!("/roles/{role}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.admin("GET", &format!("/roles/{role}"), None).await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    let r = s
        .admin("GET", &format!("/users/{uid}?fields=status,role"), None)
        .await;
    assert_eq!(r.body["data"], json!({"status": "suspended", "role": null}));
    assert_eq!(
        s.login("member@example.com", "Password-123", None)
            .await
            .status,
        401
    );
    let r = s.refresh_json(&rt).await;
    assert_eq!(r.status, 401);
    let r = s.admin("DELETE", &format!("/roles/{role}"), None).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn non_admin_is_forbidden() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("POST", "/roles", Some(json!({"name": "Nobody"})))
        .await;
    let role = r.body["data"]["id"].as_str().unwrap().to_owned();
    let uid = s
        .create_user(
            json!({"email": "plain@example.com", "password": "Password-123", "role": role}),
        )
        .await;
    let r = s.login("plain@example.com", "Password-123", None).await;
    let at = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let p = jwt_payload(&at);
    assert_eq!(p["app_access"], json!(false));
    assert_eq!(p["admin_access"], json!(false));
    for (path, c) in [
        ("/users", "directus_users"),
        ("/roles", "directus_roles"),
        ("/settings", "directus_settings"),
    ] {
        let r = s.get_as(path, &at).await;
        assert_error(&r, 403, "FORBIDDEN", &collection_forbidden(c));
        assert_eq!(
            r.body["errors"][0]["extensions"]["reason"],
            json!(collection_forbidden(c))
        );
    }
    let (admin_id, _) = s.admin_identity().await;
    let r = s.get_as(&format!("/users/{admin_id}"), &at).await;
    assert_eq!(r.status, 403);
    let r = s
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            &[("authorization", &format!("Bearer {at}"))],
            Some(json!({"token": "self-made-token-123"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .call(
            "PATCH",
            "/users/me",
            &[("authorization", &format!("Bearer {at}"))],
            Some(json!({"first_name": "Me"})),
        )
        .await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        &collection_forbidden("directus_users"),
    );
    let r = s
        .call(
            "PATCH",
            "/settings",
            &[("authorization", &format!("Bearer {at}"))],
            Some(json!({"auth_login_attempts": 1})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .call(
            "POST",
            "/roles",
            &[("authorization", &format!("Bearer {at}"))],
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(r.status, 403);
    // /users/me answers {id} only, whatever fields says.
    for path in ["/users/me", "/users/me?fields=email", "/users/me?fields=*"] {
        let r = s.get_as(path, &at).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.text, format!(r#"{{"data":{{"id":"{uid}"}}}}"#));
    }
}

#[tokio::test]
async fn anonymous_access() {
    let s = TestServer::spawn(&[]).await;
    let r = s.call("GET", "/users/me", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text, INVALID_CREDENTIALS_BODY);
    for (path, c) in [
        ("/users", "directus_users"),
        ("/roles", "directus_roles"),
        ("/settings", "directus_settings"),
    ] {
        let r = s.call("GET", path, &[], None).await;
        assert_error(&r, 403, "FORBIDDEN", &collection_forbidden(c));
    }
    let r = s
        .call(
            "POST",
            "/users",
            &[],
            Some(json!({"email": "x@example.com"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .call("PATCH", "/users/me", &[], Some(json!({"first_name": "x"})))
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn missing_user_is_forbidden() {
    let s = TestServer::spawn(&[]).await;
    let missing = "00000000-0000-4000-8000-000000000000";
    for method in ["GET", "DELETE"] {
        let r = s.admin(method, &format!("/users/{missing}"), None).await;
        assert_error(
            &r,
            403,
            "FORBIDDEN",
            "You don't have permission to access this.",
        );
        assert!(r.body["errors"][0]["extensions"].get("reason").is_none());
    }
    let r = s
        .admin(
            "PATCH",
            &format!("/users/{missing}"),
            Some(json!({"first_name": "x"})),
        )
        .await;
    assert_error(
        &r,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    let r = s.admin("GET", "/users/not-a-uuid", None).await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn settings_read_and_write() {
    let s = TestServer::spawn(&[]).await;
    let r = s.admin("GET", "/settings", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["data"].get("auth_login_attempts").is_some());
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"project_name": "Tessera Test", "auth_login_attempts": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["project_name"], json!("Tessera Test"));
    assert_eq!(r.body["data"]["auth_login_attempts"], Value::Null);
    let r = s.call("GET", "/server/info", &[], None).await;
    assert_eq!(
        r.body["data"]["project"]["project_name"],
        json!("Tessera Test")
    );
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": -1})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .admin(
            "PATCH",
            "/settings",
            Some(json!({"auth_login_attempts": "many"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn batch_create_is_all_or_nothing() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!([{"email": "one@example.com"}, {"email": "two@example.com"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    for bad in [
        json!([{"email": "three@example.com"}, {"email": "not-an-email"}]),
        json!([{"email": "three@example.com"}, {"email": "ONE@example.com"}]),
        json!([{"email": "three@example.com"}, {"email": "three@example.com"}]),
    ] {
        let r = s.admin("POST", "/users", Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        let r = s
            .admin(
                "GET",
                "/users?fields=email&filter[email][_eq]=three@example.com",
                None,
            )
            .await;
        assert_eq!(r.body, json!({"data": []}), "{bad}");
    }
    let r = s
        .admin("GET", "/users?fields=id&meta=total_count", None)
        .await;
    assert_eq!(r.body["meta"]["total_count"], json!(3));
}

#[tokio::test]
async fn search_matches_text_fields_and_ids_but_not_secrets() {
    let s = TestServer::spawn(&[]).await;
    let ada = s
        .create_user(json!({"email": "lovelace@example.com", "first_name": "Ada", "password": "pw-ada-123", "token": "ada-secret-token"}))
        .await;
    s.create_user(json!({"email": "turing@example.com", "first_name": "Alan"}))
        .await;
    let r = s.admin("GET", "/users?search=ADA&fields=id", None).await;
    assert_eq!(r.body["data"], json!([{"id": ada}]));
    let r = s
        .admin("GET", &format!("/users?search={ada}&fields=email"), None)
        .await;
    assert_eq!(r.body["data"], json!([{"email": "lovelace@example.com"}]));
    let r = s
        .admin("GET", "/users?search=ada-secret-token&fields=id", None)
        .await;
    assert_eq!(r.body["data"], json!([]));
}
