//! How a request's access token is found (`tessera_server::http::extract_token`): the
//! `access_token` query parameter, `Authorization: Bearer`, the session cookie, their
//! precedence and the refusal of query and header together; then the same request through the
//! server's `authenticate` middleware (static tokens, JWTs, session JWTs, the cookie cleared
//! when a session cookie fails).
//!
//! Input: the first line is the raw query string, every further line a `Name: value` header.
#![no_main]

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tessera_core::Error;
use tessera_core::auth::TokenSource;
use tessera_fuzz::{ADMIN_TOKEN, SESSION_COOKIE, first_line, header_value, server, uri_with_query};
use tessera_server::http::{cookie, extract_token};

type Found = Result<Option<(String, TokenSource)>, Error>;

fn headers_of(lines: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Some(value)) =
            (HeaderName::from_bytes(&line[..colon]), header_value(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

fn source(found: &Found) -> Option<TokenSource> {
    found.as_ref().ok()?.as_ref().map(|(_, s)| *s)
}

/// The precedence, checked against the query alone and the headers alone.
fn check_precedence(query: &str, headers: &HeaderMap, found: &Found) {
    let query_only = extract_token(Some(query), &HeaderMap::new(), SESSION_COOKIE);
    let headers_only = extract_token(None, headers, SESSION_COOKIE);
    let query_only = query_only.expect("a query alone is never refused");
    let headers_only = headers_only.expect("headers alone are never refused");
    assert!(matches!(query_only, None | Some((_, TokenSource::Query))));
    assert!(!matches!(headers_only, Some((_, TokenSource::Query))));
    let bearer = matches!(headers_only, Some((_, TokenSource::Header)));
    match found {
        Err(e) => {
            assert_eq!(e.code(), tessera_proto::ErrorCode::InvalidPayload);
            assert!(query_only.is_some() && bearer, "refused without two tokens");
        }
        Ok(Some((t, TokenSource::Query))) => {
            assert!(!t.is_empty());
            assert!(!bearer, "query and bearer header together were accepted");
            assert_eq!(query_only.as_ref().map(|(q, _)| q), Some(t));
            assert!(
                url::form_urlencoded::parse(query.as_bytes())
                    .any(|(k, v)| k == "access_token" && v == t.as_str())
            );
        }
        Ok(Some((t, TokenSource::Header))) => {
            assert!(!t.is_empty() && !t.contains(' '), "bearer token {t:?}");
            assert!(query_only.is_none());
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .expect("an Authorization header");
            let scheme = auth
                .strip_suffix(t.as_str())
                .and_then(|s| s.strip_suffix(' '))
                .expect("`<scheme> <token>`");
            assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme {scheme:?}");
            assert_eq!(headers_only.as_ref().map(|(h, _)| h), Some(t));
        }
        Ok(Some((t, TokenSource::Cookie))) => {
            assert!(!t.is_empty());
            assert!(query_only.is_none() && !bearer);
            assert_eq!(cookie(headers, SESSION_COOKIE), Some(t.as_str()));
        }
        Ok(None) => {
            assert!(query_only.is_none() && headers_only.is_none());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (query, rest) = first_line(data);
    let headers = headers_of(rest);
    let query_text = String::from_utf8_lossy(query);
    let found = extract_token(Some(&query_text), &headers, SESSION_COOKIE);
    check_precedence(&query_text, &headers, &found);

    let mut req = Request::builder().uri(uri_with_query("/server/info", query));
    for (name, value) in &headers {
        req = req.header(name, value);
    }
    let Ok(req) = req.body(Body::empty()) else {
        return;
    };
    let seen = extract_token(req.uri().query(), req.headers(), SESSION_COOKIE);
    assert_eq!(
        seen.as_ref().ok(),
        found.as_ref().ok(),
        "the request's URI reads another token"
    );
    let reply = server().send(req);
    let code = reply.error_code();
    match &found {
        Err(_) => assert_eq!(reply.status, StatusCode::BAD_REQUEST),
        Ok(None) => assert_eq!(reply.status, StatusCode::OK, "anonymous /server/info"),
        Ok(Some((t, _))) if t == ADMIN_TOKEN => assert_eq!(reply.status, StatusCode::OK),
        Ok(Some(_)) => assert!(
            matches!(
                reply.status,
                StatusCode::OK | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{}",
            reply.describe()
        ),
    }
    let failed = matches!(
        code.as_deref(),
        Some("INVALID_CREDENTIALS" | "INVALID_TOKEN")
    );
    let cleared = reply
        .set_cookies()
        .iter()
        .any(|c| c.starts_with(&format!("{SESSION_COOKIE}=; Max-Age=0;")));
    assert_eq!(
        cleared,
        failed && source(&found) == Some(TokenSource::Cookie),
        "the session cookie is cleared exactly when it failed ({code:?})"
    );
});
