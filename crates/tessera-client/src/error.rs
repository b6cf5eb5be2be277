//! Typed client errors. Each carries the server's Directus error code where there is one; the
//! messages are the ones automation users know from n8n's Directus node.

use tessera_proto::ErrorCode;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No refresh token was given or stored; no request was sent.
    #[error("Missing required parameter: refresh_token")]
    MissingRefreshToken,
    /// The server refused the refresh token: expired, rotated, revoked, or its user suspended.
    #[error("Invalid refresh token")]
    InvalidRefreshToken { code: Option<String> },
    /// Any other 401.
    #[error("401 Unauthorized")]
    Unauthorized { code: Option<String> },
    /// Another error answer from the server.
    #[error("{status} {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The server could not be reached, or kept answering 5xx, after the retries.
    #[error("request to {url} failed after {attempts} attempt(s): {reason}")]
    Unavailable {
        url: String,
        attempts: u32,
        reason: String,
    },
    /// The client has no session (log in first) or the stored one is unusable.
    #[error("not logged in: {0}")]
    NotLoggedIn(String),
    /// Reading or writing the token store failed.
    #[error("token store: {0}")]
    Store(String),
    /// The server answered something that is not the Directus wire format.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The Directus error code of the answer, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        let code = match self {
            ClientError::InvalidRefreshToken { code }
            | ClientError::Unauthorized { code }
            | ClientError::Api { code, .. } => code.as_deref(),
            _ => None,
        };
        code.and_then(ErrorCode::parse)
    }

    /// Whether retrying later may help (network trouble or 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}
