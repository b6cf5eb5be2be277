//! A client for Directus-style auth servers (Tessera and Directus alike) that keeps a session
//! alive for days: json-mode login, the refresh-token operation automation tools run, automatic
//! single-flight refresh before expiry and on `TOKEN_EXPIRED`, logout, and token stores that
//! several tasks or processes can share without spending one refresh token twice.

mod client;
mod error;
mod store;

pub use client::{Client, ClientBuilder, RefreshResult, refresh_token};
pub use error::ClientError;
pub use store::{FileStore, MemoryStore, Session, StoreGuard, TokenStore};
