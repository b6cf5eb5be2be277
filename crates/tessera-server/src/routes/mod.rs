//! Route handlers, one module per resource. Each handler extracts, calls the core, and maps
//! the result to a response; none holds SQL or status codes.

pub mod auth;
pub mod items;
pub mod server;
