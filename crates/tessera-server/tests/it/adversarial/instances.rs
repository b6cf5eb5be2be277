//! Two instances on one database doing opposite things, and input one engine would take and
//! the other refuse: whatever the engine, the answers are the same.

use super::*;

/// The role id of the bootstrap admin.
async fn admin_role(s: &TestServer) -> String {
    let r = s.admin("GET", "/users/me?fields=role", None).await;
    r.body["data"]["role"].as_str().unwrap().to_owned()
}

const SECOND_TOKEN: &str = "second-admin-token-0123456789";

/// Whether the user is active, as the database holds it.
fn is_active(s: &TestServer, id: &str) -> bool {
    s.database().one(
        "SELECT count(*) FROM directus_users WHERE id = $1 AND status = 'active'",
        &[id],
    ) == 1
}

#[tokio::test]
async fn two_instances_demoting_the_last_two_admins_at_once_keep_one() {
    let a = TestServer::spawn(&[]).await;
    let b = TestServer::spawn_in(tempfile::tempdir().unwrap(), &a.db, &[]).await;
    let role = admin_role(&a).await;
    let second = a
        .create_user(
            json!({"email": "second@example.com", "password": "Second-Admin-1",
                            "status": "active", "role": role, "token": SECOND_TOKEN}),
        )
        .await;
    let me = a.admin("GET", "/users/me?fields=id", None).await;
    let first = me.body["data"]["id"].as_str().unwrap().to_owned();
    let (second_path, first_path) = (format!("/users/{second}"), format!("/users/{first}"));
    let second_bearer = format!("Bearer {SECOND_TOKEN}");
    for round in 0..4 {
        // Each admin, on its own instance, suspends the other, at the same moment.
        let (x, y) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let suspend = json!({"status": "suspended"});
        let as_second = [("authorization", second_bearer.as_str())];
        let (r1, r2) = tokio::join!(
            x.admin("PATCH", &second_path, Some(suspend.clone())),
            y.call("PATCH", &first_path, &as_second, Some(suspend)),
        );
        // One wins. The other is refused as the last admin, or, if the winner suspended it
        // before it was authenticated, as no longer a user.
        assert!(
            [r1.status, r2.status].contains(&200),
            "{} / {}",
            r1.text,
            r2.text
        );
        assert!(
            !(r1.status == 200 && r2.status == 200),
            "both admins suspended in round {round}"
        );
        for r in [&r1, &r2].into_iter().filter(|r| r.status == 422) {
            assert_eq!(
                r.message(),
                "Can't process content. Cannot remove the last admin user from the system."
            );
        }
        assert!(is_active(&a, &first) || is_active(&a, &second));
        // The survivor reactivates the other for the next round.
        let (other, bearer) = if is_active(&a, &first) {
            (&second_path, format!("Bearer {ADMIN_TOKEN}"))
        } else {
            (&first_path, second_bearer.clone())
        };
        let auth = [("authorization", bearer.as_str())];
        let r = a
            .call("PATCH", other, &auth, Some(json!({"status": "active"})))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

#[tokio::test]
async fn nul_characters_are_refused_alike_on_every_engine() {
    let s = TestServer::spawn(&[]).await;
    let r = s
        .admin("GET", "/users?filter[first_name][_eq]=a%00b", None)
        .await;
    assert_error(
        &r,
        400,
        "INVALID_QUERY",
        "Invalid query. A filter value may not contain NUL characters.",
    );
    let r = s.admin("GET", "/users?search=a%00", None).await;
    assert_eq!((r.status, r.code()), (400, "INVALID_QUERY"), "{}", r.text);
    let r = s.admin("GET", "/users/a%00b", None).await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = s.admin("DELETE", "/users/a%00b", None).await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = s
        .admin(
            "POST",
            "/users",
            Some(json!({"email": "nul@example.com", "first_name": "a\u{0}b"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "INVALID_PAYLOAD"), "{}", r.text);
    let r = s
        .login("admin@example.com\u{0}", ADMIN_PASSWORD, None)
        .await;
    // Refused as no e-mail at all, before any lookup.
    assert_eq!((r.status, r.code()), (400, "INVALID_PAYLOAD"), "{}", r.text);
}

#[tokio::test]
async fn operands_that_do_not_fit_their_field_are_refused_alike() {
    let s = TestServer::spawn(&[]).await;
    for (filter, message) in [
        (
            "filter=%7B%22last_access%22%3A%7B%22_gt%22%3A0.5%7D%7D",
            "Invalid query. Invalid timestamp value 0.5 for field \"last_access\".",
        ),
        (
            "filter[last_access][_in]=1,2.5",
            "Invalid query. Invalid timestamp value \"2.5\" for field \"last_access\".",
        ),
        (
            "filter[last_access][_gt]=yesterday",
            "Invalid query. Invalid timestamp value \"yesterday\" for field \"last_access\".",
        ),
        (
            "filter[email_notifications][_eq]=maybe",
            "Invalid query. Invalid boolean value \"maybe\" for field \"email_notifications\".",
        ),
        (
            "filter[last_access][_contains]=1",
            "Invalid query. \"timestamp\" field type does not contain the \"_contains\" filter operator.",
        ),
    ] {
        let r = s.admin("GET", &format!("/users?{filter}"), None).await;
        assert_error(&r, 400, "INVALID_QUERY", message);
    }
    // What fits is brought to the stored form: an ISO time, a numeric string, 1 for true.
    for filter in [
        "filter[last_access][_lt]=2999-01-01T00:00:00Z",
        "filter[last_access][_lt]=32503680000000",
        "filter[email_notifications][_eq]=1",
    ] {
        let r = s
            .admin("GET", &format!("/users?{filter}&fields=id"), None)
            .await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
    }
}

#[tokio::test]
async fn abandoned_requests_give_their_database_connections_back() {
    // Two pooled connections on PostgreSQL (SQLite's readers are bounded the same way).
    let s = TestServer::spawn(&[("DB_POOL__MAX", "2"), ("DB_POOL__MIN", "1")]).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(1))
        .build()
        .unwrap();
    let url = format!("{}/users?fields=id&filter[email][_icontains]=x", s.url);
    let abandoned: Vec<_> = (0..40)
        .map(|_| {
            impatient
                .get(&url)
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .send()
        })
        .collect();
    for a in abandoned {
        let _ = a.await;
    }
    // Every connection came back: were two still held, the next request would wait for
    // one and answer 503 once the pool gave up.
    for _ in 0..10 {
        let r = s.admin("GET", "/users?fields=id", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

#[tokio::test]
async fn two_instances_detaching_the_last_two_admin_policies_at_once_keep_one() {
    let a = TestServer::spawn(&[]).await;
    let b = TestServer::spawn_in(tempfile::tempdir().unwrap(), &a.db, &[]).await;
    let role = admin_role(&a).await;
    let first = a
        .admin("GET", &format!("/access?filter[role][_eq]={role}"), None)
        .await
        .body["data"][0]
        .clone();
    // A second admin, holding the same admin policy through an access row of its own.
    a.create_user(
        json!({"email": "second@example.com", "password": "Second-Admin-1",
        "token": SECOND_TOKEN, "policies": {"create": [{"policy": first["policy"]}]}}),
    )
    .await;
    let second = a
        .admin("GET", "/access?filter[user][_nnull]=true", None)
        .await
        .body["data"][0]["id"]
        .clone();
    // Each admin, on its own instance, detaches its own admin access at the same moment.
    let (p1, p2) = (
        format!("/access/{}", first["id"].as_str().unwrap()),
        format!("/access/{}", second.as_str().unwrap()),
    );
    let as_second = format!("Bearer {SECOND_TOKEN}");
    let second_auth = [("authorization", as_second.as_str())];
    let (r1, r2) = tokio::join!(
        a.admin("DELETE", &p1, None),
        b.call("DELETE", &p2, &second_auth, None),
    );
    // One wins; the other is refused as the last admin, or, if the winner's write came first,
    // as no longer an admin at all.
    let statuses = [r1.status, r2.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{} / {}",
        r1.text,
        r2.text
    );
    assert!(statuses.iter().all(|s| [204, 403, 422].contains(s)));
    let admin_rows = a.database().one(
        "SELECT count(*) FROM directus_access x JOIN directus_policies p ON p.id = x.policy \
         WHERE CAST(p.admin_access AS INTEGER) = 1 AND (x.role IS NOT NULL OR x.\"user\" IS NOT NULL)",
        &[],
    );
    assert_eq!(admin_rows, 1);
}

#[tokio::test]
async fn a_code_used_on_one_instance_is_refused_on_the_other_and_so_is_a_session_ended_there() {
    let a = TestServer::spawn(&[]).await;
    let b = TestServer::spawn_in(tempfile::tempdir().unwrap(), &a.db, &[]).await;
    let uid = a.user("two@example.com", "Two-Instances-1").await;
    let secret = "JBSWY3DPEHPK3PXP";
    a.database().execute(
        "UPDATE directus_users SET tfa_secret = $1 WHERE id = $2",
        &[secret, &uid],
    );
    let code = tessera_core::tfa::current_code(secret, SystemClock.now_ms()).unwrap();
    let body = json!({"email": "two@example.com", "password": "Two-Instances-1", "otp": code, "mode": "session"});
    let r = a.call("POST", "/auth/login", &[], Some(body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cookie = r.cookie(SESSION).unwrap();
    let r = b.call("POST", "/auth/login", &[], Some(body)).await;
    assert_eq!(
        r.code(),
        "INVALID_OTP",
        "the code was spent on the other instance"
    );
    // The session, ended on B, is refused on A at the very next request: instances share
    // sessions on PostgreSQL (an SQLite file serves one instance; its caches are its own).
    if !on_postgres() {
        return;
    }
    assert_eq!(me_by_cookie(&a, &cookie).await.status, 200);
    let id = b
        .admin("GET", &format!("/auth/sessions?user={uid}"), None)
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        b.admin("DELETE", &format!("/auth/sessions/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(me_by_cookie(&a, &cookie).await.status, 401);
}
