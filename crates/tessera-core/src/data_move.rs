//! Moving a whole Tessera database to another engine (`tessera migrate-data`): every table of
//! the schema, parents first, a page at a time, rows keyed as they were. Users keep their
//! password hashes, static-token digests and failed-login state; sessions keep their families,
//! so every refresh token and session cookie still works on the new database (with the same
//! `SECRET`, access tokens do too). Self-references (a role's parent) are written in a second
//! pass, once every row exists.
//!
//! The same command imports a Directus 10, 11 or 12 database ([`import_directus`]): its users
//! (argon2 hashes, which Tessera verifies as they are), roles, policies, access, permissions
//! and settings, each column Tessera has taken by name; static tokens, which Directus keeps in
//! plain text, are digested on the way in. Directus's sessions cannot be carried (their tokens
//! name no family): its users log in again.

use serde_json::Value;
use tessera_store::schema::{TABLES, Table};
use tessera_store::{Foreign, PUBLIC_POLICY_ID, Store};

use crate::clock::parse_ms;
use crate::error::{Error, Result};
use crate::tokens::digest;

/// Rows read and written per step.
const PAGE: u64 = 1000;

/// How many rows of one table moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub table: &'static str,
    pub rows: u64,
}

/// A failure once writing has begun: each page is written in a transaction of its own, so
/// the pages before it stay.
fn partial(e: Error) -> Error {
    Error::payload(format!(
        "{e}; the target now holds part of the data: empty it, or use a new database, before \
         trying again"
    ))
}

/// Reads a table a page at a time, each page after the last key read (`key` is its place in
/// a row), and hands each page to `step`; returns how many rows there were.
async fn pages(
    key: usize,
    mut fetch: impl AsyncFnMut(Option<Value>) -> Result<Vec<Vec<Value>>>,
    mut step: impl AsyncFnMut(Vec<Vec<Value>>) -> Result<()>,
) -> Result<u64> {
    let (mut after, mut n) = (None, 0);
    loop {
        let rows = fetch(after.take()).await?;
        let Some(last) = rows.last() else {
            return Ok(n);
        };
        after = last.get(key).cloned();
        n += rows.len() as u64;
        step(rows).await?;
    }
}

/// Copies every table of `from` into `to`, which should be a fresh database.
pub async fn move_data(from: &dyn Store, to: &dyn Store) -> Result<Vec<Moved>> {
    copy_all(from, to).await.map_err(partial)
}

async fn copy_all(from: &dyn Store, to: &dyn Store) -> Result<Vec<Moved>> {
    let mut moved = Vec::new();
    for table in TABLES {
        let key = table
            .columns
            .iter()
            .position(|c| *c == table.key)
            .unwrap_or_default();
        let fetch = async |after| Ok(from.dump(table, after, PAGE).await?);
        let rows = pages(key, fetch, async |rows| {
            Ok(to.load(table, rows, false).await?)
        })
        .await?;
        if !table.later.is_empty() {
            pages(key, fetch, async |rows| {
                Ok(to.load(table, rows, true).await?)
            })
            .await?;
        }
        moved.push(Moved {
            table: table.name,
            rows,
        });
    }
    Ok(moved)
}

/// Which Directus table a Tessera table's rows come from. A Directus 10 database (`legacy`)
/// has no policies: each role carries its flags, and its permissions name the role. It
/// becomes one policy per role (same id, the role's flags) attached to that role, as
/// Directus's own upgrade to 11 does, and its permissions belong to those policies (the
/// public ones to the public policy).
fn directus_table(legacy: bool, table: &str) -> &'static str {
    match (legacy, table) {
        (true, "directus_policies" | "directus_access") => "directus_roles",
        _ => TABLES
            .iter()
            .find(|t| t.name == table)
            .map_or("", |t| t.name),
    }
}

/// Which column of that table a Tessera column's value comes from.
fn directus_column(legacy: bool, table: &str, column: &'static str) -> &'static str {
    match (legacy, table, column) {
        (_, "directus_users", "token_hash") => "token",
        (true, "directus_access", "role" | "policy") => "id",
        (true, "directus_access", "user" | "sort") => "",
        (true, "directus_permissions", "policy") => "role",
        _ => column,
    }
}

/// The value a column takes when the Directus database has no such column (an older version):
/// the schema's default.
fn default_of(column: &str) -> Value {
    match column {
        "failed_logins" => Value::from(0),
        "status" => Value::from("active"),
        "provider" => Value::from("default"),
        "text_direction" | "default_appearance" => Value::from("auto"),
        "email_notifications" | "public_registration_verify_email" => Value::Bool(true),
        "enforce_tfa" | "admin_access" | "app_access" | "public_registration" => Value::Bool(false),
        "project_name" => Value::from("Directus"),
        "project_color" => Value::from("#6644FF"),
        "default_language" => Value::from("en-US"),
        _ => Value::Null,
    }
}

/// A Directus value as Tessera stores it: static tokens digested, times as milliseconds, a
/// Directus 10 public permission given to the public policy.
fn converted(table: &str, column: &str, v: Value) -> Value {
    match (column, v) {
        ("token_hash", Value::String(token)) => Value::from(digest(&token)),
        ("policy", Value::Null) if table == "directus_permissions" => Value::from(PUBLIC_POLICY_ID),
        ("last_access", Value::String(at)) => {
            parse_ms(&at.replace(' ', "T")).map_or(Value::Null, Value::from)
        }
        (_, v) => v,
    }
}

/// Whether a Directus row is one Tessera already has in its own form: the access row that
/// gives the public policy to nobody (each database has its own, under its own id).
fn already_there(table: &Table, columns: &[&'static str], row: &[Value]) -> bool {
    let at = |name: &str| columns.iter().position(|c| *c == name).map(|i| &row[i]);
    table.name == "directus_access"
        && at("role").is_some_and(Value::is_null)
        && at("user").is_some_and(Value::is_null)
        && at("policy").and_then(Value::as_str) == Some(PUBLIC_POLICY_ID)
}

/// Imports a Directus 11 or 12 database into `to`, which should be a fresh database.
pub async fn import_directus(from: &dyn Foreign, to: &dyn Store) -> Result<Vec<Moved>> {
    let legacy = from.columns("directus_policies").await?.is_none();
    let tables: Vec<&'static Table> = TABLES
        .iter()
        .filter(|t| t.name != "directus_sessions")
        .collect();
    // Every table is looked for before anything is written.
    let mut shapes = Vec::new();
    for table in &tables {
        let source = directus_table(legacy, table.name);
        let Some(present) = from.columns(source).await? else {
            return Err(Error::payload(format!(
                "the Directus database has no {source}: it is not a Directus 10, 11 or 12 \
                 database"
            )));
        };
        shapes.push((*table, source, present));
    }
    import_all(from, to, legacy, shapes).await.map_err(partial)
}

async fn import_all(
    from: &dyn Foreign,
    to: &dyn Store,
    legacy: bool,
    shapes: Vec<(&'static Table, &'static str, Vec<String>)>,
) -> Result<Vec<Moved>> {
    let mut moved = Vec::new();
    for (table, source, present) in shapes {
        // The Tessera columns this database can fill, and from which of its columns.
        let from_column = |c: &'static str| directus_column(legacy, table.name, c);
        let filled: Vec<&'static str> = table
            .columns
            .iter()
            .copied()
            .filter(|c| present.iter().any(|p| p == from_column(c)))
            .collect();
        let read: Vec<String> = filled.iter().map(|c| from_column(c).to_owned()).collect();
        let key = filled.iter().position(|c| *c == table.key);
        let Some(key) = key else {
            return Err(Error::payload(format!(
                "{} in the Directus database has no {} column",
                table.name, table.key
            )));
        };
        let (mut later, mut n) = (Vec::new(), 0u64);
        let fetch = async |after| {
            Ok(from
                .rows(source, read.clone(), table.key, after, PAGE)
                .await?)
        };
        pages(key, fetch, async |rows: Vec<Vec<Value>>| {
            let rows: Vec<Vec<Value>> = rows
                .into_iter()
                .filter(|r| !already_there(table, &filled, r))
                .map(|r| {
                    table
                        .columns
                        .iter()
                        .map(|c| match filled.iter().position(|f| f == c) {
                            Some(i) => converted(table.name, c, r[i].clone()),
                            None => default_of(c),
                        })
                        .collect()
                })
                .collect();
            // What was written, not what was read: a row Tessera already has is skipped.
            n += rows.len() as u64;
            if !table.later.is_empty() {
                later.push(rows.clone());
            }
            Ok(to.load(table, rows, false).await?)
        })
        .await?;
        for rows in later {
            to.load(table, rows, true).await?;
        }
        moved.push(Moved {
            table: table.name,
            rows: n,
        });
    }
    Ok(moved)
}
