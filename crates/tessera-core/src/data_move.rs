//! Moving a whole Tessera database to another engine (`tessera migrate-data`): every table of
//! the schema, parents first, a page at a time, rows keyed as they were. Users keep their
//! password hashes, static-token digests and failed-login state; sessions keep their families,
//! so every refresh token and session cookie still works on the new database (with the same
//! `SECRET`, access tokens do too). Self-references (a role's parent) are written in a second
//! pass, once every row exists.

use serde_json::Value;
use tessera_store::Store;
use tessera_store::schema::{TABLES, Table};

use crate::error::Result;

/// Rows read and written per step.
const PAGE: u64 = 1000;

/// How many rows of one table moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub table: &'static str,
    pub rows: u64,
}

/// Copies `table` page by page, through `step` for each page.
async fn pages(
    from: &dyn Store,
    table: &'static Table,
    mut step: impl AsyncFnMut(Vec<Vec<Value>>) -> Result<()>,
) -> Result<u64> {
    let key = table
        .columns
        .iter()
        .position(|c| *c == table.key)
        .unwrap_or_default();
    let (mut after, mut n) = (None, 0);
    loop {
        let rows = from.dump(table, after.take(), PAGE).await?;
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
    let mut moved = Vec::new();
    for table in TABLES {
        let rows = pages(from, table, async |rows| {
            Ok(to.load(table, rows, false).await?)
        })
        .await?;
        if !table.later.is_empty() {
            pages(from, table, async |rows| {
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
