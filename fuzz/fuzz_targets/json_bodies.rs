//! Every JSON request body Tessera reads. The pure readers are called directly and checked
//! against what the body says: `LoginRequest::parse`, `LogoutScope::parse`,
//! `validate::{required_string, optional_string, is_email}`, the batch `query`
//! (`ReadQuery::from_json`), reset links (`reset::allowed_reset_url`), TOTP codes and secrets
//! (`tfa`), IP allow lists (`access::ip_allowed`), permission bodies resolved into a
//! `Rule` (filters, fields, validations, presets) and checked against the body as a payload,
//! presets merging, and dynamic variables (`query::resolve`). Then the body is sent to one
//! route through the whole server (SQLite, admin caller): login, refresh, logout, password
//! request and reset, the TFA routes, `PATCH /users/me`, `PATCH /settings`, and create, batch
//! update and batch delete of users, roles, policies, access and permissions, where the item
//! rules (`items.rs`) check it. No body may make the server answer 500.
//!
//! Input: a first line naming a route (`POST /auth/login`) and the body after it; otherwise the
//! first byte picks the route and the whole input is the body. A body that is not JSON is
//! replaced by structured JSON built from the input (up to the nesting depth a client can
//! send), so that most inputs reach the readers.
//!
//! The server's database keeps what earlier inputs wrote (users, roles, settings), so a
//! failure may depend on inputs before the one saved; the failing answer is in the panic
//! message.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Unstructured;
use axum::http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tessera_core::auth::{LoginRequest, LogoutScope};
use tessera_core::permissions::{Grant, merge_presets};
use tessera_core::query::{ReadQuery, Vars, resolve};
use tessera_core::reset::allowed_reset_url;
use tessera_core::rules::{Rule, check_fields};
use tessera_core::tfa::{self, Sealer};
use tessera_core::validate::{is_email, optional_string, required_string};
use tessera_fuzz::{MAX_JSON_DEPTH, NOW_MS, SECRET, arbitrary_json, first_line, server};
use tessera_proto::{AuthMode, ErrorCode};
use tessera_store::schema::{PERMISSIONS, USERS};
use uuid::Uuid;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/password/request"),
    ("POST", "/auth/password/reset"),
    ("POST", "/users/me/tfa/generate"),
    ("POST", "/users/me/tfa/enable"),
    ("POST", "/users/me/tfa/disable"),
    ("PATCH", "/users/me"),
    ("PATCH", "/settings"),
    ("POST", "/users"),
    ("POST", "/roles"),
    ("POST", "/policies"),
    ("POST", "/access"),
    ("POST", "/permissions"),
    ("PATCH", "/users"),
    ("PATCH", "/roles"),
    ("PATCH", "/policies"),
    ("PATCH", "/access"),
    ("PATCH", "/permissions"),
    ("DELETE", "/users"),
    ("DELETE", "/roles"),
    ("DELETE", "/policies"),
    ("DELETE", "/access"),
    ("DELETE", "/permissions"),
];

/// The route an input names, and its body.
fn route(data: &[u8]) -> ((&'static str, &'static str), &[u8]) {
    let (line, rest) = first_line(data);
    let named = std::str::from_utf8(line).ok().and_then(|l| {
        let (method, path) = l.trim().split_once(' ')?;
        ROUTES
            .iter()
            .find(|(m, p)| *m == method && *p == path.trim())
    });
    match named {
        Some(r) => (*r, rest),
        None => {
            let pick = usize::from(data.first().copied().unwrap_or(0)) % ROUTES.len();
            (ROUTES[pick], data)
        }
    }
}

fn login(body: &Map<String, Value>) -> bool {
    let Ok(req) = LoginRequest::parse(body) else {
        return false;
    };
    assert_eq!(
        body.get("email").and_then(Value::as_str),
        Some(req.email.as_str())
    );
    assert!(is_email(&req.email));
    assert!(!req.password.is_empty());
    assert_eq!(
        body.get("password").and_then(Value::as_str),
        Some(req.password.as_str())
    );
    let mode = match body.get("mode") {
        None => Some(AuthMode::Json),
        Some(m) => m.as_str().and_then(AuthMode::parse),
    };
    assert_eq!(mode, Some(req.mode));
    assert_eq!(body.get("otp").and_then(Value::as_str), req.otp.as_deref());
    true
}

fn logout(body: &Map<String, Value>) -> bool {
    let scope = body.get("scope");
    match LogoutScope::parse(body) {
        Ok(LogoutScope::All) => assert_eq!(scope.and_then(Value::as_str), Some("all")),
        Ok(LogoutScope::Session) => assert!(
            matches!(scope, None | Some(Value::Null))
                || scope.and_then(Value::as_str) == Some("session")
        ),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidPayload);
            return false;
        }
    }
    true
}

fn strings(body: &Map<String, Value>) {
    for (key, value) in body {
        let required = required_string(body, key);
        match value {
            Value::String(s) if !s.is_empty() => assert_eq!(required.ok(), Some(s.as_str())),
            _ => assert!(required.is_err()),
        }
        let optional = optional_string(body, key);
        assert_eq!(optional.ok().flatten(), value.as_str());
        if let Value::String(s) = value
            && is_email(s)
        {
            let (local, domain) = s.rsplit_once('@').expect("an e-mail has an @");
            assert!(!local.is_empty() && domain.contains('.'), "{s}");
        }
    }
    let absent = "\u{0}absent";
    if !body.contains_key(absent) {
        assert!(required_string(body, absent).is_err());
        assert_eq!(optional_string(body, absent).ok(), Some(None));
    }
}

fn reset_links(body: &Map<String, Value>) {
    if let Some(url) = body.get("reset_url").and_then(Value::as_str) {
        let list = [url.to_owned()];
        assert!(allowed_reset_url(url, &[]).is_none());
        if let Some(parsed) = allowed_reset_url(url, &list) {
            assert!(parsed.has_host() && parsed.fragment().is_none(), "{url}");
            assert!(
                allowed_reset_url(parsed.as_str(), &list).is_some(),
                "the link built from {url} ({parsed}) is not allowed by its own entry"
            );
        }
    }
}

fn totp(body: &Map<String, Value>) {
    let secret = body
        .get("secret")
        .and_then(Value::as_str)
        .unwrap_or("JBSWY3DPEHPK3PXP");
    if let Some(bytes) = tfa::unbase32(secret) {
        assert_eq!(tfa::unbase32(&tfa::base32(&bytes)), Some(bytes));
        let code = tfa::current_code(secret, NOW_MS).expect("a code for a valid secret");
        assert!(
            tfa::check(secret, &code, NOW_MS).is_some(),
            "the current code fails"
        );
    }
    if let Some(otp) = body.get("otp").and_then(Value::as_str)
        && tfa::check(secret, otp, NOW_MS).is_some()
    {
        assert!(otp.len() == 6 && otp.bytes().all(|b| b.is_ascii_digit()));
    }
    let sealer = Sealer::new(SECRET.as_bytes());
    assert_eq!(sealer.open(&sealer.seal(secret)).as_deref(), Some(secret));
    if let Some(stored) = body.get("tfa_secret").and_then(Value::as_str) {
        let _ = sealer.open(stored);
    }
}

fn ip_lists(body: &Map<String, Value>) {
    let here = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(tessera_core::access::ip_allowed("127.0.0.1", here));
    if let Some(list) = body.get("ip_access") {
        let list = match list {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            other => other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        };
        if tessera_core::access::ip_allowed(&list, here) {
            assert!(!list.trim().is_empty());
        }
    }
}

fn field_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) if s.split(',').any(|f| f.trim() == "*") => None,
        Value::String(s) => Some(s.split(',').map(|f| f.trim().to_owned()).collect()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The body as a permission row, resolved into a rule, and the body checked against it as a
/// payload.
fn permission(body: &Map<String, Value>, vars: &Vars) {
    let grant = Grant {
        filter: body.get("permissions").cloned(),
        fields: field_list(body.get("fields")),
        validation: body.get("validation").cloned(),
        presets: body.get("presets").cloned(),
    };
    let allowed = grant.fields.clone();
    for c in [&USERS, &PERMISSIONS] {
        let Some(rule) = Rule::resolve(c, std::slice::from_ref(&grant), vars) else {
            continue;
        };
        let _ = rule.validate(body);
        let with = rule.with_presets(body);
        for (k, v) in body {
            assert_eq!(with.get(k), Some(v), "the payload wins over presets");
        }
        let names: Vec<&str> = body.keys().map(String::as_str).collect();
        let _ = rule.check_write(c.name, &names);
        let _ = rule.shown(&vec![true; rule.cases.len()]);
    }
    let names: Vec<&str> = body.keys().map(String::as_str).collect();
    let checked = check_fields("fuzz", &names, &allowed);
    let all_in = allowed
        .as_ref()
        .is_none_or(|list| names.iter().all(|n| list.iter().any(|a| a == n)));
    assert_eq!(checked.is_ok(), all_in);

    let mut merged = body
        .get("presets")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    merge_presets(&mut merged, body);
    for k in body.keys() {
        assert!(merged.contains_key(k), "merging lost {k}");
    }
}

fn unresolved(v: &Value) -> Option<&str> {
    match v {
        Value::String(s)
            if matches!(
                s.as_str(),
                "$CURRENT_USER" | "$CURRENT_ROLE" | "$CURRENT_ROLES" | "$CURRENT_POLICIES" | "$NOW"
            ) =>
        {
            Some(s)
        }
        Value::Array(items) => items.iter().find_map(unresolved),
        Value::Object(map) => map.values().find_map(unresolved),
        _ => None,
    }
}

/// The readers, on one body; whether login and logout accept it.
fn read(body: &Value) -> (bool, bool) {
    let vars = Vars {
        user: Some(Uuid::from_u128(1)),
        role: Some(Uuid::from_u128(2)),
        now_ms: NOW_MS,
        ..Vars::default()
    };
    assert_eq!(unresolved(&resolve(body, &vars)), None);
    match ReadQuery::from_json(body) {
        Ok(q) => {
            let _ = q.to_store_query(&USERS, &vars, &|_| true);
        }
        Err(e) => assert!(
            matches!(
                e.code(),
                ErrorCode::InvalidPayload | ErrorCode::InvalidQuery
            ),
            "{e}"
        ),
    }
    let Value::Object(map) = body else {
        return (false, false);
    };
    if let Some(q) = map.get("query")
        && let Ok(q) = ReadQuery::from_json(q)
    {
        let _ = q.to_store_query(&USERS, &vars, &|_| true);
    }
    strings(map);
    reset_links(map);
    totp(map);
    ip_lists(map);
    permission(map, &vars);
    (login(map), logout(map))
}

fuzz_target!(|data: &[u8]| {
    let ((method, path), raw) = route(data);
    let (body, bytes) = match serde_json::from_slice::<Value>(raw) {
        Ok(v) => (v, raw.to_vec()),
        Err(_) => {
            let Ok(v) = arbitrary_json(&mut Unstructured::new(data), MAX_JSON_DEPTH) else {
                return;
            };
            let bytes = serde_json::to_vec(&v).expect("JSON");
            (v, bytes)
        }
    };
    let (login_ok, logout_ok) = read(&body);

    let s = server();
    let bearer = s.admin_bearer.clone();
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let reply = s.request(
        method,
        path,
        &[("authorization", bearer.as_bytes())],
        Some(&bytes),
    );
    let invalid = (reply.status, reply.error_code());
    let payload = (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD".to_owned()));
    if path == "/auth/login" && !login_ok {
        assert_eq!(invalid, payload, "a login body the parser refused");
    }
    if path == "/auth/logout" && !logout_ok {
        assert_eq!(invalid, payload, "a logout body the parser refused");
    }
});
