//! Integration tests: each test starts a real Tessera server on 127.0.0.1:0 with a fresh
//! SQLite database and talks HTTP to it.

mod adversarial;
mod bad_input;
mod common;
mod config;
mod cors;
mod invariants;
mod lifecycle;
mod limits;
mod login;
mod logout;
mod mailbox;
mod metrics;
mod oas;
mod permissions;
mod rate;
mod refresh;
mod reset;
mod server_routes;
mod sessions;
mod tfa;
mod tokens;
mod users;
