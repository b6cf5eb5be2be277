//! Tessera's rules, free of HTTP: tokens (JWT, refresh, static), passwords, the session
//! lifecycle, accountability and global access, the item query language and the write rules
//! for users, roles and settings. Depends on storage only through the `Store` trait.

pub mod access;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod error;
pub mod items;
pub mod jwt;
pub mod operator;
pub mod password;
pub mod probe;
pub mod query;
pub mod tokens;
pub mod validate;

use std::sync::Arc;

use tessera_store::{Bootstrap, Store};
use uuid::Uuid;

pub use error::{Error, Result};

/// The first administrator, as configured by `ADMIN_EMAIL`, `ADMIN_PASSWORD`, `ADMIN_TOKEN`.
pub struct AdminSeed {
    pub email: String,
    pub password: Option<String>,
    pub token: Option<String>,
}

/// What bootstrap did.
pub enum Bootstrapped {
    /// The database already had users; nothing was created.
    Existing,
    /// An admin was created; `generated_password` is set when none was configured.
    Created { generated_password: Option<String> },
}

/// On an empty database, creates role and policy "Administrator" and the admin user.
pub async fn bootstrap(
    store: &Arc<dyn Store>,
    passwords: &password::Passwords,
    seed: AdminSeed,
) -> Result<Bootstrapped> {
    if store.user_count().await? > 0 {
        return Ok(Bootstrapped::Existing);
    }
    let (password, generated) = match seed.password {
        Some(p) => (p, None),
        None => {
            let p = tokens::random_token()[..24].to_owned();
            (p.clone(), Some(p))
        }
    };
    store
        .bootstrap(Bootstrap {
            role_id: Uuid::new_v4(),
            policy_id: Uuid::new_v4(),
            access_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            email: seed.email,
            password_hash: passwords.hash(password).await?,
            token_hash: seed.token.as_deref().map(tokens::digest),
        })
        .await?;
    Ok(Bootstrapped::Created {
        generated_password: generated,
    })
}
