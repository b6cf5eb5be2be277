//! What an operator can do to users from the command line (`tessera users …`), against a
//! stopped server's database or a running one's: list users with their login state, unlock a
//! user, reset a password, create an admin. Every write goes through the same item rules as
//! the API, as an administrator that is no user.

use std::sync::Arc;

use serde_json::{Value, json};
use tessera_store::schema::{ROLES, USERS};
use tessera_store::{LoginUser, Query, Store};
use uuid::Uuid;

use crate::access::{Accountability, global_access};
use crate::cache::Caches;
use crate::error::{Error, Result};
use crate::items::Items;
use crate::password::Passwords;

/// One user as `tessera users list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserLine {
    pub id: Uuid,
    pub email: Option<String>,
    pub status: String,
    pub role: Option<String>,
    pub admin: bool,
    pub failed_logins: i64,
    /// Password logins are refused until then (Unix ms).
    pub locked_until: Option<i64>,
    pub last_access: Option<i64>,
}

/// What `unlock` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    /// The user was suspended and is active again.
    Reactivated,
    /// The user was not suspended; failed logins and any lock were cleared.
    Cleared,
}

/// The operator's user commands.
pub struct Operator {
    store: Arc<dyn Store>,
    items: Items,
    passwords: Passwords,
}

/// The accountability operator commands run under: an administrator that is no user.
fn operator() -> Accountability {
    Accountability {
        admin: true,
        app: true,
        ..Accountability::default()
    }
}

impl Operator {
    pub fn new(store: Arc<dyn Store>, passwords: Passwords) -> Self {
        let items = Items::new(
            store.clone(),
            passwords.clone(),
            Caches::new(),
            Arc::new(crate::clock::SystemClock),
        );
        Self {
            store,
            items,
            passwords,
        }
    }

    async fn user(&self, email: &str) -> Result<LoginUser> {
        self.store
            .login_user(&email.to_ascii_lowercase())
            .await?
            .ok_or_else(|| Error::payload(format!("no user has the e-mail {email}")))
    }

    /// Every user, by e-mail, with role name, admin access and login state.
    pub async fn list(&self) -> Result<Vec<UserLine>> {
        let roles = self.store.read_items(&ROLES, &Query::default()).await?;
        let role_name = |id: Uuid| {
            roles
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(id.to_string().as_str()))
                .and_then(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
        };
        let mut out = Vec::new();
        for u in self.store.user_summaries().await? {
            let tree = crate::access::tree(&*self.store, u.role, Some(u.id)).await?;
            out.push(UserLine {
                id: u.id,
                email: u.email,
                admin: global_access(&tree, None).admin,
                role: u
                    .role
                    .map(|r| role_name(r).unwrap_or_else(|| r.to_string())),
                status: u.status,
                failed_logins: u.failed_logins,
                locked_until: u.locked_until_ms,
                last_access: u.last_access_ms,
            });
        }
        Ok(out)
    }

    /// Lifts a login lock and forgives failed logins; a suspended user becomes active again.
    pub async fn unlock(&self, email: &str) -> Result<Unlocked> {
        let u = self.user(email).await?;
        if u.status == "suspended" {
            let body = json!({"status": "active"});
            self.items
                .update(&USERS, &operator(), &u.id.to_string(), &body)
                .await?;
            Ok(Unlocked::Reactivated)
        } else {
            self.store.clear_login_failures(u.id).await?;
            Ok(Unlocked::Cleared)
        }
    }

    /// Sets a new password (the password policy applies); the user's sessions end.
    pub async fn reset_password(&self, email: &str, password: &str) -> Result<()> {
        let u = self.user(email).await?;
        let body = json!({"password": password});
        self.items
            .update(&USERS, &operator(), &u.id.to_string(), &body)
            .await
    }

    /// Creates an active user with a role that has admin access: the first such role, or a
    /// new "Administrator" role and policy when none is left.
    pub async fn create_admin(&self, email: &str, password: &str) -> Result<Uuid> {
        if self
            .store
            .login_user(&email.to_ascii_lowercase())
            .await?
            .is_some()
        {
            return Err(Error::payload(format!(
                "a user with the e-mail {email} exists already; use unlock or reset-password"
            )));
        }
        let mut admin_role = None;
        for r in self.store.read_items(&ROLES, &Query::default()).await? {
            let Some(id) = r.get("id").and_then(Value::as_str).map(Uuid::parse_str) else {
                continue;
            };
            let id = id.map_err(|e| Error::Internal(format!("role id: {e}")))?;
            if global_access(
                &crate::access::tree(&*self.store, Some(id), None).await?,
                None,
            )
            .admin
            {
                admin_role = Some(id);
                break;
            }
        }
        let Some(role) = admin_role else {
            if !crate::validate::is_email(email) {
                return Err(Error::invalid_field(
                    "email",
                    "email",
                    "Value has to be a valid email address.",
                ));
            }
            let hash = self.passwords.hash(password.to_owned()).await?;
            let (user_id, writes) = crate::first_admin(email, &hash, None)?;
            self.store.write(writes, None).await?;
            return Ok(user_id);
        };
        let body = json!({
            "email": email,
            "password": password,
            "role": role.to_string(),
            "status": "active",
        });
        let id = self.items.create(&USERS, &operator(), &body).await?;
        Uuid::parse_str(&id).map_err(|e| Error::Internal(format!("new user id: {e}")))
    }
}
