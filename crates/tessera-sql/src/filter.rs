//! The filter language compiled to SQL for both engines: conditions, sort and window, with
//! values bound as their field's kind stores them. Text is compared byte by byte and folded
//! in ASCII on both engines (PostgreSQL's columns are `COLLATE "C"`; SQLite's LIKE is made
//! case-sensitive per connection), so `_contains` respects case, `_icontains` ignores it, and
//! results sort the same everywhere.
//!
//! A text condition on a column of the collection's trigram index (`text_index`) is narrowed
//! first through that index: SQLite's FTS5 table or PostgreSQL's `pg_trgm` expression, which
//! both find (ignoring case) every row containing the term, and then tested exactly. The
//! conditions of a `search` share one narrowing.

use sea_query::{
    Alias, Condition as Sql, Expr, ExprTrait, Func, LikeExpr, NullOrdering, Order, Query as Select,
    SelectStatement,
};
use serde_json::Value;
use tessera_store::{Collection, Condition, Field, Kind, Op, Query};

use crate::{Dialect, Param};

/// A column of the statement's table.
pub(crate) fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

/// The SQL value a field of this kind stores for `v`.
pub(crate) fn bind(kind: Kind, v: &Value) -> Param {
    match (kind, v) {
        (Kind::Integer | Kind::Timestamp, Value::Null) => Param::BigInt(None),
        (Kind::Boolean, Value::Null) => Param::Bool(None),
        (_, Value::Null) => Param::String(None),
        (Kind::Json, v) => Param::String(Some(v.to_string())),
        (Kind::Csv, Value::Array(items)) => {
            Param::String(Some(items.iter().map(text).collect::<Vec<_>>().join(",")))
        }
        (Kind::Boolean, Value::Bool(b)) => Param::Bool(Some(*b)),
        (Kind::Boolean, Value::Number(n)) => Param::Bool(Some(n.as_f64() != Some(0.0))),
        (Kind::Integer | Kind::Timestamp, Value::Number(n)) => match n.as_i64() {
            Some(i) => Param::BigInt(Some(i)),
            None => Param::Double(n.as_f64()),
        },
        (Kind::Integer | Kind::Timestamp, Value::Bool(b)) => Param::BigInt(Some(i64::from(*b))),
        (_, v) => Param::String(Some(text(v))),
    }
}

/// A value as text (strings unquoted).
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn is_text(kind: Kind) -> bool {
    !matches!(kind, Kind::Integer | Kind::Timestamp | Kind::Boolean)
}

/// One condition on the rows of `c` as a SQL condition.
pub(crate) fn condition(c: &Collection, d: Dialect, cond: &Condition) -> Sql {
    match cond {
        Condition::And(parts) => parts
            .iter()
            .fold(Sql::all(), |all, p| all.add(condition(c, d, p))),
        Condition::Or(parts) => {
            // The text conditions on one term share one narrowing (as `search` builds them).
            let mut narrowed: Vec<(String, Sql)> = Vec::new();
            let mut any = Sql::any();
            for p in parts {
                match (indexed_term(c, p), p) {
                    (Some(term), Condition::Compare { field, op, value }) => {
                        let exact = compare(field, *op, value);
                        match narrowed.iter_mut().find(|(t, _)| *t == term) {
                            Some((_, group)) => *group = group.clone().add(exact),
                            None => narrowed.push((term, Sql::any().add(exact))),
                        }
                    }
                    _ => any = any.add(condition(c, d, p)),
                }
            }
            narrowed.into_iter().fold(any, |any, (term, group)| {
                any.add(Sql::all().add(narrowing(c, d, &term)).add(group))
            })
        }
        Condition::Compare { field, op, value } => {
            let exact = Sql::all().add(compare(field, *op, value));
            match indexed_term(c, cond) {
                Some(term) => exact.add(narrowing(c, d, &term)),
                None => exact,
            }
        }
        Condition::Related { via, cond, none } => {
            // Inside the subquery, unqualified columns name the target's own.
            let mut linked = Select::select();
            linked
                .column(Alias::new(via.remote))
                .from(Alias::new(via.target.table))
                .cond_where(condition(via.target, d, cond))
                .and_where(col(via.remote).is_not_null());
            let local = col(via.local);
            Sql::all().add(if *none {
                local.not_in_subquery(linked)
            } else {
                local.in_subquery(linked)
            })
        }
    }
}

/// The term (folded to ASCII lower case) every row matching `cond` contains, ignoring case,
/// in a column of `c`'s trigram index; `None` where the index cannot narrow it (another
/// operator or column, a term shorter than one trigram, or one holding a NUL).
fn indexed_term(c: &Collection, cond: &Condition) -> Option<String> {
    let Condition::Compare { field, op, value } = cond else {
        return None;
    };
    let substring = matches!(
        op,
        Op::Contains
            | Op::IContains
            | Op::StartsWith
            | Op::IStartsWith
            | Op::EndsWith
            | Op::IEndsWith
    );
    let term = text(value).to_ascii_lowercase();
    // A NUL would end FTS5's reading of the phrase early.
    let indexable = term.chars().count() >= 3 && !term.contains('\0');
    (substring && c.text_index.contains(&field.column) && indexable).then_some(term)
}

/// The rows of `c` whose indexed text contains `term`, ignoring case: a superset of those a
/// text condition on `term` matches, found through the trigram index.
fn narrowing(c: &Collection, d: Dialect, term: &str) -> Expr {
    match d {
        Dialect::Sqlite => {
            let index = format!("{}_text", c.table);
            let phrase = format!("\"{}\"", term.replace('"', "\"\""));
            let mut found = Select::select();
            found
                .column(Alias::new("id"))
                .from(Alias::new(index.as_str()))
                .and_where(Expr::cust_with_values(
                    format!("\"{index}\" MATCH ?"),
                    [phrase],
                ));
            col("id").in_subquery(found)
        }
        Dialect::Postgres => Expr::cust(text_of(c))
            .like(LikeExpr::new(format!("%{}%", escape_like(term))).escape('\\')),
    }
}

/// PostgreSQL's indexed expression for `c`'s text: its `text_index` columns, lowered and
/// joined by spaces, exactly as the `user_text` migration indexes it.
pub(crate) fn text_of(c: &Collection) -> String {
    let joined = c
        .text_index
        .iter()
        .map(|column| format!("coalesce(\"{column}\", '')"))
        .collect::<Vec<_>>()
        .join(" || ' ' || ");
    format!("lower({joined})")
}

fn compare(field: &Field, op: Op, value: &Value) -> Expr {
    let c = || col(field.column);
    let v = |x: &Value| Expr::val(bind(field.kind, x));
    let like = |pattern: String, fold: bool, negate: bool| {
        let (target, pattern) = if fold {
            (Expr::from(Func::lower(c())), pattern.to_ascii_lowercase())
        } else {
            (c(), pattern)
        };
        let pattern = LikeExpr::new(pattern).escape('\\');
        if negate {
            target.not_like(pattern)
        } else {
            target.like(pattern)
        }
    };
    let operand = || escape_like(&text(value));
    match op {
        Op::Eq if value.is_null() => c().is_null(),
        Op::Neq if value.is_null() => c().is_not_null(),
        Op::Eq => c().eq(v(value)),
        Op::Neq => c().ne(v(value)),
        Op::Gt => c().gt(v(value)),
        Op::Gte => c().gte(v(value)),
        Op::Lt => c().lt(v(value)),
        Op::Lte => c().lte(v(value)),
        Op::In | Op::Nin => {
            let items: Vec<Expr> = value.as_array().into_iter().flatten().map(v).collect();
            match (op, items.is_empty()) {
                (Op::In, true) => Expr::cust("1 = 0"),
                (_, true) => Expr::cust("1 = 1"),
                (Op::In, false) => c().is_in(items),
                (_, false) => c().is_not_in(items),
            }
        }
        Op::Null => c().is_null(),
        Op::NotNull => c().is_not_null(),
        Op::Empty if is_text(field.kind) => c().is_null().or(c().eq("")),
        Op::NotEmpty if is_text(field.kind) => c().is_not_null().and(c().ne("")),
        Op::Empty => c().is_null(),
        Op::NotEmpty => c().is_not_null(),
        Op::Contains => like(format!("%{}%", operand()), false, false),
        Op::IContains => like(format!("%{}%", operand()), true, false),
        Op::NotContains => like(format!("%{}%", operand()), false, true),
        Op::NotIContains => like(format!("%{}%", operand()), true, true),
        Op::StartsWith => like(format!("{}%", operand()), false, false),
        Op::IStartsWith => like(format!("{}%", operand()), true, false),
        Op::EndsWith => like(format!("%{}", operand()), false, false),
        Op::IEndsWith => like(format!("%{}", operand()), true, false),
    }
}

/// Applies a query's filter, sort (then the primary key) and window. Nulls sort first
/// ascending and last descending on both engines. A page past the first is found on the key
/// and the sort columns alone, in a subquery an index can answer by skipping index entries
/// rather than rows; its rows are then read by key. `from`, where given, is a further
/// condition on the rows counted (where a continued page starts, see `pages`).
pub(crate) fn apply(
    s: &mut SelectStatement,
    c: &Collection,
    d: Dialect,
    q: &Query,
    from: Option<Expr>,
) {
    if q.offset == 0 {
        select(s, c, d, q, from);
        return;
    }
    let mut page = Select::select();
    page.column(Alias::new("id")).from(Alias::new(c.table));
    select(&mut page, c, d, q, from);
    s.and_where(col("id").in_subquery(page));
    order(s, q);
}

/// Filter, order and window on `s` itself.
fn select(s: &mut SelectStatement, c: &Collection, d: Dialect, q: &Query, from: Option<Expr>) {
    if let Some(f) = &q.filter {
        s.cond_where(condition(c, d, f));
    }
    if let Some(from) = from {
        s.and_where(from);
    }
    order(s, q);
    match (q.limit, q.offset) {
        (Some(limit), offset) => {
            s.limit(limit).offset(offset);
        }
        (None, 0) => {}
        (None, offset) => {
            s.limit(i64::MAX.unsigned_abs()).offset(offset);
        }
    }
}

/// The sort, then the key. Ties go in the direction of the last sort key, so that one index
/// on (column, id) serves a sort either way (read backwards for a descending one).
pub(crate) fn order(s: &mut SelectStatement, q: &Query) {
    for (field, desc) in &q.sort {
        let (order, nulls) = if *desc {
            (Order::Desc, NullOrdering::Last)
        } else {
            (Order::Asc, NullOrdering::First)
        };
        s.order_by_with_nulls(Alias::new(field.column), order, nulls);
    }
    let ties = match q.sort.last() {
        Some((_, true)) => Order::Desc,
        _ => Order::Asc,
    };
    s.order_by(Alias::new("id"), ties);
}
