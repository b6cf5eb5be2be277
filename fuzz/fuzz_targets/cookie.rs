//! Cookie-header parsing as the server does it (`tessera_server::http::cookie`), checked
//! against a plain reading of RFC 6265 pairs; `set_cookie` → `cookie` round trips for every
//! cookie-safe name and value; and the cookie-reading auth routes (`POST /auth/refresh` and
//! `POST /auth/logout` in cookie and session mode), which take the refresh token or the session
//! JWT from these headers.
//!
//! Input: the first line is the cookie name to look up (the session cookie's when empty),
//! every further line one `Cookie` header's value.
#![no_main]

use axum::http::{HeaderMap, Method, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{NOW_MS, REFRESH_COOKIE, SESSION_COOKIE, first_line, header_value, server};
use tessera_server::config::{CookieSettings, SameSite};
use tessera_server::http::{cookie, set_cookie};

/// The first `name=value` pair named `name`, read pair by pair.
fn expected<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if key == name {
                return Some(v.trim_matches('"'));
            }
        }
    }
    None
}

/// RFC 6265 `token`: a cookie name needing no quoting.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// RFC 6265 `cookie-octet`s.
fn is_cookie_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

fn round_trip(name: &str, value: &str) {
    let settings = CookieSettings {
        name: name.to_owned(),
        domain: Some("example.com".into()),
        secure: true,
        same_site: SameSite::Lax,
        max_age: 604_800,
    };
    let set = set_cookie(&settings, Some(value), NOW_MS);
    let text = set.to_str().expect("a Set-Cookie value is text").to_owned();
    assert!(
        text.starts_with(&format!(
            "{name}={value}; Max-Age=604800; Domain=example.com; Path=/; Expires="
        )),
        "{text}"
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, set);
    assert_eq!(cookie(&headers, name), Some(value), "{text}");
    let cleared = set_cookie(&settings, None, NOW_MS);
    assert!(
        cleared
            .to_str()
            .is_ok_and(|c| c.starts_with(&format!("{name}=; Max-Age=0;")))
    );
}

fuzz_target!(|data: &[u8]| {
    let (name, rest) = first_line(data);
    let name = match String::from_utf8_lossy(name).into_owned() {
        n if n.is_empty() => SESSION_COOKIE.to_owned(),
        n => n,
    };
    let mut headers = HeaderMap::new();
    let mut sent: Vec<&[u8]> = Vec::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Some(v) = header_value(line) {
            headers.append(header::COOKIE, v);
            sent.push(line);
        }
    }
    let got = cookie(&headers, &name);
    assert_eq!(got, expected(&headers, &name));
    if let Some(v) = got {
        assert!(!v.starts_with('"') && !v.ends_with('"'));
    }
    if is_token(&name) {
        let texts = sent.iter().filter_map(|v| std::str::from_utf8(v).ok());
        for value in texts.filter(|v| is_cookie_value(v)) {
            round_trip(&name, value);
        }
    }

    let s = server();
    let cookies: Vec<(&str, &[u8])> = sent.iter().map(|v| ("cookie", *v)).collect();
    for (path, mode, read) in [
        ("/auth/refresh", "cookie", REFRESH_COOKIE),
        ("/auth/refresh", "session", SESSION_COOKIE),
        ("/auth/logout", "cookie", REFRESH_COOKIE),
        ("/auth/logout", "session", SESSION_COOKIE),
    ] {
        let body = format!(r#"{{"mode":"{mode}"}}"#);
        let reply = s.request(Method::POST, path, &cookies, Some(body.as_bytes()));
        let present = |name| cookie(&headers, name).is_some_and(|c| !c.is_empty());
        // A session cookie is also the request's token: the middleware may refuse it first.
        if present(read) || present(SESSION_COOKIE) {
            assert!(
                matches!(
                    reply.status,
                    StatusCode::OK
                        | StatusCode::NO_CONTENT
                        | StatusCode::BAD_REQUEST
                        | StatusCode::UNAUTHORIZED
                        | StatusCode::FORBIDDEN
                ),
                "{path} in {mode} mode: {}",
                reply.describe()
            );
        } else {
            assert_eq!(
                (reply.status, reply.error_code().as_deref()),
                (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD")),
                "{path} in {mode} mode without its cookie"
            );
        }
    }
});
