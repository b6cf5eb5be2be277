//! The item query language: `ReadQuery::parse` of a raw query string (JSON and bracket
//! filters, `fields`, `sort`, `limit`, `offset`, `page`, `meta`, `search`, `deep`), its JSON
//! form `ReadQuery::from_json` (which must read back every parsed query as it was),
//! `to_store_query` against every collection with dynamic variables (`$CURRENT_USER`, `$NOW(…)`),
//! `compile`, `filter_fields`, `path_variables`, `resolve`; then the same query string as a list
//! request through the server, which compiles the filter to SQL (tessera-sql) and runs it on
//! SQLite: a query the parser accepted must never fail in the database.
//!
//! Input: a raw query string, such as `filter[email][_contains]=a&sort=-email&limit=5`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tessera_core::query::{
    Fields, ReadQuery, Vars, compile, filter_fields, path_variables, resolve,
};
use tessera_fuzz::{NOW_MS, json_close, server, uri_with_query};
use tessera_store::schema::{ACCESS, PERMISSIONS, POLICIES, ROLES, SETTINGS, USERS};
use tessera_store::{Collection, Condition};
use uuid::Uuid;

/// The collections a query may be asked of, with the route that lists them (settings has
/// none).
const COLLECTIONS: &[(&Collection, Option<&str>)] = &[
    (&USERS, Some("/users")),
    (&ROLES, Some("/roles")),
    (&POLICIES, Some("/policies")),
    (&ACCESS, Some("/access")),
    (&PERMISSIONS, Some("/permissions")),
    (&SETTINGS, None),
];

fn vars() -> Vars {
    Vars {
        user: Some(Uuid::from_u128(1)),
        role: Some(Uuid::from_u128(2)),
        roles: vec![Uuid::from_u128(2), Uuid::from_u128(3)],
        policies: vec![Uuid::from_u128(4)],
        now_ms: NOW_MS,
        ..Vars::default()
    }
}

/// Every path of a `fields` selection, as a list `fields` reads back.
fn paths(f: &Fields, prefix: &str, out: &mut Vec<Value>) {
    if f.all {
        out.push(format!("{prefix}*").into());
    }
    for n in &f.names {
        out.push(format!("{prefix}{n}").into());
    }
    for (rel, inner) in &f.nested {
        paths(inner, &format!("{prefix}{rel}."), out);
    }
}

/// The JSON form of a parsed query, as a batch request's `query` gives it.
fn as_json(q: &ReadQuery) -> Value {
    let mut m = Map::new();
    if let Some(f) = &q.fields {
        let mut list = Vec::new();
        paths(f, "", &mut list);
        m.insert("fields".into(), Value::Array(list));
    }
    if let Some(f) = &q.filter {
        m.insert("filter".into(), f.clone());
    }
    if !q.sort.is_empty() {
        m.insert("sort".into(), q.sort.clone().into());
    }
    if let Some(l) = q.limit {
        m.insert("limit".into(), l.into());
    }
    if let Some(o) = q.offset {
        m.insert("offset".into(), o.into());
    }
    if let Some(p) = q.page {
        m.insert("page".into(), p.into());
    }
    if !q.meta.is_empty() {
        m.insert("meta".into(), q.meta.clone().into());
    }
    if let Some(s) = &q.search {
        m.insert("search".into(), s.clone().into());
    }
    if let Some(d) = &q.deep {
        m.insert("deep".into(), Value::Object(d.clone()));
    }
    Value::Object(m)
}

fn same_json(a: &Option<impl Into<Value> + Clone>, b: &Option<impl Into<Value> + Clone>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => json_close(&a.clone().into(), &b.clone().into()),
        _ => false,
    }
}

/// `from_json` reads back what `parse` read.
fn round_trip(q: &ReadQuery) {
    let json = as_json(q);
    let back = ReadQuery::from_json(&json)
        .unwrap_or_else(|e| panic!("the JSON form of a parsed query is refused: {e} ({json})"));
    assert_eq!(back.fields, q.fields, "fields of {json}");
    assert!(same_json(&back.filter, &q.filter), "filter of {json}");
    assert_eq!(back.sort, q.sort, "sort of {json}");
    assert_eq!(
        (back.limit, back.offset, back.page),
        (q.limit, q.offset, q.page)
    );
    assert_eq!(back.meta, q.meta, "meta of {json}");
    assert_eq!(back.search, q.search, "search of {json}");
    assert!(same_json(&back.deep, &q.deep), "deep of {json}");
}

/// Every field and relation a compiled filter reads is one `filter_fields` reports, so that the
/// caller's right to read it is checked.
fn reads_only(cond: &Condition, reported: &[(&'static Collection, String)]) {
    match cond {
        Condition::And(parts) | Condition::Or(parts) => {
            parts.iter().for_each(|p| reads_only(p, reported));
        }
        Condition::Compare { field, .. } => assert!(
            reported
                .iter()
                .any(|(owner, n)| owner.field(n).is_some_and(|f| std::ptr::eq(f, *field))),
            "the filter reads {} unreported",
            field.name
        ),
        Condition::Related { via, cond, .. } => {
            assert!(
                reported
                    .iter()
                    .any(|(owner, n)| owner.relation(n).is_some_and(|r| std::ptr::eq(r, *via))),
                "the filter follows {} unreported",
                via.name
            );
            reads_only(cond, reported);
        }
    }
}

/// The pure checks of one collection; whether the query is valid for it.
fn against(c: &'static Collection, q: &ReadQuery, vars: &Vars) -> bool {
    if let Some(filter) = &q.filter {
        let mut fields = Vec::new();
        filter_fields(c, filter, &mut fields);
        if let Ok(compiled) = compile(c, filter, vars) {
            reads_only(&compiled, &fields);
        }
    }
    match q.to_store_query(c, vars, &|_| true) {
        Ok(sq) => {
            if let Some(l) = sq.limit {
                assert!(l <= i64::MAX as u64);
            }
            assert!(sq.offset <= i64::MAX as u64);
            assert_eq!(sq.sort.len(), q.sort.len());
            true
        }
        Err(e) => {
            let code = e.code();
            assert!(
                matches!(
                    code,
                    tessera_proto::ErrorCode::InvalidQuery | tessera_proto::ErrorCode::Forbidden
                ),
                "{code:?}: {e}"
            );
            false
        }
    }
}

fn variables(filter: &Value, vars: &Vars) {
    let mut named = Vec::new();
    path_variables(filter, &mut named);
    for n in &named {
        assert!(n.starts_with("$CURRENT_"));
    }
    let resolved = resolve(filter, vars);
    let mut left = vec![&resolved];
    while let Some(v) = left.pop() {
        match v {
            Value::String(s) => assert!(
                !matches!(
                    s.as_str(),
                    "$CURRENT_USER"
                        | "$CURRENT_ROLE"
                        | "$CURRENT_ROLES"
                        | "$CURRENT_POLICIES"
                        | "$NOW"
                ),
                "{s} left unresolved"
            ),
            Value::Array(items) => left.extend(items),
            Value::Object(map) => left.extend(map.values()),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let qs = String::from_utf8_lossy(data);
    let parsed = ReadQuery::parse(&qs);
    let vars = vars();
    let mut route = None;
    if let Ok(q) = &parsed {
        round_trip(q);
        let _ = q.fields();
        if let Some(filter) = &q.filter {
            variables(filter, &vars);
        }
        for (c, path) in COLLECTIONS {
            if against(c, q, &vars) && route.is_none() {
                route = *path;
            }
        }
    }
    let s = server();
    let bearer = s.admin_bearer.clone();
    let uri = uri_with_query(route.unwrap_or("/users"), data);
    let reply = s.request(
        axum::http::Method::GET,
        &uri,
        &[("authorization", bearer.as_bytes())],
        None,
    );
    if parsed.is_err() {
        assert_eq!(reply.status, axum::http::StatusCode::BAD_REQUEST, "{uri}");
    }
});
