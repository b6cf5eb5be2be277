//! The item query language of the REST routes: `fields` (with `*` and `relation.field`),
//! `filter` (JSON or bracket form, `_and`/`_or`, comparison operators, relational paths such
//! as `role.name` and `policies.policy.id`, dynamic variables), `sort`, `limit`, `offset`,
//! `page`, `meta`. Parses query strings and checks them against a collection's schema,
//! producing the store's [`Query`]. Permission filters compile through the same code.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use tessera_store::{Collection, Condition, Field, Kind, Op, Query};
use uuid::Uuid;

use crate::access::Accountability;
use crate::error::{Error, Result};

/// A `fields` selection: `*`, named fields, and nested selections of relations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Fields {
    pub all: bool,
    pub names: Vec<String>,
    pub nested: BTreeMap<String, Fields>,
}

impl Fields {
    /// Everything (`*`).
    pub fn star() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Parses a comma list such as `id,email,role.name,role.*`.
    pub fn parse(list: &str) -> Result<Self> {
        let mut f = Fields::default();
        f.add_list(list, &mut 0)?;
        if f.names.is_empty() && f.nested.is_empty() {
            f.all = true;
        }
        Ok(f)
    }

    /// Adds every path of a comma list, refusing paths deeper than [`MAX_DEPTH`] and more
    /// than [`MAX_FIELD_PATHS`] paths in all (`seen` counts them across lists).
    fn add_list(&mut self, list: &str, seen: &mut usize) -> Result<()> {
        for path in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if path.matches('.').count() >= MAX_DEPTH {
                return Err(Error::InvalidQuery("Max relational depth exceeded".into()));
            }
            *seen += 1;
            if *seen > MAX_FIELD_PATHS {
                return Err(Error::InvalidQuery(format!(
                    "\"fields\" may name at most {MAX_FIELD_PATHS} fields"
                )));
            }
            self.add(path);
        }
        Ok(())
    }

    fn add(&mut self, path: &str) {
        match path.split_once('.') {
            None if path == "*" => self.all = true,
            None => {
                if !self.names.iter().any(|n| n == path) {
                    self.names.push(path.to_owned());
                }
            }
            Some((head, rest)) => self.nested.entry(head.to_owned()).or_default().add(rest),
        }
    }
}

/// How deep `fields` may reach through relations, and filters may nest (as Directus's
/// `MAX_RELATIONAL_DEPTH`).
pub const MAX_DEPTH: usize = 10;

/// How deeply `_and`/`_or` filters may nest.
const MAX_FILTER_DEPTH: usize = 32;

/// The most paths one query's `fields` may list.
const MAX_FIELD_PATHS: usize = 1_000;

/// The most fields one query may sort by.
const MAX_SORT_FIELDS: usize = 100;

/// The most comparisons and groups one filter may hold (SQLite refuses expressions deeper
/// than 1000).
const MAX_FILTER_CONDITIONS: usize = 500;

/// The most `_in`/`_nin` values one filter may hold (SQLite binds at most 32766 values,
/// PostgreSQL 65535).
const MAX_FILTER_VALUES: usize = 10_000;

/// The longest text a filter value or `search` may be (SQLite refuses LIKE patterns over
/// 50 000 bytes; escaping can double a value).
const MAX_VALUE_BYTES: usize = 4_096;

/// Refuses a text longer than [`MAX_VALUE_BYTES`].
fn short_enough(what: &str, text: &str) -> Result<()> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidQuery(format!(
            "{what} may be at most {MAX_VALUE_BYTES} bytes long"
        )));
    }
    // No stored text holds one, and PostgreSQL refuses them outright.
    if text.contains('\0') {
        return Err(Error::InvalidQuery(format!(
            "{what} may not contain NUL characters"
        )));
    }
    Ok(())
}

/// A parsed, not yet schema-checked read query.
#[derive(Debug, Clone, Default)]
pub struct ReadQuery {
    pub fields: Option<Fields>,
    pub filter: Option<Value>,
    pub sort: Vec<String>,
    pub limit: Option<i64>,
    pub offset: Option<u64>,
    pub page: Option<u64>,
    pub meta: Vec<String>,
    /// Free-text `search`: matches any text field (case-insensitively) or an id.
    pub search: Option<String>,
    /// Queries of relational fields (`deep[policies][_limit]=1`): per relation, `_filter`,
    /// `_sort`, `_limit`, `_offset`, `_page`, `_search`, and deeper relations.
    pub deep: Option<Map<String, Value>>,
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::InvalidQuery(format!("\"{key}\" must be a number")))
}

/// Inserts `value` at a bracket path (`filter[a][_eq]`) into a JSON tree.
fn insert_path(root: &mut Map<String, Value>, path: &[String], value: String) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for key in init {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        node = next;
    }
    node.insert(last.clone(), Value::String(value));
}

impl ReadQuery {
    /// Parses a raw query string.
    pub fn parse(qs: &str) -> Result<Self> {
        let mut q = ReadQuery::default();
        let mut bracket_filter = Map::new();
        let mut bracket_deep = Map::new();
        let mut field_paths = 0;
        for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
            let key = k.as_ref();
            match key {
                "fields" | "fields[]" => {
                    q.fields
                        .get_or_insert_with(Fields::default)
                        .add_list(&v, &mut field_paths)?;
                }
                "filter" => {
                    let parsed: Value = serde_json::from_str(&v).map_err(|_| {
                        Error::InvalidQuery("Invalid JSON for filter object".into())
                    })?;
                    if !parsed.is_object() {
                        return Err(Error::InvalidQuery("Invalid JSON for filter object".into()));
                    }
                    q.filter = Some(parsed);
                }
                "sort" | "sort[]" => q.sort.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                ),
                "deep" => match serde_json::from_str(&v) {
                    Ok(Value::Object(deep)) => q.deep = Some(deep),
                    _ => {
                        return Err(Error::InvalidQuery(
                            "\"deep\" must be of type object".into(),
                        ));
                    }
                },
                "limit" => q.limit = Some(number("limit", &v)?),
                "offset" => q.offset = Some(number("offset", &v)?),
                "page" => q.page = Some(number("page", &v)?),
                "meta" => q.meta.extend(v.split(',').map(|s| s.trim().to_owned())),
                "search" => {
                    short_enough("\"search\"", &v)?;
                    q.search = Some(v.into_owned()).filter(|s| !s.is_empty());
                }
                _ if key.starts_with("filter[") || key.starts_with("deep[") => {
                    let (name, target) = if key.starts_with("filter[") {
                        ("filter", &mut bracket_filter)
                    } else {
                        ("deep", &mut bracket_deep)
                    };
                    let path: Vec<String> = key[name.len()..]
                        .split(']')
                        .filter_map(|p| p.strip_prefix('['))
                        .map(str::to_owned)
                        .collect();
                    if path.len() > MAX_FILTER_DEPTH {
                        return Err(Error::InvalidQuery("Filter is nested too deeply".into()));
                    }
                    insert_path(target, &path, v.into_owned());
                }
                _ => {}
            }
        }
        if q.sort.len() > MAX_SORT_FIELDS {
            return Err(Error::InvalidQuery(format!(
                "\"sort\" may name at most {MAX_SORT_FIELDS} fields"
            )));
        }
        if q.filter.is_none() && !bracket_filter.is_empty() {
            q.filter = Some(Value::Object(bracket_filter));
        }
        if q.deep.is_none() && !bracket_deep.is_empty() {
            q.deep = Some(bracket_deep);
        }
        if let Some(f) = &mut q.fields
            && f.names.is_empty()
            && f.nested.is_empty()
        {
            f.all = true;
        }
        Ok(q)
    }

    /// The `fields` selection, `*` when absent.
    pub fn fields(&self) -> Fields {
        self.fields.clone().unwrap_or_else(Fields::star)
    }

    /// Reads a query given as JSON (the `query` of a batch update or delete): the same keys
    /// as a query string, lists as arrays or comma lists.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::payload("\"query\" must be of type object"))?;
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (key, val) in obj {
            let text = match (key.as_str(), val) {
                ("filter", Value::Object(_)) => val.to_string(),
                (_, Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                (_, Value::String(s)) => s.clone(),
                (_, Value::Null) => continue,
                (_, other) => other.to_string(),
            };
            pairs.append_pair(key, &text);
        }
        Self::parse(&pairs.finish())
    }

    /// Checks the query against `c` and builds the store query. Unknown fields in filter or
    /// sort are 403 (as Directus); bad operators 400. `search` looks only at the fields
    /// `readable` accepts.
    pub fn to_store_query(
        &self,
        c: &'static Collection,
        vars: &Vars,
        readable: &dyn Fn(&str) -> bool,
    ) -> Result<Query> {
        let mut filter = self
            .filter
            .as_ref()
            .map(|f| compile(c, f, vars))
            .transpose()?;
        if let Some(text) = &self.search {
            filter = Some(and(filter, search(c, text, readable)));
        }
        let mut sort = Vec::new();
        for s in &self.sort {
            let (name, desc) = match s.strip_prefix('-') {
                Some(n) => (n, true),
                None => (s.as_str(), false),
            };
            let field = c
                .field(name)
                .ok_or_else(|| Error::forbidden_field(name, c.name))?;
            sort.push((field, desc));
        }
        let limit = match self.limit {
            Some(-1) => None,
            Some(n) if n < -1 => {
                return Err(Error::InvalidQuery(
                    "\"limit\" must be -1 or greater".into(),
                ));
            }
            Some(n) => Some(n.unsigned_abs()),
            None => Some(100),
        };
        let too_large = || Error::InvalidQuery("\"offset\" is too large".into());
        let offset = match (self.offset, self.page, limit) {
            (Some(o), _, _) => o,
            (None, Some(p), Some(l)) if p > 0 => (p - 1).checked_mul(l).ok_or_else(too_large)?,
            _ => 0,
        };
        if offset > i64::MAX as u64 || limit.is_some_and(|l| l > i64::MAX as u64) {
            return Err(too_large());
        }
        Ok(Query {
            filter,
            sort,
            limit,
            offset,
        })
    }
}

/// Combines two filters with AND.
pub fn and(a: Option<Condition>, b: Condition) -> Condition {
    match a {
        Some(a) => Condition::And(vec![a, b]),
        None => b,
    }
}

/// Directus's `search`: text fields contain it, or an id field equals it. Concealed and hashed
/// fields never take part.
fn search(c: &'static Collection, text: &str, readable: &dyn Fn(&str) -> bool) -> Condition {
    let is_uuid = uuid::Uuid::parse_str(text).is_ok();
    Condition::Or(
        c.fields
            .iter()
            .filter(|f| readable(f.name))
            .filter_map(|field| match field.kind {
                Kind::String => Some(Condition::Compare {
                    field,
                    op: Op::IContains,
                    value: text.into(),
                }),
                Kind::Uuid if is_uuid => Some(Condition::Compare {
                    field,
                    op: Op::Eq,
                    value: text.into(),
                }),
                _ => None,
            })
            .collect(),
    )
}

fn operator(name: &str) -> Option<Op> {
    Some(match name {
        "_eq" => Op::Eq,
        "_neq" => Op::Neq,
        "_in" => Op::In,
        "_nin" => Op::Nin,
        "_null" => Op::Null,
        "_nnull" => Op::NotNull,
        "_contains" => Op::Contains,
        "_icontains" => Op::IContains,
        "_ncontains" => Op::NotContains,
        "_nicontains" => Op::NotIContains,
        "_starts_with" => Op::StartsWith,
        "_istarts_with" => Op::IStartsWith,
        "_ends_with" => Op::EndsWith,
        "_iends_with" => Op::IEndsWith,
        "_gt" => Op::Gt,
        "_gte" => Op::Gte,
        "_lt" => Op::Lt,
        "_lte" => Op::Lte,
        "_empty" => Op::Empty,
        "_nempty" => Op::NotEmpty,
        _ => return None,
    })
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Uuid => "uuid",
        Kind::Integer => "integer",
        Kind::Boolean => "boolean",
        Kind::Json => "json",
        Kind::Timestamp => "timestamp",
        Kind::Hash => "hash",
        Kind::String | Kind::Digest | Kind::Concealed => "string",
        Kind::Csv => "csv",
    }
}

/// Checks an operand against its field's kind and brings it to the form the field stores, so
/// that every engine compares the same values: numbers for integers, Unix milliseconds for
/// timestamps, booleans for booleans. Text operators apply to text fields only.
fn coerce(field: &Field, op: Op, op_name: &str, value: Value) -> Result<Value> {
    let textual = matches!(
        op,
        Op::Contains
            | Op::IContains
            | Op::NotContains
            | Op::NotIContains
            | Op::StartsWith
            | Op::IStartsWith
            | Op::EndsWith
            | Op::IEndsWith
    );
    let numeric = matches!(field.kind, Kind::Integer | Kind::Timestamp | Kind::Boolean);
    if textual && numeric {
        return Err(Error::InvalidQuery(format!(
            "\"{}\" field type does not contain the \"{op_name}\" filter operator",
            type_name(field.kind)
        )));
    }
    if matches!(op, Op::Null | Op::NotNull | Op::Empty | Op::NotEmpty) || !numeric {
        return Ok(value);
    }
    let one = |v: Value| -> Result<Value> {
        let coerced = match (field.kind, &v) {
            (_, Value::Null) => Some(v.clone()),
            (Kind::Boolean, Value::Bool(_)) => Some(v.clone()),
            (Kind::Boolean, Value::Number(n)) => match n.as_i64() {
                Some(0) => Some(Value::Bool(false)),
                Some(1) => Some(Value::Bool(true)),
                _ => None,
            },
            (Kind::Boolean, Value::String(s)) => match s.as_str() {
                "0" => Some(Value::Bool(false)),
                "1" => Some(Value::Bool(true)),
                _ => None,
            },
            // Whole numbers only: no integer or time equals a fraction, and engines disagree on
            // comparing them.
            (_, Value::Number(n)) => n.as_i64().map(Value::from),
            (Kind::Integer, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
            // A time as text, or Unix milliseconds as a query string spells numbers.
            (Kind::Timestamp, Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .ok()
                .or_else(|| crate::clock::parse_ms(s))
                .map(Value::from),
            _ => None,
        };
        coerced.ok_or_else(|| {
            Error::InvalidQuery(format!(
                "Invalid {} value {v} for field \"{}\"",
                type_name(field.kind),
                field.name
            ))
        })
    };
    match value {
        Value::Array(items) => Ok(Value::Array(
            items.into_iter().map(one).collect::<Result<_>>()?,
        )),
        v => one(v),
    }
}

/// What dynamic variables stand for in one request: `$CURRENT_USER`, `$CURRENT_ROLE`,
/// `$CURRENT_ROLES`, `$CURRENT_POLICIES`, each optionally followed by a path whose values were
/// looked up beforehand ([`Vars::paths`]), and `$NOW` with an optional adjustment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub user: Option<Uuid>,
    pub role: Option<Uuid>,
    pub roles: Vec<Uuid>,
    pub policies: Vec<Uuid>,
    pub now_ms: i64,
    /// The values of `$CURRENT_…​.<path>` variables, keyed by the whole variable.
    pub paths: HashMap<String, Value>,
}

/// The variables whose value is a lookup beyond the accountability (`$CURRENT_USER.email`).
pub const PATH_VARIABLES: &[&str] = &[
    "$CURRENT_USER.",
    "$CURRENT_ROLE.",
    "$CURRENT_ROLES.",
    "$CURRENT_POLICIES.",
];

impl Vars {
    /// The variables of a caller at a moment.
    pub fn of(acc: &Accountability, now_ms: i64) -> Self {
        Self {
            user: acc.user,
            role: acc.role,
            roles: acc.roles.clone(),
            policies: acc.policies.clone(),
            now_ms,
            paths: HashMap::new(),
        }
    }
}

fn ids(list: &[Uuid]) -> Value {
    Value::Array(list.iter().map(|r| Value::String(r.to_string())).collect())
}

/// Every path variable (`$CURRENT_USER.role.name`, …) named anywhere in `v`.
pub fn path_variables(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if PATH_VARIABLES.iter().any(|p| s.starts_with(p)) && !out.contains(s) => {
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|i| path_variables(i, out)),
        Value::Object(map) => map.values().for_each(|i| path_variables(i, out)),
        _ => {}
    }
}

/// `$NOW` moved by an adjustment such as `-1 day`, `+2 hours` or `-1.5h` (days when no unit
/// is given); an adjustment that does not parse leaves the time as it is, as in Directus.
fn adjusted_now(now_ms: i64, adjustment: &str) -> i64 {
    let text = adjustment.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    let rest = rest.trim();
    let split = rest
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '-'))
        .unwrap_or(rest.len());
    let (amount, unit) = rest.split_at(split);
    let Ok(amount) = amount.parse::<f64>() else {
        return now_ms;
    };
    let unit_ms: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e3,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600e3,
        "" | "d" | "day" | "days" => 86_400e3,
        "w" | "week" | "weeks" => 7.0 * 86_400e3,
        "mo" | "mth" | "month" | "months" => 30.0 * 86_400e3,
        "y" | "yr" | "yrs" | "year" | "years" => 365.0 * 86_400e3,
        _ => return now_ms,
    };
    let moved = sign * amount * unit_ms;
    if moved.is_finite() && moved.abs() < 1e15 {
        now_ms.saturating_add(moved as i64)
    } else {
        now_ms
    }
}

/// Resolves dynamic variables and the string forms of literals (`"true"`, `"null"`, …).
pub fn resolve(v: &Value, vars: &Vars) -> Value {
    match v {
        Value::String(s) => match s.as_str() {
            "$CURRENT_USER" => vars.user.map_or(Value::Null, |u| u.to_string().into()),
            "$CURRENT_ROLE" => vars.role.map_or(Value::Null, |r| r.to_string().into()),
            "$CURRENT_ROLES" => ids(&vars.roles),
            "$CURRENT_POLICIES" => ids(&vars.policies),
            "$NOW" => crate::clock::iso8601(vars.now_ms).into(),
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" | "NULL" => Value::Null,
            text if text.starts_with("$NOW(") && text.ends_with(')') => {
                crate::clock::iso8601(adjusted_now(vars.now_ms, &text[5..text.len() - 1])).into()
            }
            text if PATH_VARIABLES.iter().any(|p| text.starts_with(p)) => {
                vars.paths.get(text).cloned().unwrap_or(Value::Null)
            }
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|i| resolve(i, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, val)| (k.clone(), resolve(val, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Compiles a filter over `c` (a query's or a permission's) into the store's condition.
pub fn compile(c: &'static Collection, filter: &Value, vars: &Vars) -> Result<Condition> {
    condition(c, filter, vars, 0, &mut Budget::default())
}

/// Every field a filter reads, with the collection it belongs to (relational paths name
/// fields of other collections), so that a caller's right to read them can be checked.
pub fn filter_fields(
    c: &'static Collection,
    filter: &Value,
    out: &mut Vec<(&'static Collection, String)>,
) {
    let Some(obj) = filter.as_object() else {
        return;
    };
    for (key, val) in obj {
        match key.as_str() {
            "_and" | "_or" => match val {
                Value::Array(items) => items.iter().for_each(|i| filter_fields(c, i, out)),
                Value::Object(o) => o.values().for_each(|i| filter_fields(c, i, out)),
                _ => {}
            },
            name => {
                out.push((c, name.to_owned()));
                if let (Some(rel), Some(inner)) = (c.relation(name), val.as_object())
                    && !is_operators(inner)
                {
                    let inner = inner
                        .get("_some")
                        .or_else(|| inner.get("_none"))
                        .unwrap_or(val);
                    filter_fields(rel.target, inner, out);
                }
            }
        }
    }
}

/// Whether every key of a field's filter is an operator (else it is a relational path).
fn is_operators(obj: &Map<String, Value>) -> bool {
    obj.keys().all(|k| k.starts_with('_'))
        && !obj.contains_key("_some")
        && !obj.contains_key("_none")
}

/// What a filter has used so far of [`MAX_FILTER_CONDITIONS`] and [`MAX_FILTER_VALUES`].
#[derive(Default)]
struct Budget {
    conditions: usize,
    values: usize,
}

impl Budget {
    fn spend(&mut self, conditions: usize, values: usize) -> Result<()> {
        self.conditions += conditions;
        self.values += values;
        if self.conditions > MAX_FILTER_CONDITIONS {
            return Err(Error::InvalidQuery(format!(
                "\"filter\" may hold at most {MAX_FILTER_CONDITIONS} conditions"
            )));
        }
        if self.values > MAX_FILTER_VALUES {
            return Err(Error::InvalidQuery(format!(
                "\"filter\" may hold at most {MAX_FILTER_VALUES} values"
            )));
        }
        Ok(())
    }
}

fn condition(
    c: &'static Collection,
    filter: &Value,
    vars: &Vars,
    depth: usize,
    budget: &mut Budget,
) -> Result<Condition> {
    if depth > MAX_FILTER_DEPTH {
        return Err(Error::InvalidQuery("Filter is nested too deeply".into()));
    }
    let obj = filter
        .as_object()
        .ok_or_else(|| Error::InvalidQuery("Invalid JSON for filter object".into()))?;
    let mut parts = Vec::new();
    for (key, val) in obj {
        match key.as_str() {
            "_and" | "_or" => {
                let items: Vec<&Value> = match val {
                    Value::Array(a) => a.iter().collect(),
                    Value::Object(o) => o.values().collect(),
                    _ => {
                        return Err(Error::InvalidQuery(format!("\"{key}\" must be an array")));
                    }
                };
                budget.spend(1, 0)?;
                let subs = items
                    .into_iter()
                    .map(|i| condition(c, i, vars, depth + 1, budget))
                    .collect::<Result<Vec<_>>>()?;
                parts.push(if key == "_and" {
                    Condition::And(subs)
                } else {
                    Condition::Or(subs)
                });
            }
            name => {
                let ops = val.as_object().ok_or_else(|| {
                    Error::InvalidQuery(format!("Invalid filter for field \"{name}\""))
                })?;
                if let Some(rel) = c.relation(name)
                    && !is_operators(ops)
                {
                    budget.spend(1, 0)?;
                    let (inner, none) = match (ops.get("_some"), ops.get("_none")) {
                        (Some(inner), _) if rel.many => (inner, false),
                        (_, Some(inner)) if rel.many => (inner, true),
                        _ => (val, false),
                    };
                    let cond = condition(rel.target, inner, vars, depth + 1, budget)?;
                    parts.push(Condition::Related {
                        via: rel,
                        cond: Box::new(cond),
                        none,
                    });
                    continue;
                }
                let field = c
                    .field(name)
                    .ok_or_else(|| Error::forbidden_field(name, c.name))?;
                for (op_name, operand) in ops {
                    let op = operator(op_name).ok_or_else(|| {
                        Error::InvalidQuery(format!(
                            "\"{}\" field type does not contain the \"{op_name}\" filter operator",
                            type_name(field.kind)
                        ))
                    })?;
                    let null_check =
                        matches!(op, Op::Null | Op::NotNull | Op::Empty | Op::NotEmpty);
                    if field.kind == Kind::Hash && !null_check {
                        return Err(Error::InvalidQuery(format!(
                            "\"hash\" field type does not contain the \"{op_name}\" filter operator"
                        )));
                    }
                    if field.kind.is_concealed() && !null_check {
                        return Err(Error::InvalidQuery(format!(
                            "Field with \"conceal\" special does not allow the \"{op_name}\" filter operator"
                        )));
                    }
                    let mut value = resolve(operand, vars);
                    if matches!(op, Op::In | Op::Nin)
                        && let Value::String(s) = &value
                    {
                        value = Value::Array(
                            s.split(',').map(|p| Value::String(p.to_owned())).collect(),
                        );
                    }
                    budget.spend(1, value.as_array().map_or(1, Vec::len))?;
                    // Operands are single values (a list of them for `_in` and `_nin`); an
                    // object or a nested list is no value any operator compares with.
                    let list = matches!(op, Op::In | Op::Nin);
                    let values = match &value {
                        Value::Array(items) if list => items.as_slice(),
                        other => std::slice::from_ref(other),
                    };
                    for v in values {
                        match v {
                            Value::String(text) => short_enough("A filter value", text)?,
                            Value::Array(_) | Value::Object(_) => {
                                return Err(Error::InvalidQuery(format!(
                                    "\"{op_name}\" takes {}",
                                    if list {
                                        "a list of values"
                                    } else {
                                        "a single value"
                                    }
                                )));
                            }
                            _ => {}
                        }
                    }
                    // `_null: false` means the opposite check.
                    let op = match (op, &value) {
                        (Op::Null, Value::Bool(false)) => Op::NotNull,
                        (Op::NotNull, Value::Bool(false)) => Op::Null,
                        (Op::Empty, Value::Bool(false)) => Op::NotEmpty,
                        (Op::NotEmpty, Value::Bool(false)) => Op::Empty,
                        (op, _) => op,
                    };
                    let value = coerce(field, op, op_name, value)?;
                    parts.push(Condition::Compare { field, op, value });
                }
            }
        }
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Condition::And(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_store::schema::USERS;

    #[test]
    fn fields_parse_nested() {
        let f = Fields::parse("id,role.name,role.*").unwrap();
        assert_eq!(f.names, ["id"]);
        assert!(f.nested["role"].all);
        assert_eq!(f.nested["role"].names, ["name"]);
        assert!(Fields::parse("").unwrap().all);
        let deep = vec!["a"; 40].join(".");
        assert_eq!(
            Fields::parse(&deep).unwrap_err().to_string(),
            "Invalid query. Max relational depth exceeded."
        );
        let deep_filter = format!("filter{}=1", "[a]".repeat(40));
        assert!(ReadQuery::parse(&deep_filter).is_err());
        let json_filter = format!("filter={}{{}}{}", "{\"_and\":[".repeat(40), "]}".repeat(40));
        let q = ReadQuery::parse(&json_filter).unwrap();
        assert!(
            q.to_store_query(&tessera_store::schema::USERS, &Vars::default(), &|_| true)
                .is_err()
        );
        let big = ReadQuery::parse("offset=18446744073709551615").unwrap();
        assert!(
            big.to_store_query(&tessera_store::schema::USERS, &Vars::default(), &|_| true)
                .is_err()
        );
        let searched = ReadQuery::parse("search=ada")
            .unwrap()
            .to_store_query(&tessera_store::schema::USERS, &Vars::default(), &|_| true)
            .unwrap();
        let Some(Condition::Or(parts)) = searched.filter else {
            panic!("search is an OR of fields");
        };
        assert!(parts.iter().all(|p| matches!(
            p,
            Condition::Compare { field, .. } if !field.kind.is_concealed()
        )));
        let pages = ReadQuery::parse("page=18446744073709551615&limit=100").unwrap();
        assert!(
            pages
                .to_store_query(&tessera_store::schema::USERS, &Vars::default(), &|_| true)
                .is_err()
        );
    }

    #[test]
    fn bracket_and_json_filters() {
        let acc = Vars::default();
        let q = ReadQuery::parse("filter[email][_eq]=a@b.co&limit=5&sort=-email").unwrap();
        let sq = q.to_store_query(&USERS, &acc, &|_| true).unwrap();
        assert_eq!(sq.limit, Some(5));
        assert!(sq.sort[0].1);
        assert!(matches!(
            sq.filter,
            Some(Condition::Compare { op: Op::Eq, .. })
        ));
        let bad = ReadQuery::parse("filter={bad").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "Invalid query. Invalid JSON for filter object."
        );
        assert_eq!(
            ReadQuery::parse("limit=abc").unwrap_err().to_string(),
            "Invalid query. \"limit\" must be a number."
        );
    }

    #[test]
    fn concealed_and_hash_fields_only_allow_null_checks() {
        let acc = Vars::default();
        let q = ReadQuery::parse(r#"filter={"token":{"_eq":"x"}}"#).unwrap();
        assert_eq!(
            q.to_store_query(&USERS, &acc, &|_| true)
                .unwrap_err()
                .to_string(),
            "Invalid query. Field with \"conceal\" special does not allow the \"_eq\" filter operator."
        );
        let q = ReadQuery::parse(r#"filter={"password":{"_eq":"x"}}"#).unwrap();
        assert_eq!(
            q.to_store_query(&USERS, &acc, &|_| true)
                .unwrap_err()
                .to_string(),
            "Invalid query. \"hash\" field type does not contain the \"_eq\" filter operator."
        );
        let q = ReadQuery::parse(r#"filter={"token":{"_nnull":true}}"#).unwrap();
        assert!(q.to_store_query(&USERS, &acc, &|_| true).is_ok());
        let q = ReadQuery::parse(r#"filter={"first_name":{"_foo":1}}"#).unwrap();
        assert_eq!(
            q.to_store_query(&USERS, &acc, &|_| true)
                .unwrap_err()
                .to_string(),
            "Invalid query. \"string\" field type does not contain the \"_foo\" filter operator."
        );
    }
}
