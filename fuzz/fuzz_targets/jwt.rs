//! JWT reading (`tessera_core::jwt`): `is_directus_jwt`, `JwtKeys::verify_access` and
//! `verify_claims`, and session-JWT reading (`Auth::session_token_of`).
//!
//! Each input is used three ways:
//! - as a presented token, whatever it is;
//! - as a JWT's header (first line) and payload (the rest), framed in base64url and signed with
//!   the server's secret under the algorithm the header names, so the fuzzer gets past the
//!   signature check and reaches the claim checks; a verified token must round-trip its
//!   claims, and the same token signed with another key, or unsigned, must be refused;
//! - as access claims to sign and verify again, which must come back unchanged.
#![no_main]

use arbitrary::Unstructured;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tessera_core::Error;
use tessera_core::jwt::{AccessClaims, ISSUER, JwtKeys, VerifiedToken, is_directus_jwt};
use tessera_fuzz::{Hs, NOW_MS, SECRET, first_line, json_close, server, sign_jwt};
use uuid::Uuid;

fn keys() -> &'static JwtKeys {
    static KEYS: std::sync::OnceLock<JwtKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| JwtKeys::new(SECRET.as_bytes()))
}

/// Whether the token's payload is text (JSON must be, but serde skips the claims it ignores
/// without reading them, so access verification never sees bad bytes there).
fn text_payload(token: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .is_some_and(|bytes| std::str::from_utf8(&bytes).is_ok())
}

/// A presented value: whatever it is, session reading agrees with access verification.
fn presented(token: &str) {
    let directus = is_directus_jwt(token);
    if keys().verify_access(token, NOW_MS).is_ok() && text_payload(token) {
        let claims = keys().verify_claims(token, NOW_MS);
        assert!(
            access_keys(claims.as_ref().ok()),
            "an access token without its claims"
        );
    }
    let auth = &server().state.auth;
    if let Ok(session) = auth.session_token_of(token) {
        assert!(directus, "a session JWT that is not a Directus JWT");
        let v = keys()
            .verify_access(token, auth.now_ms())
            .expect("a session JWT verifies");
        assert_eq!(v.session.as_deref(), Some(session.as_str()));
    }
}

/// Whether verified claims have what an access token needs besides its signature.
fn access_keys(claims: Option<&Map<String, Value>>) -> bool {
    let Some(c) = claims else { return false };
    let uuid_or_null = |k: &str| match c.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => Uuid::parse_str(s).is_ok(),
        Some(_) => false,
    };
    let string_or_absent =
        |k: &str| matches!(c.get(k), None | Some(Value::Null | Value::String(_)));
    c.contains_key("role")
        && c.contains_key("app_access")
        && c.contains_key("admin_access")
        && uuid_or_null("id")
        && uuid_or_null("role")
        && string_or_absent("session")
        && string_or_absent("share")
        && matches!(c.get("exp"), None | Some(Value::Null | Value::Number(_)))
}

fn text(claims: &Map<String, Value>, key: &str) -> Option<String> {
    claims.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn uuid(claims: &Map<String, Value>, key: &str) -> Option<Uuid> {
    text(claims, key).map(|s| Uuid::parse_str(&s).expect("a verified claim is a UUID"))
}

/// A token framed from `header` and `payload` and signed with the server's secret.
fn framed(header: &[u8], payload: &[u8]) {
    let alg = Hs::of_header(header);
    let token = sign_jwt(alg.unwrap_or(Hs::Hs256), header, payload, SECRET.as_bytes());
    let payload_map: Option<Map<String, Value>> = serde_json::from_slice(payload).ok();

    let forged = sign_jwt(alg.unwrap_or(Hs::Hs256), header, payload, b"not the secret");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    for bad in [&forged, &unsigned] {
        assert!(keys().verify_access(bad, NOW_MS).is_err(), "accepted {bad}");
        assert!(keys().verify_claims(bad, NOW_MS).is_err(), "accepted {bad}");
        assert!(server().state.auth.session_token_of(bad).is_err());
    }

    let Some(map) = payload_map else {
        assert!(
            keys().verify_claims(&token, NOW_MS).is_err(),
            "claims that are not an object"
        );
        presented(&token);
        return;
    };
    if is_directus_jwt(&token) {
        assert_eq!(map.get("iss").and_then(Value::as_str), Some(ISSUER));
    }
    match keys().verify_claims(&token, NOW_MS) {
        Ok(claims) => {
            assert!(alg.is_some(), "verified under a header without an HS alg");
            assert!(json_close(
                &Value::Object(claims.clone()),
                &Value::Object(map.clone())
            ));
            assert_eq!(
                claims.get("iss").and_then(Value::as_str),
                Some(ISSUER),
                "verified claims whose iss is not \"directus\""
            );
        }
        Err(Error::TokenExpired) => {
            let exp = map
                .get("exp")
                .and_then(Value::as_f64)
                .expect("an expired token has an exp");
            assert!((NOW_MS as f64) / 1000.0 >= exp);
        }
        Err(e) => assert!(matches!(e, Error::InvalidToken), "{e:?}"),
    }
    match keys().verify_access(&token, NOW_MS) {
        Ok(v) => {
            assert!(access_keys(Some(&map)));
            assert_eq!(
                map.get("iss").and_then(Value::as_str),
                Some(ISSUER),
                "an access token whose iss is not \"directus\""
            );
            let expected = VerifiedToken {
                id: uuid(&map, "id"),
                role: uuid(&map, "role"),
                share: text(&map, "share"),
                session: text(&map, "session"),
                exp: map.get("exp").and_then(Value::as_f64),
            };
            assert_eq!(v, expected);
            assert!(!v.is_expired(NOW_MS));
        }
        Err(e) => assert!(
            matches!(e, Error::InvalidToken | Error::TokenExpired),
            "{e:?}"
        ),
    }
    presented(&token);
}

/// Claims signed by the server verify to what they say.
fn signed(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let some_uuid = |u: &mut Unstructured<'_>| -> arbitrary::Result<Option<Uuid>> {
        Ok(u.arbitrary::<Option<[u8; 16]>>()?.map(Uuid::from_bytes))
    };
    // Times the server can issue: from 1970 to 2100.
    let time = |u: &mut Unstructured<'_>| u.int_in_range(0..=4_102_444_800_i64);
    let claims = AccessClaims {
        id: some_uuid(u)?,
        role: some_uuid(u)?,
        app_access: u.arbitrary()?,
        admin_access: u.arbitrary()?,
        enforce_tfa: u.arbitrary()?,
        session: u.arbitrary()?,
        iat: time(u)?,
        exp: time(u)?,
        iss: ISSUER,
    };
    let token = keys().sign(&claims).expect("signing");
    assert!(is_directus_jwt(&token));
    match keys().verify_access(&token, NOW_MS) {
        Ok(v) => {
            assert_eq!(v.id, claims.id);
            assert_eq!(v.role, claims.role);
            assert_eq!(v.session, claims.session);
            assert_eq!(v.share, None);
            assert_eq!(v.exp, Some(claims.exp as f64));
            assert!(!v.is_expired(NOW_MS));
        }
        Err(Error::TokenExpired) => assert!((NOW_MS as f64) / 1000.0 >= claims.exp as f64),
        Err(e) => panic!("a token the server signed is refused: {e:?} ({claims:?})"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    presented(&String::from_utf8_lossy(data));
    let (header, payload) = first_line(data);
    framed(header, payload);
    let _ = signed(&mut Unstructured::new(data));
});
