//! The one place where errors become HTTP: status from the Directus code, the
//! `{"errors":[…]}` body, and a log line for unexpected failures (whose detail never reaches
//! the client).

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Error::Internal(detail) = &self.0 {
            tracing::error!(%detail, "request failed");
        }
        let status = StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope {
            errors: vec![self.0.to_item()],
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (status, bytes).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        res
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
