//! The one error type of Tessera. Every failure a request can meet becomes an [`Error`]; the
//! server turns it into Directus's envelope in exactly one place. Messages never carry a
//! password or a token.

use serde_json::{Map, Value};
use tessera_proto::{CONCEALED, ErrorCode, ErrorItem};
use tessera_store::StoreError;

/// A failure, named after the Directus error code it answers with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Invalid user credentials.")]
    InvalidCredentials,
    #[error("Invalid user OTP.")]
    InvalidOtp,
    #[error("User suspended.")]
    UserSuspended,
    #[error("Token expired.")]
    TokenExpired,
    #[error("Invalid token.")]
    InvalidToken,
    /// `None` gives the generic message; `Some(reason)` is the message and `extensions.reason`.
    #[error("{}", .0.as_deref().unwrap_or("You don't have permission to access this."))]
    Forbidden(Option<String>),
    /// The reason, without the `Invalid payload. ` prefix and the final dot.
    #[error("Invalid payload. {0}.")]
    InvalidPayload(String),
    #[error("Invalid query. {0}.")]
    InvalidQuery(String),
    /// One or more fields failed validation; each becomes its own entry of the envelope, in
    /// order. Never empty.
    #[error("{}", .0.first().map(Violation::message).unwrap_or_default())]
    FailedValidation(Vec<Violation>),
    #[error(
        "Value \"{CONCEALED}\" for field \"{field}\" in collection \"{collection}\" has to be unique."
    )]
    SecretNotUnique {
        collection: &'static str,
        field: &'static str,
    },
    #[error(
        "Value \"{value}\" for field \"{field}\" in collection \"{collection}\" has to be unique."
    )]
    RecordNotUnique {
        collection: &'static str,
        field: String,
        value: String,
    },
    #[error("Route {0} doesn't exist.")]
    RouteNotFound(String),
    #[error("Can't process content. {0}.")]
    UnprocessableContent(String),
    #[error("Service \"{service}\" is unavailable. {reason}.")]
    ServiceUnavailable {
        service: &'static str,
        reason: String,
    },
    #[error("Request timeout. The request body did not arrive in time.")]
    RequestTimeout,
    /// A request limit or the login throttle refused; the answer carries `Retry-After`.
    #[error("Too many requests, retry after {}.", humanized(*.retry_after_ms))]
    RequestsExceeded {
        /// The points (or free attempts) the limit allows.
        limit: u32,
        /// How long until a retry may succeed.
        retry_after_ms: i64,
        /// When that is, Unix ms.
        reset_ms: i64,
    },
    /// Anything unexpected. The detail is logged, never sent.
    #[error("An unexpected error occurred.")]
    Internal(String),
}

/// A duration as the `ms` package writes it in Directus's messages: `500ms`, `3s`, `2m`,
/// `1h`, `4d` (rounded to the largest unit it reaches).
pub fn humanized(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    let ms = ms.max(0);
    for (size, unit) in UNITS {
        if ms >= size {
            // Half up, as JavaScript's Math.round.
            return format!("{}{unit}", (ms + size / 2) / size);
        }
    }
    format!("{ms}ms")
}

/// One field's failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    /// The validation rule: `email`, `regex`, `required`, `nnull`, …
    pub rule: &'static str,
    /// What the message adds after naming the field (may be empty).
    pub detail: String,
    /// Extensions the rule adds (`valid`, `invalid`, `substring`).
    pub extra: Vec<(&'static str, Value)>,
}

impl Violation {
    fn message(&self) -> String {
        if self.detail.is_empty() {
            format!("Validation failed for field \"{}\".", self.field)
        } else {
            format!(
                "Validation failed for field \"{}\". {}",
                self.field, self.detail
            )
        }
    }

    fn to_item(&self) -> ErrorItem {
        let mut ext = Map::new();
        ext.insert("field".into(), self.field.clone().into());
        ext.insert("path".into(), Value::Array(Vec::new()));
        ext.insert("type".into(), self.rule.into());
        for (k, v) in &self.extra {
            ext.insert((*k).into(), v.clone());
        }
        ext.insert("code".into(), ErrorCode::FailedValidation.as_str().into());
        ErrorItem {
            message: self.message(),
            extensions: ext,
        }
    }
}

impl Error {
    /// One field failing one rule.
    pub fn invalid_field(field: &str, rule: &'static str, detail: &str) -> Self {
        Error::FailedValidation(vec![Violation {
            field: field.to_owned(),
            rule,
            detail: detail.to_owned(),
            extra: Vec::new(),
        }])
    }

    /// Shorthand for a 403 on a collection, as Directus words it.
    pub fn forbidden_collection(collection: &str) -> Self {
        Error::Forbidden(Some(format!(
            "You don't have permission to access collection \"{collection}\" or it does not exist. Queried in root."
        )))
    }

    /// A 403 on an action, as Directus words it when no permission (or no reachable item)
    /// allows it.
    pub fn forbidden_action(action: &str, collection: &str) -> Self {
        Error::Forbidden(Some(format!(
            "You don't have permission to \"{action}\" from collection \"{collection}\" or it does not exist."
        )))
    }

    /// Shorthand for a 403 on a field, as Directus words it.
    pub fn forbidden_field(field: &str, collection: &str) -> Self {
        Error::Forbidden(Some(format!(
            "You don't have permission to access field \"{field}\" in collection \"{collection}\" or it does not exist. Queried in root."
        )))
    }

    /// 503 for work refused because the server is saturated, worded as Directus's pressure
    /// limiter words it.
    pub fn under_pressure() -> Self {
        Error::ServiceUnavailable {
            service: "api",
            reason: "Under pressure".into(),
        }
    }

    /// Shorthand for INVALID_PAYLOAD.
    pub fn payload(reason: impl Into<String>) -> Self {
        Error::InvalidPayload(reason.into())
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidCredentials => ErrorCode::InvalidCredentials,
            Error::InvalidOtp => ErrorCode::InvalidOtp,
            Error::UserSuspended => ErrorCode::UserSuspended,
            Error::TokenExpired => ErrorCode::TokenExpired,
            Error::InvalidToken => ErrorCode::InvalidToken,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::InvalidPayload(_) => ErrorCode::InvalidPayload,
            Error::InvalidQuery(_) => ErrorCode::InvalidQuery,
            Error::FailedValidation(_) => ErrorCode::FailedValidation,
            Error::SecretNotUnique { .. } | Error::RecordNotUnique { .. } => {
                ErrorCode::RecordNotUnique
            }
            Error::RouteNotFound(_) => ErrorCode::RouteNotFound,
            Error::UnprocessableContent(_) => ErrorCode::UnprocessableContent,
            Error::ServiceUnavailable { .. } => ErrorCode::ServiceUnavailable,
            Error::RequestTimeout => ErrorCode::RequestTimeout,
            Error::RequestsExceeded { .. } => ErrorCode::RequestsExceeded,
            Error::Internal(_) => ErrorCode::InternalServerError,
        }
    }

    /// The envelope's entries: one per failed field for a validation failure, else one.
    pub fn to_items(&self) -> Vec<ErrorItem> {
        match self {
            Error::FailedValidation(all) => all.iter().map(Violation::to_item).collect(),
            other => vec![other.to_item()],
        }
    }

    /// The envelope entry: message plus extensions, `code` last as Directus writes it.
    pub fn to_item(&self) -> ErrorItem {
        if let Error::FailedValidation(all) = self
            && let Some(first) = all.first()
        {
            return first.to_item();
        }
        let mut ext = Map::new();
        let mut put = |k: &str, v: Value| {
            ext.insert(k.into(), v);
        };
        match self {
            Error::Forbidden(Some(reason)) => put("reason", reason.clone().into()),
            Error::InvalidPayload(reason)
            | Error::InvalidQuery(reason)
            | Error::UnprocessableContent(reason) => put("reason", reason.clone().into()),
            Error::SecretNotUnique { collection, field } => {
                put("collection", (*collection).into());
                put("field", (*field).into());
                put("value", CONCEALED.into());
            }
            Error::RecordNotUnique {
                collection,
                field,
                value,
            } => {
                put("collection", (*collection).into());
                put("field", field.clone().into());
                put("value", value.clone().into());
            }
            Error::RouteNotFound(path) => put("path", path.clone().into()),
            Error::RequestsExceeded {
                limit, reset_ms, ..
            } => {
                put("limit", (*limit).into());
                put("reset", crate::clock::iso8601(*reset_ms).into());
            }
            Error::ServiceUnavailable { service, reason } => {
                put("service", (*service).into());
                put("reason", reason.clone().into());
            }
            _ => {}
        }
        // Directus writes the code after the error's own extensions.
        ext.insert("code".into(), Value::from(self.code().as_str()));
        ErrorItem {
            message: self.to_string(),
            extensions: ext,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field: "token" } => Error::SecretNotUnique {
                collection: "directus_users",
                field: "token",
            },
            StoreError::Conflict { field } => Error::RecordNotUnique {
                collection: "directus_users",
                field: field.to_string(),
                value: String::new(),
            },
            StoreError::MissingReference { field } => Error::InvalidPayload(format!(
                "Field \"{field}\" references an item that doesn't exist"
            )),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Error::ServiceUnavailable {
                    service: "database",
                    reason: "Database is unreachable".into(),
                }
            }
            StoreError::Refused => {
                Error::Internal("a guard refused a write without a reason".into())
            }
            StoreError::Backend(msg) => Error::Internal(msg),
        }
    }
}

/// The result type of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_errors_read_as_directus_writes_them() {
        assert_eq!(humanized(400), "400ms");
        assert_eq!(humanized(1_499), "1s");
        assert_eq!(humanized(1_500), "2s");
        assert_eq!(humanized(90_000), "2m");
        assert_eq!(humanized(7_200_000), "2h");
        let item = Error::RequestsExceeded {
            limit: 50,
            retry_after_ms: 2_000,
            reset_ms: 0,
        }
        .to_item();
        assert_eq!(item.message, "Too many requests, retry after 2s.");
        assert_eq!(item.code(), Some("REQUESTS_EXCEEDED"));
        assert_eq!(item.extensions["limit"], 50);
        assert_eq!(item.extensions["reset"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn payload_errors_carry_reason() {
        let item = Error::payload("\"email\" is required").to_item();
        assert_eq!(item.message, "Invalid payload. \"email\" is required.");
        assert_eq!(item.code(), Some("INVALID_PAYLOAD"));
        assert_eq!(item.extensions["reason"], "\"email\" is required");
    }

    #[test]
    fn duplicate_token_never_echoes_the_token() {
        let item = Error::SecretNotUnique {
            collection: "directus_users",
            field: "token",
        }
        .to_item();
        assert_eq!(
            item.message,
            "Value \"**********\" for field \"token\" in collection \"directus_users\" has to be unique."
        );
        assert_eq!(item.extensions["value"], CONCEALED);
    }

    #[test]
    fn generic_forbidden_has_no_reason() {
        let item = Error::Forbidden(None).to_item();
        assert_eq!(item.message, "You don't have permission to access this.");
        assert!(!item.extensions.contains_key("reason"));
    }
}
