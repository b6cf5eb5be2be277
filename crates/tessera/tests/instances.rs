//! Two `tessera serve` processes on one fresh PostgreSQL database, as two instances behind a
//! load balancer: whatever one does, the other honours; and a database moved between engines
//! with `tessera migrate-data`, every account and session still working. Sessions move between them, logout
//! and suspension on one end access on the other at once, changes reach the other's caches
//! within a second, concurrent refreshes spread over both give one successor, and the failed
//! login count is shared. Skips loudly without PostgreSQL, except under `CI=true`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_postgres::scratch::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "Admin-Password-1";

/// Something that answers HTTP: an instance, or nginx in front of them.
struct Endpoint {
    url: String,
    http: reqwest::Client,
}

/// A `tessera serve` child process; killed when dropped.
struct Instance {
    endpoint: Endpoint,
    child: Child,
}

impl std::ops::Deref for Instance {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer, read whole.
struct Reply {
    status: StatusCode,
    body: Value,
    cookie: Option<String>,
}

impl Instance {
    /// An instance on the scratch PostgreSQL database.
    fn start(db: &Scratch, dir: &std::path::Path) -> Self {
        Self::start_on(
            dir,
            &[("DB_CLIENT", "pg"), ("DB_CONNECTION_STRING", &db.url())],
        )
    }

    /// An instance on the database `database` names (`DB_*` settings).
    fn start_on(dir: &std::path::Path, database: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN);
        child
            .arg("serve")
            .current_dir(dir)
            .envs(database.iter().copied());
        let mut child = child
            .env("SECRET", "one-secret-for-every-instance-0123456789")
            .env("ADMIN_EMAIL", EMAIL)
            .env("ADMIN_PASSWORD", PASSWORD)
            .env("LOGIN_STALL_TIME", "0")
            .env("HASH_MEMORY_COST", "1024")
            .env("HASH_TIME_COST", "1")
            .env("HASH_PARALLELISM", "1")
            .env("LOG_LEVEL", "warn")
            .env("IP_TRUST_PROXY", "true")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("Tessera listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            endpoint: Endpoint::new(url),
            child,
        }
    }

    /// `host:port`.
    fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Endpoint {
    fn new(url: String) -> Self {
        Self {
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<Value>) -> Reply {
        self.call_with(method, path, auth, body, &[]).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.bearer_auth(t),
            Auth::Cookie(c) => req = req.header("Cookie", format!("directus_session_token={c}")),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("directus_session_token="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned());
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            cookie,
        }
    }

    async fn login(&self, email: &str, password: &str, mode: &str) -> Reply {
        let body = json!({"email": email, "password": password, "mode": mode});
        self.call("POST", "/auth/login", Auth::None, Some(body))
            .await
    }

    async fn refresh(&self, token: &str) -> Reply {
        let body = json!({"refresh_token": token});
        self.call("POST", "/auth/refresh", Auth::None, Some(body))
            .await
    }

    /// Logs a session cookie out; the answer must be 204.
    async fn logout_session(&self, cookie: &str) {
        let body = json!({"mode": "session"});
        let r = self
            .call("POST", "/auth/logout", Auth::Cookie(cookie), Some(body))
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }

    async fn admin_jwt(&self) -> String {
        let r = self.login(EMAIL, PASSWORD, "json").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]["access_token"].as_str().unwrap().to_owned()
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

/// Asks until `ok` holds, for one second at most; how long it took.
async fn within_a_second(mut ask: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ask().await {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not seen within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// A fresh database and two instances on it (the first bootstraps the admin). Blocking work
/// (the synchronous driver, reading the children's first lines) stays off the async workers.
async fn two_instances(
    what: &'static str,
) -> Option<(Scratch, tempfile::TempDir, Instance, Instance)> {
    tokio::task::spawn_blocking(move || {
        let db = Scratch::or_skip(what)?;
        let dir = tempfile::tempdir().unwrap();
        let a = Instance::start(&db, dir.path());
        let b = Instance::start(&db, dir.path());
        Some((db, dir, a, b))
    })
    .await
    .unwrap()
}

/// A fresh database and one instance on it.
async fn one_instance(what: &'static str) -> Option<(Scratch, tempfile::TempDir, Instance)> {
    tokio::task::spawn_blocking(move || {
        let db = Scratch::or_skip(what)?;
        let dir = tempfile::tempdir().unwrap();
        let a = Instance::start(&db, dir.path());
        Some((db, dir, a))
    })
    .await
    .unwrap()
}

/// An admin session cookie, used on `a` until `a` has it cached.
async fn cached_session(a: &Instance) -> String {
    let r = a.login(EMAIL, PASSWORD, "session").await;
    let cookie = r.cookie.expect("a session cookie");
    for _ in 0..3 {
        let r = a
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    cookie
}

/// Runs a query on the scratch database off the async workers; the first column of the first
/// row as a number.
async fn count(db: &Scratch, sql: &'static str) -> i64 {
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get::<_, i64>(0)
    })
    .await
    .unwrap()
}

async fn me(i: &Instance, auth: Auth<'_>) -> Reply {
    i.call("GET", "/users/me?fields=role", auth, None).await
}

async fn create_user(a: &Instance, admin: &str, email: &str, extra: Value) -> String {
    let mut body = json!({"email": email, "password": "User-Password-1", "status": "active"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = a
        .call("POST", "/users", Auth::Bearer(admin), Some(body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_instance_refreshes_on_the_other() {
    let Some((_db, _dir, a, b)) = two_instances("two instances: sessions move").await else {
        return;
    };
    let r = a.login(EMAIL, PASSWORD, "json").await;
    let token = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let r = b.refresh(&token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let next = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, token);
    let jwt = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let r = a.call("GET", "/users/me", Auth::Bearer(&jwt), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.refresh(&next).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_ends_the_session_cookie_on_the_other_at_once() {
    let Some((_db, _dir, a, b)) = two_instances("two instances: logout").await else {
        return;
    };
    for _ in 0..5 {
        let r = a.login(EMAIL, PASSWORD, "session").await;
        let cookie = r.cookie.expect("a session cookie");
        // The other instance knows (and caches) the session.
        for _ in 0..3 {
            let r = b
                .call("GET", "/users/me", Auth::Cookie(&cookie), None)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        a.logout_session(&cookie).await;
        let r = b
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_instance_reach_the_others_caches_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances("two instances: caches").await else {
        return;
    };
    let admin = a.admin_jwt().await;
    let r = a.call("GET", "/roles", Auth::Bearer(&admin), None).await;
    let admin_role = r.body["data"][0]["id"].as_str().unwrap().to_owned();
    let uid = create_user(
        &a,
        &admin,
        "staff@example.com",
        json!({"role": admin_role, "token": "static-token-one"}),
    )
    .await;
    let session = b
        .login("staff@example.com", "User-Password-1", "session")
        .await;
    let cookie = session.cookie.expect("a session cookie");
    let (a, b, cookie, admin) = (&a, &b, cookie.as_str(), admin.as_str());
    // Warm the other instance's caches first, so that what follows proves invalidation.
    for _ in 0..3 {
        assert_eq!(me(b, Auth::Bearer("static-token-one")).await.status, 200);
        assert_eq!(me(b, Auth::Cookie(cookie)).await.status, 200);
    }
    // A static token changed on A: the old one stops working on B.
    let r = a
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            Auth::Bearer(admin),
            Some(json!({"token": "static-token-two"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || me(b, Auth::Bearer("static-token-one")).await.status == 401).await;
    assert_eq!(me(b, Auth::Bearer("static-token-two")).await.status, 200);
    // Demoted on A: B's session cookie and static token carry no role.
    let r = a
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            Auth::Bearer(admin),
            Some(json!({"role": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || {
        let r = me(b, Auth::Cookie(cookie)).await;
        r.status == 200 && r.body["data"]["role"].is_null()
    })
    .await;
    let r = b
        .call("GET", "/users", Auth::Bearer("static-token-two"), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A setting changed on A: B answers with it.
    let r = b.call("GET", "/settings", Auth::Bearer(admin), None).await;
    assert_eq!(r.body["data"]["project_name"], "Directus");
    let r = a
        .call(
            "PATCH",
            "/settings",
            Auth::Bearer(admin),
            Some(json!({"project_name": "Moved"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || {
        let r = b.call("GET", "/settings", Auth::Bearer(admin), None).await;
        r.body["data"]["project_name"] == "Moved"
    })
    .await;
    // Suspended on A: B refuses the static token and the session cookie.
    let r = a
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            Auth::Bearer(admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || me(b, Auth::Bearer("static-token-two")).await.status == 401).await;
    within_a_second(async || me(b, Auth::Cookie(cookie)).await.status == 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_permission_changes_on_one_instance_reach_the_others_tokens() {
    let Some((_db, _dir, a, b)) = two_instances("two instances: permissions").await else {
        return;
    };
    let admin = a.admin_jwt().await;
    let (a, b, admin) = (&a, &b, admin.as_str());
    let made = async |path: &str, body: Value| {
        let r = a.call("POST", path, Auth::Bearer(admin), Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]["id"].clone()
    };
    let role = made("/roles", json!({"name": "Watchers"})).await;
    let policy = made("/policies", json!({"name": "Watch roles"})).await;
    let permission = made(
        "/permissions",
        json!({"policy": policy, "collection": "directus_roles", "action": "read", "fields": ["id", "name"]}),
    )
    .await;
    create_user(
        a,
        admin,
        "watcher@example.com",
        json!({"role": role, "token": "watcher-token"}),
    )
    .await;
    let r = b
        .login("watcher@example.com", "User-Password-1", "json")
        .await;
    let jwt = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let roles = async |auth: Auth<'_>| b.call("GET", "/roles", auth, None).await;
    let each = [Auth::Bearer(&jwt), Auth::Bearer("watcher-token")];
    // Warm B's caches with the refusal first.
    for auth in each {
        for _ in 0..3 {
            assert_eq!(roles(auth).await.status, StatusCode::FORBIDDEN);
        }
    }
    let access = made("/access", json!({"role": role, "policy": policy})).await;
    for auth in each {
        within_a_second(async || roles(auth).await.status == StatusCode::OK).await;
    }
    let r = a
        .call(
            "PATCH",
            &format!("/permissions/{permission}"),
            Auth::Bearer(admin),
            Some(json!({"permissions": {"name": {"_eq": "Watchers"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for auth in each {
        within_a_second(async || {
            roles(auth).await.body["data"].as_array().map(Vec::len) == Some(1)
        })
        .await;
    }
    let r = a
        .call(
            "DELETE",
            &format!("/access/{}", access.as_str().unwrap()),
            Auth::Bearer(admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    for auth in each {
        within_a_second(async || roles(auth).await.status == StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_over_both_instances_give_one_successor() {
    let Some((db, _dir, a, b)) = two_instances("two instances: refresh race").await else {
        return;
    };
    let r = a.login(EMAIL, PASSWORD, "json").await;
    let token = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let at = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tokio::spawn(async move { at.refresh(&token).await })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        successors.insert(r.body["data"]["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(successors.len(), 1, "{successors:?}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM directus_sessions").await,
        1
    );
    assert_eq!(
        count(&db, "SELECT max(generation) FROM directus_sessions").await,
        1
    );
    let next = successors.into_iter().next().unwrap();
    let r = b.refresh(&next).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_count_across_instances() {
    let Some((_db, _dir, a, b)) = two_instances("two instances: login attempts").await else {
        return;
    };
    let admin = a.admin_jwt().await;
    let r = a
        .call(
            "PATCH",
            "/settings",
            Auth::Bearer(&admin),
            Some(json!({"auth_login_attempts": 3})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let uid = create_user(&a, &admin, "guess@example.com", json!({})).await;
    // Three failures, alternating instances: the limit holds over both.
    for at in [&a, &b, &a] {
        let r = at.login("guess@example.com", "wrong", "json").await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = b
        .login("guess@example.com", "User-Password-1", "json")
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = a
        .call(
            "GET",
            &format!("/users/{uid}?fields=status"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["data"]["status"], "suspended");
    let r = a
        .login("guess@example.com", "User-Password-1", "json")
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_lost_its_listening_connection_hears_again() {
    let Some((db, _dir, a, b)) = two_instances("two instances: listener lost").await else {
        return;
    };
    let admin = a.admin_jwt().await;
    let uid = create_user(
        &a,
        &admin,
        "heard@example.com",
        json!({"token": "heard-one"}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(me(&b, Auth::Bearer("heard-one")).await.status, 200);
    }
    // Both instances' listening connections die, as in a database restart or a proxy's
    // idle cut; the pool is untouched.
    let killed = count(
        &db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'tessera-listen' AND datname = current_database()",
    )
    .await;
    assert_eq!(killed, 2);
    let r = a
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            Auth::Bearer(&admin),
            Some(json!({"token": "heard-two"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || me(&b, Auth::Bearer("heard-one")).await.status == 401).await;
    // Listening again: the next change is heard too.
    within_a_second(async || {
        count(
            &db,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'tessera-listen' AND datname = current_database()",
        )
        .await
            == 2
    })
    .await;
    for _ in 0..3 {
        assert_eq!(me(&b, Auth::Bearer("heard-two")).await.status, 200);
    }
    let r = a
        .call(
            "PATCH",
            &format!("/users/{uid}"),
            Auth::Bearer(&admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second(async || me(&b, Auth::Bearer("heard-two")).await.status == 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_was_alone_honours_one_that_joins_at_once() {
    let Some((db, dir, a)) = one_instance("two instances: a late joiner").await else {
        return;
    };
    // Alone, A keeps the session in its cache.
    let cookie = cached_session(&a).await;
    // B joins; once it serves, A no longer trusts its cache of what B may change.
    let path = dir.path().to_owned();
    let (b, db) = tokio::task::spawn_blocking(move || (Instance::start(&db, &path), db))
        .await
        .unwrap();
    b.logout_session(&cookie).await;
    let r = a
        .call("GET", "/users/me", Auth::Cookie(&cookie), None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    drop((a, b, db));
}

/// nginx from Debian's package (`scripts/nginx` installs it), or why not.
fn nginx() -> Option<std::path::PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        let why = "nginx is not installed (scripts/nginx installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("\n*** SKIPPED nginx in front of two instances: {why} ***\n");
    }
    found
}

/// The server block of `docs/deploy.md`, with its example ports replaced.
fn deploy_guide_server_block(a: &str, b: &str, listen: &str) -> String {
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploy.md");
    let guide = std::fs::read_to_string(guide).unwrap();
    let block = guide
        .split_once("```nginx\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("an nginx block in docs/deploy.md");
    for example in ["127.0.0.1:8055", "127.0.0.1:8056", "127.0.0.1:8080"] {
        assert!(block.contains(example), "the guide's block names {example}");
    }
    block
        .replace("127.0.0.1:8055", a)
        .replace("127.0.0.1:8056", b)
        .replace("127.0.0.1:8080", listen)
}

/// nginx in the foreground, one process; killed when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_from_the_deploy_guide_in_front_of_two_instances() {
    let Some(bin) = nginx() else { return };
    let Some((db, dir, a, b)) = two_instances("nginx in front of two instances").await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = deploy_guide_server_block(a.address(), b.address(), &listen);
    let d = dir.path().display();
    // Everything nginx writes stays in the test's directory; the access log names the
    // instance that answered each request.
    let conf = format!(
        "master_process off;\nerror_log {d}/nginx-error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           log_format upstreams '$upstream_addr $status';\n\
           access_log {d}/nginx-access.log upstreams;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           {server}\n\
         }}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Nginx(
        Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let front = Endpoint::new(format!("http://{listen}"));
    let start = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A session cookie through the balancer, from a client that lies about its address.
    let login = json!({"email": EMAIL, "password": PASSWORD, "mode": "session"});
    let lie = [("X-Forwarded-For", "6.6.6.6")];
    let r = front
        .call_with("POST", "/auth/login", Auth::None, Some(login), &lie)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = r.cookie.expect("a session cookie");
    for _ in 0..6 {
        let r = front
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The session records the client nginx saw, not the address the client claimed.
    let lied = "SELECT count(*) FROM directus_sessions WHERE ip = '6.6.6.6'";
    assert_eq!(count(&db, lied).await, 0);
    let seen = "SELECT count(*) FROM directus_sessions WHERE ip = '127.0.0.1'";
    assert_eq!(count(&db, seen).await, 1);
    // A chain of refreshes, each answered by whichever instance nginx picks.
    let r = front.login(EMAIL, PASSWORD, "json").await;
    let mut token = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        let r = front.refresh(&token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        token = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    }
    // Logout through one instance ends the cookie on both.
    front.logout_session(&cookie).await;
    for _ in 0..4 {
        let r = front
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let log = std::fs::read_to_string(dir.path().join("nginx-access.log")).unwrap();
    for instance in [a.address(), b.address()] {
        assert!(
            log.contains(instance),
            "{instance} answered nothing:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_alone_that_hears_a_stranger_stops_trusting_its_cache() {
    let Some((db, _dir, a)) = one_instance("a stranger on the database").await else {
        return;
    };
    let cookie = cached_session(&a).await;
    // Another instance that A never counted (its listening connection was down when A
    // started) logs the session out, and announces it through its pool.
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        let family: String = c
            .query_one("DELETE FROM directus_sessions RETURNING family", &[])
            .unwrap()
            .get(0);
        let payload = format!("stranger family {family}");
        c.execute("SELECT pg_notify('tessera_changes', $1)", &[&payload])
            .unwrap();
    })
    .await
    .unwrap();
    within_a_second(async || {
        let r = a
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        r.status == 401
    })
    .await;
    // And A no longer counts itself alone: a session it caches from now on is read anew.
    let r = a.login(EMAIL, PASSWORD, "session").await;
    let cookie = r.cookie.expect("a session cookie");
    assert_eq!(
        a.call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await
            .status,
        200
    );
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.execute("DELETE FROM directus_sessions", &[]).unwrap();
    })
    .await
    .unwrap();
    let r = a
        .call("GET", "/users/me", Auth::Cookie(&cookie), None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

/// `tessera migrate-data --from … --to …`; its output, or its error.
fn migrate_data(from: &str, to: &str) -> Result<String, String> {
    let out = Command::new(BIN)
        .args(["migrate-data", "--from", from, "--to", to])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_moves_to_postgresql_and_back_with_every_account_and_session() {
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("moving between engines"))
        .await
        .unwrap()
    else {
        return;
    };
    let first = tempfile::tempdir().unwrap();
    let file = first.path().join("data.db");
    let a = tokio::task::spawn_blocking({
        let dir = first.path().to_owned();
        let file = file.clone();
        move || Instance::start_on(&dir, &[("DB_FILENAME", file.to_str().unwrap())])
    })
    .await
    .unwrap();
    // A populated database: a role under another, a user in it with a static token, a
    // suspended user, a setting, and live sessions of both kinds.
    let admin = a.admin_jwt().await;
    let role = |body: Value| {
        let a = &a;
        let admin = &admin;
        async move {
            let r = a
                .call("POST", "/roles", Auth::Bearer(admin), Some(body))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["data"]["id"].as_str().unwrap().to_owned()
        }
    };
    let parent = role(json!({"name": "Staff"})).await;
    let child = role(json!({"name": "Editors", "parent": parent})).await;
    let editor = create_user(
        &a,
        &admin,
        "editor@example.com",
        json!({"role": child, "token": "moved-static"}),
    )
    .await;
    create_user(
        &a,
        &admin,
        "gone@example.com",
        json!({"status": "suspended"}),
    )
    .await;
    let r = a
        .call(
            "PATCH",
            "/settings",
            Auth::Bearer(&admin),
            Some(json!({"project_name": "Moved"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a
        .login("editor@example.com", "User-Password-1", "json")
        .await;
    let refresh = r.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let cookie = a
        .login("editor@example.com", "User-Password-1", "session")
        .await
        .cookie
        .expect("a session cookie");
    drop(a);

    // Into PostgreSQL.
    let out = migrate_data(
        &format!("sqlite:{}", file.display()),
        &format!("pg:{}", db.url()),
    )
    .unwrap();
    assert!(out.contains("directus_users: 3 rows"), "{out}");
    assert!(out.contains("directus_sessions: 3 rows"), "{out}");
    let second = tempfile::tempdir().unwrap();
    let b = {
        let (db_url, dir) = (db.url(), second.path().to_owned());
        tokio::task::spawn_blocking(move || {
            Instance::start_on(
                &dir,
                &[("DB_CLIENT", "pg"), ("DB_CONNECTION_STRING", &db_url)],
            )
        })
        .await
        .unwrap()
    };
    let works = async |i: &Instance, refresh: &str| -> String {
        let r = i
            .login("editor@example.com", "User-Password-1", "json")
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = i.login("gone@example.com", "User-Password-1", "json").await;
        assert_eq!(r.status, 401, "{}", r.body);
        let r = me(i, Auth::Bearer("moved-static")).await;
        assert_eq!(r.body["data"]["id"], editor.as_str(), "{}", r.body);
        let r = i
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let admin = i.admin_jwt().await;
        let r = i.call("GET", "/settings", Auth::Bearer(&admin), None).await;
        assert_eq!(r.body["data"]["project_name"], "Moved", "{}", r.body);
        let r = i.refresh(refresh).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]["refresh_token"].as_str().unwrap().to_owned()
    };
    let refresh = works(&b, &refresh).await;
    let admin = b.admin_jwt().await;
    let r = b
        .call(
            "GET",
            &format!("/users/{editor}?fields=role"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["data"]["role"], child.as_str());
    let r = b
        .call(
            "GET",
            &format!("/roles/{child}?fields=parent"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["data"]["parent"], parent.as_str(), "{}", r.body);
    drop(b);

    // A target that already has users is refused.
    let err = migrate_data(
        &format!("sqlite:{}", file.display()),
        &format!("pg:{}", db.url()),
    )
    .unwrap_err();
    assert!(err.contains("already has users"), "{err}");

    // And back into a new SQLite database.
    let third = tempfile::tempdir().unwrap();
    let back = third.path().join("data.db");
    migrate_data(
        &format!("pg:{}", db.url()),
        &format!("sqlite:{}", back.display()),
    )
    .unwrap();
    let c = tokio::task::spawn_blocking({
        let dir = third.path().to_owned();
        let back = back.clone();
        move || Instance::start_on(&dir, &[("DB_FILENAME", back.to_str().unwrap())])
    })
    .await
    .unwrap();
    works(&c, &refresh).await;
}

/// The fixture made by a real Directus 12.4.1 (see `fixtures/README.md`).
const DIRECTUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/directus-12.4.1.sqlite"
);

/// What a database imported from the Directus fixture must answer.
async fn imported(i: &Instance) {
    let r = i
        .login("admin@example.com", "Directus-Admin-123", "json")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let admin = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let r = i
        .call("GET", "/users?fields=email", Auth::Bearer(&admin), None)
        .await;
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(4),
        "{}",
        r.body
    );
    let r = i
        .login("editor@example.com", "Editor-Password-1", "json")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = i
        .login("suspended@example.com", "Suspended-Password-1", "json")
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = i
        .call(
            "GET",
            "/roles?fields=id,name,parent",
            Auth::Bearer(&admin),
            None,
        )
        .await;
    let role = |name: &str| {
        r.body["data"]
            .as_array()
            .and_then(|roles| roles.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no role {name}: {}", r.body))
    };
    assert_eq!(role("Viewers")["parent"], role("Editors")["id"]);
    // Static tokens, kept in plain text by Directus, work as they did.
    let me_admin = me(i, Auth::Bearer("admin-static-token-0123456789")).await;
    assert_eq!(me_admin.body["data"]["role"], role("Administrator")["id"]);
    let r = me(i, Auth::Bearer("editor-static-token-0123456789")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = i.call("GET", "/settings", Auth::Bearer(&admin), None).await;
    assert_eq!(
        r.body["data"]["project_name"], "Fixture Project",
        "{}",
        r.body
    );
    assert_eq!(r.body["data"]["auth_login_attempts"], 7, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directus_database_imports_into_either_engine() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("directus.db");
    std::fs::copy(DIRECTUS, &source).unwrap();
    let before = std::fs::read(&source).unwrap();
    let from = format!("sqlite:{}", source.display());
    let target = work.path().join("data.db");
    let out = migrate_data(&from, &format!("sqlite:{}", target.display())).unwrap();
    for expected in [
        "directus_users: 4 rows",
        "directus_roles: 3 rows",
        "directus_policies: 4 rows",
        "directus_permissions: 2 rows",
    ] {
        assert!(out.contains(expected), "{expected}:\n{out}");
    }
    assert_eq!(
        std::fs::read(&source).unwrap(),
        before,
        "the source was written"
    );
    let on_sqlite = tokio::task::spawn_blocking({
        let (dir, target) = (work.path().to_owned(), target.clone());
        move || Instance::start_on(&dir, &[("DB_FILENAME", target.to_str().unwrap())])
    })
    .await
    .unwrap();
    imported(&on_sqlite).await;
    drop(on_sqlite);

    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("importing Directus"))
        .await
        .unwrap()
    else {
        return;
    };
    migrate_data(&from, &format!("pg:{}", db.url())).unwrap();
    let on_pg = tokio::task::spawn_blocking({
        let (dir, url) = (work.path().to_owned(), db.url());
        move || Instance::start_on(&dir, &[("DB_CLIENT", "pg"), ("DB_CONNECTION_STRING", &url)])
    })
    .await
    .unwrap();
    imported(&on_pg).await;
    let access = "SELECT count(*) FROM directus_access";
    let permissions = "SELECT count(*) FROM directus_permissions";
    assert_eq!(
        (count(&db, access).await, count(&db, permissions).await),
        (5, 2)
    );
}

#[test]
fn sources_that_are_not_tessera_or_directus_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let target = format!("sqlite:{}", work.path().join("data.db").display());
    let stranger = work.path().join("other.db");
    std::fs::write(&stranger, b"").unwrap();
    let err = migrate_data(&format!("sqlite:{}", stranger.display()), &target).unwrap_err();
    assert!(
        err.contains("neither a Tessera nor a Directus database"),
        "{err}"
    );
    // Tables missing that no Directus version lacks.
    let old = work.path().join("broken.db");
    std::fs::copy(DIRECTUS, &old).unwrap();
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch(
            "DROP TABLE directus_access; DROP TABLE directus_permissions; \
             DROP TABLE directus_policies;",
        )
        .unwrap();
    let err = migrate_data(&format!("sqlite:{}", old.display()), &target).unwrap_err();
    assert!(
        err.contains("has no directus_permissions: it is not a Directus 10, 11 or 12"),
        "{err}"
    );
    // Found before anything was written: the target is still empty.
    assert!(!err.contains("part of the data"), "{err}");
    // Two accounts Tessera cannot tell apart (e-mails equal but for ASCII case): the import
    // stops, and says that the target holds part of the data.
    let twins = work.path().join("twins.db");
    std::fs::copy(DIRECTUS, &twins).unwrap();
    rusqlite::Connection::open(&twins)
        .unwrap()
        .execute_batch(
            "UPDATE directus_users SET email = 'EDITOR@example.com' \
             WHERE email = 'viewer@example.com';",
        )
        .unwrap();
    let err = migrate_data(&format!("sqlite:{}", twins.display()), &target).unwrap_err();
    assert!(err.contains("holds part of the data"), "{err}");
    let missing = work.path().join("missing.db");
    let err = migrate_data(&format!("sqlite:{}", missing.display()), &target).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let err = migrate_data("mysql://db/x", &target).unwrap_err();
    assert!(err.contains("a database is sqlite:<file>"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directus_10_database_gets_a_policy_per_role() {
    // Directus 10's shape: flags on roles, permissions naming roles, no policies or access;
    // the password hashes are the ones Directus 12 made for the fixture.
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("directus10.db");
    let hash = |email: &str| -> String {
        rusqlite::Connection::open(DIRECTUS)
            .unwrap()
            .query_row(
                "SELECT password FROM directus_users WHERE email = ?1",
                [email],
                |r| r.get(0),
            )
            .unwrap()
    };
    let db = rusqlite::Connection::open(&source).unwrap();
    db.execute_batch(
        "CREATE TABLE directus_migrations (version TEXT PRIMARY KEY);
         INSERT INTO directus_migrations VALUES ('20230721A');
         CREATE TABLE directus_roles (id TEXT PRIMARY KEY, name TEXT, icon TEXT,
             description TEXT, ip_access TEXT, enforce_tfa INTEGER, admin_access INTEGER,
             app_access INTEGER);
         INSERT INTO directus_roles VALUES
             ('a0000000-0000-4000-8000-000000000001', 'Administrator', 'verified', NULL, NULL,
              0, 1, 1),
             ('a0000000-0000-4000-8000-000000000002', 'Editors', 'edit', NULL, NULL, 0, 0, 1);
         CREATE TABLE directus_users (id TEXT PRIMARY KEY, email TEXT, password TEXT,
             status TEXT, role TEXT, token TEXT, last_access TEXT);
         CREATE TABLE directus_permissions (id INTEGER PRIMARY KEY, role TEXT,
             collection TEXT, action TEXT, permissions TEXT, validation TEXT, presets TEXT,
             fields TEXT);
         INSERT INTO directus_permissions VALUES
             (1, 'a0000000-0000-4000-8000-000000000002', 'directus_users', 'read', '{}',
              NULL, NULL, 'id,email'),
             (2, NULL, 'directus_settings', 'read', '{}', NULL, NULL, 'project_name');
         CREATE TABLE directus_settings (id INTEGER PRIMARY KEY, project_name TEXT);
         INSERT INTO directus_settings VALUES (1, 'Legacy');",
    )
    .unwrap();
    for (id, email, role, token) in [
        (
            "b0000000-0000-4000-8000-000000000001",
            "admin@example.com",
            1,
            None,
        ),
        (
            "b0000000-0000-4000-8000-000000000002",
            "editor@example.com",
            2,
            Some("legacy-token"),
        ),
    ] {
        db.execute(
            "INSERT INTO directus_users VALUES (?1, ?2, ?3, 'active', ?4, ?5, \
             '2024-01-02 03:04:05')",
            rusqlite::params![
                id,
                email,
                hash(email),
                format!("a0000000-0000-4000-8000-00000000000{role}"),
                token
            ],
        )
        .unwrap();
    }
    drop(db);
    let target = work.path().join("data.db");
    let from = format!("sqlite:{}", source.display());
    let out = migrate_data(&from, &format!("sqlite:{}", target.display())).unwrap();
    assert!(out.contains("directus_policies: 2 rows"), "{out}");
    assert!(out.contains("directus_access: 2 rows"), "{out}");
    let i = tokio::task::spawn_blocking({
        let (dir, target) = (work.path().to_owned(), target.clone());
        move || Instance::start_on(&dir, &[("DB_FILENAME", target.to_str().unwrap())])
    })
    .await
    .unwrap();
    // The Administrator role's flags became its policy's: its user is an admin.
    let r = i
        .login("admin@example.com", "Directus-Admin-123", "json")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let admin = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    let r = i
        .call(
            "GET",
            "/users?fields=email,last_access",
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    // Directus 10 kept times as text; the editor's (untouched by a login yet) reads back.
    let editor = r.body["data"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["email"] == "editor@example.com"))
        .cloned()
        .unwrap();
    assert_eq!(editor["last_access"], "2024-01-02T03:04:05.000Z");
    let r = i
        .login("editor@example.com", "Editor-Password-1", "json")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = me(&i, Auth::Bearer("legacy-token")).await;
    assert_eq!(
        r.body["data"]["role"],
        "a0000000-0000-4000-8000-000000000002"
    );
    let r = i.call("GET", "/settings", Auth::Bearer(&admin), None).await;
    assert_eq!(r.body["data"]["project_name"], "Legacy", "{}", r.body);
    let moved = rusqlite::Connection::open(&target).unwrap();
    let public: i64 = moved
        .query_row(
            "SELECT count(*) FROM directus_permissions WHERE policy = ?1",
            ["abf8a154-5b1c-4a46-ac9c-7300570f4f17"],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(public, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directus_database_on_postgresql_imports() {
    let Some(db) =
        tokio::task::spawn_blocking(|| Scratch::or_skip("importing Directus from PostgreSQL"))
            .await
            .unwrap()
    else {
        return;
    };
    // The database a real Directus 12.4.1 made on PostgreSQL (uuid ids, json, timestamptz).
    let dump = include_str!("fixtures/directus-12.4.1.postgres.sql");
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        config
            .connect(postgres::NoTls)
            .unwrap()
            .batch_execute(dump)
            .unwrap();
    })
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("data.db");
    let out = migrate_data(
        &format!("pg:{}", db.url()),
        &format!("sqlite:{}", target.display()),
    )
    .unwrap();
    assert!(out.contains("directus_users: 4 rows"), "{out}");
    assert!(out.contains("directus_permissions: 2 rows"), "{out}");
    let i = tokio::task::spawn_blocking({
        let (dir, target) = (work.path().to_owned(), target.clone());
        move || Instance::start_on(&dir, &[("DB_FILENAME", target.to_str().unwrap())])
    })
    .await
    .unwrap();
    imported(&i).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_and_imports_go_past_one_page() {
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("moving many rows"))
        .await
        .unwrap()
    else {
        return;
    };
    // A Directus database on PostgreSQL (uuid keys) with more users than one page holds.
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.batch_execute(include_str!("fixtures/directus-12.4.1.postgres.sql"))
            .unwrap();
        c.batch_execute(
            "INSERT INTO directus_users (id, email, password, status)
             SELECT gen_random_uuid(), 'bulk' || i || '@example.com',
                    (SELECT password FROM directus_users WHERE email = 'editor@example.com'),
                    'active'
             FROM generate_series(1, 2100) i",
        )
        .unwrap();
    })
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first.db");
    let out = migrate_data(
        &format!("pg:{}", db.url()),
        &format!("sqlite:{}", first.display()),
    )
    .unwrap();
    assert!(out.contains("directus_users: 2104 rows"), "{out}");
    // And Tessera to Tessera, text keys paged the same way.
    let second = work.path().join("second.db");
    let out = migrate_data(
        &format!("sqlite:{}", first.display()),
        &format!("sqlite:{}", second.display()),
    )
    .unwrap();
    assert!(out.contains("directus_users: 2104 rows"), "{out}");
    let i = tokio::task::spawn_blocking({
        let (dir, second) = (work.path().to_owned(), second.clone());
        move || Instance::start_on(&dir, &[("DB_FILENAME", second.to_str().unwrap())])
    })
    .await
    .unwrap();
    for email in ["bulk1@example.com", "bulk2100@example.com"] {
        let r = i.login(email, "Editor-Password-1", "json").await;
        assert_eq!(r.status, 200, "{email}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_neither_stops_an_instance_nor_leaves_it_alone() {
    let Some((db, _dir, a)) = one_instance("garbage on the channel").await else {
        return;
    };
    let cookie = cached_session(&a).await;
    // Anyone who can reach the database can NOTIFY: empty, malformed, forged and oversized
    // messages (PostgreSQL's limit is 8000 bytes).
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        let big = format!("x {}", "y".repeat(7990));
        for payload in [
            "",
            "no-space",
            "x ack",
            "x ack someone not-a-pid",
            "x family not-a-uuid",
            "x join",
            big.as_str(),
        ] {
            c.execute("SELECT pg_notify('tessera_changes', $1)", &[&payload])
                .unwrap();
        }
        // A logout nobody announces: only a database read can see it.
        c.execute("DELETE FROM directus_sessions", &[]).unwrap();
    })
    .await
    .unwrap();
    within_a_second(async || {
        let r = a
            .call("GET", "/users/me", Auth::Cookie(&cookie), None)
            .await;
        r.status == 401
    })
    .await;
    // Still serving; and no longer counting itself alone, so a session ended behind its back
    // (here with no announcement at all) is refused at the very next request.
    let fresh = cached_session(&a).await;
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.execute("DELETE FROM directus_sessions", &[]).unwrap();
    })
    .await
    .unwrap();
    let r = a.call("GET", "/users/me", Auth::Cookie(&fresh), None).await;
    assert_eq!(r.status, 401, "{}", r.body);
}
