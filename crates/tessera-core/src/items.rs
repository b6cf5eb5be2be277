//! The item service: reads and writes of the collections the item routes serve (users, roles,
//! policies, access, permissions, settings), each checked against the caller's permissions
//! ([`crate::rules`]): the items a rule reaches, the fields it shows or lets a write set,
//! validations and presets. It also owns how `fields` shapes an answer (concealed secrets,
//! timestamps, alias lists, nested relations, fields shown on some items only), how a write
//! body becomes stored values (hashed passwords, token digests, ended sessions), nested
//! `policies` writes, the batch forms of update and delete, and the invariants every write
//! keeps (no role cycle, an admin remains).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value, json};
use tessera_proto::CONCEALED;
use tessera_store::schema::{ACCESS, COLLECTIONS, PERMISSIONS, ROLES, SETTINGS, USERS};
use tessera_store::{
    Change, Collection, Condition, EndSessions, Field, Guard, Kind, Nulls, Op, Query, Reads,
    Record, Relation, Store, StoreError, Values, Write, Written,
};
use uuid::Uuid;

use crate::access::Accountability;
use crate::cache::Caches;
use crate::clock::{Clock, iso8601};
use crate::error::{Error, Result, Violation};
use crate::password::Passwords;
use crate::permissions::{self, Action, Granted};
use crate::query::{Fields, ReadQuery, Vars, and, compile, filter_fields, path_variables};
use crate::rules::Rule;
use crate::tally::Cached;
use crate::tokens::digest;
use crate::validate::is_email;

const STATUSES: &[&str] = &[
    "draft",
    "invited",
    "unverified",
    "active",
    "suspended",
    "archived",
];

/// What `GET /users/me` answers.
pub enum Me {
    /// The serialised record (the `data` of the answer).
    Json(Arc<str>),
    /// Reading is forbidden: Directus answers `{id}` only.
    IdOnly(Uuid),
}

/// The rule of an administrator: every item, every field.
static FULL: LazyLock<Arc<Rule>> = LazyLock::new(|| {
    Arc::new(Rule {
        filter: None,
        fields: None,
        everywhere: None,
        common: None,
        cases: Vec::new(),
        validations: Vec::new(),
        presets: Map::new(),
    })
});

/// How many fields a dynamic variable in a caller's own query may follow
/// (`$CURRENT_USER.role.name` follows two).
const CALLER_PATH_DEPTH: usize = 2;

/// The most items one batch may name.
const MAX_BATCH_KEYS: usize = 10_000;

/// A `deep` that asks nothing.
/// Where the plain alias list of item `key` is cached.
fn alias_key(alias: &'static Relation, key: &str) -> (&'static str, String) {
    (
        alias.name,
        format!("{}.{}:{key}", alias.target.table, alias.remote),
    )
}

static NO_DEEP: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// How many linked items a one-to-many alias (a role's `users`, a user's `policies`) lists
/// per item unless `deep[<alias>][_limit]` says otherwise: Directus's `QUERY_LIMIT_DEFAULT`,
/// which it applies to nested lists as well. A role of a million users lists a hundred.
const ALIAS_LIMIT: u64 = 100;

/// Who reads on the service's own behalf (dynamic variable lookups).
fn system() -> Accountability {
    Accountability {
        admin: true,
        app: true,
        ..Accountability::default()
    }
}

/// An item key as text (integer keys as their digits).
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `key` can name an item of `c` at all (a number for integer keys; no NUL).
fn valid_key(c: &'static Collection, key: &str) -> bool {
    match c.key().kind {
        Kind::Integer => key.parse::<i64>().is_ok(),
        Kind::Uuid => Uuid::parse_str(key).is_ok(),
        _ => storable(key),
    }
}

/// Refuses a batch naming more items than one statement may bind.
fn check_batch_size(count: usize) -> Result<()> {
    if count > MAX_BATCH_KEYS {
        return Err(Error::payload(format!(
            "A batch may name at most {MAX_BATCH_KEYS} items"
        )));
    }
    Ok(())
}

/// The items of `c` whose key is one of `keys` (all valid for `c`).
fn by_keys(c: &'static Collection, keys: &[String]) -> Condition {
    let key = c.key();
    let values = keys
        .iter()
        .map(|k| match key.kind {
            Kind::Integer => k.parse::<i64>().map_or(Value::Null, Value::from),
            _ => Value::String(k.clone()),
        })
        .collect();
    Condition::Compare {
        field: key,
        op: Op::In,
        value: Value::Array(values),
    }
}

fn object(v: &Value) -> Result<&Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::payload("Payload must be an object"))
}

/// Refuses a selection naming fields the rule never shows.
fn check_selection(c: &'static Collection, rule: &Rule, sel: &Fields) -> Result<()> {
    for n in sel.names.iter().chain(sel.nested.keys()) {
        if !c.has(n) || !rule.may(n) {
            return Err(Error::forbidden_field(n, c.name));
        }
    }
    Ok(())
}

/// Walks a dotted path through a presented value (lists map over their items).
fn walk(v: &Value, path: &str) -> Value {
    path.split('.').fold(v.clone(), |v, seg| match v {
        Value::Object(o) => o.get(seg).cloned().unwrap_or(Value::Null),
        Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, seg)).collect()),
        _ => Value::Null,
    })
}

/// The keys a batch update or delete names.
enum Batch {
    Keys(Vec<Value>),
    Query(Box<ReadQuery>),
}

/// The item service.
#[derive(Clone)]
pub struct Items {
    store: Arc<dyn Store>,
    passwords: Passwords,
    caches: Caches,
    clock: Arc<dyn Clock>,
}

impl Items {
    pub fn new(
        store: Arc<dyn Store>,
        passwords: Passwords,
        caches: Caches,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            passwords,
            caches,
            clock,
        }
    }

    /// The permission rows of the caller's policies.
    async fn granted(&self, acc: &Accountability) -> Result<Arc<Granted>> {
        let key = (acc.policies.clone(), acc.app);
        self.caches
            .get_or_load(Cached::Permissions, &self.caches.permissions, key, async {
                Ok(Arc::new(
                    permissions::load(&*self.store, &acc.policies, acc.app).await?,
                ))
            })
            .await
    }

    /// The variables of the caller, with the path variables `values` name looked up: as the
    /// service for permission rules (an admin wrote them), as the caller itself for its own
    /// queries (so that a variable reads nothing the caller could not read, and no further
    /// than [`CALLER_PATH_DEPTH`]).
    async fn vars<'a>(
        &self,
        acc: &Accountability,
        values: impl Iterator<Item = &'a Value>,
        as_caller: bool,
    ) -> Result<Vars> {
        let mut vars = Vars::of(acc, self.clock.now_ms());
        let mut names = Vec::new();
        values.for_each(|v| path_variables(v, &mut names));
        for name in names {
            if as_caller && name.matches('.').count() > CALLER_PATH_DEPTH {
                return Err(Error::InvalidQuery(format!(
                    "Dynamic variables in a query may follow at most {CALLER_PATH_DEPTH} fields"
                )));
            }
            let value = self.lookup(acc, &name, as_caller).await?;
            vars.paths.insert(name, value);
        }
        Ok(vars)
    }

    /// The value of a path variable such as `$CURRENT_USER.role.name` (a list for
    /// `$CURRENT_ROLES.…` and `$CURRENT_POLICIES.…`).
    async fn lookup(&self, acc: &Accountability, name: &str, as_caller: bool) -> Result<Value> {
        let Some((base, path)) = name.split_once('.') else {
            return Ok(Value::Null);
        };
        let one = |id: Option<Uuid>| id.into_iter().map(|u| u.to_string()).collect();
        let many = |ids: &[Uuid]| ids.iter().map(Uuid::to_string).collect();
        let (c, keys, list): (&'static Collection, Vec<String>, bool) = match base {
            "$CURRENT_USER" => (&USERS, one(acc.user), false),
            "$CURRENT_ROLE" => (&ROLES, one(acc.role), false),
            "$CURRENT_ROLES" => (&ROLES, many(&acc.roles), true),
            "$CURRENT_POLICIES" => (&tessera_store::schema::POLICIES, many(&acc.policies), true),
            _ => return Ok(Value::Null),
        };
        let Ok(sel) = Fields::parse(path) else {
            return Ok(Value::Null);
        };
        if keys.is_empty() {
            return Ok(if list { json!([]) } else { Value::Null });
        }
        let service = system();
        let (reader, rule) = if as_caller {
            match Box::pin(self.rule(c, acc, Action::Read)).await? {
                Some(rule) => (acc, rule),
                None => return Ok(if list { json!([]) } else { Value::Null }),
            }
        } else {
            (&service, FULL.clone())
        };
        let q = Query {
            filter: Some(and(rule.filter.clone(), by_keys(c, &keys))),
            ..Query::default()
        };
        let recs = self.store.read_items(c, &q).await?;
        let found = match Box::pin(self.present_all(c, reader, &rule, &recs, &sel, &NO_DEEP)).await
        {
            Ok(found) => found,
            // A path naming no field resolves to nothing, as in Directus.
            Err(Error::Forbidden(_)) => return Ok(Value::Null),
            Err(e) => return Err(e),
        };
        let values: Vec<Value> = found.iter().map(|v| walk(v, path)).collect();
        Ok(if list {
            Value::Array(values)
        } else {
            values.into_iter().next().unwrap_or(Value::Null)
        })
    }

    /// The caller's rule for one collection and action; `None` when nothing is granted.
    async fn rule(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        action: Action,
    ) -> Result<Option<Arc<Rule>>> {
        if acc.admin {
            return Ok(Some(FULL.clone()));
        }
        let granted = self.granted(acc).await?;
        let grants = granted.grants(c.name, action);
        if grants.is_empty() {
            return Ok(None);
        }
        let load = async {
            let vars = self
                .vars(acc, grants.iter().flat_map(|g| g.rules()), false)
                .await?;
            Ok(Rule::resolve(c, grants, &vars).map(Arc::new))
        };
        // A rule that names the time is resolved afresh for every request.
        let timed = grants
            .iter()
            .flat_map(|g| g.rules())
            .any(|v| v.to_string().contains("$NOW"));
        if timed {
            return load.await;
        }
        let key = (
            acc.user,
            acc.role,
            acc.policies.clone(),
            acc.app,
            c.name,
            action,
        );
        self.caches
            .get_or_load(Cached::Rules, &self.caches.rules, key, load)
            .await
    }

    /// Whether the caller may do `action` on some items of `c` (what the API description
    /// shows it).
    pub async fn allows(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        action: Action,
    ) -> Result<bool> {
        Ok(self.rule(c, acc, action).await?.is_some())
    }

    /// Whether the caller may write `field` of item `key` (as an update naming only it would
    /// be checked): the 403 Directus answers, or nothing.
    pub async fn permit_field(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        key: &str,
        field: &str,
    ) -> Result<()> {
        let rule = self.permitted(c, acc, Action::Update).await?;
        rule.check_write(c.name, &[field])?;
        let keys = [key.to_owned()];
        self.check_reach(c, acc, &rule, Action::Update, &keys)
            .await?;
        if !rule.cases.is_empty() {
            self.check_item_fields(c, &rule, &keys, &[field]).await?;
        }
        Ok(())
    }

    /// The caller's rule, or the 403 Directus answers when nothing is granted for the action
    /// (worded as for a read: Directus builds its check as a query on the collection).
    async fn permitted(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        action: Action,
    ) -> Result<Arc<Rule>> {
        self.rule(c, acc, action)
            .await?
            .ok_or_else(|| Error::forbidden_collection(c.name))
    }

    /// Checks a read query's filter and sort against what the caller may read, and builds
    /// the store query (the rule's filter not yet applied). Filters, sorts and `search` may
    /// use only fields shown on every item the caller can reach, so that they tell nothing of
    /// a value hidden from it; a filter through a relation reaches only the related items the
    /// caller may read.
    async fn check_query(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        rq: &ReadQuery,
    ) -> Result<Query> {
        if let Some(filter) = &rq.filter {
            let mut used = Vec::new();
            filter_fields(c, filter, &mut used);
            for (coll, name) in used {
                let allowed = if coll.name == c.name {
                    rule.may_query(&name) || !coll.has(&name)
                } else {
                    self.rule(coll, acc, Action::Read)
                        .await?
                        .is_some_and(|r| r.may_query(&name) || !coll.has(&name))
                };
                if !allowed {
                    return Err(Error::forbidden_field(&name, coll.name));
                }
            }
        }
        for s in &rq.sort {
            let name = s.strip_prefix('-').unwrap_or(s);
            if !rule.may_query(name) {
                return Err(Error::forbidden_field(name, c.name));
            }
            if c.field(name).is_some_and(|f| f.kind.is_concealed()) {
                return Err(Error::InvalidQuery(format!(
                    "Field \"{name}\" is concealed and can't be sorted on"
                )));
            }
        }
        let vars = self.vars(acc, rq.filter.iter(), true).await?;
        let mut q = rq.to_store_query(c, &vars, &|n| rule.may_query(n))?;
        if !acc.admin
            && let Some(filter) = q.filter.take()
        {
            q.filter = Some(self.within_reach(acc, filter).await?);
        }
        Ok(q)
    }

    /// A caller's filter with every relation it follows limited to the related items the
    /// caller may read.
    async fn within_reach(&self, acc: &Accountability, cond: Condition) -> Result<Condition> {
        let mut targets = Vec::new();
        related_targets(&cond, &mut targets);
        let mut rules = Vec::new();
        for target in targets {
            let rule = self.permitted(target, acc, Action::Read).await?;
            rules.push((target.name, rule));
        }
        Ok(limit_relations(cond, &rules))
    }

    /// Presents stored records per `fields` under `rule`: each item shows the fields the
    /// rule grants on it (the others read as null).
    async fn present_all(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        recs: &[Record],
        sel: &Fields,
        deep: &Map<String, Value>,
    ) -> Result<Vec<Value>> {
        check_selection(c, rule, sel)?;
        let key = c.key();
        let keys: Vec<String> = recs
            .iter()
            .map(|r| r.get(key.name).map(key_text).unwrap_or_default())
            .collect();
        let shown = self.shown_per_item(c, rule, &keys).await?;
        self.prefetch_aliases(c, acc, &keys, sel, deep).await?;
        let mut out = Vec::with_capacity(recs.len());
        for (rec, shown) in recs.iter().zip(&shown) {
            out.push(
                self.present(c, acc, rec, sel, deep, shown.as_deref())
                    .await?,
            );
        }
        Ok(out)
    }

    /// Reads the plain alias lists (keys only, no filter, no `deep`) of many items in one
    /// statement per alias into the cache, where `read_alias` then finds them, instead of one
    /// read per item.
    async fn prefetch_aliases(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        keys: &[String],
        sel: &Fields,
        deep: &Map<String, Value>,
    ) -> Result<()> {
        if keys.len() < 2 {
            return Ok(());
        }
        for alias in c.aliases() {
            let asked = sel.all || sel.names.iter().any(|n| n == alias.name);
            if !asked || sel.nested.contains_key(alias.name) || deep.contains_key(alias.name) {
                continue;
            }
            let Some(rule) = self.rule(alias.target, acc, Action::Read).await? else {
                continue;
            };
            if rule.filter.is_some() {
                continue;
            }
            let missing: Vec<String> = keys
                .iter()
                .filter(|k| !self.caches.aliases.contains_key(&alias_key(alias, k)))
                .cloned()
                .collect();
            if missing.is_empty() {
                continue;
            }
            self.caches
                .fill(&self.caches.aliases, async {
                    let mut found = self
                        .store
                        .alias_values_of(alias, &missing, ALIAS_LIMIT)
                        .await?;
                    Ok(missing
                        .iter()
                        .map(|k| {
                            let list = found.remove(k).unwrap_or_default();
                            (alias_key(alias, k), Arc::new(list))
                        })
                        .collect())
                })
                .await?;
        }
        Ok(())
    }

    /// Shapes one record: conceals secrets, formats timestamps, expands aliases and nested
    /// relations; fields outside `shown` read as null.
    async fn present(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rec: &Record,
        sel: &Fields,
        deep: &Map<String, Value>,
        shown: Option<&[String]>,
    ) -> Result<Value> {
        let key = rec.get(c.key().name).map(key_text).unwrap_or_default();
        let key = key.as_str();
        let visible = |n: &str| shown.is_none_or(|s| s.iter().any(|x| x == n));
        let mut names: Vec<&str> = Vec::new();
        if sel.all {
            names.extend(c.fields.iter().map(|f| f.name).filter(|n| visible(n)));
            names.extend(c.aliases().map(|a| a.name).filter(|n| visible(n)));
        }
        for n in sel.names.iter().chain(sel.nested.keys()) {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut out = Map::new();
        for name in names {
            let value = if !visible(name) {
                Value::Null
            } else if let Some(alias) = c.alias(name) {
                {
                    let level = deep.get(name).and_then(Value::as_object);
                    Box::pin(self.read_alias(acc, alias, key, sel.nested.get(name), level)).await?
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
                    _ => match (sel.nested.get(name), c.relation(name)) {
                        (Some(sub), Some(rel)) => {
                            let level = deep
                                .get(name)
                                .and_then(Value::as_object)
                                .unwrap_or(&NO_DEEP);
                            Box::pin(self.read_related(acc, rel, &key_text(&raw), sub, level))
                                .await?
                        }
                        _ => raw,
                    },
                }
            };
            out.insert(name.to_owned(), value);
        }
        Ok(Value::Object(out))
    }

    /// The item a many-to-one field points at, as the caller may read it (null when it may
    /// not).
    async fn read_related(
        &self,
        acc: &Accountability,
        rel: &'static Relation,
        fk: &str,
        sel: &Fields,
        deep: &Map<String, Value>,
    ) -> Result<Value> {
        let target = rel.target;
        let rule = self.permitted(target, acc, Action::Read).await?;
        check_selection(target, &rule, sel)?;
        if !valid_key(target, fk) {
            return Ok(Value::Null);
        }
        let q = Query {
            filter: Some(and(rule.filter.clone(), by_keys(target, &[fk.to_owned()]))),
            limit: Some(1),
            ..Query::default()
        };
        let recs = self.store.read_items(target, &q).await?;
        let mut found = self
            .present_all(target, acc, &rule, &recs, sel, deep)
            .await?;
        Ok(found.pop().unwrap_or(Value::Null))
    }

    /// A one-to-many alias of item `key`: the keys of the linked items the caller may read,
    /// or those items themselves when `sel` asks into them.
    async fn read_alias(
        &self,
        acc: &Accountability,
        alias: &'static Relation,
        key: &str,
        sel: Option<&Fields>,
        deep: Option<&Map<String, Value>>,
    ) -> Result<Value> {
        let target = alias.target;
        let Some(rule) = self.rule(target, acc, Action::Read).await? else {
            return match sel {
                Some(_) => Err(Error::forbidden_collection(target.name)),
                None => Ok(json!([])),
            };
        };
        let Some(remote) = target.field(alias.remote) else {
            return Ok(json!([]));
        };
        if sel.is_none() && rule.filter.is_none() && deep.is_none() {
            let values = self
                .caches
                .get_or_load(
                    Cached::Aliases,
                    &self.caches.aliases,
                    alias_key(alias, key),
                    async {
                        Ok(Arc::new(
                            self.store
                                .alias_values(alias, key, Some(ALIAS_LIMIT))
                                .await?,
                        ))
                    },
                )
                .await?;
            return Ok(Value::Array(values.as_ref().clone()));
        }
        let asked = match deep {
            Some(level) => self.deep_query(target, acc, &rule, level).await?,
            None => Query {
                limit: Some(ALIAS_LIMIT),
                ..Query::default()
            },
        };
        let linked = Condition::Compare {
            field: remote,
            op: Op::Eq,
            value: key.into(),
        };
        let mut filter = and(rule.filter.clone(), linked);
        if let Some(f) = asked.filter {
            filter = Condition::And(vec![filter, f]);
        }
        let q = Query {
            filter: Some(filter),
            sort: if asked.sort.is_empty() {
                vec![(target.key(), false)]
            } else {
                asked.sort
            },
            limit: asked.limit,
            offset: asked.offset,
        };
        let recs = self.store.read_items(target, &q).await?;
        match sel {
            None => Ok(Value::Array(
                recs.iter()
                    .map(|r| r.get(target.key().name).cloned().unwrap_or(Value::Null))
                    .collect(),
            )),
            Some(sel) => Ok(Value::Array(
                self.present_all(target, acc, &rule, &recs, sel, deep.unwrap_or(&NO_DEEP))
                    .await?,
            )),
        }
    }

    /// The query one level of `deep` asks of a relation's items (`_filter`, `_sort`,
    /// `_limit`, `_offset`, `_page`, `_search`), checked as a top-level query is; the first
    /// [`ALIAS_LIMIT`] linked items when it sets no limit.
    async fn deep_query(
        &self,
        target: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        level: &Map<String, Value>,
    ) -> Result<Query> {
        let options: Map<String, Value> = level
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix('_')?;
                ["filter", "sort", "limit", "offset", "page", "search"]
                    .contains(&name)
                    .then(|| (name.to_owned(), v.clone()))
            })
            .collect();
        let mut rq = ReadQuery::from_json(&Value::Object(options))?;
        rq.limit = rq.limit.or(Some(ALIAS_LIMIT as i64));
        self.check_query(target, acc, rule, &rq).await
    }

    /// A read query's `deep`, checked (nothing asked when it has none).
    async fn deep<'q>(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        rq: &'q ReadQuery,
    ) -> Result<&'q Map<String, Value>> {
        match &rq.deep {
            Some(deep) => {
                self.check_deep(c, acc, rule, deep).await?;
                Ok(deep)
            }
            None => Ok(&NO_DEEP),
        }
    }

    /// Refuses a `deep` naming a relation `c` does not have or the caller may not read, or
    /// asking a query that would be refused at the top level.
    async fn check_deep(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        deep: &Map<String, Value>,
    ) -> Result<()> {
        for (name, level) in deep {
            if name.starts_with('_') {
                continue;
            }
            let Some(rel) = c.relation(name).filter(|_| rule.may(name)) else {
                return Err(Error::forbidden_field(name, c.name));
            };
            let level = level.as_object().ok_or_else(|| {
                Error::InvalidQuery(format!("\"deep.{name}\" must be of type object"))
            })?;
            let target_rule = self.permitted(rel.target, acc, Action::Read).await?;
            self.deep_query(rel.target, acc, &target_rule, level)
                .await?;
            Box::pin(self.check_deep(rel.target, acc, &target_rule, level)).await?;
        }
        Ok(())
    }

    /// `GET /<collection>`: the list and, when asked, `meta`.
    pub async fn read_many(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rq: &ReadQuery,
    ) -> Result<(Vec<Value>, Option<Value>)> {
        let rule = self.permitted(c, acc, Action::Read).await?;
        let sel = rq.fields();
        check_selection(c, &rule, &sel)?;
        let mut q = self.check_query(c, acc, &rule, rq).await?;
        if let Some(visible) = &rule.filter {
            q.filter = Some(and(q.filter.take(), visible.clone()));
        }
        let deep = self.deep(c, acc, &rule, rq).await?;
        let recs = self.store.read_items(c, &q).await?;
        let out = self.present_all(c, acc, &rule, &recs, &sel, deep).await?;
        let meta = if rq.meta.is_empty() {
            None
        } else {
            let all = rq.meta.iter().any(|m| m == "*");
            let mut m = Map::new();
            if all || rq.meta.iter().any(|m| m == "total_count") {
                let total = self.store.count_items(c, rule.filter.as_ref()).await?;
                m.insert("total_count".into(), total.into());
            }
            if all || rq.meta.iter().any(|m| m == "filter_count") {
                let count = self.store.count_items(c, q.filter.as_ref()).await?;
                m.insert("filter_count".into(), count.into());
            }
            Some(Value::Object(m))
        };
        Ok((out, meta))
    }

    /// The stored item `key` of `c` matching `extra`, if any.
    async fn fetch(
        &self,
        c: &'static Collection,
        key: &str,
        extra: Option<Condition>,
    ) -> Result<Option<Record>> {
        if !valid_key(c, key) {
            return Ok(None);
        }
        let q = Query {
            filter: Some(and(extra, by_keys(c, &[key.to_owned()]))),
            limit: Some(1),
            ..Query::default()
        };
        Ok(self.store.read_items(c, &q).await?.into_iter().next())
    }

    /// `GET /<collection>/:id`. An item that does not exist or that the caller may not see
    /// is FORBIDDEN, as in Directus.
    pub async fn read_one(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        key: &str,
        rq: &ReadQuery,
    ) -> Result<Value> {
        let rule = self.permitted(c, acc, Action::Read).await?;
        let sel = rq.fields();
        check_selection(c, &rule, &sel)?;
        let deep = self.deep(c, acc, &rule, rq).await?;
        let rec = self
            .fetch(c, key, rule.filter.clone())
            .await?
            .ok_or(Error::Forbidden(None))?;
        let mut out = self.present_all(c, acc, &rule, &[rec], &sel, deep).await?;
        out.pop().ok_or(Error::Forbidden(None))
    }

    /// The items `keys` the caller may read, in that order (the answer of a write).
    pub async fn read_keys(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        keys: &[String],
        rq: &ReadQuery,
    ) -> Result<Vec<Value>> {
        let rule = self.permitted(c, acc, Action::Read).await?;
        let sel = rq.fields();
        check_selection(c, &rule, &sel)?;
        let keys: Vec<String> = keys.iter().filter(|k| valid_key(c, k)).cloned().collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let q = Query {
            filter: Some(and(rule.filter.clone(), by_keys(c, &keys))),
            ..Query::default()
        };
        let mut recs = self.store.read_items(c, &q).await?;
        let key = c.key().name;
        let position = |r: &Record| {
            let k = r.get(key).map(key_text).unwrap_or_default();
            keys.iter().position(|x| *x == k).unwrap_or(usize::MAX)
        };
        recs.sort_by_key(position);
        let deep = self.deep(c, acc, &rule, rq).await?;
        self.present_all(c, acc, &rule, &recs, &sel, deep).await
    }

    /// `GET /users/me`.
    pub async fn me(&self, acc: &Accountability, rq: &ReadQuery) -> Result<Me> {
        let user = acc.user.ok_or(Error::InvalidCredentials)?;
        if rq.deep.is_some() {
            // Not cached: the cache keys answers by `fields` only.
            return match self.read_one(&USERS, acc, &user.to_string(), rq).await {
                Ok(value) => serde_json::to_string(&value)
                    .map(|json| Me::Json(Arc::from(json)))
                    .map_err(|e| Error::Internal(e.to_string())),
                Err(Error::Forbidden(_)) => Ok(Me::IdOnly(user)),
                Err(e) => Err(e),
            };
        }
        let sel = rq.fields();
        let key = (user, sel.clone(), acc.policies.clone(), acc.admin, acc.app);
        let answer = self
            .caches
            .get_or_load(Cached::Me, &self.caches.me, key, async {
                let Some(rule) = self.rule(&USERS, acc, Action::Read).await? else {
                    return Ok(None);
                };
                let id = user.to_string();
                let rec = match &rule.filter {
                    None => self
                        .caches
                        .get_or_load(Cached::Users, &self.caches.users, id.clone(), async {
                            Ok(self.fetch(&USERS, &id, None).await?.map(Arc::new))
                        })
                        .await?
                        .map(|r| r.as_ref().clone()),
                    Some(f) => self.fetch(&USERS, &id, Some(f.clone())).await?,
                };
                let Some(rec) = rec else { return Ok(None) };
                let mut found = self
                    .present_all(&USERS, acc, &rule, &[rec], &sel, &NO_DEEP)
                    .await?;
                let value = found.pop().unwrap_or(Value::Null);
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

    /// Any request to `/items/<collection>`: Tessera serves no user collections, and system
    /// collections are not items (Directus's answers for both).
    pub fn no_items(collection: &str) -> Error {
        if collection.starts_with("directus_") {
            Error::Forbidden(None)
        } else {
            Error::forbidden_collection(collection)
        }
    }

    /// `GET /roles/me`: the caller's roles as it may read them, or only their ids.
    pub async fn roles_me(&self, acc: &Accountability, rq: &ReadQuery) -> Result<Vec<Value>> {
        if acc.user.is_none() {
            return Err(Error::Forbidden(None));
        }
        let keys: Vec<String> = acc.roles.iter().map(Uuid::to_string).collect();
        match self.read_keys(&ROLES, acc, &keys, rq).await {
            Err(Error::Forbidden(_)) => Ok(keys.into_iter().map(|id| json!({"id": id})).collect()),
            other => other,
        }
    }

    /// `GET /policies/me/globals`: the caller's global flags (all off for anonymous callers).
    pub fn globals(acc: &Accountability) -> Value {
        let known = acc.user.is_some() || acc.role.is_some();
        json!({
            "app_access": known && acc.app,
            "admin_access": known && acc.admin,
            "enforce_tfa": known && acc.enforce_tfa,
        })
    }

    /// `GET /permissions/me`: what the caller may do, per collection and action.
    pub async fn permissions_me(&self, acc: &Accountability) -> Result<Value> {
        if acc.user.is_none() && acc.role.is_none() {
            return Err(Error::Forbidden(None));
        }
        if acc.admin {
            let full: Map<String, Value> = Action::ALL
                .iter()
                .map(|a| {
                    (
                        a.name().to_owned(),
                        json!({"access": "full", "fields": ["*"]}),
                    )
                })
                .collect();
            return Ok(Value::Object(
                COLLECTIONS
                    .iter()
                    .map(|c| (c.name.to_owned(), Value::Object(full.clone())))
                    .collect(),
            ));
        }
        Ok(permissions::summary(&*self.granted(acc).await?))
    }

    /// After a write committed: forget what this instance cached and tell the others.
    pub(crate) async fn changed(&self) {
        self.caches.invalidate();
        crate::cache::announce(&*self.store, Change::Everything).await;
    }

    /// Runs planned writes in one transaction, guarded when one may take admin access away.
    async fn commit(&self, c: &'static Collection, writes: Vec<Write>) -> Result<Vec<Written>> {
        let guard = writes
            .iter()
            .any(may_demote)
            .then(|| Box::new(AdminRemains { before: false }) as Box<dyn Guard>);
        let values: Values = writes
            .iter()
            .flat_map(|w| match w {
                Write::Insert { values, .. } | Write::Update { values, .. } => values.clone(),
                Write::Delete { .. } => Vec::new(),
            })
            .collect();
        let written = self
            .store
            .write(writes, guard)
            .await
            .map_err(|e| map_conflict(c, &values, e))?;
        self.changed().await;
        Ok(written)
    }

    /// Refuses keys the caller's rule does not reach (or that do not exist), as Directus
    /// does before any update or delete by a non-admin.
    async fn check_reach(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        action: Action,
        keys: &[String],
    ) -> Result<()> {
        if keys.iter().any(|k| !valid_key(c, k)) {
            return Err(if acc.admin {
                Error::Forbidden(None)
            } else {
                Error::forbidden_action(action.name(), c.name)
            });
        }
        if acc.admin {
            return Ok(());
        }
        let q = Query {
            filter: Some(and(rule.filter.clone(), by_keys(c, keys))),
            ..Query::default()
        };
        let found: HashSet<String> = self
            .store
            .read_items(c, &q)
            .await?
            .iter()
            .filter_map(|r| r.get(c.key().name))
            .map(key_text)
            .collect();
        if keys.iter().all(|k| found.contains(k)) {
            Ok(())
        } else {
            Err(Error::forbidden_action(action.name(), c.name))
        }
    }

    /// The fields each of the items `keys` shows under `rule`, in that order: those every
    /// reached item shows, plus those of each filtered grant whose filter the item matches
    /// (one query per such grant, none when the rule grants the same fields everywhere).
    async fn shown_per_item(
        &self,
        c: &'static Collection,
        rule: &Rule,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<String>>>> {
        let mut matched: Vec<HashSet<String>> = Vec::new();
        if !keys.is_empty() {
            for case in &rule.cases {
                let q = Query {
                    filter: Some(Condition::And(vec![by_keys(c, keys), case.filter.clone()])),
                    ..Query::default()
                };
                let hits = self.store.read_items(c, &q).await?;
                matched.push(
                    hits.iter()
                        .filter_map(|r| r.get(c.key().name))
                        .map(key_text)
                        .collect(),
                );
            }
        }
        Ok(keys
            .iter()
            .map(|k| {
                let flags: Vec<bool> = matched.iter().map(|m| m.contains(k)).collect();
                rule.shown(&flags)
            })
            .collect())
    }

    /// Refuses an update naming fields that the grants reaching an item do not give on that
    /// item (fields some other grant gives on other items do not count).
    async fn check_item_fields(
        &self,
        c: &'static Collection,
        rule: &Rule,
        keys: &[String],
        names: &[&str],
    ) -> Result<()> {
        let shown = self.shown_per_item(c, rule, keys).await?;
        if shown
            .iter()
            .any(|fields| crate::rules::check_fields(c.name, names, fields).is_err())
        {
            return Err(Error::forbidden_action(Action::Update.name(), c.name));
        }
        Ok(())
    }

    /// Refuses role parents that, taken together, would make a cycle (each alone is checked
    /// when planned, against the roles as they are).
    async fn check_planned_parents(&self, plans: &[(Vec<Write>, Values)]) -> Result<()> {
        let planned: Vec<(String, Option<String>)> = plans
            .iter()
            .flat_map(|(writes, _)| writes)
            .filter_map(|w| match w {
                Write::Update { c, id, values, .. } if c.name == ROLES.name => values
                    .iter()
                    .find(|(f, _)| f.name == "parent")
                    .map(|(_, v)| (id.clone(), v.as_str().map(str::to_owned))),
                _ => None,
            })
            .collect();
        if planned.len() < 2 {
            return Ok(());
        }
        for (id, parent) in &planned {
            let mut node = parent.clone();
            let mut steps = 0;
            while let Some(current) = node {
                if current == *id || steps > 2 * planned.len() + 64 {
                    return Err(Error::payload(
                        "\"parent\" can't be the role itself or one of its descendants",
                    ));
                }
                steps += 1;
                node = match planned.iter().find(|(k, _)| *k == current) {
                    Some((_, p)) => p.clone(),
                    None => self
                        .fetch(&ROLES, &current, None)
                        .await?
                        .and_then(|r| r.get("parent").and_then(Value::as_str).map(str::to_owned)),
                };
            }
        }
        Ok(())
    }

    /// Plans the insert of one item (and of the access rows its `policies` names); returns
    /// its key when the service chooses it.
    async fn plan_create(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        body: &Value,
    ) -> Result<(Option<String>, Vec<Write>)> {
        let obj = object(body)?;
        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
        rule.check_write(c.name, &names)?;
        let merged = rule.with_presets(obj);
        rule.validate(&merged)?;
        let mut values = self.values(c, &merged, true).await?;
        self.check_values(c, &values)?;
        let key = match c.key().kind {
            Kind::Integer => None,
            _ => Some(match values.iter().find(|(f, _)| f.name == c.key().name) {
                Some((_, v)) => key_text(v),
                None => {
                    let id = Uuid::new_v4().to_string();
                    values.insert(0, (c.key(), Value::String(id.clone())));
                    id
                }
            }),
        };
        let mut writes = vec![Write::Insert { c, values }];
        if let (Some(nested), Some(key)) = (merged.get("policies"), &key)
            && (c.name == USERS.name || c.name == ROLES.name)
        {
            writes.extend(self.plan_policies(c, acc, key, nested, true).await?);
        }
        Ok((key, writes))
    }

    /// `POST /<collection>`: creates the items in one transaction; returns their keys.
    pub async fn create_many(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        items: &[Value],
    ) -> Result<Vec<String>> {
        check_batch_size(items.len())?;
        let rule = self.permitted(c, acc, Action::Create).await?;
        let mut writes = Vec::new();
        let mut planned = Vec::new();
        for item in items {
            let (key, mut w) = self.plan_create(c, acc, &rule, item).await?;
            planned.push((writes.len(), key));
            writes.append(&mut w);
        }
        let written = self.commit(c, writes).await?;
        Ok(planned
            .into_iter()
            .map(|(at, key)| match (key, written.get(at)) {
                (Some(key), _) => key,
                (None, Some(Written::Inserted(v))) => key_text(v),
                (None, _) => String::new(),
            })
            .collect())
    }

    /// Creates one item; returns its key.
    pub async fn create(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        body: &Value,
    ) -> Result<String> {
        let mut keys = self.create_many(c, acc, std::slice::from_ref(body)).await?;
        keys.pop()
            .ok_or_else(|| Error::Internal("a create made no item".into()))
    }

    /// Plans the update of items `keys` with one body (and the nested `policies` writes).
    async fn plan_update(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        rule: &Rule,
        keys: &[String],
        body: &Value,
    ) -> Result<(Vec<Write>, Values)> {
        let obj = object(body)?;
        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
        rule.check_write(c.name, &names)?;
        rule.validate(obj)?;
        self.check_reach(c, acc, rule, Action::Update, keys).await?;
        if !rule.cases.is_empty() {
            self.check_item_fields(c, rule, keys, &names).await?;
        }
        let values = self.values(c, obj, false).await?;
        self.check_values(c, &values)?;
        let mut writes = Vec::new();
        for key in keys {
            if c.name == ROLES.name {
                self.check_no_cycle(key, &values).await?;
            }
            writes.push(Write::Update {
                c,
                id: key.clone(),
                values: values.clone(),
                end: ended_sessions(c, acc, key, &values),
            });
            if let Some(nested) = obj.get("policies")
                && (c.name == USERS.name || c.name == ROLES.name)
            {
                writes.extend(self.plan_policies(c, acc, key, nested, false).await?);
            }
        }
        Ok((writes, values))
    }

    /// Runs planned updates; FORBIDDEN when an item is gone. Reactivated users have their
    /// failed logins forgiven.
    async fn run_updates(
        &self,
        c: &'static Collection,
        updates: Vec<(Vec<Write>, Values)>,
    ) -> Result<()> {
        let mut writes = Vec::new();
        let mut reactivated = Vec::new();
        for (w, values) in updates {
            let activates = values
                .iter()
                .any(|(f, v)| f.name == "status" && v.as_str() == Some("active"));
            for write in &w {
                if let Write::Update { c: wc, id, .. } = write
                    && activates
                    && wc.name == USERS.name
                    && let Ok(uid) = Uuid::parse_str(id)
                {
                    reactivated.push(uid);
                }
            }
            writes.extend(w);
        }
        let targets: Vec<bool> = writes
            .iter()
            .map(|w| matches!(w, Write::Update { c: wc, .. } if wc.name == c.name))
            .collect();
        let written = self.commit(c, writes).await?;
        if written
            .iter()
            .zip(targets)
            .any(|(w, target)| target && !w.found())
        {
            return Err(Error::Forbidden(None));
        }
        for uid in reactivated {
            self.store.clear_login_failures(uid).await?;
        }
        Ok(())
    }

    /// `PATCH /<collection>/:id` and the `keys` form of a batch update.
    pub async fn update_many(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        keys: &[String],
        body: &Value,
    ) -> Result<()> {
        let rule = self.permitted(c, acc, Action::Update).await?;
        let plan = self.plan_update(c, acc, &rule, keys, body).await?;
        self.run_updates(c, vec![plan]).await
    }

    /// Updates one item.
    pub async fn update(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        key: &str,
        body: &Value,
    ) -> Result<()> {
        self.update_many(c, acc, &[key.to_owned()], body).await
    }

    /// `PATCH /<collection>`: a list of items with their keys, `{keys, data}` or
    /// `{query, data}`; returns the keys updated.
    pub async fn update_batch(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        body: &Value,
    ) -> Result<Vec<String>> {
        let key = c.key().name;
        match body {
            Value::Array(items) => {
                check_batch_size(items.len())?;
                let rule = self.permitted(c, acc, Action::Update).await?;
                let mut plans = Vec::new();
                let mut keys = Vec::new();
                for item in items {
                    let mut obj = object(item)?.clone();
                    let k = obj
                        .remove(key)
                        .filter(|v| !v.is_null())
                        .map(|v| key_text(&v))
                        .ok_or_else(|| Error::payload(format!("\"{key}\" is required")))?;
                    plans.push(
                        self.plan_update(
                            c,
                            acc,
                            &rule,
                            std::slice::from_ref(&k),
                            &Value::Object(obj),
                        )
                        .await?,
                    );
                    keys.push(k);
                }
                self.check_planned_parents(&plans).await?;
                self.run_updates(c, plans).await?;
                Ok(keys)
            }
            Value::Object(obj) => {
                let data = obj
                    .get("data")
                    .ok_or_else(|| Error::payload("\"data\" is required"))?;
                if !data.is_object() {
                    return Err(Error::payload("\"data\" must be of type object"));
                }
                let keys = self.batch_keys(c, acc, obj, &["data"]).await?;
                if !keys.is_empty() {
                    self.update_many(c, acc, &keys, data).await?;
                }
                Ok(keys)
            }
            _ => Err(Error::payload("Payload in body is required")),
        }
    }

    /// The keys of a batch body's `keys` or `query` (exactly one of them), checked as
    /// Directus's batch schema checks them.
    async fn batch_keys(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        obj: &Map<String, Value>,
        also: &[&str],
    ) -> Result<Vec<String>> {
        let batch = match (obj.get("keys"), obj.get("query")) {
            (Some(Value::Array(k)), None) => Batch::Keys(k.clone()),
            (Some(_), None) => return Err(Error::payload("\"keys\" must be an array")),
            (None, Some(q @ Value::Object(_))) => Batch::Query(Box::new(ReadQuery::from_json(q)?)),
            (None, Some(_)) => return Err(Error::payload("\"query\" must be of type object")),
            (Some(_), Some(_)) => {
                return Err(Error::payload(
                    "\"value\" contains a conflict between exclusive peers [query, keys]",
                ));
            }
            (None, None) => {
                return Err(Error::payload(
                    "\"value\" must contain at least one of [query, keys]",
                ));
            }
        };
        if let Some(extra) = obj
            .keys()
            .find(|k| !["keys", "query"].contains(&k.as_str()) && !also.contains(&k.as_str()))
        {
            return Err(Error::payload(format!("\"{extra}\" is not allowed")));
        }
        if let Batch::Keys(keys) = &batch {
            check_batch_size(keys.len())?;
        }
        match batch {
            Batch::Keys(keys) => keys
                .iter()
                .map(|k| match k {
                    Value::String(_) | Value::Number(_) => Ok(key_text(k)),
                    _ => Err(Error::payload("\"keys\" must hold strings or numbers")),
                })
                .collect(),
            Batch::Query(mut rq) => {
                rq.limit = rq.limit.or(Some(-1));
                rq.fields = Some(Fields::parse(c.key().name)?);
                let (found, _) = self.read_many(c, acc, &rq).await?;
                check_batch_size(found.len())?;
                Ok(found
                    .iter()
                    .filter_map(|v| v.get(c.key().name))
                    .map(key_text)
                    .collect())
            }
        }
    }

    /// `PATCH /users/me`: the caller's own row, under the caller's update permission.
    pub async fn update_me(&self, acc: &Accountability, body: &Value) -> Result<Uuid> {
        let user = acc.user.ok_or(Error::InvalidCredentials)?;
        self.update_many(&USERS, acc, &[user.to_string()], body)
            .await?;
        Ok(user)
    }

    /// `DELETE /<collection>/:id` and the list form of a batch delete. Deleting a role
    /// suspends its users and detaches them, as Directus 11 does.
    pub async fn delete_many(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        keys: &[String],
    ) -> Result<()> {
        let rule = self.permitted(c, acc, Action::Delete).await?;
        self.check_reach(c, acc, &rule, Action::Delete, keys)
            .await?;
        let mut writes = Vec::new();
        for key in keys {
            if c.name == ROLES.name {
                writes.extend(self.suspend_members(key).await?);
            }
            writes.push(Write::Delete { c, id: key.clone() });
        }
        let targets: Vec<bool> = writes
            .iter()
            .map(|w| matches!(w, Write::Delete { .. }))
            .collect();
        let written = self.commit(c, writes).await?;
        if written.iter().zip(targets).any(|(w, t)| t && !w.found()) {
            return Err(Error::Forbidden(None));
        }
        Ok(())
    }

    /// `DELETE /<collection>`: a list of keys, `{keys}` or `{query}`.
    pub async fn delete_batch(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        body: &Value,
    ) -> Result<()> {
        let keys: Vec<String> = match body {
            Value::Array(items) => {
                let obj: Map<String, Value> = [("keys".to_owned(), Value::Array(items.clone()))]
                    .into_iter()
                    .collect();
                self.batch_keys(c, acc, &obj, &[]).await?
            }
            Value::Object(obj) => self.batch_keys(c, acc, obj, &[]).await?,
            _ => return Err(Error::payload("Payload in body is required")),
        };
        if keys.is_empty() {
            return Ok(());
        }
        self.delete_many(c, acc, &keys).await
    }

    /// The writes that suspend and detach the users of a role about to be deleted.
    async fn suspend_members(&self, role: &str) -> Result<Vec<Write>> {
        let (Some(field), Some(status)) = (USERS.field("role"), USERS.field("status")) else {
            return Ok(Vec::new());
        };
        if !valid_key(&ROLES, role) {
            return Ok(Vec::new());
        }
        let q = Query {
            filter: Some(Condition::Compare {
                field,
                op: Op::Eq,
                value: role.into(),
            }),
            ..Query::default()
        };
        Ok(self
            .store
            .read_items(&USERS, &q)
            .await?
            .iter()
            .filter_map(|u| u.get("id").and_then(Value::as_str))
            .map(|uid| Write::Update {
                c: &USERS,
                id: uid.to_owned(),
                values: vec![(status, "suspended".into()), (field, Value::Null)],
                end: EndSessions::All,
            })
            .collect())
    }

    /// The access-row writes of a nested `policies` value on a user or role: a list (the
    /// rows to keep or create; the others are deleted) or `{create, update, delete}`.
    async fn plan_policies(
        &self,
        c: &'static Collection,
        acc: &Accountability,
        owner_key: &str,
        nested: &Value,
        creating: bool,
    ) -> Result<Vec<Write>> {
        let owner = if c.name == USERS.name { "user" } else { "role" };
        let mut create: Vec<&Value> = Vec::new();
        let mut update: Vec<&Value> = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        match nested {
            Value::Null => {}
            Value::Array(items) => {
                let mut kept = Vec::new();
                for item in items {
                    match item {
                        Value::Object(o) if o.contains_key("id") => {
                            kept.extend(o.get("id").map(key_text));
                            update.push(item);
                        }
                        Value::Object(_) => create.push(item),
                        Value::String(k) => kept.push(k.clone()),
                        _ => return Err(Error::payload("\"policies\" must hold objects")),
                    }
                }
                if !creating {
                    let existing = self
                        .store
                        .alias_values(
                            c.alias("policies").ok_or(Error::Forbidden(None))?,
                            owner_key,
                            None,
                        )
                        .await?;
                    delete.extend(existing.iter().map(key_text).filter(|k| !kept.contains(k)));
                }
            }
            Value::Object(o) => {
                let list = |name: &str| -> Result<Vec<&Value>> {
                    match o.get(name) {
                        None | Some(Value::Null) => Ok(Vec::new()),
                        Some(Value::Array(items)) => Ok(items.iter().collect()),
                        Some(_) => Err(Error::payload(format!(
                            "\"policies.{name}\" must be an array"
                        ))),
                    }
                };
                create = list("create")?;
                update = list("update")?;
                delete = list("delete")?.into_iter().map(key_text).collect();
            }
            _ => {
                return Err(Error::payload(
                    "\"policies\" must be an array or an object of create, update and delete",
                ));
            }
        }
        check_batch_size(create.len() + update.len() + delete.len())?;
        let mut writes = Vec::new();
        let owned = |keys: &[String]| {
            Condition::And(vec![
                by_keys(&ACCESS, keys),
                Condition::Compare {
                    field: ACCESS.field(owner).unwrap_or(ACCESS.key()),
                    op: Op::Eq,
                    value: owner_key.into(),
                },
            ])
        };
        if !create.is_empty() {
            let rule = self.permitted(&ACCESS, acc, Action::Create).await?;
            for item in create {
                let mut obj = object(item)?.clone();
                obj.insert(owner.into(), owner_key.into());
                let (_, w) =
                    Box::pin(self.plan_create(&ACCESS, acc, &rule, &Value::Object(obj))).await?;
                writes.extend(w);
            }
        }
        if !update.is_empty() {
            let rule = self.permitted(&ACCESS, acc, Action::Update).await?;
            for item in update {
                let mut obj = object(item)?.clone();
                let key = obj.remove("id").map(|k| key_text(&k)).unwrap_or_default();
                if obj.is_empty() {
                    continue;
                }
                self.check_owned(
                    acc,
                    &rule,
                    Action::Update,
                    owned(std::slice::from_ref(&key)),
                    1,
                )
                .await?;
                let (w, _) = Box::pin(self.plan_update(
                    &ACCESS,
                    acc,
                    &rule,
                    std::slice::from_ref(&key),
                    &Value::Object(obj),
                ))
                .await?;
                writes.extend(w);
            }
        }
        if !delete.is_empty() {
            let rule = self.permitted(&ACCESS, acc, Action::Delete).await?;
            if delete.iter().any(|k| !valid_key(&ACCESS, k)) {
                return Err(Error::forbidden_action("delete", ACCESS.name));
            }
            self.check_owned(acc, &rule, Action::Delete, owned(&delete), delete.len())
                .await?;
            writes.extend(
                delete
                    .into_iter()
                    .map(|id| Write::Delete { c: &ACCESS, id }),
            );
        }
        Ok(writes)
    }

    /// Refuses nested access writes to rows that are not the owner's or that the rule does
    /// not reach.
    async fn check_owned(
        &self,
        acc: &Accountability,
        rule: &Rule,
        action: Action,
        cond: Condition,
        expected: usize,
    ) -> Result<()> {
        let filter = if acc.admin {
            cond
        } else {
            and(rule.filter.clone(), cond)
        };
        let q = Query {
            filter: Some(filter),
            ..Query::default()
        };
        if self.store.read_items(&ACCESS, &q).await?.len() == expected {
            Ok(())
        } else {
            Err(Error::forbidden_action(action.name(), ACCESS.name))
        }
    }

    /// `GET /settings`: the singleton, as the caller may read it.
    pub async fn settings(&self, acc: &Accountability, rq: &ReadQuery) -> Result<Value> {
        let rule = self.permitted(&SETTINGS, acc, Action::Read).await?;
        let rec = self.store.settings().await?;
        let mut out = self
            .present_all(&SETTINGS, acc, &rule, &[rec], &rq.fields(), &NO_DEEP)
            .await?;
        out.pop().ok_or(Error::Forbidden(None))
    }

    /// `PATCH /settings`.
    pub async fn update_settings(&self, acc: &Accountability, body: &Value) -> Result<()> {
        let rule = self.permitted(&SETTINGS, acc, Action::Update).await?;
        let obj = object(body)?;
        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
        rule.check_write(SETTINGS.name, &names)?;
        rule.validate(obj)?;
        let values = self.values(&SETTINGS, obj, false).await?;
        self.check_values(&SETTINGS, &values)?;
        let update = Write::Update {
            c: &SETTINGS,
            id: "1".into(),
            values,
            end: EndSessions::None,
        };
        self.store.write(vec![update], None).await?;
        Ok(())
    }

    /// Checks a write body against the collection and converts it to stored values. Nulls
    /// for `NOT NULL` fields, and required fields missing from a new item, fail validation
    /// together, before anything else is looked at (as Directus does, admins included).
    /// Aliases (`policies`) are written separately.
    async fn values(
        &self,
        c: &'static Collection,
        obj: &Map<String, Value>,
        creating: bool,
    ) -> Result<Values> {
        check_nulls(c, obj, creating)?;
        let mut out = Vec::new();
        for (key, v) in obj {
            if key == "tfa_secret" && c.name == USERS.name {
                return Err(Error::payload(
                    "You can't change the \"tfa_secret\" value manually",
                ));
            }
            let Some(field) = c.field(key) else { continue };
            if field.name == c.key().name {
                if creating && !v.is_null() && field.kind == Kind::Uuid {
                    let id = v
                        .as_str()
                        .filter(|s| Uuid::parse_str(s).is_ok())
                        .ok_or_else(|| Error::payload(format!("\"{key}\" must be a valid GUID")))?;
                    out.push((field, Value::String(id.to_owned())));
                }
                continue;
            }
            if !field.writable {
                continue;
            }
            if let Some(value) = self.check_value(field, key, v).await? {
                out.push((field, value));
            }
        }
        Ok(out)
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
            (Kind::Hash, Value::String(s)) => Value::String(self.hash_password(s).await?),
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
            (Kind::Csv, Value::String(s)) => Value::Array(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(Value::from)
                    .collect(),
            ),
            (Kind::Csv, Value::Array(items))
                if items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| storable(s) && !s.contains(','))) =>
            {
                v.clone()
            }
            (Kind::Csv, _) => return Err(must("an array of names")),
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

    /// A new password checked against `auth_password_policy` and hashed, as a write of the
    /// `password` field would store it.
    pub(crate) async fn hash_password(&self, password: &str) -> Result<String> {
        self.check_password_policy(password).await?;
        self.passwords.hash(password.to_owned()).await
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
    async fn check_no_cycle(&self, id: &str, values: &Values) -> Result<()> {
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

    /// The per-collection checks of values about to be written.
    fn check_values(&self, c: &'static Collection, values: &Values) -> Result<()> {
        for (f, v) in values {
            match (c.name, f.name, v) {
                ("directus_users", "email", Value::String(s)) if !is_email(s) => {
                    return Err(Error::invalid_field(
                        "email",
                        "email",
                        "Value has to be a valid email address.",
                    ));
                }
                ("directus_users", "status", Value::String(s))
                    if !STATUSES.contains(&s.as_str()) =>
                {
                    return Err(Error::payload(format!(
                        "\"status\" must be one of [{}]",
                        STATUSES.join(", ")
                    )));
                }
                ("directus_permissions", "action", Value::String(s))
                    if Action::parse(s).is_none() =>
                {
                    return Err(Error::payload(format!(
                        "\"action\" must be one of [{}]",
                        Action::ALL.map(Action::name).join(", ")
                    )));
                }
                ("directus_permissions", "permissions" | "validation" | "presets", v)
                    if !(v.is_null() || v.is_object()) =>
                {
                    return Err(Error::payload(format!(
                        "\"{}\" must be of type object",
                        f.name
                    )));
                }
                ("directus_settings", "auth_login_attempts", Value::Number(n))
                    if n.as_i64().is_some_and(|n| n < 0) =>
                {
                    return Err(Error::payload(
                        "\"auth_login_attempts\" must be greater than or equal to 0",
                    ));
                }
                ("directus_settings", "auth_password_policy", Value::String(p))
                    if !p.is_empty() =>
                {
                    compile_policy(p).map_err(|e| {
                        Error::payload(format!(
                            "\"auth_password_policy\" must be a valid regular expression ({e})"
                        ))
                    })?;
                }
                _ => {}
            }
        }
        if c.name == PERMISSIONS.name {
            check_permission_filter(values)?;
        }
        Ok(())
    }
}

/// Every collection a condition reaches through a relation.
fn related_targets(cond: &Condition, out: &mut Vec<&'static Collection>) {
    match cond {
        Condition::And(parts) | Condition::Or(parts) => {
            parts.iter().for_each(|p| related_targets(p, out));
        }
        Condition::Related { via, cond, .. } => {
            if !out.iter().any(|c| c.name == via.target.name) {
                out.push(via.target);
            }
            related_targets(cond, out);
        }
        Condition::Compare { .. } => {}
    }
}

/// `cond` with the item filter of the target's rule joined into every relation it follows.
fn limit_relations(cond: Condition, rules: &[(&str, Arc<Rule>)]) -> Condition {
    match cond {
        Condition::And(parts) => Condition::And(
            parts
                .into_iter()
                .map(|p| limit_relations(p, rules))
                .collect(),
        ),
        Condition::Or(parts) => Condition::Or(
            parts
                .into_iter()
                .map(|p| limit_relations(p, rules))
                .collect(),
        ),
        Condition::Related { via, cond, none } => {
            let inner = limit_relations(*cond, rules);
            let visible = rules
                .iter()
                .find(|(name, _)| *name == via.target.name)
                .and_then(|(_, rule)| rule.filter.clone());
            Condition::Related {
                via,
                cond: Box::new(and(visible, inner)),
                none,
            }
        }
        compare @ Condition::Compare { .. } => compare,
    }
}

/// Refuses a permission row whose item filter does not compile for a collection Tessera
/// serves, so that a bad rule is a 400 when written rather than a silent "nothing granted".
fn check_permission_filter(values: &Values) -> Result<()> {
    let get = |name: &str| values.iter().find(|(f, _)| f.name == name).map(|(_, v)| v);
    let (Some(Value::String(name)), Some(filter @ Value::Object(_))) =
        (get("collection"), get("permissions"))
    else {
        return Ok(());
    };
    let Some(target) = tessera_store::schema::collection(name) else {
        return Ok(());
    };
    compile(target, filter, &Vars::default())
        .map(|_| ())
        .map_err(|e| Error::payload(format!("\"permissions\" is not a valid filter: {e}")))
}

/// Refuses null for fields whose column is `NOT NULL`, and (on create) the absence of a field
/// that has no default: every such field is reported, in schema order.
fn check_nulls(c: &'static Collection, body: &Map<String, Value>, creating: bool) -> Result<()> {
    let violations: Vec<Violation> = c
        .fields
        .iter()
        .filter(|f| f.writable && f.nulls != Nulls::Allowed)
        .filter_map(|f| match (body.get(f.name), f.nulls) {
            (Some(Value::Null), _) => Some((f.name, "nnull", "Value can't be null.")),
            (None, Nulls::Required) if creating => Some((f.name, "required", "Value is required.")),
            _ => None,
        })
        .map(|(field, rule, detail)| Violation {
            field: field.to_owned(),
            rule,
            detail: detail.to_owned(),
            extra: Vec::new(),
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::FailedValidation(violations))
    }
}

/// Which of user `id`'s sessions an update ends: all of them when it deactivates the user;
/// all but the caller's own when it changes the password or e-mail.
fn ended_sessions(
    c: &'static Collection,
    acc: &Accountability,
    id: &str,
    values: &Values,
) -> EndSessions {
    if c.name != USERS.name {
        return EndSessions::None;
    }
    let changes = |n: &str| values.iter().any(|(f, _)| f.name == n);
    let deactivates = values
        .iter()
        .any(|(f, v)| f.name == "status" && v.as_str() != Some("active"));
    if deactivates {
        EndSessions::All
    } else if changes("password") || changes("email") {
        match &acc.session {
            Some(s) if acc.user.map(|u| u.to_string()).as_deref() == Some(id) => {
                EndSessions::AllExcept(*s)
            }
            _ => EndSessions::All,
        }
    } else {
        EndSessions::None
    }
}

fn map_conflict(c: &'static Collection, values: &Values, e: StoreError) -> Error {
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
        StoreError::Refused => {
            Error::UnprocessableContent("Cannot remove the last admin user from the system".into())
        }
        other => other.into(),
    }
}

/// Whether text can be stored and compared at all: no NUL characters (PostgreSQL refuses them
/// in text, so no engine is given one).
pub(crate) fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// Whether a write may take admin access away from someone: deleting a user, role, policy or
/// access row; changing a user's status or role, a role's parent, a policy's admin flag, or
/// an access row.
fn may_demote(w: &Write) -> bool {
    let touches =
        |values: &Values, names: &[&str]| values.iter().any(|(f, _)| names.contains(&f.name));
    match w {
        Write::Insert { .. } => false,
        Write::Delete { c, .. } => {
            [USERS.name, ROLES.name, "directus_policies", ACCESS.name].contains(&c.name)
        }
        Write::Update { c, values, .. } => match c.name {
            "directus_users" => touches(values, &["status", "role"]),
            "directus_roles" => touches(values, &["parent"]),
            "directus_policies" => touches(values, &["admin_access"]),
            "directus_access" => true,
            _ => false,
        },
    }
}

/// Refuses a write after which no active admin remains where one did before (as Directus
/// refuses to remove the last admin). Runs inside the write's transaction, serialised with
/// every other guarded write, so two demotions racing cannot both pass.
struct AdminRemains {
    before: bool,
}

/// Role levels the last-admin check follows down from a role holding an admin policy (the
/// depth the store follows role chains up to).
const MAX_ROLE_DEPTH: usize = 64;

impl AdminRemains {
    /// Whether some active user has admin access: directly through an access row, or through
    /// a role at or below one holding an admin policy (a role's ancestors' policies are its
    /// own). A public policy (no role, no user) never grants it. The cost follows the admin
    /// grants and the depth of the role tree, never the number of users: a few indexed
    /// queries, each reading at most one user.
    fn any_admin(r: &mut dyn Reads) -> tessera_store::StoreResult<bool> {
        let field = |c: &'static Collection, name: &str| {
            c.field(name).ok_or_else(|| {
                tessera_store::StoreError::Backend(format!("{} has no {name}", c.name))
            })
        };
        let is = |f, op, value| Condition::Compare {
            field: f,
            op,
            value,
        };
        let ids = |rows: Vec<Record>, column: &str| -> Vec<Value> {
            rows.iter()
                .filter_map(|row| row.get(column).filter(|v| v.is_string()).cloned())
                .collect()
        };
        let all = |filter| Query {
            filter: Some(filter),
            ..Query::default()
        };
        let one = |filter| Query {
            filter: Some(filter),
            limit: Some(1),
            ..Query::default()
        };
        let policies = &tessera_store::schema::POLICIES;
        let admin = ids(
            r.read_items(
                policies,
                &all(is(
                    field(policies, "admin_access")?,
                    Op::Eq,
                    Value::Bool(true),
                )),
            )?,
            "id",
        );
        if admin.is_empty() {
            return Ok(false);
        }
        let grants = r.read_items(
            &ACCESS,
            &all(is(field(&ACCESS, "policy")?, Op::In, Value::Array(admin))),
        )?;
        let active = is(field(&USERS, "status")?, Op::Eq, "active".into());
        let users = ids(grants.clone(), "user");
        if !users.is_empty()
            && !r
                .read_items(
                    &USERS,
                    &one(and(
                        Some(active.clone()),
                        is(USERS.key(), Op::In, Value::Array(users)),
                    )),
                )?
                .is_empty()
        {
            return Ok(true);
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut level: Vec<Value> = ids(grants, "role");
        for _ in 0..MAX_ROLE_DEPTH {
            level.retain(|v| v.as_str().is_some_and(|id| seen.insert(id.to_owned())));
            if level.is_empty() {
                return Ok(false);
            }
            let members = and(
                Some(active.clone()),
                is(field(&USERS, "role")?, Op::In, Value::Array(level.clone())),
            );
            if !r.read_items(&USERS, &one(members))?.is_empty() {
                return Ok(true);
            }
            let children = is(field(&ROLES, "parent")?, Op::In, Value::Array(level));
            level = ids(r.read_items(&ROLES, &all(children))?, "id");
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
    use super::*;

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

    #[test]
    fn paths_walk_through_lists() {
        let v =
            json!({"role": {"name": "Editors"}, "policies": [{"policy": "a"}, {"policy": "b"}]});
        assert_eq!(walk(&v, "role.name"), json!("Editors"));
        assert_eq!(walk(&v, "policies.policy"), json!(["a", "b"]));
        assert_eq!(walk(&v, "missing.deeper"), Value::Null);
    }

    #[test]
    fn demoting_writes_are_guarded() {
        let status = USERS.field("status").unwrap();
        let name = USERS.field("first_name").unwrap();
        let update = |values: Values| Write::Update {
            c: &USERS,
            id: "x".into(),
            values,
            end: EndSessions::None,
        };
        assert!(may_demote(&update(vec![(status, "suspended".into())])));
        assert!(!may_demote(&update(vec![(name, "A".into())])));
        assert!(may_demote(&Write::Delete {
            c: &ACCESS,
            id: "x".into()
        }));
        assert!(!may_demote(&Write::Delete {
            c: &PERMISSIONS,
            id: "1".into()
        }));
    }
}
