//! Tessera's rules, free of HTTP: tokens (JWT, refresh, static), passwords, the session
//! lifecycle, accountability and global access, the item query language and the write rules
//! for users, roles and settings. Depends on storage only through the `Store` trait.

pub mod access;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod data_move;
pub mod error;
pub mod items;
pub mod jwt;
pub mod limits;
pub mod mail;
pub mod operator;
pub mod password;
pub mod permissions;
pub mod probe;
pub mod query;
pub mod reset;
pub mod rules;
pub mod tally;
pub mod tfa;
pub mod tokens;
pub mod validate;

use std::sync::Arc;

use serde_json::{Value, json};
use tessera_store::schema::{ACCESS, Collection, POLICIES, ROLES, USERS};
use tessera_store::{Store, Values, Write};
use uuid::Uuid;

pub use error::{Error, Result};

/// The project's name as it signs what users receive (TOTP issuer, mail): the
/// `project_name` setting, else "Directus" as Directus has it.
pub(crate) async fn project_name(store: &dyn Store) -> Result<String> {
    Ok(store
        .settings()
        .await?
        .get("project_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("Directus")
        .to_owned())
}

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
    if store.has_users().await? {
        return Ok(Bootstrapped::Existing);
    }
    let (password, generated) = match seed.password {
        Some(p) => (p, None),
        None => {
            let p = tokens::random_token()[..24].to_owned();
            (p.clone(), Some(p))
        }
    };
    let hash = passwords.hash(password).await?;
    let token = seed.token.as_deref().map(tokens::digest);
    let (_, writes) = first_admin(&seed.email, &hash, token.as_deref())?;
    match store.write(writes, None).await {
        Ok(_) => {}
        // Another instance starting on the same database created the admin first.
        Err(tessera_store::StoreError::Conflict { .. }) if store.has_users().await? => {
            return Ok(Bootstrapped::Existing);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Bootstrapped::Created {
        generated_password: generated,
    })
}

/// The writes that create role and policy "Administrator", attach one to the other, and create
/// an active admin user in that role; the new user's id.
pub(crate) fn first_admin(
    email: &str,
    password_hash: &str,
    token_hash: Option<&str>,
) -> Result<(Uuid, Vec<Write>)> {
    let role = Uuid::new_v4().to_string();
    let policy = Uuid::new_v4().to_string();
    let user = Uuid::new_v4();
    let item = |c: &'static Collection, v: Value| -> Result<Write> {
        let mut values: Values = Vec::new();
        for (name, value) in v.as_object().into_iter().flatten() {
            let field = c
                .field(name)
                .ok_or_else(|| Error::Internal(format!("{} has no field {name}", c.name)))?;
            values.push((field, value.clone()));
        }
        Ok(Write::Insert { c, values })
    };
    let writes = vec![
        item(
            &ROLES,
            json!({"id": role, "name": "Administrator", "icon": "verified",
                   "description": "$t:admin_description"}),
        )?,
        item(
            &POLICIES,
            json!({"id": policy, "name": "Administrator", "icon": "verified",
                   "description": "$t:admin_description", "admin_access": true,
                   "app_access": true}),
        )?,
        item(
            &ACCESS,
            json!({"id": Uuid::new_v4().to_string(), "role": role, "policy": policy, "sort": 1}),
        )?,
        item(
            &USERS,
            json!({"id": user.to_string(), "first_name": "Admin", "last_name": "User",
                   "email": email, "password": password_hash, "role": role,
                   "status": "active", "token": token_hash}),
        )?,
    ];
    Ok((user, writes))
}
