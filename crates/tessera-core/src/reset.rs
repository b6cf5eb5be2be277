//! Password reset (`POST /auth/password/request`, `POST /auth/password/reset`): which reset
//! links may be asked for, the fixed stall that hides whether an account exists, the
//! one-time token (a Directus-shaped JWT bound to the password it replaces, so that any
//! password change, this reset's included, spends it), the mail that carries it, and the
//! reset itself, which swaps the password by compare-and-set and ends every session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tessera_store::schema::USERS;
use tessera_store::{
    Condition, EndSessions, Guard, LoginUser, Op, Query, Reads, Store, StoreError, StoreResult,
    Write,
};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result, humanized};
use crate::items::Items;
use crate::jwt::{ISSUER, JwtKeys};
use crate::limits::Throttle;
use crate::mail::{Mail, Outbox, html_escaped};
use crate::probe::{NoProbe, Point, Probe};
use crate::tokens::hex;

/// The `scope` claim of a reset token.
const SCOPE: &str = "password-reset";

/// Settings of password reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetSettings {
    /// How long every request takes, whatever it finds (Directus: a fixed 500 ms).
    pub stall: Duration,
    /// `PASSWORD_RESET_TOKEN_TTL`: how long a link works.
    pub token_ttl_ms: i64,
    /// `PASSWORD_RESET_URL_ALLOW_LIST`: the `reset_url`s a request may name.
    pub allow_list: Vec<String>,
    /// `PUBLIC_URL`, for the default link (`<PUBLIC_URL>/admin/reset-password`).
    pub public_url: String,
}

impl Default for ResetSettings {
    fn default() -> Self {
        Self {
            stall: Duration::from_millis(500),
            token_ttl_ms: 3_600_000,
            allow_list: Vec::new(),
            public_url: "/".into(),
        }
    }
}

/// Claims of a reset token, in Directus's order.
#[derive(Serialize)]
struct ResetClaims<'a> {
    email: &'a str,
    scope: &'static str,
    hash: String,
    iat: i64,
    exp: i64,
    iss: &'static str,
}

pub struct Resets {
    store: Arc<dyn Store>,
    items: Arc<Items>,
    keys: JwtKeys,
    secret: Arc<[u8]>,
    clock: Arc<dyn Clock>,
    outbox: Arc<dyn Outbox>,
    throttle: Option<Arc<Throttle>>,
    settings: ResetSettings,
    probe: Arc<dyn Probe>,
}

/// Whether a user may reset a password here (as may log in).
fn may_reset(u: &LoginUser) -> bool {
    u.status == "active" && u.provider == "default"
}

/// The `reset_url` a request may name, parsed: an absolute URL without a fragment, equal to
/// an allow-list entry or with the same origin and path as one (so a query string may
/// differ; a host, scheme or port may not).
pub fn allowed_reset_url(url: &str, allow_list: &[String]) -> Option<url::Url> {
    let parse = |u: &str| {
        url::Url::parse(u)
            .ok()
            .filter(|u| u.has_host() && u.fragment().is_none())
    };
    let base = |u: &url::Url| format!("{}{}", u.origin().ascii_serialization(), u.path());
    let parsed = parse(url)?;
    let wanted = base(&parsed);
    allow_list
        .iter()
        .any(|a| a == url || parse(a).is_some_and(|a| base(&a) == wanted))
        .then_some(parsed)
}

/// The link a mail carries: `base` re-serialised (so nothing the requester wrote outside the
/// URL's grammar reaches the mail), with its `token` parameter set to `token` alone.
fn link_to(mut base: url::Url, token: &str) -> String {
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    base.set_query(None);
    {
        let mut q = base.query_pairs_mut();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("token", token);
    }
    base.into()
}

impl Resets {
    pub fn new(
        store: Arc<dyn Store>,
        items: Arc<Items>,
        secret: &[u8],
        clock: Arc<dyn Clock>,
        outbox: Arc<dyn Outbox>,
        throttle: Option<Arc<Throttle>>,
        settings: ResetSettings,
    ) -> Self {
        Self {
            store,
            items,
            keys: JwtKeys::new(secret),
            secret: secret.into(),
            clock,
            outbox,
            throttle,
            settings,
            probe: Arc::new(NoProbe),
        }
    }

    /// Tells `probe` when a reset reaches [`Point::ResetChecked`] (tests hold it there).
    pub fn with_probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.probe = probe;
        self
    }

    /// What a token binds to: the user and the password hash it may replace, keyed by the
    /// secret. Any change of the password makes every earlier token's binding wrong.
    fn binding(&self, u: &LoginUser) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length");
        mac.update(b"tessera password-reset\0");
        mac.update(u.id.as_bytes());
        mac.update(u.password.as_deref().unwrap_or_default().as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// `POST /auth/password/request`. A bad payload or `reset_url` is refused at once, as in
    /// Directus; a throttled address at once too (its wait says nothing about the account).
    /// Everything else answers alike after the same stall, mail or no mail.
    pub async fn request(&self, body: &Map<String, Value>, ip: Option<IpAddr>) -> Result<()> {
        let Some(Value::String(email)) = body.get("email") else {
            return Err(Error::payload("\"email\" field is required"));
        };
        let reset_url = match body.get("reset_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) if u.is_empty() => None,
            Some(Value::String(u)) => match allowed_reset_url(u, &self.settings.allow_list) {
                Some(url) => Some(url),
                None => {
                    return Err(Error::payload(format!(
                        "URL \"{u}\" can't be used to reset passwords"
                    )));
                }
            },
            Some(other) => {
                return Err(Error::payload(format!(
                    "URL \"{other}\" can't be used to reset passwords"
                )));
            }
        };
        if let Some(t) = &self.throttle {
            t.attempt(ip, email).await?;
        }
        let started = tokio::time::Instant::now();
        let out = self.send_link(email, reset_url).await;
        tokio::time::sleep_until(started + self.settings.stall).await;
        out
    }

    async fn send_link(&self, email: &str, reset_url: Option<url::Url>) -> Result<()> {
        let Some(user) = self
            .store
            .login_user(&email.to_ascii_lowercase())
            .await?
            .filter(may_reset)
        else {
            tracing::info!("password reset asked for an unknown or inactive account");
            return Ok(());
        };
        let Some(address) = user.email.clone() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let iat = now / 1000;
        let token = self.keys.sign(&ResetClaims {
            email: &address,
            scope: SCOPE,
            hash: self.binding(&user),
            iat,
            exp: iat + self.settings.token_ttl_ms / 1000,
            iss: ISSUER,
        })?;
        let default = format!(
            "{}/admin/reset-password",
            self.settings.public_url.trim_end_matches('/')
        );
        // PUBLIC_URL is the operator's, and may be relative (`/`, the default).
        let link = match reset_url.or_else(|| url::Url::parse(&default).ok()) {
            Some(base) => link_to(base, &token),
            None => format!("{default}?token={token}"),
        };
        let project = crate::project_name(&*self.store).await?;
        self.outbox.post(reset_mail(
            &address,
            &project,
            &link,
            self.settings.token_ttl_ms,
        ));
        tracing::info!(user = %user.id, "password reset mail posted");
        Ok(())
    }

    /// `POST /auth/password/reset`: a live reset token and a new password. The token works
    /// once: the password it was bound to is swapped by compare-and-set, so two uses at once
    /// (on any instances) leave one winner, and every session of the user ends with it.
    pub async fn reset(&self, body: &Map<String, Value>) -> Result<()> {
        let (Some(Value::String(token)), Some(Value::String(password))) =
            (body.get("token"), body.get("password"))
        else {
            let missing = if matches!(body.get("token"), Some(Value::String(_))) {
                "password"
            } else {
                "token"
            };
            return Err(Error::payload(format!("\"{missing}\" field is required")));
        };
        let claims = self.keys.verify_claims(token, self.clock.now_ms())?;
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        let (Some(SCOPE), Some(hash), Some(email)) = (text("scope"), text("hash"), text("email"))
        else {
            return Err(Error::Forbidden(None));
        };
        let user = self
            .store
            .login_user(&email.to_ascii_lowercase())
            .await?
            .filter(may_reset)
            .filter(|u| bool::from(self.binding(u).as_bytes().ct_eq(hash.as_bytes())))
            .ok_or(Error::Forbidden(None))?;
        let new_hash = self.items.hash_password(password).await?;
        self.probe.reached(Point::ResetChecked).await;
        let swap = Write::Update {
            c: &USERS,
            id: user.id.to_string(),
            values: vec![(password_field(), Value::String(new_hash))],
            end: EndSessions::All,
        };
        let guard = PasswordStill {
            user: user.id,
            password: user.password.clone(),
            unchanged: false,
        };
        match self.store.write(vec![swap], Some(Box::new(guard))).await {
            Ok(_) => {}
            Err(StoreError::Refused) => return Err(Error::Forbidden(None)),
            Err(e) => return Err(e.into()),
        }
        self.store.clear_login_failures(user.id).await?;
        self.items.changed().await;
        tracing::info!(user = %user.id, "password reset");
        Ok(())
    }
}

fn password_field() -> &'static tessera_store::Field {
    USERS
        .field("password")
        .expect("directus_users has a password field")
}

/// The reset mail: a short plain-text body and the same in HTML.
fn reset_mail(to: &str, project: &str, link: &str, ttl_ms: i64) -> Mail {
    let within = humanized(ttl_ms);
    let text = format!(
        "Someone asked to reset the password of {to} at {project}.\n\n\
         To choose a new password, open this link (it works once, for {within}):\n\n\
         {link}\n\n\
         If you did not ask for this, ignore this mail: your password stays as it is.\n"
    );
    let (address, project, link) = (html_escaped(to), html_escaped(project), html_escaped(link));
    let html = format!(
        "<!doctype html><html><body>\
         <p>Someone asked to reset the password of {address} at {project}.</p>\
         <p><a href=\"{link}\">Reset your password</a> (the link works once, for {within}).</p>\
         <p>If you did not ask for this, ignore this mail: your password stays as it is.</p>\
         </body></html>"
    );
    Mail {
        to: to.to_owned(),
        subject: "Password Reset Request".into(),
        text,
        html,
    }
}

/// Inside the reset's transaction: the user is still active with the password the token was
/// bound to; otherwise the write is undone.
struct PasswordStill {
    user: Uuid,
    password: Option<String>,
    unchanged: bool,
}

impl Guard for PasswordStill {
    fn before(&mut self, r: &mut dyn Reads) -> StoreResult<()> {
        let q = Query {
            filter: Some(Condition::Compare {
                field: USERS.key(),
                op: Op::Eq,
                value: Value::String(self.user.to_string()),
            }),
            ..Query::default()
        };
        let found = r.read_items(&USERS, &q)?;
        self.unchanged = found.first().is_some_and(|u| {
            u.get("status").and_then(Value::as_str) == Some("active")
                && u.get("password").and_then(Value::as_str) == self.password.as_deref()
        });
        Ok(())
    }

    fn after(self: Box<Self>, _: &mut dyn Reads) -> StoreResult<bool> {
        Ok(self.unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_urls_match_whole_origins_and_paths() {
        let list = vec![
            "https://app.example.com/reset".to_owned(),
            "not a url".to_owned(),
        ];
        let allowed = |u: &str| allowed_reset_url(u, &list).is_some();
        assert!(allowed("https://app.example.com/reset"));
        assert!(allowed("https://app.example.com/reset?lang=fr"));
        for refused in [
            "not a url",
            "http://app.example.com/reset",
            "https://app.example.com:8443/reset",
            "https://app.example.com.evil.io/reset",
            "https://evil.io/https://app.example.com/reset",
            "https://app.example.com/reset/../other",
            "https://app.example.com/resetx",
            "https://app.example.com/reset#https://evil.io",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        assert!(allowed_reset_url("https://app.example.com/reset", &[]).is_none());
    }

    #[test]
    fn links_are_rebuilt_so_nothing_but_the_url_reaches_the_mail() {
        let link = |u: &str| link_to(url::Url::parse(u).unwrap(), "T");
        assert_eq!(link("https://a.io/r"), "https://a.io/r?token=T");
        assert_eq!(
            link("https://a.io/r?lang=fr"),
            "https://a.io/r?lang=fr&token=T"
        );
        // A token of the requester's own is dropped, not put first.
        assert_eq!(
            link("https://a.io/r?token=MINE&x=1"),
            "https://a.io/r?x=1&token=T"
        );
        // Line breaks and blanks meant to start a line of text of their own do not survive.
        let sneaky = link("https://a.io/r?a=\n\nIf the button fails, use: https://evil.io/r?x=");
        assert!(!sneaky.contains(char::is_whitespace), "{sneaky}");
        assert!(sneaky.starts_with("https://a.io/r?a="), "{sneaky}");
    }

    #[test]
    fn the_mail_carries_the_link_in_both_bodies() {
        let m = reset_mail(
            "a@example.com",
            "P & Q",
            "https://a.io/r?x=1&token=t",
            3_600_000,
        );
        assert_eq!(m.to, "a@example.com");
        assert!(m.text.contains("https://a.io/r?x=1&token=t"));
        assert!(m.html.contains("href=\"https://a.io/r?x=1&amp;token=t\""));
        assert!(m.html.contains("P &amp; Q"));
        assert!(m.text.contains("for 1h"));
    }
}
