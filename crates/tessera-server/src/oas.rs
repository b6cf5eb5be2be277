//! The OpenAPI 3 description of Tessera's routes, made as the router is made: every route is
//! added through [`Api::route`] together with its operations, so no route exists undescribed,
//! and the item routes' schemas are derived from the collection schema. `GET
//! /server/specs/oas` serves the document, leaving out the item operations the caller's
//! permissions give it nothing on.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};
use tessera_core::access::Accountability;
use tessera_core::permissions::Action;
use tessera_store::schema::COLLECTIONS;
use tessera_store::{Collection, Kind};

use crate::AppState;
use crate::error::ApiResult;
use crate::http::json_body;
use crate::routes::server::VERSION;

/// What a successful answer of an operation is.
#[derive(Clone)]
pub enum Answer {
    /// 200 with a JSON body of this schema.
    Json(Value),
    /// 200 with a JSON body of this schema, or 204 when the caller may not read the result.
    JsonOr204(Value),
    /// 204, no body.
    Empty,
    /// Never a success: the route answers every request with an error.
    Refused,
    /// 200 with a body of this media type and schema.
    Body(&'static str, Value),
}

/// One operation (a method on a path).
#[derive(Clone)]
pub struct Op {
    pub method: &'static str,
    pub summary: String,
    pub tag: &'static str,
    /// The collection and action whose permission decides whether a caller is shown it.
    pub guard: Option<(&'static Collection, Action)>,
    /// The query parameters it reads.
    pub query: &'static [&'static str],
    /// The schema of its JSON body, if it reads one.
    pub body: Option<Value>,
    pub answer: Answer,
}

impl Op {
    pub fn new(
        method: &'static str,
        tag: &'static str,
        summary: impl Into<String>,
        answer: Answer,
    ) -> Self {
        Self {
            method,
            summary: summary.into(),
            tag,
            guard: None,
            query: &[],
            body: None,
            answer,
        }
    }

    pub fn guard(mut self, c: &'static Collection, action: Action) -> Self {
        self.guard = Some((c, action));
        self
    }

    pub fn query(mut self, names: &'static [&'static str]) -> Self {
        self.query = names;
        self
    }

    pub fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
}

/// The parameters of an item read.
pub const READ_QUERY: &[&str] = &[
    "deep", "fields", "filter", "search", "sort", "limit", "offset", "page", "meta",
];

/// The parameter a write's read-back takes.
pub const FIELDS: &[&str] = &["fields"];

/// A router being built, with the description of every route added so far.
pub struct Api {
    router: Router<AppState>,
    paths: Vec<(String, Vec<Op>)>,
}

/// The described routes, in the order they were added.
pub type Described = Arc<OnceLock<Vec<(String, Vec<Op>)>>>;

impl Default for Api {
    fn default() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }
}

impl Api {
    /// Adds a route and its operations.
    pub fn route(mut self, path: &str, methods: MethodRouter<AppState>, ops: Vec<Op>) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push((path.to_owned(), ops));
        self
    }

    /// The router, and the descriptions filed into `described`.
    pub fn finish(self, described: &Described) -> Router<AppState> {
        // Set once per router; a second router built from the same state describes the same.
        let _ = described.set(self.paths);
        self.router
    }
}

/// The JSON schema of one stored field as it reads.
fn field_schema(c: &'static Collection, name: &str, kind: Kind) -> Value {
    if c.relation(name).is_some() {
        // A key, or the related item when `fields` asks into it.
        return json!({});
    }
    match kind {
        Kind::Integer => json!({"type": "integer", "nullable": true}),
        Kind::Boolean => json!({"type": "boolean", "nullable": true}),
        Kind::Json => json!({}),
        Kind::Csv => json!({"type": "array", "items": {"type": "string"}, "nullable": true}),
        _ => json!({"type": "string", "nullable": true}),
    }
}

/// An item of `c` as the API shows it (every property optional: `fields` chooses them).
pub fn item_schema(c: &'static Collection) -> Value {
    let mut props = Map::new();
    for f in c.fields {
        props.insert(f.name.to_owned(), field_schema(c, f.name, f.kind));
    }
    for a in c.aliases() {
        props.insert(a.name.to_owned(), json!({"type": "array"}));
    }
    json!({"type": "object", "properties": props})
}

/// An item of `c` as a write sends it.
pub fn input_schema(c: &'static Collection) -> Value {
    let mut props = Map::new();
    for f in c.fields.iter().filter(|f| f.writable) {
        props.insert(f.name.to_owned(), field_schema(c, f.name, f.kind));
    }
    for a in c.aliases() {
        props.insert(a.name.to_owned(), json!({}));
    }
    json!({"type": "object", "properties": props})
}

/// `{"data": schema}`.
pub fn data(schema: Value) -> Value {
    json!({"type": "object", "properties": {"data": schema}, "required": ["data"]})
}

/// The operations of a collection's item routes: `(on the collection, on one item)`.
pub fn collection_ops(c: &'static Collection) -> (Vec<Op>, Vec<Op>) {
    let item = item_schema(c);
    let input = input_schema(c);
    let keys =
        json!({"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}});
    let query = json!({"type": "object"});
    let name = c.name;
    let list = json!({"type": "object", "properties": {
        "data": {"type": "array", "items": item},
        "meta": {"type": "object"}
    }, "required": ["data"]});
    let many = data(json!({"type": "array", "items": item}));
    let on_collection = vec![
        Op::new("get", name, format!("List {name}"), Answer::Json(list))
            .guard(c, Action::Read)
            .query(READ_QUERY),
        Op::new("post", name, format!("Create one or many {name}"), Answer::JsonOr204(data(json!({"oneOf": [item, {"type": "array", "items": item}]}))))
            .guard(c, Action::Create)
            .query(FIELDS)
            .body(json!({"oneOf": [input, {"type": "array", "items": input}]})),
        Op::new("patch", name, format!("Update many {name}: a list of items, by keys, or by query"), Answer::JsonOr204(many))
            .guard(c, Action::Update)
            .query(FIELDS)
            .body(json!({"oneOf": [
                {"type": "array", "items": input},
                {"type": "object", "properties": {"keys": keys, "data": input}, "required": ["keys", "data"]},
                {"type": "object", "properties": {"query": query, "data": input}, "required": ["query", "data"]}
            ]})),
        Op::new("delete", name, format!("Delete many {name}: a list of keys, by keys, or by query"), Answer::Empty)
            .guard(c, Action::Delete)
            .body(json!({"oneOf": [
                keys,
                {"type": "object", "properties": {"keys": keys}, "required": ["keys"]},
                {"type": "object", "properties": {"query": query}, "required": ["query"]}
            ]})),
    ];
    let on_item = vec![
        Op::new(
            "get",
            name,
            format!("Read one of {name}"),
            Answer::Json(data(item.clone())),
        )
        .guard(c, Action::Read)
        .query(FIELDS),
        Op::new(
            "patch",
            name,
            format!("Update one of {name}"),
            Answer::JsonOr204(data(item)),
        )
        .guard(c, Action::Update)
        .query(FIELDS)
        .body(input),
        Op::new(
            "delete",
            name,
            format!("Delete one of {name}"),
            Answer::Empty,
        )
        .guard(c, Action::Delete),
    ];
    (on_collection, on_item)
}

fn parameter(name: &str) -> Value {
    let schema = match name {
        "limit" | "offset" | "page" => json!({"type": "integer"}),
        _ => json!({"type": "string"}),
    };
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

fn operation(path: &str, op: &Op) -> Value {
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(op.query.iter().map(|q| parameter(q)));
    let error = json!({"description": "An error, in Directus's envelope", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}
    }});
    let json_ok = |schema: &Value| json!({"description": "Success", "content": {"application/json": {"schema": schema}}});
    let mut responses = Map::new();
    match &op.answer {
        Answer::Json(schema) => {
            responses.insert("200".into(), json_ok(schema));
        }
        Answer::JsonOr204(schema) => {
            responses.insert("200".into(), json_ok(schema));
            responses.insert(
                "204".into(),
                json!({"description": "Saved; the caller may not read it back"}),
            );
        }
        Answer::Empty => {
            responses.insert("204".into(), json!({"description": "Done"}));
        }
        Answer::Refused => {}
        Answer::Body(media, schema) => {
            responses.insert("200".into(), json!({"description": "Success", "content": {media.to_owned(): {"schema": schema}}}));
        }
    }
    responses.insert("default".into(), error);
    let operation_id = format!(
        "{}{}",
        op.method,
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.trim_matches(|ch| ch == '{' || ch == '}');
                let mut chars = s.chars();
                chars
                    .next()
                    .map(|f| f.to_uppercase().chain(chars).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    let mut out = json!({
        "summary": op.summary,
        "operationId": operation_id,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = &op.body {
        out["requestBody"] =
            json!({"required": false, "content": {"application/json": {"schema": body}}});
    }
    out
}

/// The document for a caller that may act on `allowed`.
pub fn document(paths: &[(String, Vec<Op>)], allowed: &HashSet<(&'static str, Action)>) -> Value {
    let mut out = Map::new();
    for (path, ops) in paths {
        let mut methods = Map::new();
        for op in ops {
            if op
                .guard
                .is_some_and(|(c, a)| !allowed.contains(&(c.name, a)))
            {
                continue;
            }
            methods.insert(op.method.to_owned(), operation(path, op));
        }
        if !methods.is_empty() {
            let oas_path = path.to_owned();
            out.insert(oas_path, Value::Object(methods));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Tessera",
            "version": VERSION,
            "description": "Directus-compatible authentication, access tokens and access control."
        },
        "paths": out,
        "components": {
            "schemas": {
                "Errors": {"type": "object", "properties": {"errors": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "extensions": {"type": "object", "properties": {"code": {"type": "string"}}}
                    },
                    "required": ["message"]
                }}}, "required": ["errors"]}
            },
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer"},
                "QueryToken": {"type": "apiKey", "in": "query", "name": "access_token"},
                "SessionCookie": {"type": "apiKey", "in": "cookie", "name": "directus_session_token"}
            }
        },
        "security": [{}, {"Bearer": []}, {"QueryToken": []}, {"SessionCookie": []}]
    })
}

/// `GET /server/specs/oas`.
pub async fn serve(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    Extension(described): Extension<Described>,
) -> ApiResult<Response> {
    let mut allowed = HashSet::new();
    for c in COLLECTIONS {
        for action in Action::ALL {
            if s.items.allows(c, &acc, action).await? {
                allowed.insert((c.name, action));
            }
        }
    }
    let paths = described.get().map(Vec::as_slice).unwrap_or_default();
    Ok(json_body(&document(paths, &allowed)).into_response())
}
