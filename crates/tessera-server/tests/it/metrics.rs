//! `GET /server/metrics`: absent unless `METRICS_ENABLED`; admins and `Metrics <token>` only;
//! Prometheus text whose counts follow what happened; labels that no client can multiply.

use std::time::Duration;

use crate::common::{TestServer, assert_error};

async fn metrics_as(s: &TestServer, authorization: &str) -> crate::common::Reply {
    s.call(
        "GET",
        "/server/metrics",
        &[("authorization", authorization)],
        None,
    )
    .await
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_do_not_exist_unless_enabled() {
    let s = TestServer::spawn(&[]).await;
    let r = s.admin("GET", "/server/metrics", None).await;
    assert_error(
        &r,
        404,
        "ROUTE_NOT_FOUND",
        "Route /server/metrics doesn't exist.",
    );
}

#[tokio::test]
async fn only_admins_and_metrics_tokens_read_them() {
    let s = TestServer::spawn(&[
        ("METRICS_ENABLED", "true"),
        ("METRICS_TOKENS", "scrape-one, scrape-two"),
    ])
    .await;
    let anonymous = s.call("GET", "/server/metrics", &[], None).await;
    assert_error(
        &anonymous,
        403,
        "FORBIDDEN",
        "You don't have permission to access this.",
    );
    s.user("plain@example.com", "Plain-Password-1").await;
    let r = s.login("plain@example.com", "Plain-Password-1", None).await;
    let jwt = r.body["data"]["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.get_as("/server/metrics", &jwt).await.status, 403);
    for wrong in [
        "Metrics scrape-three",
        "Metrics scrape-one extra",
        "Metrics ",
    ] {
        assert_eq!(metrics_as(&s, wrong).await.status, 403, "{wrong}");
    }
    // A metrics token is no access token.
    assert_eq!(metrics_as(&s, "Bearer scrape-one").await.status, 401);
    for right in ["Metrics scrape-one", "metrics scrape-two"] {
        let r = metrics_as(&s, right).await;
        assert_eq!(r.status, 200, "{right}: {}", r.text);
        assert_eq!(
            r.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(r.headers["cache-control"], "no-cache");
    }
    assert_eq!(s.admin("GET", "/server/metrics", None).await.status, 200);
}

#[tokio::test]
async fn counts_follow_logins_refreshes_replays_and_answers() {
    let s = TestServer::spawn(&[
        ("METRICS_ENABLED", "true"),
        ("METRICS_TOKENS", "scrape"),
        ("SESSION_REFRESH_GRACE_PERIOD", "1ms"),
    ])
    .await;
    let (jwt, refresh) = s.admin_tokens().await;
    assert_eq!(
        s.login("admin@example.com", "wrong", None).await.status,
        401
    );
    let r = s.refresh_json(&refresh).await;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The spent token, past its grace window: a replay.
    let r = s.refresh_json(&refresh).await;
    assert_eq!(r.status, 401, "{}", r.text);
    for _ in 0..3 {
        assert_eq!(s.get_as("/users/me", &jwt).await.status, 200);
    }
    // Paths nobody routes, and methods nobody knows, share one label each.
    for i in 0..5 {
        let r = s.call("GET", &format!("/no/such/{i}"), &[], None).await;
        assert_eq!(r.status, 404);
        let r = s.call(&format!("BREW{i}"), "/users/me", &[], None).await;
        assert_eq!(r.status, 404);
    }
    let text = metrics_as(&s, "Metrics scrape").await.text;
    let at = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(at("tessera_logins_total{outcome=\"success\"}"), 1.0);
    assert_eq!(
        at("tessera_logins_total{outcome=\"invalid_credentials\"}"),
        1.0
    );
    assert_eq!(at("tessera_refreshes_total{outcome=\"success\"}"), 1.0);
    assert_eq!(
        at("tessera_refreshes_total{outcome=\"invalid_credentials\"}"),
        1.0
    );
    assert_eq!(at("tessera_refresh_reuse_detected_total"), 1.0);
    let me = "route=\"/users/me\",method=\"GET\"";
    assert_eq!(
        at(&format!(
            "tessera_http_requests_total{{{me},status=\"200\"}}"
        )),
        3.0
    );
    assert_eq!(
        at("tessera_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"),
        5.0
    );
    assert_eq!(
        at("tessera_http_requests_total{route=\"/users/me\",method=\"other\",status=\"404\"}"),
        5.0
    );
    assert!(!text.contains("/no/such") && !text.contains("BREW"));
    // The histogram is cumulative and ends with every answer.
    let count = at(&format!(
        "tessera_http_request_duration_seconds_count{{{me}}}"
    ));
    let inf = at(&format!(
        "tessera_http_request_duration_seconds_bucket{{{me},le=\"+Inf\"}}"
    ));
    assert_eq!((count, inf), (3.0, 3.0));
    let hits = at("tessera_cache_lookups_total{cache=\"me\",result=\"hit\"}");
    let misses = at("tessera_cache_lookups_total{cache=\"me\",result=\"miss\"}");
    assert_eq!(hits + misses, 3.0);
    assert!(at("tessera_db_connections_max") >= 1.0);
    // Every line is a comment or one sample with a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
