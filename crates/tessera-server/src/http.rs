//! HTTP plumbing shared by the routes: the JSON body extractor (with `MAX_PAYLOAD_SIZE`, the
//! body-read timeout and Directus's treatment of non-JSON bodies), the `{"data":…}` responder, cookie reading and
//! writing in Directus's attribute order, token extraction and the client's IP.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use tessera_core::Error;
use tessera_core::auth::TokenSource;
use tessera_store::ClientMeta;

use crate::AppState;
use crate::config::CookieSettings;
use crate::error::ApiError;

/// A request body parsed as JSON. Bodies that are not `application/json` (or empty) read as
/// `{}`, as Express does; malformed or oversized JSON is INVALID_PAYLOAD.
pub struct JsonBody(pub Value);

impl JsonBody {
    /// The body as an object; anything else reads as `{}` for the auth routes.
    pub fn object(self) -> Map<String, Value> {
        match self.0 {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            })
            .unwrap_or(false);
        let limit = state.config.max_payload_size;
        let read = axum::body::to_bytes(req.into_body(), limit);
        let bytes = tokio::time::timeout(state.config.http.body_timeout, read)
            .await
            .map_err(|_| Error::RequestTimeout)?
            .map_err(|_| Error::payload("request entity too large"))?;
        if !is_json || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Map::new())));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError(Error::payload(format!("Invalid JSON: {e}"))))
    }
}

/// `{"data": …}` with 200.
pub struct Data<T>(pub T);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        json_body(&tessera_proto::Data { data: self.0 })
    }
}

/// Any serialisable body as JSON with 200 (for answers that are not just `{"data":…}`).
pub fn json_body<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_ok(bytes),
        Err(e) => ApiError(Error::Internal(e.to_string())).into_response(),
    }
}

/// `{"data": <json>}` with 200, from an already serialised `data`.
pub fn raw_data(json: &str) -> Response {
    let mut bytes = Vec::with_capacity(json.len() + 9);
    bytes.extend_from_slice(b"{\"data\":");
    bytes.extend_from_slice(json.as_bytes());
    bytes.push(b'}');
    json_ok(bytes)
}

fn json_ok(bytes: Vec<u8>) -> Response {
    let mut res = (StatusCode::OK, bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// 204 with an empty body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn http_date(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A `Set-Cookie` value in Directus's attribute order: Max-Age, Domain, Path, Expires,
/// HttpOnly, Secure, SameSite. `None` clears the cookie.
pub fn set_cookie(c: &CookieSettings, value: Option<&str>, now_ms: i64) -> HeaderValue {
    let (value, max_age) = match value {
        Some(v) => (v, c.max_age),
        None => ("", 0),
    };
    let expires = if max_age > 0 {
        now_ms / 1000 + max_age
    } else {
        0
    };
    let mut s = format!("{}={value}; Max-Age={max_age}", c.name);
    if let Some(d) = &c.domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    s.push_str("; Path=/; Expires=");
    s.push_str(&http_date(expires));
    s.push_str("; HttpOnly");
    if c.secure {
        s.push_str("; Secure");
    }
    s.push_str("; SameSite=");
    s.push_str(c.same_site.as_str());
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The access token a request carries and where, per Directus's precedence: the
/// `access_token` query parameter, then `Authorization: Bearer`, then the session cookie.
/// Query and header together are refused.
pub fn extract_token(
    query: Option<&str>,
    headers: &HeaderMap,
    session_cookie: &str,
) -> Result<Option<(String, TokenSource)>, Error> {
    let from_query = query.and_then(|qs| {
        url::form_urlencoded::parse(qs.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    });
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let parts: Vec<&str> = v.split(' ').collect();
            match parts.as_slice() {
                [scheme, token] if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
                    Some((*token).to_owned())
                }
                _ => None,
            }
        });
    match (from_query, from_header) {
        (Some(_), Some(_)) => Err(Error::payload(
            "The request uses more than one method for including an access token",
        )),
        (Some(q), None) => Ok(Some((q, TokenSource::Query))),
        (None, Some(h)) => Ok(Some((h, TokenSource::Header))),
        (None, None) => Ok(cookie(headers, session_cookie)
            .filter(|v| !v.is_empty())
            .map(|c| (c.to_owned(), TokenSource::Cookie))),
    }
}

/// The client's IP: the socket address, or (if configured) a proxy header.
pub fn client_ip(req: &Request<Body>, state: &AppState) -> Option<IpAddr> {
    let headers = req.headers();
    if let Some(name) = &state.config.ip_custom_header
        && let Some(ip) = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    if state.config.ip_trust_proxy
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| match c.0.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where a request comes from, for session rows: the user agent and origin are cut to at most
/// 1024 and 255 bytes, so a client cannot make its session row large.
pub fn client_meta(headers: &HeaderMap, ip: Option<IpAddr>) -> ClientMeta {
    let text = |name: header::HeaderName, max: usize| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| truncated(s, max).to_owned())
    };
    ClientMeta {
        ip: ip.map(|i| i.to_string()),
        user_agent: text(header::USER_AGENT, 1024),
        origin: text(header::ORIGIN, 255),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn token_precedence() {
        let h = headers(&[("authorization", "bearer abc"), ("cookie", "s=cookie")]);
        assert_eq!(
            extract_token(None, &h, "s").unwrap(),
            Some(("abc".into(), TokenSource::Header))
        );
        let h = headers(&[("cookie", "x=1; s=cookie")]);
        assert_eq!(
            extract_token(Some("a=b&access_token=q"), &h, "s").unwrap(),
            Some(("q".into(), TokenSource::Query))
        );
        assert_eq!(
            extract_token(None, &h, "s").unwrap(),
            Some(("cookie".into(), TokenSource::Cookie))
        );
        let both = headers(&[("authorization", "Bearer abc")]);
        assert!(extract_token(Some("access_token=q"), &both, "s").is_err());
        for ignored in ["Basic abc", "Bearer", "Bearer a b", "Bearer  a", "Token x"] {
            let h = headers(&[("authorization", ignored)]);
            assert_eq!(extract_token(None, &h, "s").unwrap(), None, "{ignored}");
        }
    }

    #[test]
    fn cookie_attribute_order() {
        let c = CookieSettings {
            name: "directus_refresh_token".into(),
            domain: Some("example.com".into()),
            secure: true,
            same_site: crate::config::SameSite::Lax,
            max_age: 604_800,
        };
        let v = set_cookie(&c, Some("tok"), 0);
        assert_eq!(
            v.to_str().unwrap(),
            "directus_refresh_token=tok; Max-Age=604800; Domain=example.com; Path=/; Expires=Thu, 08 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Lax"
        );
        let cleared = set_cookie(&c, None, 0);
        assert!(
            cleared
                .to_str()
                .unwrap()
                .starts_with("directus_refresh_token=; Max-Age=0;")
        );
    }
}
