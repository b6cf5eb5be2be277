//! The wire contract shared by the server, the client library and the CLI: Directus error codes,
//! the `{"errors":[…]}` envelope, the `{"data":…}` wrapper and the auth request/response bodies.
//! Nothing here performs I/O; a renamed field or a new error code changes here and nowhere else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The Directus error codes Tessera emits or understands, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidCredentials,
    InvalidOtp,
    UserSuspended,
    TokenExpired,
    InvalidToken,
    InvalidIp,
    Forbidden,
    InvalidPayload,
    InvalidQuery,
    FailedValidation,
    RecordNotUnique,
    InvalidInvite,
    RequestsExceeded,
    RouteNotFound,
    UnprocessableContent,
    ServiceUnavailable,
    InvalidProvider,
    UnsupportedMediaType,
    ContentTooLarge,
    /// Tessera's own: a request body that did not arrive in time (Directus's Node server
    /// closes such connections without an answer).
    RequestTimeout,
    InternalServerError,
}

impl ErrorCode {
    /// Every code, for parsing and exhaustive tests.
    pub const ALL: [ErrorCode; 21] = [
        Self::InvalidCredentials,
        Self::InvalidOtp,
        Self::UserSuspended,
        Self::TokenExpired,
        Self::InvalidToken,
        Self::InvalidIp,
        Self::Forbidden,
        Self::InvalidPayload,
        Self::InvalidQuery,
        Self::FailedValidation,
        Self::RecordNotUnique,
        Self::InvalidInvite,
        Self::RequestsExceeded,
        Self::RouteNotFound,
        Self::UnprocessableContent,
        Self::ServiceUnavailable,
        Self::InvalidProvider,
        Self::UnsupportedMediaType,
        Self::ContentTooLarge,
        Self::RequestTimeout,
        Self::InternalServerError,
    ];

    /// The code as Directus spells it in `extensions.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::InvalidOtp => "INVALID_OTP",
            Self::UserSuspended => "USER_SUSPENDED",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::InvalidIp => "INVALID_IP",
            Self::Forbidden => "FORBIDDEN",
            Self::InvalidPayload => "INVALID_PAYLOAD",
            Self::InvalidQuery => "INVALID_QUERY",
            Self::FailedValidation => "FAILED_VALIDATION",
            Self::RecordNotUnique => "RECORD_NOT_UNIQUE",
            Self::InvalidInvite => "INVALID_INVITE",
            Self::RequestsExceeded => "REQUESTS_EXCEEDED",
            Self::RouteNotFound => "ROUTE_NOT_FOUND",
            Self::UnprocessableContent => "UNPROCESSABLE_CONTENT",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::InvalidProvider => "INVALID_PROVIDER",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ContentTooLarge => "CONTENT_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The code for a wire string, if it is one Tessera knows.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status Directus answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidCredentials
            | Self::InvalidOtp
            | Self::UserSuspended
            | Self::TokenExpired
            | Self::InvalidIp => 401,
            Self::InvalidToken | Self::Forbidden | Self::InvalidProvider => 403,
            Self::InvalidPayload
            | Self::InvalidQuery
            | Self::FailedValidation
            | Self::RecordNotUnique
            | Self::InvalidInvite => 400,
            Self::RouteNotFound => 404,
            Self::ContentTooLarge => 413,
            Self::RequestTimeout => 408,
            Self::UnprocessableContent => 422,
            Self::UnsupportedMediaType => 415,
            Self::RequestsExceeded => 429,
            Self::ServiceUnavailable => 503,
            Self::InternalServerError => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `{"errors":[{"message":…,"extensions":{…,"code":…}}]}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub errors: Vec<ErrorItem>,
}

/// One entry of the error envelope. `extensions` always carries `code`, last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorItem {
    pub message: String,
    #[serde(default)]
    pub extensions: Map<String, Value>,
}

impl ErrorItem {
    /// The error code in `extensions.code`, if present.
    pub fn code(&self) -> Option<&str> {
        self.extensions.get("code").and_then(Value::as_str)
    }
}

/// `{"data": …}`, the success wrapper of every JSON answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Data<T> {
    pub data: T,
}

/// How a login or refresh hands its tokens back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Both tokens in the body.
    #[default]
    Json,
    /// Access token in the body, refresh token in an httpOnly cookie.
    Cookie,
    /// Only a session cookie holding a JWT that names a server-side session.
    Session,
}

impl AuthMode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Cookie => "cookie",
            Self::Session => "session",
        }
    }

    /// Parses the wire spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "cookie" => Some(Self::Cookie),
            "session" => Some(Self::Session),
            _ => None,
        }
    }
}

/// The `data` of a login or refresh answer. Keys appear in Directus's order:
/// `expires`, `refresh_token`, `access_token`; absent ones are omitted per mode.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthData {
    /// Access-token lifetime in milliseconds (may exceed 2^31).
    pub expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

impl std::fmt::Debug for AuthData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |t: &Option<String>| t.as_ref().map(|_| "<hidden>");
        f.debug_struct("AuthData")
            .field("expires", &self.expires)
            .field("refresh_token", &hidden(&self.refresh_token))
            .field("access_token", &hidden(&self.access_token))
            .finish()
    }
}

/// The value concealed fields (`password`, `token`, `tfa_secret`) read as when set.
pub const CONCEALED: &str = "**********";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn auth_data_keeps_directus_key_order_and_hides_tokens() {
        let d = AuthData {
            expires: 900_000,
            refresh_token: Some("r".into()),
            access_token: Some("a".into()),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"expires":900000,"refresh_token":"r","access_token":"a"}"#
        );
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("\"r\"") && dbg.contains("<hidden>"));
    }
}
