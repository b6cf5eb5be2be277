//! Headers every answer carries: the security headers of Directus's helmet setup (its CSP,
//! `Cross-Origin-Opener-Policy`, and helmet's other defaults such as `X-Content-Type-Options`
//! and `Referrer-Policy`; HSTS with `HSTS_ENABLED`), and CORS as Directus's `cors` middleware
//! answers it when `CORS_ENABLED`: preflights answered before anything else, the allowed
//! origin reflected on every answer.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Directus's CSP: helmet's defaults with its own additions, `upgrade-insecure-requests` off.
const CSP: &str = "default-src 'self'; base-uri 'self'; child-src 'self' blob:; \
connect-src 'self' https://*; font-src 'self' https: data:; form-action 'self'; \
frame-ancestors 'self'; img-src 'self' data: blob: https://raw.githubusercontent.com \
https://avatars.githubusercontent.com; media-src 'self'; object-src 'none'; \
script-src 'self' 'unsafe-eval'; script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; \
worker-src 'self' blob:";

/// Helmet's other defaults, and the opener policy Directus sets.
const SECURITY: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("cross-origin-opener-policy", "same-origin-allow-popups"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// Splits `CORS_ORIGIN` at its commas, except those inside a `/regular expression/`.
pub fn origin_entries(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for piece in list.split(',') {
        match out.last_mut() {
            Some(last) if open => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.trim_start().to_owned()),
        }
        let last = out.last().map(String::as_str).unwrap_or_default();
        open = last.starts_with('/') && (last.len() < 2 || !last.trim_end().ends_with('/'));
    }
    out.into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Which origins CORS lets read answers.
#[derive(Debug, Clone)]
pub enum Origins {
    /// Any: the request's origin is reflected (`CORS_ORIGIN=true`).
    Any,
    /// These, each an exact origin or a `/regular expression/`.
    Some(Vec<OriginRule>),
}

/// One entry of `CORS_ORIGIN`.
#[derive(Debug, Clone)]
pub enum OriginRule {
    Exact(String),
    Pattern(fancy_regex::Regex),
}

impl OriginRule {
    /// Reads an entry: `/…/` is a regular expression that must match the whole origin,
    /// anything else an exact origin.
    pub fn parse(entry: &str) -> Result<Self, String> {
        match entry.strip_prefix('/').and_then(|e| e.strip_suffix('/')) {
            Some(pattern) if !pattern.is_empty() => {
                fancy_regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map(OriginRule::Pattern)
                    .map_err(|e| e.to_string())
            }
            _ => Ok(OriginRule::Exact(entry.to_owned())),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Exact(o) => o == origin,
            OriginRule::Pattern(re) => re.is_match(origin).unwrap_or(false),
        }
    }
}

/// `CORS_*`.
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Origins,
    pub methods: String,
    /// `None`: a preflight's requested headers are allowed as asked.
    pub allowed_headers: Option<String>,
    pub exposed_headers: Option<String>,
    pub credentials: bool,
    /// How long a preflight's answer holds (s).
    pub max_age: u64,
}

impl Cors {
    /// Whether answers may be read by `origin`. The opaque origin `null` (sandboxed frames,
    /// `file:` pages, some redirects) stands for no one in particular and is never allowed.
    fn allows(&self, origin: &str) -> bool {
        if origin == "null" {
            return false;
        }
        match &self.origins {
            Origins::Any => true,
            Origins::Some(rules) => rules.iter().any(|r| r.matches(origin)),
        }
    }
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

fn vary(h: &mut HeaderMap, what: &str) {
    let current = h
        .get(header::VARY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if current
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case(what))
    {
        return;
    }
    let value = if current.is_empty() {
        what.to_owned()
    } else {
        format!("{current}, {what}")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::VARY, v);
    }
}

/// The CORS layer: answers preflights itself (204) and marks every other answer with the
/// origin it allows.
pub async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cors) = &s.config.cors else {
        return next.run(req).await;
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = origin.filter(|o| cors.allows(o));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        put(h, "access-control-allow-methods", &cors.methods);
        match (&cors.allowed_headers, requested) {
            (Some(list), _) => put(h, "access-control-allow-headers", list),
            (None, Some(asked)) => {
                put(h, "access-control-allow-headers", &asked);
                vary(h, "Access-Control-Request-Headers");
            }
            (None, None) => {}
        }
        put(h, "access-control-max-age", &cors.max_age.to_string());
        put(h, "content-length", "0");
        res
    } else {
        let mut res = next.run(req).await;
        if allowed.is_some()
            && let Some(exposed) = &cors.exposed_headers
        {
            put(res.headers_mut(), "access-control-expose-headers", exposed);
        }
        res
    };
    let h = res.headers_mut();
    if let Some(origin) = &allowed {
        put(h, "access-control-allow-origin", origin);
        if cors.credentials {
            put(h, "access-control-allow-credentials", "true");
        }
    }
    vary(h, "Origin");
    res
}

/// Adds the security headers an answer does not set itself.
pub async fn security(State(s): State<AppState>, mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in SECURITY {
        if !h.contains_key(*name) {
            put(h, name, value);
        }
    }
    if s.config.hsts_enabled {
        put(
            h,
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_origins_and_lists_keep_their_regexes() {
        let rule = OriginRule::parse(r"/https://app\.example\.com/").unwrap();
        assert!(rule.matches("https://app.example.com"));
        assert!(!rule.matches("https://app.example.com.evil.net"));
        assert!(!rule.matches("evil-https://app.example.com"));
        assert_eq!(
            origin_entries(r"http://a.example, /^https://(x|y){1,2}\.b$/,/c/"),
            ["http://a.example", r"/^https://(x|y){1,2}\.b$/", "/c/"]
        );
        let any = Cors {
            origins: Origins::Any,
            methods: String::new(),
            allowed_headers: None,
            exposed_headers: None,
            credentials: true,
            max_age: 0,
        };
        assert!(any.allows("https://whoever.example"));
        assert!(!any.allows("null"));
    }
}
