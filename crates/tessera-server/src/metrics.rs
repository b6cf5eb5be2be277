//! Metrics for operators: `GET /server/metrics` in Prometheus's text format, which exists only
//! with `METRICS_ENABLED` and answers admins and `Authorization: Metrics <token>` for a token
//! in `METRICS_TOKENS` (as Directus). The `measure` layer counts every answer by route
//! template, method and status, with a latency histogram; the core's counts (logins and
//! refreshes by outcome, replays, cache lookups, announcements heard) and the store's pool are
//! read at each scrape. Each instance reports its own. Labels come from bounded sets only (route
//! templates, known methods, status codes), so no client can grow them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_core::Error;
use tessera_core::access::Accountability;

use crate::AppState;
use crate::error::ApiResult;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One route and method's latencies.
#[derive(Default)]
struct Histogram {
    /// Answers at or under each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

type Route = (&'static str, &'static str);

/// The request counts of one instance.
#[derive(Default)]
pub struct Metrics {
    answers: RwLock<HashMap<(Route, u16), Arc<AtomicU64>>>,
    latency: RwLock<HashMap<Route, Arc<Histogram>>>,
    /// Route templates, interned once each so that labels are `&'static str`.
    routes: RwLock<HashMap<String, &'static str>>,
}

/// A method label from a bounded set.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The entry for `key`, made on first use.
fn entry<K: std::hash::Hash + Eq + Clone, V: Default>(
    map: &RwLock<HashMap<K, Arc<V>>>,
    key: &K,
) -> Arc<V> {
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}

impl Metrics {
    /// The label of a route template: the templates are the router's, a fixed set.
    fn route(&self, template: Option<&str>) -> &'static str {
        let Some(t) = template else {
            return "unmatched";
        };
        if let Some(r) = self.routes.read().unwrap_or_else(|e| e.into_inner()).get(t) {
            return r;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(t.to_owned())
            .or_insert_with(|| Box::leak(t.to_owned().into_boxed_str()))
    }

    fn record(&self, route: Route, status: u16, seconds: f64) {
        entry(&self.answers, &(route, status)).fetch_add(1, Ordering::Relaxed);
        let h = entry(&self.latency, &route);
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let micros = (seconds * 1e6) as u64;
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Counts every answer by route template, method and status, and times it.
pub async fn measure(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = (
        s.metrics.route(
            req.extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        ),
        method_label(req.method()),
    );
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    s.metrics.record(
        route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// Whether the request may read the metrics: an admin, or a listed metrics token.
fn allowed(s: &AppState, acc: &Accountability, headers: &axum::http::HeaderMap) -> bool {
    if acc.admin {
        return true;
    }
    let Some((scheme, token)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case("metrics")
        && !token.contains(' ')
        && s.config.metrics_tokens.iter().any(|t| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                t.as_bytes(),
                token.as_bytes(),
            ))
        })
}

/// `GET /server/metrics`.
pub async fn serve(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if !s.config.metrics_enabled {
        return Err(Error::RouteNotFound("/server/metrics".into()).into());
    }
    if !allowed(&s, &acc, &headers) {
        return Err(Error::Forbidden(None).into());
    }
    let mut res = render(&s).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Cache-Control"),
    );
    Ok(res)
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Everything this instance counts, in Prometheus's text format.
fn render(s: &AppState) -> String {
    let mut out = String::new();
    let m = &s.metrics;
    head(
        &mut out,
        "tessera_http_requests_total",
        "counter",
        "HTTP answers by route template, method and status.",
    );
    let mut answers: Vec<_> = m
        .answers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
        .collect();
    answers.sort();
    for (((route, method), status), n) in answers {
        let _ = writeln!(
            out,
            "tessera_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
        );
    }
    head(
        &mut out,
        "tessera_http_request_duration_seconds",
        "histogram",
        "Time to answer, by route template and method.",
    );
    let mut latency: Vec<_> = m
        .latency
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    latency.sort_by_key(|(k, _)| *k);
    for ((route, method), h) in latency {
        let labels = format!("route=\"{route}\",method=\"{method}\"");
        let mut below = 0;
        for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
            below += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tessera_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {below}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "tessera_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
             tessera_http_request_duration_seconds_sum{{{labels}}} {sum}\n\
             tessera_http_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    let t = s.auth.caches().tally().read();
    for (name, help, counts) in [
        (
            "tessera_logins_total",
            "Password logins by outcome.",
            &t.logins,
        ),
        (
            "tessera_refreshes_total",
            "Refreshes by outcome.",
            &t.refreshes,
        ),
    ] {
        head(&mut out, name, "counter", help);
        for (outcome, n) in counts {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
        }
    }
    head(
        &mut out,
        "tessera_refresh_reuse_detected_total",
        "counter",
        "Spent refresh tokens presented after their grace window (replays).",
    );
    let _ = writeln!(out, "tessera_refresh_reuse_detected_total {}", t.replays);
    head(
        &mut out,
        "tessera_cache_lookups_total",
        "counter",
        "Cache lookups by cache and result.",
    );
    for (cache, hits, misses) in &t.caches {
        let _ = writeln!(
            out,
            "tessera_cache_lookups_total{{cache=\"{cache}\",result=\"hit\"}} {hits}\n\
             tessera_cache_lookups_total{{cache=\"{cache}\",result=\"miss\"}} {misses}"
        );
    }
    head(
        &mut out,
        "tessera_invalidations_received_total",
        "counter",
        "Cache clears not caused by this instance's writes: other instances' announcements, \
         and this instance's listening connection starting or being lost.",
    );
    let _ = writeln!(out, "tessera_invalidations_received_total {}", t.heard);
    let (in_use, max) = s.store.pool_use();
    head(
        &mut out,
        "tessera_db_connections_in_use",
        "gauge",
        "Database connections in use now.",
    );
    let _ = writeln!(out, "tessera_db_connections_in_use {in_use}");
    head(
        &mut out,
        "tessera_db_connections_max",
        "gauge",
        "Database connections that may be in use at once.",
    );
    let _ = writeln!(out, "tessera_db_connections_max {max}");
    head(
        &mut out,
        "tessera_db_rows_read_total",
        "counter",
        "Rows the database returned to this instance.",
    );
    let _ = writeln!(out, "tessera_db_rows_read_total {}", s.store.rows_read());
    out
}
