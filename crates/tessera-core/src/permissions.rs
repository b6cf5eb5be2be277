//! What a request may do, collection by collection and action by action: the permission rows
//! of the policies that apply to it, plus Directus's minimal app permissions when it has app
//! access, in policy order. [`Granted`] holds them as stored (variables unresolved); the item
//! service resolves and merges them per request (filters OR-ed, field lists unioned,
//! validations OR-ed, presets deep-merged with later policies winning).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tessera_store::schema::PERMISSIONS;
use tessera_store::{Condition, Op, Query, Record, Store, StoreResult};
use uuid::Uuid;

/// What a permission row allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    Share,
}

impl Action {
    /// Every action, in the order `/permissions/me` lists them.
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Share,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Share => "share",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One permission row, as stored: dynamic variables not yet resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The items it reaches; `None` when every item (no filter, or `{}`).
    pub filter: Option<Value>,
    /// The fields it reaches; `None` when every field (`*`).
    pub fields: Option<Vec<String>>,
    pub validation: Option<Value>,
    pub presets: Option<Value>,
}

/// A JSON rule column: `None` for null, `{}` or anything that is not an object.
fn rule(v: Option<&Value>) -> Option<Value> {
    v.filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
}

impl Grant {
    /// Reads a stored row. A `fields` of null grants no field; one naming `*` grants all.
    fn from_record(rec: &Record) -> Self {
        let fields = match rec.get("fields") {
            Some(Value::Array(list)) => {
                let names: Vec<String> = list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                if names.iter().any(|n| n == "*") {
                    None
                } else {
                    Some(names)
                }
            }
            _ => Some(Vec::new()),
        };
        Self {
            filter: rule(rec.get("permissions")),
            fields,
            validation: rule(rec.get("validation")),
            presets: rule(rec.get("presets")),
        }
    }

    /// Every JSON value of the row that may name a dynamic variable.
    pub fn rules(&self) -> impl Iterator<Item = &Value> {
        [&self.filter, &self.validation, &self.presets]
            .into_iter()
            .flatten()
    }
}

/// The grants of one set of policies, by collection and action, in policy order.
#[derive(Debug, Default)]
pub struct Granted {
    by: HashMap<(String, Action), Vec<Grant>>,
    /// Collections in the order their first grant came.
    collections: Vec<String>,
}

impl Granted {
    fn add(&mut self, collection: &str, action: Action, grant: Grant) {
        if !self.collections.iter().any(|c| c == collection) {
            self.collections.push(collection.to_owned());
        }
        self.by
            .entry((collection.to_owned(), action))
            .or_default()
            .push(grant);
    }

    /// The grants for one collection and action (none: the action is forbidden).
    pub fn grants(&self, collection: &str, action: Action) -> &[Grant] {
        self.by
            .get(&(collection.to_owned(), action))
            .map_or(&[], Vec::as_slice)
    }

    /// Every collection something is granted on.
    pub fn collections(&self) -> &[String] {
        &self.collections
    }
}

/// Directus's minimal app permissions (`app-access-permissions`) for the collections Tessera
/// serves: one's own user row (limited fields), one's roles, and part of the settings.
fn app_minimal() -> Vec<(&'static str, Action, Grant)> {
    let names = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect());
    vec![
        (
            "directus_users",
            Action::Read,
            Grant {
                filter: Some(json!({"id": {"_eq": "$CURRENT_USER"}})),
                fields: names(&[
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
                    "preferences_divider",
                    "avatar",
                    "language",
                    "appearance",
                    "theme_light",
                    "theme_dark",
                    "tfa_secret",
                    "status",
                    "role",
                ]),
                validation: None,
                presets: None,
            },
        ),
        (
            "directus_roles",
            Action::Read,
            Grant {
                filter: Some(json!({"id": {"_in": "$CURRENT_ROLES"}})),
                fields: None,
                validation: None,
                presets: None,
            },
        ),
        (
            "directus_settings",
            Action::Read,
            Grant {
                filter: None,
                fields: names(&["id", "project_url", "project_logo"]),
                validation: None,
                presets: None,
            },
        ),
    ]
}

/// Reads the permission rows of `policies` (in that order; rows of one policy by id) and adds
/// the minimal app permissions when `app`.
pub async fn load(store: &dyn Store, policies: &[Uuid], app: bool) -> StoreResult<Granted> {
    let mut granted = Granted::default();
    if !policies.is_empty() {
        let (Some(policy), Some(id)) = (PERMISSIONS.field("policy"), PERMISSIONS.field("id"))
        else {
            return Ok(granted);
        };
        let q = Query {
            filter: Some(Condition::Compare {
                field: policy,
                op: Op::In,
                value: policies
                    .iter()
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            }),
            sort: vec![(id, false)],
            ..Query::default()
        };
        let mut rows = store.read_items(&PERMISSIONS, &q).await?;
        let position = |rec: &Record| {
            let p = rec.get("policy").and_then(Value::as_str).unwrap_or("");
            policies
                .iter()
                .position(|id| id.to_string() == p)
                .unwrap_or(usize::MAX)
        };
        rows.sort_by_key(position);
        for rec in &rows {
            let (Some(collection), Some(action)) = (
                rec.get("collection").and_then(Value::as_str),
                rec.get("action")
                    .and_then(Value::as_str)
                    .and_then(Action::parse),
            ) else {
                continue;
            };
            granted.add(collection, action, Grant::from_record(rec));
        }
    }
    if app {
        for (collection, action, grant) in app_minimal() {
            granted.add(collection, action, grant);
        }
    }
    Ok(granted)
}

/// Merges `more` into `into` deeply: objects merge key by key, anything else in `more` wins
/// (as Directus merges presets across policies).
pub fn merge_presets(into: &mut Map<String, Value>, more: &Map<String, Value>) {
    for (k, v) in more {
        match (into.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => merge_presets(old, new),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `GET /permissions/me` for a non-admin: per collection granted anything, each action as
/// `{access: none|full|partial, fields?, presets?}` (partial as soon as one row has an item
/// filter; fields unioned, `["*"]` when any row has all).
pub fn summary(granted: &Granted) -> Value {
    let mut out = Map::new();
    for collection in granted.collections() {
        let mut actions = Map::new();
        for action in Action::ALL {
            let grants = granted.grants(collection, action);
            let mut entry = Map::new();
            let access = if grants.is_empty() {
                "none"
            } else if grants.iter().any(|g| g.filter.is_some()) {
                "partial"
            } else {
                "full"
            };
            entry.insert("access".into(), access.into());
            if !grants.is_empty() {
                let fields: Vec<Value> = if grants.iter().any(|g| g.fields.is_none()) {
                    vec!["*".into()]
                } else {
                    let mut names: Vec<&str> = Vec::new();
                    for n in grants.iter().flat_map(|g| g.fields.iter().flatten()) {
                        if !names.contains(&n.as_str()) {
                            names.push(n);
                        }
                    }
                    names.into_iter().map(Value::from).collect()
                };
                entry.insert("fields".into(), Value::Array(fields));
                let mut presets = Map::new();
                for p in grants.iter().filter_map(|g| g.presets.as_ref()) {
                    if let Some(o) = p.as_object() {
                        merge_presets(&mut presets, o);
                    }
                }
                if !presets.is_empty() {
                    entry.insert("presets".into(), Value::Object(presets));
                }
            }
            actions.insert(action.name().into(), Value::Object(entry));
        }
        out.insert(collection.clone(), Value::Object(actions));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: Value, permissions: Value) -> Record {
        let mut r = Record::new();
        r.insert("fields".into(), fields);
        r.insert("permissions".into(), permissions);
        r
    }

    #[test]
    fn stored_rows_read_as_grants() {
        let all = Grant::from_record(&row(json!(["*"]), json!({})));
        assert_eq!(all.fields, None);
        assert_eq!(all.filter, None);
        let some = Grant::from_record(&row(
            json!(["id", "email"]),
            json!({"id": {"_eq": "$CURRENT_USER"}}),
        ));
        assert_eq!(some.fields, Some(vec!["id".into(), "email".into()]));
        assert!(some.filter.is_some());
        let none = Grant::from_record(&row(Value::Null, Value::Null));
        assert_eq!(none.fields, Some(Vec::new()));
    }

    #[test]
    fn presets_merge_deeply_later_values_winning() {
        let mut into = json!({"a": 1, "o": {"x": 1, "y": 1}})
            .as_object()
            .cloned()
            .unwrap();
        let more = json!({"b": 2, "o": {"y": 2, "z": 2}})
            .as_object()
            .cloned()
            .unwrap();
        merge_presets(&mut into, &more);
        assert_eq!(
            Value::Object(into),
            json!({"a": 1, "b": 2, "o": {"x": 1, "y": 2, "z": 2}})
        );
    }

    #[test]
    fn summary_is_partial_once_any_row_filters() {
        let mut g = Granted::default();
        g.add(
            "directus_users",
            Action::Read,
            Grant::from_record(&row(json!(["*"]), Value::Null)),
        );
        g.add(
            "directus_users",
            Action::Read,
            Grant::from_record(&row(json!(["id"]), json!({"id": {"_eq": 1}}))),
        );
        let s = summary(&g);
        assert_eq!(s["directus_users"]["read"]["access"], "partial");
        assert_eq!(s["directus_users"]["read"]["fields"], json!(["*"]));
        assert_eq!(s["directus_users"]["create"], json!({"access": "none"}));
    }
}
