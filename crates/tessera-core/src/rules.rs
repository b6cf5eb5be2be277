//! One caller's permission for one collection and action, resolved: dynamic variables
//! substituted, item filters compiled into one store condition (OR-ed across policies), field
//! lists unioned, per-row field access where policies grant different fields under different
//! filters, presets deep-merged (later policies win), and validations checked against a payload in
//! memory as Directus's `validatePayload` does, with its FAILED_VALIDATION answers.

use serde_json::{Map, Value};
use tessera_store::{Collection, Condition};

use crate::error::{Error, Result, Violation};
use crate::permissions::Grant;
use crate::query::{Vars, compile, resolve};

/// Fields some items grant only under a filter: the items matching `filter` show `fields`.
#[derive(Debug, Clone)]
pub struct Case {
    pub filter: Condition,
    /// `None`: every field.
    pub fields: Option<Vec<String>>,
}

/// A resolved permission.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The items it reaches; `None` when every item.
    pub filter: Option<Condition>,
    /// The fields it reaches on some item; `None` when every field.
    pub fields: Option<Vec<String>>,
    /// The fields every reached item shows; `None` when every field.
    pub everywhere: Option<Vec<String>>,
    /// The fields shown on every reached item whichever grant reaches it: what a query may
    /// filter, sort and search on without telling anything of items that hide them.
    pub common: Option<Vec<String>>,
    /// Fields shown only on the items of a filter (empty when every reached item shows every
    /// field of [`Rule::fields`]).
    pub cases: Vec<Case>,
    /// Filters a payload must pass one of (none: any payload).
    pub validations: Vec<Value>,
    /// Values a write gets for the fields it leaves out.
    pub presets: Map<String, Value>,
}

/// The union of two field lists (`None` = every field).
fn union(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> Option<Vec<String>> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let mut out = a.clone();
            out.extend(b.iter().filter(|n| !a.contains(n)).cloned());
            Some(out)
        }
        _ => None,
    }
}

/// The fields in both lists (`None` = every field).
fn intersection(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> Option<Vec<String>> {
    match (a, b) {
        (None, other) | (other, None) => other.clone(),
        (Some(a), Some(b)) => Some(a.iter().filter(|n| b.contains(n)).cloned().collect()),
    }
}

fn covers(list: &Option<Vec<String>>, field: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|n| n == field))
}

/// Whether every field of `inner` is in `outer`.
fn within(inner: &Option<Vec<String>>, outer: &Option<Vec<String>>) -> bool {
    match (inner, outer) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(i), o) => i.iter().all(|n| covers(o, n)),
    }
}

impl Rule {
    /// Resolves the grants of one collection and action for a caller. A stored filter that
    /// does not compile (a field since removed, a bad operator) grants nothing; `None` when
    /// nothing is left.
    pub fn resolve(c: &'static Collection, grants: &[Grant], vars: &Vars) -> Option<Rule> {
        let mut filters: Vec<Option<Condition>> = Vec::new();
        let mut kept: Vec<&Grant> = Vec::new();
        for g in grants {
            match &g.filter {
                None => filters.push(None),
                Some(f) => match compile(c, f, vars) {
                    Ok(cond) => filters.push(Some(cond)),
                    Err(e) => {
                        tracing::warn!(collection = c.name, error = %e, "a permission's filter does not compile; it grants nothing");
                        continue;
                    }
                },
            }
            kept.push(g);
        }
        if kept.is_empty() {
            return None;
        }
        let filter = if filters.iter().any(Option::is_none) {
            None
        } else {
            let mut all: Vec<Condition> = filters.iter().flatten().cloned().collect();
            Some(if all.len() == 1 {
                all.remove(0)
            } else {
                Condition::Or(all)
            })
        };
        let fields = kept
            .iter()
            .skip(1)
            .fold(kept[0].fields.clone(), |acc, g| union(&acc, &g.fields));
        let mut everywhere: Option<Vec<String>> = Some(Vec::new());
        for (g, f) in kept.iter().zip(&filters) {
            if f.is_none() {
                everywhere = union(&everywhere, &g.fields);
            }
        }
        let shared = kept.iter().skip(1).fold(kept[0].fields.clone(), |acc, g| {
            intersection(&acc, &g.fields)
        });
        let common = union(&everywhere, &shared);
        // One grant, or grants that all show the same fields: every reached item shows them all.
        let uniform = kept.iter().all(|g| within(&fields, &g.fields));
        let (everywhere, cases) = if uniform {
            (fields.clone(), Vec::new())
        } else {
            let cases = kept
                .iter()
                .zip(&filters)
                .filter_map(|(g, f)| {
                    let f = f.as_ref()?;
                    (!within(&g.fields, &everywhere)).then(|| Case {
                        filter: f.clone(),
                        fields: g.fields.clone(),
                    })
                })
                .collect();
            (everywhere, cases)
        };
        let validations = kept
            .iter()
            .filter_map(|g| g.validation.as_ref())
            .map(|v| resolve(v, vars))
            .collect();
        let mut presets = Map::new();
        for p in kept.iter().filter_map(|g| g.presets.as_ref()) {
            if let Value::Object(o) = resolve(p, vars) {
                crate::permissions::merge_presets(&mut presets, &o);
            }
        }
        Some(Rule {
            filter,
            fields,
            everywhere,
            common,
            cases,
            validations,
            presets,
        })
    }

    /// Whether the rule reaches `field` on some item.
    pub fn may(&self, field: &str) -> bool {
        covers(&self.fields, field)
    }

    /// Whether a query may filter, sort or search on `field` (it shows on every item the rule
    /// reaches).
    pub fn may_query(&self, field: &str) -> bool {
        covers(&self.common, field)
    }

    /// The fields an item shows given the cases it matched (`matched[i]` for `cases[i]`).
    pub fn shown(&self, matched: &[bool]) -> Option<Vec<String>> {
        self.cases
            .iter()
            .zip(matched)
            .filter(|(_, m)| **m)
            .fold(self.everywhere.clone(), |acc, (case, _)| {
                union(&acc, &case.fields)
            })
    }

    /// Refuses a write naming fields the rule does not reach, as Directus words it.
    pub fn check_write(&self, collection: &str, names: &[&str]) -> Result<()> {
        check_fields(collection, names, &self.fields)
    }

    /// `payload` with the presets under it (the payload wins).
    pub fn with_presets(&self, payload: &Map<String, Value>) -> Map<String, Value> {
        let mut out = self.presets.clone();
        out.extend(payload.clone());
        out
    }

    /// Checks a payload against the validations: it must pass one of them.
    pub fn validate(&self, payload: &Map<String, Value>) -> Result<()> {
        if self.validations.is_empty() {
            return Ok(());
        }
        let mut all = Vec::new();
        for v in &self.validations {
            let found = violations(v, payload);
            if found.is_empty() {
                return Ok(());
            }
            for f in found {
                if !all.contains(&f) {
                    all.push(f);
                }
            }
        }
        Err(Error::FailedValidation(all))
    }
}

/// Refuses `names` outside `allowed` (`None` = every field), as Directus words it.
pub fn check_fields(collection: &str, names: &[&str], allowed: &Option<Vec<String>>) -> Result<()> {
    let refused: Vec<String> = names
        .iter()
        .filter(|n| !covers(allowed, n))
        .map(|n| format!("\"{n}\""))
        .collect();
    match refused.len() {
        0 => Ok(()),
        1 => Err(Error::Forbidden(Some(format!(
            "You don't have permission to access field {} in collection \"{collection}\" or it does not exist.",
            refused[0]
        )))),
        _ => Err(Error::Forbidden(Some(format!(
            "You don't have permission to access fields {} in collection \"{collection}\" or they do not exist.",
            refused.join(", ")
        )))),
    }
}

/// A value as a validation message quotes it.
fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => format!("\"{other}\""),
    }
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => {
            let n = if a.is_number() { a } else { b };
            let digits = n.to_string();
            s.trim() == digits
        }
        _ => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .or_else(|| crate::clock::parse_ms(s).map(|ms| ms as f64)),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn violation(
    field: &str,
    rule: &'static str,
    detail: String,
    extra: Option<(&'static str, Value)>,
) -> Violation {
    Violation {
        field: field.to_owned(),
        rule,
        detail,
        extra: extra.into_iter().collect(),
    }
}

/// What `payload` fails of a validation filter (nothing when it passes). A field the payload
/// leaves out passes every rule but `_submitted`.
pub fn violations(filter: &Value, payload: &Map<String, Value>) -> Vec<Violation> {
    let Some(obj) = filter.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, val) in obj {
        let branches = || -> Vec<&Value> {
            match val {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                _ => Vec::new(),
            }
        };
        match key.as_str() {
            "_and" => {
                for b in branches() {
                    out.extend(violations(b, payload));
                }
            }
            "_or" => {
                let found: Vec<Vec<Violation>> = branches()
                    .into_iter()
                    .map(|b| violations(b, payload))
                    .collect();
                if !found.iter().any(Vec::is_empty) {
                    out.extend(found.into_iter().flatten());
                }
            }
            field => {
                let Some(ops) = val.as_object() else { continue };
                let value = payload.get(field);
                for (op, operand) in ops {
                    if let Some(v) = check(field, op, operand, value) {
                        out.push(v);
                    }
                }
            }
        }
    }
    out
}

fn check(field: &str, op: &str, operand: &Value, value: Option<&Value>) -> Option<Violation> {
    let required = || violation(field, "required", "Value is required.".into(), None);
    if op == "_submitted" {
        return value.is_none().then(required);
    }
    let value = value?;
    let text = value.as_str();
    let list = || match operand {
        Value::Array(a) => a.clone(),
        Value::String(s) => s.split(',').map(|p| Value::String(p.to_owned())).collect(),
        other => vec![other.clone()],
    };
    let one_of = |items: &[Value]| items.iter().map(quoted).collect::<Vec<_>>().join(", ");
    let substring = |negate: bool, fold: bool, kind: &'static str| {
        let needle = operand
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| operand.to_string());
        let holds = text.is_some_and(|t| {
            let (t, n) = if fold {
                (t.to_lowercase(), needle.to_lowercase())
            } else {
                (t.to_owned(), needle.clone())
            };
            match kind {
                "starts_with" => t.starts_with(&n),
                "ends_with" => t.ends_with(&n),
                _ => t.contains(&n),
            }
        });
        if holds != negate {
            return None;
        }
        let (rule, detail): (&'static str, String) = match (kind, negate) {
            ("contains", false) => (
                "contains",
                format!("Value has to contain {}.", quoted(&needle.clone().into())),
            ),
            ("contains", true) => (
                "ncontains",
                format!("Value can't contain {}.", quoted(&needle.clone().into())),
            ),
            ("starts_with", false) => ("starts_with", String::new()),
            ("starts_with", true) => ("nstarts_with", String::new()),
            ("ends_with", false) => ("ends_with", String::new()),
            _ => ("nends_with", String::new()),
        };
        Some(violation(
            field,
            rule,
            detail,
            Some(("substring", Value::String(needle))),
        ))
    };
    let compare = |rule: &'static str, words: &str, holds: fn(f64, f64) -> bool| match (
        number(value),
        number(operand),
    ) {
        (Some(v), Some(o)) if holds(v, o) => None,
        (Some(_), Some(_)) => Some(violation(
            field,
            rule,
            format!("Value has to be {words} {}.", quoted(operand)),
            Some(("valid", operand.clone())),
        )),
        _ => Some(required()),
    };
    match op {
        "_eq" => (!loosely_equal(value, operand)).then(|| {
            violation(
                field,
                "eq",
                format!("Value has to be {}.", quoted(operand)),
                Some(("valid", operand.clone())),
            )
        }),
        "_neq" => loosely_equal(value, operand).then(|| {
            violation(
                field,
                "neq",
                format!("Value can't be {}.", quoted(operand)),
                Some(("invalid", operand.clone())),
            )
        }),
        "_in" => {
            let items = list();
            (!items.iter().any(|i| loosely_equal(value, i))).then(|| {
                violation(
                    field,
                    "in",
                    format!("Value has to be one of {}.", one_of(&items)),
                    Some(("valid", Value::Array(items.clone()))),
                )
            })
        }
        "_nin" => {
            let items = list();
            items.iter().any(|i| loosely_equal(value, i)).then(|| {
                violation(
                    field,
                    "nin",
                    format!("Value can't be one of {}.", one_of(&items)),
                    Some(("invalid", Value::Array(items.clone()))),
                )
            })
        }
        "_gt" => compare("gt", "greater than", |v, o| v > o),
        "_gte" => compare("gte", "greater than or equal to", |v, o| v >= o),
        "_lt" => compare("lt", "less than", |v, o| v < o),
        "_lte" => compare("lte", "less than or equal to", |v, o| v <= o),
        "_contains" => substring(false, false, "contains"),
        "_icontains" => substring(false, true, "contains"),
        "_ncontains" => substring(true, false, "contains"),
        "_nicontains" => substring(true, true, "contains"),
        "_starts_with" => substring(false, false, "starts_with"),
        "_istarts_with" => substring(false, true, "starts_with"),
        "_nstarts_with" => substring(true, false, "starts_with"),
        "_nistarts_with" => substring(true, true, "starts_with"),
        "_ends_with" => substring(false, false, "ends_with"),
        "_iends_with" => substring(false, true, "ends_with"),
        "_nends_with" => substring(true, false, "ends_with"),
        "_niends_with" => substring(true, true, "ends_with"),
        "_null" => (!value.is_null())
            .then(|| violation(field, "null", "Value has to be null.".into(), None)),
        "_nnull" => value
            .is_null()
            .then(|| violation(field, "nnull", "Value can't be null.".into(), None)),
        "_empty" => (!is_empty(value))
            .then(|| violation(field, "empty", "Value has to be empty.".into(), None)),
        "_nempty" => is_empty(value)
            .then(|| violation(field, "nempty", "Value can't be empty.".into(), None)),
        "_regex" => {
            let pattern = operand.as_str().unwrap_or_default();
            let matches = text.is_some_and(|t| {
                fancy_regex::Regex::new(pattern)
                    .ok()
                    .and_then(|re| re.is_match(t).ok())
                    .unwrap_or(false)
            });
            // Unlike Directus, the refused value is not echoed (it may be a password).
            (!matches).then(|| {
                violation(
                    field,
                    "regex",
                    "Value doesn't have the correct format.".into(),
                    None,
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn validation_messages_are_directus_words() {
        let found = violations(
            &json!({"email": {"_contains": "@example.com"}}),
            &payload(json!({"email": "a@b.com"})),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, "contains");
        assert_eq!(found[0].detail, "Value has to contain \"@example.com\".");
        assert!(
            violations(
                &json!({"email": {"_contains": "@example.com"}}),
                &payload(json!({"first_name": "x"}))
            )
            .is_empty()
        );
        let submitted = violations(&json!({"email": {"_submitted": true}}), &payload(json!({})));
        assert_eq!(submitted[0].rule, "required");
        let or = violations(
            &json!({"_or": [{"n": {"_eq": 1}}, {"n": {"_eq": "2"}}]}),
            &payload(json!({"n": 2})),
        );
        assert!(or.is_empty());
        let gt = violations(&json!({"n": {"_gt": 5}}), &payload(json!({"n": 3})));
        assert_eq!(gt[0].detail, "Value has to be greater than \"5\".");
    }
}
