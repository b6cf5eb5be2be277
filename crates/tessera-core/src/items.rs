//! The item routes' rules for users, roles and settings: who may read or write which
//! collection (admins; app users their own row), how `fields` shapes an answer (concealed
//! secrets, timestamps, alias lists, nested relations), and how a write body is checked and
//! turned into stored values (hashed passwords, token digests, ended sessions).

use std::sync::Arc;

use serde_json::{Map, Value};
use tessera_proto::CONCEALED;
use tessera_store::schema::{ROLES, SETTINGS, USERS};
use tessera_store::{
    Change, Collection, Condition, EndSessions, Field, Guard, Kind, Nulls, Op, Query, Reads,
    Record, Store, StoreError, Write,
};
use uuid::Uuid;

use crate::access::{Accountability, global_access};
use crate::cache::Caches;
use crate::clock::iso8601;
use crate::error::{Error, Result, Violation};
use crate::password::Passwords;
use crate::query::{Fields, ReadQuery, and};
use crate::tally::Cached;
use crate::tokens::digest;
use crate::validate::is_email;

/// Fields of their own user row that app-access users may read (Directus's minimal app
/// permissions).
const APP_USER_FIELDS: &[&str] = &[
    "id",
    "first_name",
    "last_name",
    "last_page",
    "email",
    "password",
    "location",
    "title",
    "description",
    "tags",
    "provider",
    "avatar",
    "language",
    "appearance",
    "theme_light",
    "theme_dark",
    "tfa_secret",
    "status",
    "role",
];

/// The plain fields of a role: what non-admins may read of their own roles (not the alias
/// lists naming other users).
const ROLE_FIELDS: &[&str] = &["id", "name", "icon", "description", "parent"];

const STATUSES: &[&str] = &[
    "draft",
    "invited",
    "unverified",
    "active",
    "suspended",
    "archived",
];

/// The part of a collection a caller may read.
enum Scope {
    /// Every item, every field.
    Full,
    /// Items matching a filter, limited fields (`None` = all).
    Partial {
        filter: Condition,
        fields: Option<&'static [&'static str]>,
    },
}

/// What `GET /users/me` answers.
pub enum Me {
    /// The serialised record (the `data` of the answer).
    Json(Arc<str>),
    /// Reading is forbidden: Directus answers `{id}` only.
    IdOnly(Uuid),
}

/// The item service.
#[derive(Clone)]
pub struct Items {
    store: Arc<dyn Store>,
    passwords: Passwords,
    caches: Caches,
}

fn id_field(c: &'static Collection) -> &'static Field {
    c.field("id").unwrap_or(&c.fields[0])
}

/// The collection a relational field points at, and the fields of it a non-admin may read.
fn relation(
    c: &'static Collection,
    field: &str,
) -> Option<(&'static Collection, &'static [&'static str])> {
    match (c.name, field) {
        ("directus_users", "role") | ("directus_roles", "parent") => Some((&ROLES, ROLE_FIELDS)),
        _ => None,
    }
}

impl Items {
    pub fn new(store: Arc<dyn Store>, passwords: Passwords, caches: Caches) -> Self {
        Self {
            store,
            passwords,
            caches,
        }
    }

    fn scope(&self, c: &'static Collection, acc: &Accountability) -> Result<Scope> {
        if acc.admin {
            return Ok(Scope::Full);
        }
        let id = id_field(c);
        match (c.name, acc.app, acc.user) {
            ("directus_users", true, Some(user)) => Ok(Scope::Partial {
                filter: Condition::Compare {
                    field: id,
                    op: Op::Eq,
                    value: user.to_string().into(),
                },
                fields: Some(APP_USER_FIELDS),
            }),
            ("directus_roles", true, _) => Ok(Scope::Partial {
                filter: Condition::Compare {
                    field: id,
                    op: Op::In,
                    value: acc
                        .roles
                        .iter()
                        .map(|r| Value::String(r.to_string()))
                        .collect(),
                },
                fields: Some(ROLE_FIELDS),
            }),
            _ => Err(Error::forbidden_collection(c.name)),
        }
    }

    fn require_admin(c: &'static Collection, acc: &Accountability) -> Result<()> {
        if acc.admin {
            Ok(())
        } else {
            Err(Error::forbidden_collection(c.name))
        }
    }

    /// Shapes one stored record per `fields`: conceals secrets, formats timestamps, expands
    /// aliases and nested relations. `allowed` limits the readable fields.
    async fn present(
        &self,
        c: &'static Collection,
        rec: &Record,
        sel: &Fields,
        allowed: Option<&'static [&'static str]>,
    ) -> Result<Value> {
        let readable = |n: &str| allowed.is_none_or(|a| a.contains(&n));
        let mut names: Vec<&str> = Vec::new();
        if sel.all {
            names.extend(c.fields.iter().map(|f| f.name).filter(|n| readable(n)));
            if allowed.is_none() {
                names.extend(c.aliases.iter().map(|a| a.name));
            }
        }
        for n in sel.names.iter().chain(sel.nested.keys()) {
            if !c.has(n) || !readable(n) {
                return Err(Error::forbidden_field(n, c.name));
            }
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let id = rec.get("id").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let mut out = Map::new();
        for name in names {
            let value = if let Some(alias) = c.alias(name) {
                match &id {
                    Some(id) => {
                        let key = (
                            alias.name,
                            format!("{}.{}:{id}", alias.table, alias.foreign_key),
                        );
                        let values = self
                            .caches
                            .get_or_load(Cached::Aliases, &self.caches.aliases, key, async {
                                Ok(Arc::new(self.store.alias_values(alias, id).await?))
                            })
                            .await?;
                        Value::Array(values.as_ref().clone())
                    }
                    None => Value::Array(Vec::new()),
                }
            } else {
                let field = c
                    .field(name)
                    .ok_or_else(|| Error::forbidden_field(name, c.name))?;
                let raw = rec.get(name).cloned().unwrap_or(Value::Null);
                match (field.kind, &raw) {
                    (_, Value::Null) => Value::Null,
                    (k, _) if k.is_concealed() => Value::String(CONCEALED.into()),
                    (Kind::Timestamp, Value::Number(n)) => {
                        Value::String(iso8601(n.as_i64().unwrap_or_default()))
                    }
                    _ => match (sel.nested.get(name), relation(c, name), raw.as_str()) {
                        (Some(sub), Some((target, plain)), Some(key)) => {
                            let limit = allowed.map(|_| plain);
                            Box::pin(self.read_related(target, key, sub, limit)).await?
                        }
                        _ => raw,
                    },
                }
            };
            out.insert(name.to_owned(), value);
        }
        Ok(Value::Object(out))
    }

    async fn read_related(
        &self,
        c: &'static Collection,
        id: &str,
        sel: &Fields,
        allowed: Option<&'static [&'static str]>,
    ) -> Result<Value> {
        let q = Query {
            filter: Some(Condition::Compare {
                field: id_field(c),
                op: Op::Eq,
                value: id.into(),
            }),
            ..Query::default()
        };
        match self.store.read_items(c, &q).await?.first() {
            Some(rec) => self.present(c, rec, sel, allowed).await,
            None => Ok(Value::Null),
        }
    }

    /// `GET /<collection>`: the list and, when asked, `meta`.
    pub async fn read_many(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rq: &ReadQuery,
    ) -> Result<(Vec<Value>, Option<Value>)> {
        let scope = self.scope(c, acc)?;
        let mut q = rq.to_store_query(c, acc)?;
        let (visible, allowed) = match scope {
            Scope::Full => (None, None),
            Scope::Partial { filter, fields } => {
                q.filter = Some(and(q.filter.take(), filter.clone()));
                (Some(filter), fields)
            }
        };
        let sel = rq.fields();
        let mut out = Vec::new();
        for rec in self.store.read_items(c, &q).await? {
            out.push(self.present(c, &rec, &sel, allowed).await?);
        }
        let meta = if rq.meta.is_empty() {
            None
        } else {
            let all = rq.meta.iter().any(|m| m == "*");
            let mut m = Map::new();
            if all || rq.meta.iter().any(|m| m == "total_count") {
                m.insert(
                    "total_count".into(),
                    self.store.count_items(c, visible.as_ref()).await?.into(),
                );
            }
            if all || rq.meta.iter().any(|m| m == "filter_count") {
                m.insert(
                    "filter_count".into(),
                    self.store.count_items(c, q.filter.as_ref()).await?.into(),
                );
            }
            Some(Value::Object(m))
        };
        Ok((out, meta))
    }

    async fn fetch(
        &self,
        c: &'static Collection,
        id: &str,
        extra: Option<Condition>,
    ) -> Result<Option<Record>> {
        if !storable(id) {
            return Ok(None);
        }
        let cond = Condition::Compare {
            field: id_field(c),
            op: Op::Eq,
            value: id.into(),
        };
        let q = Query {
            filter: Some(and(extra, cond)),
            limit: Some(1),
            ..Query::default()
        };
        Ok(self.store.read_items(c, &q).await?.into_iter().next())
    }

    /// `GET /<collection>/:id`. A missing item is FORBIDDEN, as in Directus.
    pub async fn read_one(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        id: &str,
        rq: &ReadQuery,
    ) -> Result<Value> {
        let (extra, allowed) = match self.scope(c, acc)? {
            Scope::Full => (None, None),
            Scope::Partial { filter, fields } => (Some(filter), fields),
        };
        let rec = self
            .fetch(c, id, extra)
            .await?
            .ok_or(Error::Forbidden(None))?;
        self.present(c, &rec, &rq.fields(), allowed).await
    }

    /// `GET /users/me`.
    pub async fn me(&self, acc: &Accountability, rq: &ReadQuery) -> Result<Me> {
        let user = acc.user.ok_or(Error::InvalidCredentials)?;
        let Ok(scope) = self.scope(&USERS, acc) else {
            return Ok(Me::IdOnly(user));
        };
        let allowed = match scope {
            Scope::Full => None,
            Scope::Partial { fields, .. } => fields,
        };
        let fields = rq.fields();
        let key = (user, fields.clone(), allowed.is_some());
        let answer = self
            .caches
            .get_or_load(Cached::Me, &self.caches.me, key, async {
                let id = user.to_string();
                let rec = self
                    .caches
                    .get_or_load(Cached::Users, &self.caches.users, id.clone(), async {
                        Ok(self.fetch(&USERS, &id, None).await?.map(Arc::new))
                    })
                    .await?;
                let Some(rec) = rec else { return Ok(None) };
                let value = self.present(&USERS, &rec, &fields, allowed).await?;
                let json =
                    serde_json::to_string(&value).map_err(|e| Error::Internal(e.to_string()))?;
                Ok(Some(Arc::from(json)))
            })
            .await;
        match answer {
            Ok(Some(json)) => Ok(Me::Json(json)),
            Ok(None) | Err(Error::Forbidden(_)) => Ok(Me::IdOnly(user)),
            Err(e) => Err(e),
        }
    }

    /// Checks a write body against the collection and converts it to stored values. Nulls
    /// for `NOT NULL` fields, and required fields missing from a new item, fail validation
    /// together, before anything else is looked at (as Directus does, admins included).
    async fn values(
        &self,
        c: &'static Collection,
        body: &Value,
        creating: bool,
    ) -> Result<Vec<(&'static Field, Value)>> {
        let obj = body
            .as_object()
            .ok_or_else(|| Error::payload("Payload must be an object"))?;
        Self::check_nulls(c, obj, creating)?;
        let mut out = Vec::new();
        for (key, v) in obj {
            if key == "tfa_secret" && c.name == "directus_users" {
                return Err(Error::payload(
                    "You can't change the \"tfa_secret\" value manually",
                ));
            }
            let Some(field) = c.field(key) else { continue };
            if key == "id" {
                if creating && !v.is_null() {
                    let id = v
                        .as_str()
                        .filter(|s| Uuid::parse_str(s).is_ok())
                        .ok_or_else(|| Error::payload("\"id\" must be a valid GUID"))?;
                    out.push((field, Value::String(id.to_owned())));
                }
                continue;
            }
            if !field.writable {
                continue;
            }
            let value = self.check_value(field, key, v).await?;
            if let Some(value) = value {
                out.push((field, value));
            }
        }
        Ok(out)
    }

    /// Refuses null for fields whose column is `NOT NULL`, and (on create) the absence of a
    /// field that has no default: every such field is reported, in schema order.
    fn check_nulls(
        c: &'static Collection,
        body: &Map<String, Value>,
        creating: bool,
    ) -> Result<()> {
        let violations: Vec<Violation> = c
            .fields
            .iter()
            .filter(|f| f.writable && f.nulls != Nulls::Allowed)
            .filter_map(|f| match (body.get(f.name), f.nulls) {
                (Some(Value::Null), _) => Some((f.name, "nnull", "Value can't be null.")),
                (None, Nulls::Required) if creating => {
                    Some((f.name, "required", "Value is required."))
                }
                _ => None,
            })
            .map(|(field, rule, detail)| Violation {
                field: field.to_owned(),
                rule,
                detail: detail.to_owned(),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::FailedValidation(violations))
        }
    }

    /// One field's value, or `None` when Directus would drop it (an empty password).
    async fn check_value(
        &self,
        field: &'static Field,
        key: &str,
        v: &Value,
    ) -> Result<Option<Value>> {
        let must = |what: &str| Error::payload(format!("\"{key}\" must be {what}"));
        Ok(Some(match (field.kind, v) {
            (Kind::Hash, Value::Null) => return Ok(None),
            (Kind::Hash, Value::String(s)) if s.is_empty() => return Ok(None),
            (Kind::Hash, Value::String(s)) => {
                self.check_password_policy(s).await?;
                Value::String(self.passwords.hash(s.clone()).await?)
            }
            (Kind::Hash, _) => return Err(must("a string")),
            (Kind::Digest, Value::Null) => Value::Null,
            (Kind::Digest, Value::String(s)) if s.is_empty() => Value::Null,
            (Kind::Digest, Value::String(s)) => Value::String(digest(s)),
            (Kind::Digest, _) => return Err(must("a string")),
            (_, Value::Null) => Value::Null,
            (_, Value::String(s)) if !storable(s) => {
                return Err(must("text without NUL characters"));
            }
            (Kind::Json, v) => v.clone(),
            (Kind::Boolean, Value::Bool(_)) => v.clone(),
            (Kind::Boolean, _) => return Err(must("a boolean")),
            (Kind::Integer, Value::Number(n)) if n.is_i64() => v.clone(),
            (Kind::Integer, _) => return Err(must("an integer")),
            (Kind::Uuid, Value::String(s)) if Uuid::parse_str(s).is_ok() => v.clone(),
            (Kind::Uuid, _) => return Err(must("a valid GUID")),
            (_, Value::String(_)) => v.clone(),
            _ => return Err(must("a string")),
        }))
    }

    async fn check_password_policy(&self, password: &str) -> Result<()> {
        let settings = self.store.settings().await?;
        let Some(policy) = settings
            .get("auth_password_policy")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        else {
            return Ok(());
        };
        let re = compile_policy(policy)
            .map_err(|e| Error::Internal(format!("stored password policy: {e}")))?;
        if re.is_match(password).unwrap_or(false) {
            Ok(())
        } else {
            // Unlike Directus, the submitted password is not echoed back (architecture
            // decision 4, ADR 0002).
            Err(Error::invalid_field(
                "password",
                "regex",
                "Value doesn't have the correct format.",
            ))
        }
    }

    /// Refuses a `parent` that is the role itself or one of its descendants.
    async fn check_no_cycle(&self, id: &str, values: &[(&'static Field, Value)]) -> Result<()> {
        let Some(parent) = values
            .iter()
            .find(|(f, _)| f.name == "parent")
            .and_then(|(_, v)| v.as_str())
            .and_then(|p| Uuid::parse_str(p).ok())
        else {
            return Ok(());
        };
        let ancestors = crate::access::tree(&*self.store, Some(parent), None)
            .await?
            .roles;
        if parent.to_string() == id || ancestors.iter().any(|a| a.to_string() == id) {
            return Err(Error::payload(
                "\"parent\" can't be the role itself or one of its descendants",
            ));
        }
        Ok(())
    }

    fn check_user_values(values: &[(&'static Field, Value)]) -> Result<()> {
        for (f, v) in values {
            match (f.name, v) {
                ("email", Value::String(s)) if !is_email(s) => {
                    return Err(Error::invalid_field(
                        "email",
                        "email",
                        "Value has to be a valid email address.",
                    ));
                }
                ("status", Value::String(s)) if !STATUSES.contains(&s.as_str()) => {
                    return Err(Error::payload(format!(
                        "\"status\" must be one of [{}]",
                        STATUSES.join(", ")
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a write committed: forget what this instance cached and tell the others.
    async fn changed(&self) {
        self.caches.invalidate();
        crate::cache::announce(&*self.store, Change::Everything).await;
    }

    fn map_conflict(
        c: &'static Collection,
        values: &[(&'static Field, Value)],
        e: StoreError,
    ) -> Error {
        match e {
            StoreError::Conflict { field } if field != "token" => {
                let value = values
                    .iter()
                    .find(|(f, _)| f.name == field)
                    .and_then(|(_, v)| v.as_str())
                    .map(|s| {
                        if field == "email" {
                            format!("[{}]", s.to_lowercase())
                        } else {
                            s.to_owned()
                        }
                    })
                    .unwrap_or_default();
                Error::RecordNotUnique {
                    collection: c.name,
                    field: field.to_owned(),
                    value,
                }
            }
            StoreError::Refused => Error::UnprocessableContent(
                "Cannot remove the last admin user from the system".into(),
            ),
            other => other.into(),
        }
    }

    /// `POST /<collection>` for one item; returns the new id.
    pub async fn create(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        body: &Value,
    ) -> Result<String> {
        Self::require_admin(c, acc)?;
        let mut values = self.values(c, body, true).await?;
        if c.name == "directus_users" {
            Self::check_user_values(&values)?;
        }
        let id = match values.iter().find(|(f, _)| f.name == "id") {
            Some((_, v)) => v.as_str().unwrap_or_default().to_owned(),
            None => {
                let id = Uuid::new_v4().to_string();
                values.insert(0, (id_field(c), Value::String(id.clone())));
                id
            }
        };
        let insert = Write::Insert {
            c,
            values: values.clone(),
        };
        self.store
            .write(vec![insert], None)
            .await
            .map_err(|e| Self::map_conflict(c, &values, e))?;
        self.changed().await;
        Ok(id)
    }

    /// `PATCH /<collection>/:id`. A missing item is FORBIDDEN, as in Directus.
    pub async fn update(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        Self::require_admin(c, acc)?;
        if !storable(id) {
            return Err(Error::Forbidden(None));
        }
        self.update_unchecked(c, acc, id, body).await
    }

    /// `PATCH /users/me`: the caller's own row, with the same rules.
    pub async fn update_me(&self, acc: &Accountability, body: &Value) -> Result<Uuid> {
        let user = acc.user.ok_or(Error::InvalidCredentials)?;
        Self::require_admin(&USERS, acc)?;
        self.update_unchecked(&USERS, acc, &user.to_string(), body)
            .await?;
        Ok(user)
    }

    async fn update_unchecked(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        let values = self.values(c, body, false).await?;
        if c.name == "directus_roles" {
            self.check_no_cycle(id, &values).await?;
        }
        let mut end = EndSessions::None;
        if c.name == "directus_users" {
            Self::check_user_values(&values)?;
            let changes = |n: &str| values.iter().any(|(f, _)| f.name == n);
            let deactivates = values
                .iter()
                .any(|(f, v)| f.name == "status" && v.as_str() != Some("active"));
            if deactivates {
                end = EndSessions::All;
            } else if changes("password") || changes("email") {
                end = match &acc.session {
                    Some(s) if acc.user.map(|u| u.to_string()).as_deref() == Some(id) => {
                        EndSessions::AllExcept(*s)
                    }
                    _ => EndSessions::All,
                };
            }
        }
        let guard = admin_guard(c, &values);
        let update = Write::Update {
            c,
            id: id.to_owned(),
            values: values.clone(),
            end,
        };
        let found = self
            .store
            .write(vec![update], guard)
            .await
            .map_err(|e| Self::map_conflict(c, &values, e))?;
        if found.first() != Some(&true) {
            return Err(Error::Forbidden(None));
        }
        // Whoever (re)activates a user forgives its failed logins and lifts a login lock.
        let activates = values
            .iter()
            .any(|(f, v)| f.name == "status" && v.as_str() == Some("active"));
        if c.name == "directus_users"
            && activates
            && let Ok(uid) = Uuid::parse_str(id)
        {
            self.store.clear_login_failures(uid).await?;
        }
        self.changed().await;
        Ok(())
    }

    /// `DELETE /<collection>/:id`. Deleting a role suspends its users and detaches them, as
    /// Directus 11 does.
    pub async fn delete(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        id: &str,
    ) -> Result<()> {
        Self::require_admin(c, acc)?;
        if !storable(id) {
            return Err(Error::Forbidden(None));
        }
        let mut writes = Vec::new();
        if c.name == "directus_roles" {
            let role = USERS.field("role").ok_or(Error::Forbidden(None))?;
            let status = USERS.field("status").ok_or(Error::Forbidden(None))?;
            let q = Query {
                filter: Some(Condition::Compare {
                    field: role,
                    op: Op::Eq,
                    value: id.into(),
                }),
                ..Query::default()
            };
            for user in self.store.read_items(&USERS, &q).await? {
                if let Some(uid) = user.get("id").and_then(Value::as_str) {
                    writes.push(Write::Update {
                        c: &USERS,
                        id: uid.to_owned(),
                        values: vec![(status, "suspended".into()), (role, Value::Null)],
                        end: EndSessions::All,
                    });
                }
            }
        }
        writes.push(Write::Delete { c, id: id.into() });
        let found = self
            .store
            .write(writes, admin_guard(c, &[]))
            .await
            .map_err(|e| Self::map_conflict(c, &[], e))?;
        if found.last() != Some(&true) {
            return Err(Error::Forbidden(None));
        }
        self.changed().await;
        Ok(())
    }

    /// `GET /settings`: the singleton.
    pub async fn settings(&self, acc: &Accountability, rq: &ReadQuery) -> Result<Value> {
        Self::require_admin(&SETTINGS, acc)?;
        let rec = self.store.settings().await?;
        self.present(&SETTINGS, &rec, &rq.fields(), None).await
    }

    /// `PATCH /settings`.
    pub async fn update_settings(&self, acc: &Accountability, body: &Value) -> Result<()> {
        Self::require_admin(&SETTINGS, acc)?;
        let values = self.values(&SETTINGS, body, false).await?;
        for (f, v) in &values {
            match (f.name, v) {
                ("auth_login_attempts", Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
                    return Err(Error::payload(
                        "\"auth_login_attempts\" must be greater than or equal to 0",
                    ));
                }
                ("auth_password_policy", Value::String(p)) if !p.is_empty() => {
                    compile_policy(p).map_err(|e| {
                        Error::payload(format!(
                            "\"auth_password_policy\" must be a valid regular expression ({e})"
                        ))
                    })?;
                }
                _ => {}
            }
        }
        let update = Write::Update {
            c: &SETTINGS,
            id: "1".into(),
            values,
            end: EndSessions::None,
        };
        self.store.write(vec![update], None).await?;
        Ok(())
    }
}

/// Whether text can be stored and compared at all: no NUL characters (PostgreSQL refuses them
/// in text, so no engine is given one).
pub(crate) fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// The guard of a write that may take admin access away from someone: deleting a user, role
/// or policy, or changing a user's status or role, a role's parent, or a policy's admin flag.
fn admin_guard(
    c: &'static Collection,
    values: &[(&'static Field, Value)],
) -> Option<Box<dyn Guard>> {
    let touches =
        |names: &[&str]| values.is_empty() || values.iter().any(|(f, _)| names.contains(&f.name));
    let guarded = match c.name {
        "directus_users" => touches(&["status", "role"]),
        "directus_roles" => touches(&["parent"]),
        "directus_policies" => touches(&["admin_access"]),
        _ => false,
    };
    guarded.then(|| Box::new(AdminRemains { before: false }) as Box<dyn Guard>)
}

/// Refuses a write after which no active admin remains where one did before (as Directus
/// refuses to remove the last admin). Runs inside the write's transaction, serialised with
/// every other guarded write, so two demotions racing cannot both pass.
struct AdminRemains {
    before: bool,
}

impl AdminRemains {
    fn any_admin(r: &mut dyn Reads) -> tessera_store::StoreResult<bool> {
        let Some(status) = USERS.field("status") else {
            return Ok(false);
        };
        let q = Query {
            filter: Some(Condition::Compare {
                field: status,
                op: Op::Eq,
                value: "active".into(),
            }),
            ..Query::default()
        };
        for user in r.read_items(&USERS, &q)? {
            let uid = user
                .get("id")
                .and_then(Value::as_str)
                .and_then(|u| Uuid::parse_str(u).ok());
            let role = user
                .get("role")
                .and_then(Value::as_str)
                .and_then(|r| Uuid::parse_str(r).ok());
            if global_access(&crate::access::tree_in(r, role, uid)?, None).admin {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Guard for AdminRemains {
    fn before(&mut self, r: &mut dyn Reads) -> tessera_store::StoreResult<()> {
        self.before = Self::any_admin(r)?;
        Ok(())
    }

    fn after(self: Box<Self>, r: &mut dyn Reads) -> tessera_store::StoreResult<bool> {
        Ok(!self.before || Self::any_admin(r)?)
    }
}

/// Compiles a password policy, stripping a `/…/flags` wrapper as Directus does.
fn compile_policy(policy: &str) -> std::result::Result<fancy_regex::Regex, String> {
    let body = match policy.strip_prefix('/') {
        Some(rest) => match rest.rfind('/') {
            Some(end) => &rest[..end],
            None => policy,
        },
        None => policy,
    };
    fancy_regex::Regex::new(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::compile_policy;

    #[test]
    fn policies_with_lookaheads_and_slashes() {
        let strong = "/(?=^.{8,}$)(?=.*\\d)(?=.*[a-z])(?=.*[A-Z])(?=.*[!@#$%^&*()_+}{';'?>.<,])(?!.*\\s).*$/";
        let re = compile_policy(strong).unwrap();
        assert!(re.is_match("Abcdef1!").unwrap());
        assert!(!re.is_match("abcdefgh").unwrap());
        let min = compile_policy("^.{8,}$").unwrap();
        assert!(!min.is_match("short").unwrap());
        assert!(compile_policy("(unclosed").is_err());
    }
}
