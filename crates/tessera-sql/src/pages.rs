//! Deep pages continued from remembered rows. A page at offset `n` costs the engine a walk
//! past `n` index entries; a client walking a collection page by page would pay that walk
//! again on every page. So every page of a versioned collection remembers where its first and
//! last rows sit (their sort values and key), with the collection's version read in the same
//! statement; a later page of the same filter and sort starts from the nearest remembered row
//! at or before it (a range on the sort index) and skips only the rows between. The paging
//! statement checks the version itself, so a write anywhere, by any instance, between the two
//! reads sends the page back to walking its offset.
//!
//! A page is continued only where the remembered row alone says where the rest begins: every
//! sort in one direction, the filter on the collection's own columns (no related collection
//! whose writes the version does not see), none of them a column the version ignores, and,
//! for a descending sort over more than one column, none that may hold null (nulls sort
//! smallest, and a row comparison cannot place them). A continued page that comes back short
//! is read again by offset, which is also what tells a changed version from the last page.
//! A sort naming one column twice is not continued, and rows whose sort values are long are
//! not remembered, so what is kept stays small whatever a caller writes or asks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sea_query::{Alias, Expr, ExprTrait, Query as Select, SelectStatement};
use tessera_store::schema::{Collection, Nulls};
use tessera_store::{Condition, Query};

use crate::filter::{condition, order};
use crate::{Cell, Dialect, Param, Row};

/// The collections with a version (see the engines' `user_version` migrations), and the
/// columns whose writes leave it alone.
const VERSIONED: &[(&str, &[&str])] = &[("directus_users", &["last_access"])];

/// Filters and sorts remembered at once; past this the oldest half is forgotten.
const WALKS: usize = 1024;

/// Rows remembered per filter and sort; past this the ones nearest the start are forgotten.
const MARKS: usize = 16;

/// Statements longer than this (a filter of hundreds of terms) are not remembered.
const KEY_BYTES: usize = 4096;

/// Rows whose sort values and key are longer than this together (a sort on a long text a
/// caller wrote) are not remembered: at most `WALKS × MARKS × MARK_BYTES` (8 MiB) of values.
const MARK_BYTES: usize = 512;

/// A remembered row: where it sits, at which version, and its sort values then its key.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub position: u64,
    pub version: i64,
    pub values: Vec<Cell>,
}

#[derive(Default)]
struct Walk {
    version: i64,
    at: BTreeMap<u64, Vec<Cell>>,
    born: u64,
}

/// The remembered rows of every continued filter and sort, shared by a store's reads.
#[derive(Default)]
pub(crate) struct Marks {
    walks: Mutex<(HashMap<String, Walk>, u64)>,
}

impl Marks {
    /// The remembered row of `walk` nearest at or before `offset`.
    pub fn nearest(&self, walk: &Paging, offset: u64) -> Option<Mark> {
        let walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        let found = walks.0.get(&walk.key)?;
        let (position, values) = found.at.range(..=offset).next_back()?;
        Some(Mark {
            position: *position,
            version: found.version,
            values: values.clone(),
        })
    }

    /// Remembers the first and last rows of a page of `walk` read at `version`, its first
    /// row at `offset`.
    pub fn remember(&self, walk: &Paging, version: i64, offset: u64, page: &[Row]) {
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return;
        };
        let ends = [(offset, first), (offset + page.len() as u64 - 1, last)];
        let mut walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        let (walks, born) = &mut *walks;
        *born += 1;
        if walks.len() >= WALKS && !walks.contains_key(&walk.key) {
            let mut ages: Vec<u64> = walks.values().map(|w| w.born).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            walks.retain(|_, w| w.born > cut);
        }
        let entry = walks.entry(walk.key.clone()).or_default();
        if entry.version != version {
            entry.at.clear();
            entry.version = version;
        }
        entry.born = *born;
        for (position, row) in ends {
            if let Some(values) = walk.values(row) {
                entry.at.insert(position, values);
            }
        }
        while entry.at.len() > MARKS {
            entry.at.pop_first();
        }
    }

    /// Forgets what `walk` remembered (its version has moved on).
    pub fn forget(&self, walk: &Paging) {
        let mut walks = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        walks.0.remove(&walk.key);
    }
}

/// A read whose pages can be continued: its filter and sort rendered (what remembered rows
/// are filed under), and where its sort values and key sit in the rows the read returns.
pub(crate) struct Paging {
    key: String,
    table: &'static str,
    columns: Vec<&'static str>,
    at: Vec<usize>,
    descending: bool,
}

impl Paging {
    /// `q` on `c` as a continuable read, if it is one (see the module's notes).
    pub fn of(
        c: &'static Collection,
        d: Dialect,
        q: &Query,
        render: impl Fn(&SelectStatement) -> (String, Vec<Param>),
    ) -> Option<Self> {
        let (_, ignored) = VERSIONED.iter().find(|(table, _)| *table == c.table)?;
        if q.offset == 0 || q.limit.is_none_or(|l| l == 0) {
            return None;
        }
        let descending = q.sort.first().is_some_and(|(_, desc)| *desc);
        let nullable = q.sort.iter().any(|(f, _)| f.nulls == Nulls::Allowed);
        let repeated = q
            .sort
            .iter()
            .enumerate()
            .any(|(i, (f, _))| q.sort[..i].iter().any(|(g, _)| g.column == f.column));
        let sort_ok = q.sort.iter().all(|(f, desc)| {
            *desc == descending && !ignored.contains(&f.column) && c.field(f.name).is_some()
        }) && !(descending && nullable && q.sort.len() > 1);
        let filter_ok = q.filter.as_ref().is_none_or(|f| own(f, ignored));
        if !sort_ok || !filter_ok || repeated {
            return None;
        }
        let mut s = Select::select();
        s.column(Alias::new("id")).from(Alias::new(c.table));
        if let Some(f) = &q.filter {
            s.cond_where(condition(c, d, f));
        }
        order(&mut s, q);
        let (sql, params) = render(&s);
        let key = format!("{sql}\u{0}{params:?}");
        if key.len() > KEY_BYTES {
            return None;
        }
        let mut columns: Vec<&'static str> = q.sort.iter().map(|(f, _)| f.column).collect();
        columns.push(c.key().column);
        let at = columns
            .iter()
            .map(|column| c.fields.iter().position(|f| f.column == *column))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            key,
            table: c.table,
            columns,
            at,
            descending,
        })
    }

    /// The collection's version, as a column or a condition of the paging statement.
    pub fn version(&self) -> Expr {
        let mut v = Select::select();
        v.column(Alias::new("version"))
            .from(Alias::new("tessera_versions"))
            .and_where(Expr::col(Alias::new("name")).eq(self.table));
        Expr::SubQuery(None, Box::new(v.into()))
    }

    /// The rows at or after `mark` in the read's order.
    pub fn from(&self, mark: &Mark) -> Expr {
        let columns = Expr::tuple(self.columns.iter().map(|c| Expr::col(Alias::new(*c))));
        let values = Expr::tuple(mark.values.iter().map(|v| {
            Expr::val(match v {
                Cell::Int(v) => Param::BigInt(Some(*v)),
                Cell::Real(v) => Param::Double(Some(*v)),
                Cell::Text(v) => Param::String(Some(v.clone())),
                Cell::Bool(v) => Param::Bool(Some(*v)),
                Cell::Null => Param::String(None),
            })
        }));
        if self.descending {
            columns.lte(values)
        } else {
            columns.gte(values)
        }
    }

    /// The sort values and key of `row`; `None` where one is null or they are too long to
    /// keep.
    fn values(&self, row: &Row) -> Option<Vec<Cell>> {
        let size: usize = self
            .at
            .iter()
            .map(|i| match row.get(*i) {
                Some(Cell::Text(v)) => v.len(),
                _ => 8,
            })
            .sum();
        if size > MARK_BYTES {
            return None;
        }
        self.at
            .iter()
            .map(|i| row.get(*i).filter(|v| **v != Cell::Null).cloned())
            .collect()
    }
}

/// Whether `f` reads only the collection's own columns, none of them `ignored`.
fn own(f: &Condition, ignored: &[&str]) -> bool {
    match f {
        Condition::And(parts) | Condition::Or(parts) => parts.iter().all(|p| own(p, ignored)),
        Condition::Compare { field, .. } => !ignored.contains(&field.column),
        Condition::Related { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tessera_store::Op;
    use tessera_store::schema::USERS;

    use super::*;

    fn read(email: &str) -> Paging {
        let q = Query {
            filter: Some(Condition::Compare {
                field: USERS.field("email").unwrap(),
                op: Op::Eq,
                value: json!(email),
            }),
            sort: vec![(USERS.field("email").unwrap(), false)],
            limit: Some(10),
            offset: 10,
        };
        let render = |s: &SelectStatement| {
            let (sql, values) = s.build(sea_query::SqliteQueryBuilder);
            (sql, values.0)
        };
        Paging::of(&USERS, Dialect::Sqlite, &q, render).unwrap()
    }

    fn row(n: usize) -> Row {
        let mut row = vec![Cell::Null; USERS.fields.len()];
        row[0] = Cell::Text(format!("id{n:06}"));
        row[3] = Cell::Text(format!("e{n:06}"));
        row
    }

    #[test]
    fn remembered_reads_and_rows_stay_bounded() {
        let marks = Marks::default();
        for i in 0..3 * WALKS {
            marks.remember(&read(&format!("{i}")), 1, 10, &[row(0), row(1)]);
        }
        assert!(marks.walks.lock().unwrap().0.len() <= WALKS);
        let walk = read("one");
        for page in 0..10 * MARKS {
            marks.remember(&walk, 1, 10 * page as u64, &[row(page), row(page + 1)]);
        }
        let walks = marks.walks.lock().unwrap();
        assert_eq!(walks.0[&walk.key].at.len(), MARKS);
    }

    #[test]
    fn a_page_read_at_another_version_replaces_what_was_remembered() {
        let (marks, walk) = (Marks::default(), read("a"));
        marks.remember(&walk, 1, 10, &[row(1), row(2)]);
        assert_eq!(marks.nearest(&walk, 15).map(|m| m.position), Some(11));
        marks.remember(&walk, 2, 40, &[row(3), row(4)]);
        assert!(marks.nearest(&walk, 15).is_none());
        let m = marks.nearest(&walk, 45).unwrap();
        assert_eq!((m.position, m.version), (41, 2));
        marks.forget(&walk);
        assert!(marks.nearest(&walk, 45).is_none());
    }

    #[test]
    fn rows_with_a_null_sort_value_and_reads_that_cannot_continue_are_not_remembered() {
        let (marks, walk) = (Marks::default(), read("a"));
        let mut blank = row(1);
        blank[3] = Cell::Null;
        marks.remember(&walk, 1, 10, &[blank.clone(), blank]);
        assert!(marks.nearest(&walk, 20).is_none());
        let mut long = row(1);
        long[3] = Cell::Text("x".repeat(MARK_BYTES));
        marks.remember(&walk, 1, 10, &[long.clone(), long]);
        assert!(marks.nearest(&walk, 20).is_none());
        let render = |s: &SelectStatement| {
            let (sql, values) = s.build(sea_query::SqliteQueryBuilder);
            (sql, values.0)
        };
        let by = |name: &str, desc: bool| (USERS.field(name).unwrap(), desc);
        for sort in [
            vec![by("last_access", false)],
            vec![by("email", false), by("first_name", true)],
            vec![by("email", true), by("first_name", true)],
            vec![by("email", false), by("email", false)],
        ] {
            let q = Query {
                sort,
                limit: Some(10),
                offset: 10,
                ..Query::default()
            };
            assert!(Paging::of(&USERS, Dialect::Sqlite, &q, render).is_none());
        }
        // A filter whose statement is longer than a remembered one may be.
        let huge = Query {
            filter: Some(Condition::Compare {
                field: USERS.field("email").unwrap(),
                op: Op::Eq,
                value: json!("x".repeat(KEY_BYTES)),
            }),
            limit: Some(10),
            offset: 10,
            ..Query::default()
        };
        assert!(Paging::of(&USERS, Dialect::Sqlite, &huge, render).is_none());
        let first = Query {
            limit: Some(10),
            ..Query::default()
        };
        assert!(Paging::of(&USERS, Dialect::Sqlite, &first, render).is_none());
    }
}
