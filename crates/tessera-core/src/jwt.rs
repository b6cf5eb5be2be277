//! Directus access tokens: HS256 JWTs with `iss = "directus"`. Signing writes Directus's claim
//! order; verification accepts HS256/384/512 only, maps expiry to TOKEN_EXPIRED and every
//! other defect to INVALID_TOKEN, and requires the `role`, `app_access` and `admin_access` keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The issuer every Directus token carries.
pub const ISSUER: &str = "directus";

/// Claims of an access token, serialised in Directus's order.
#[derive(Clone, Serialize)]
pub struct AccessClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub role: Option<Uuid>,
    pub app_access: bool,
    pub admin_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_tfa: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub iss: &'static str,
}

/// What a verified access token says.
#[derive(Clone, PartialEq)]
pub struct VerifiedToken {
    pub id: Option<Uuid>,
    pub role: Option<Uuid>,
    pub share: Option<String>,
    pub session: Option<String>,
    /// `exp` in seconds, if the token has one.
    pub exp: Option<f64>,
}

/// Whether `exp` (seconds) has passed at `now_ms`: a token is dead from that second on, as
/// jsonwebtoken.js has it.
fn expired(exp: Option<f64>, now_ms: i64) -> bool {
    exp.is_some_and(|exp| (now_ms as f64) / 1000.0 >= exp)
}

impl VerifiedToken {
    /// Whether the token is dead at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        expired(self.exp, now_ms)
    }
}

impl std::fmt::Debug for AccessClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessClaims")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("admin_access", &self.admin_access)
            .field("session", &self.session.as_ref().map(|_| "<hidden>"))
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("share", &self.share)
            .field("session", &self.session.as_ref().map(|_| "<hidden>"))
            .field("exp", &self.exp)
            .finish()
    }
}

/// Signs and verifies with the instance secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// One validation per accepted algorithm: HS256, HS384, HS512.
    validations: Arc<[Validation; 3]>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<hidden>)")
    }
}

/// The decoded (unverified) payload bytes, if the value has JWT shape.
fn unverified_payload(token: &str) -> Option<Vec<u8>> {
    let mut parts = token.split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()
}

/// Whether a presented value is a Directus JWT (a JWT whose `iss` is exactly `directus`);
/// anything else is looked up as a static token.
pub fn is_directus_jwt(token: &str) -> bool {
    unverified_payload(token)
        .and_then(|bytes| {
            serde_json::from_slice::<Issuer<'_>>(&bytes)
                .ok()
                .map(|p| p.iss.as_deref() == Some(ISSUER))
        })
        .unwrap_or(false)
}

/// Whether a claim was present, whatever its value (`null` included).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// Absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The claims an access token is checked for, parsed once.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    role: Option<Option<String>>,
    #[serde(default)]
    app_access: Present,
    #[serde(default)]
    admin_access: Present,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    share: Option<String>,
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

/// Whether a verified token's `iss` is exactly `"directus"`: jsonwebtoken also takes a list
/// that contains it, jsonwebtoken.js does not (found by the `jwt` fuzz target).
fn issued_here(iss: Option<&serde_json::Value>) -> bool {
    iss.and_then(serde_json::Value::as_str) == Some(ISSUER)
}

/// Just the issuer, to tell Directus JWTs from static tokens without a full parse.
#[derive(Deserialize)]
struct Issuer<'a> {
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.set_issuer(&[ISSUER]);
            // A token without `iss` is refused, as jsonwebtoken.js refuses it when an issuer
            // is expected (found by the `jwt` fuzz target).
            v.set_required_spec_claims(&["iss"]);
            v.validate_exp = false;
            v.leeway = 0;
            v
        };
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validations: Arc::new([
                validation(Algorithm::HS256),
                validation(Algorithm::HS384),
                validation(Algorithm::HS512),
            ]),
        }
    }

    /// Signs claims (an access token's, or a one-time token's) with HS256.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("jwt sign: {e}")))
    }

    /// Verifies signature (HS256/384/512 only), issuer and expiry, and parses the claims.
    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
        let v = match header.alg {
            Algorithm::HS256 => &self.validations[0],
            Algorithm::HS384 => &self.validations[1],
            Algorithm::HS512 => &self.validations[2],
            _ => return Err(Error::InvalidToken),
        };
        jsonwebtoken::decode::<T>(token, &self.decoding, v)
            .map(|d| d.claims)
            .map_err(|_| Error::InvalidToken)
    }

    /// Verifies a token other than an access token (signature, issuer, expiry) and returns
    /// its claims, for the caller to check their `scope`.
    pub fn verify_claims(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let claims: serde_json::Map<String, serde_json::Value> = self.verify(token)?;
        if !issued_here(claims.get("iss")) {
            return Err(Error::InvalidToken);
        }
        if expired(
            claims.get("exp").and_then(serde_json::Value::as_f64),
            now_ms,
        ) {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }

    /// Verifies an access token and extracts who it names.
    pub fn verify_access(&self, token: &str, now_ms: i64) -> Result<VerifiedToken> {
        let claims: RawClaims = self.verify(token)?;
        if !issued_here(claims.iss.as_ref()) {
            return Err(Error::InvalidToken);
        }
        // Expiry is reported before missing claims, as jsonwebtoken.js does.
        if expired(claims.exp, now_ms) {
            return Err(Error::TokenExpired);
        }
        let (Some(role), Present(true), Present(true)) =
            (claims.role, claims.app_access, claims.admin_access)
        else {
            return Err(Error::InvalidToken);
        };
        let uuid = |s: Option<String>| -> Result<Option<Uuid>> {
            s.map(|s| Uuid::parse_str(&s).map_err(|_| Error::InvalidToken))
                .transpose()
        };
        Ok(VerifiedToken {
            id: uuid(claims.id)?,
            role: uuid(role)?,
            share: claims.share,
            session: claims.session,
            exp: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            id: Some(Uuid::nil()),
            role: None,
            app_access: true,
            admin_access: false,
            enforce_tfa: None,
            session: None,
            iat: NOW / 1000,
            exp,
            iss: ISSUER,
        }
    }

    fn raw(header: &str, payload: &str, key: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn round_trip_and_claim_order() {
        let k = JwtKeys::new(b"s3cret");
        let t = k.sign(&claims(NOW / 1000 + 900)).unwrap();
        let payload: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&unverified_payload(&t).unwrap()).unwrap();
        let keys: Vec<_> = payload.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "id",
                "role",
                "app_access",
                "admin_access",
                "iat",
                "exp",
                "iss"
            ]
        );
        assert!(is_directus_jwt(&t));
        let v = k.verify_access(&t, NOW).unwrap();
        assert_eq!(v.id, Some(Uuid::nil()));
    }

    #[test]
    fn expired_wrong_key_and_missing_claims() {
        let k = JwtKeys::new(b"s3cret");
        let t = k.sign(&claims(NOW / 1000 - 1)).unwrap();
        assert!(matches!(k.verify_access(&t, NOW), Err(Error::TokenExpired)));
        let other = JwtKeys::new(b"other");
        let t = k.sign(&claims(NOW / 1000 + 60)).unwrap();
        assert!(matches!(
            other.verify_access(&t, NOW),
            Err(Error::InvalidToken)
        ));
        let no_role = raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"id":null,"app_access":false,"admin_access":false,"iss":"directus"}"#,
            b"s3cret",
        );
        assert!(matches!(
            k.verify_access(&no_role, NOW),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn a_token_without_the_exact_issuer_is_refused() {
        let k = JwtKeys::new(b"s3cret");
        for payload in [
            r#"{"id":null,"role":null,"app_access":true,"admin_access":true}"#,
            r#"{"id":null,"role":null,"app_access":true,"admin_access":true,"iss":["directus","x"]}"#,
        ] {
            let t = raw(r#"{"alg":"HS256","typ":"JWT"}"#, payload, b"s3cret");
            assert!(matches!(k.verify_access(&t, NOW), Err(Error::InvalidToken)));
            assert!(matches!(k.verify_claims(&t, NOW), Err(Error::InvalidToken)));
        }
    }

    #[test]
    fn alg_none_is_rejected_and_no_exp_is_accepted() {
        let k = JwtKeys::new(b"s3cret");
        let payload = r#"{"role":null,"app_access":false,"admin_access":false,"iss":"directus"}"#;
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        );
        assert!(is_directus_jwt(&none));
        assert!(matches!(
            k.verify_access(&none, NOW),
            Err(Error::InvalidToken)
        ));
        let no_exp = raw(r#"{"alg":"HS256","typ":"JWT"}"#, payload, b"s3cret");
        assert!(k.verify_access(&no_exp, NOW).is_ok());
    }

    #[test]
    fn other_issuers_are_not_directus_jwts() {
        let t = raw(r#"{"alg":"HS256"}"#, r#"{"iss":"someone"}"#, b"k");
        assert!(!is_directus_jwt(&t));
        assert!(!is_directus_jwt("plain-static-token"));
    }
}
