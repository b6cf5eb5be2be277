//! The one place where errors become HTTP: status from the Directus code, the
//! `{"errors":[…]}` body, and a log line for unexpected failures (whose detail never reaches
//! the client, and is cut short so that no request can make the log grow by its own size).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::Error;
use tessera_proto::ErrorEnvelope;

/// An [`Error`] on its way out as a response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

/// The most of an unexpected failure's detail that goes into the log.
const MAX_LOGGED_DETAIL: usize = 512;

/// `detail` cut to at most [`MAX_LOGGED_DETAIL`] bytes.
fn loggable(detail: &str) -> &str {
    crate::http::truncated(detail, MAX_LOGGED_DETAIL)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Error::Internal(detail) = &self.0 {
            tracing::error!(detail = loggable(detail), "request failed");
        }
        let status = StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope {
            errors: self.0.to_items(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (status, bytes).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Error::RequestsExceeded { retry_after_ms, .. } = self.0 {
            // Whole seconds, rounded up: a client that waits that long is let through.
            let secs = (retry_after_ms.max(0) + 999) / 1000;
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self.0, Error::RequestTimeout) {
            // The rest of a body that came too slowly is not worth waiting for.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn logged_details_are_bounded() {
        let long = "é".repeat(1_000);
        assert!(loggable(&long).len() <= 512);
        assert!(long.starts_with(loggable(&long)));
        assert_eq!(loggable("short"), "short");
    }
}
