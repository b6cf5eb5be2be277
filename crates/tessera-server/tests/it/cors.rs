//! Security headers on every answer, and CORS as Directus configures it (`CORS_*`): checked
//! header by header, and from a real browser: headless Chromium (Debian's package) loads a
//! page from one port of loopback that logs in to Tessera on another with
//! `credentials: 'include'`, and a page from an origin CORS does not allow, which cannot read.

use std::path::PathBuf;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_cors_unless_enabled() {
    let s = TestServer::spawn(&[]).await;
    let origin = [("origin", "http://elsewhere.example")];
    for (method, path) in [
        ("GET", "/server/ping"),
        ("GET", "/users/me"),
        ("GET", "/nope"),
        ("OPTIONS", "/auth/login"),
    ] {
        let r = s.call(method, path, &origin, None).await;
        assert_eq!(
            header(&r, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(header(&r, "x-frame-options"), Some("SAMEORIGIN"), "{path}");
        assert_eq!(
            header(&r, "cross-origin-opener-policy"),
            Some("same-origin-allow-popups")
        );
        assert!(
            header(&r, "content-security-policy")
                .is_some_and(|c| c.starts_with("default-src 'self'"))
        );
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{path}");
        assert_eq!(header(&r, "strict-transport-security"), None);
    }
    let r = s.call("OPTIONS", "/auth/login", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "allow"), Some("POST"));
    let hsts = TestServer::spawn(&[("HSTS_ENABLED", "true")]).await;
    let r = hsts.call("GET", "/server/ping", &[], None).await;
    assert_eq!(
        header(&r, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
}

#[tokio::test]
async fn cors_allows_listed_origins_and_patterns_only() {
    let s = TestServer::spawn(&[
        ("CORS_ENABLED", "true"),
        (
            "CORS_ORIGIN",
            r"http://app.example,/^https://[a-z]+\.team\.example$/",
        ),
    ])
    .await;
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ]
    };
    for origin in ["http://app.example", "https://blue.team.example"] {
        let r = s
            .call("OPTIONS", "/auth/login", &preflight(origin), None)
            .await;
        assert_eq!(r.status, 204, "{origin}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            header(&r, "access-control-allow-methods"),
            Some("GET,POST,PATCH,DELETE")
        );
        assert_eq!(
            header(&r, "access-control-allow-headers"),
            Some("Content-Type,Authorization")
        );
        assert_eq!(header(&r, "access-control-max-age"), Some("18000"));
        assert!(header(&r, "vary").is_some_and(|v| v.contains("Origin")));
    }
    for origin in [
        "http://evil.example",
        "https://blue.team.example.evil",
        "http://app.example.evil",
        "null",
    ] {
        let r = s
            .call("OPTIONS", "/auth/login", &preflight(origin), None)
            .await;
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{origin}");
        let r = s
            .call("GET", "/server/ping", &[("origin", origin)], None)
            .await;
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{origin}");
    }
    let r = s
        .call(
            "GET",
            "/users/me",
            &[("origin", "http://app.example")],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("Content-Range")
    );
    let any = TestServer::spawn(&[
        ("CORS_ENABLED", "true"),
        ("CORS_ORIGIN", "true"),
        ("CORS_CREDENTIALS", "false"),
    ])
    .await;
    let r = any
        .call(
            "GET",
            "/server/ping",
            &[("origin", "http://whoever.example")],
            None,
        )
        .await;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://whoever.example")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    // `null` (a sandboxed frame, a file: page) is nobody in particular: never allowed.
    let r = any
        .call("GET", "/server/ping", &[("origin", "null")], None)
        .await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // A pattern matches whole origins only, even written without anchors; a list keeps
    // each of its patterns.
    let patterns = TestServer::spawn(&[
        ("CORS_ENABLED", "true"),
        (
            "CORS_ORIGIN",
            r"/https://app\.example/,/https://(a|b)\.example/",
        ),
    ])
    .await;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://b.example", true),
        ("https://app.example.evil.net", false),
        ("https://evil.net/?https://app.example", false),
    ] {
        let r = patterns
            .call("GET", "/server/ping", &[("origin", origin)], None)
            .await;
        assert_eq!(
            header(&r, "access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
}

/// Chromium, installed by `scripts/chromium`; `None` (said loudly) where it cannot be, which
/// fails the test under `CI=true`.
fn chromium() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/chromium");
    let out = Command::new(script)
        .output()
        .expect("scripts/chromium runs");
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Chromium is required under CI=true: {why}"
    );
    eprintln!("*** Chromium could not be installed, its test is SKIPPED: {why} ***");
    None
}

/// Serves `html` to every request `listener` takes.
fn serve_page(listener: tokio::net::TcpListener, html: String) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
}

/// What the page at `url` wrote into its `#result` once its script ran.
fn run_page(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=15000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = dom
        .find("<pre id=\"result\">")
        .map(|i| i + "<pre id=\"result\">".len());
    let end = dom.find("</pre>");
    match (start, end) {
        (Some(a), Some(b)) if a <= b => dom[a..b].to_owned(),
        _ => format!(
            "no result in: {dom} / {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_port_logs_in_with_credentials_included() {
    let Some(browser) = tokio::task::spawn_blocking(chromium).await.unwrap() else {
        return;
    };
    // The allowed page's port is held from the start, so nothing else can take it.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page_port = std_listener.local_addr().unwrap().port();
    let allowed = format!("http://127.0.0.1:{page_port}");
    let s = TestServer::spawn(&[("CORS_ENABLED", "true"), ("CORS_ORIGIN", &allowed)]).await;
    let script = format!(
        r#"<!doctype html><html><body><pre id="result">pending</pre><script>
(async () => {{
  const api = "{api}";
  let out = "";
  try {{
    const login = await fetch(api + "/auth/login", {{
      method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{email: "{email}", password: "{password}", mode: "session"}})
    }});
    out += "login " + login.status + "; ";
    const me = await fetch(api + "/users/me?fields=email", {{credentials: "include"}});
    const body = await me.json();
    out += "me " + me.status + " " + (body.data ? body.data.email : JSON.stringify(body));
  }} catch (e) {{
    out += "blocked " + e.name;
  }}
  document.getElementById("result").textContent = out;
}})();
</script></body></html>"#,
        api = s.url,
        email = ADMIN_EMAIL,
        password = ADMIN_PASSWORD,
    );
    // The allowed page, on the port CORS names.
    std_listener.set_nonblocking(true).unwrap();
    serve_page(
        tokio::net::TcpListener::from_std(std_listener).unwrap(),
        script.clone(),
    );
    let url = format!("{allowed}/");
    let seen = tokio::task::spawn_blocking({
        let browser = browser.clone();
        move || run_page(&browser, &url)
    })
    .await
    .unwrap();
    assert_eq!(seen, format!("login 200; me 200 {ADMIN_EMAIL}"));
    // The same page from an origin CORS does not name cannot read anything.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://localhost:{}/", other.local_addr().unwrap().port());
    serve_page(other, script);
    let seen = tokio::task::spawn_blocking(move || run_page(&browser, &url))
        .await
        .unwrap();
    assert_eq!(seen, "blocked TypeError");
}
