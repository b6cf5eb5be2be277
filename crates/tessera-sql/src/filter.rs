//! The filter language compiled to SQL for both engines: conditions, sort and window, with
//! values bound as their field's kind stores them. Text is compared byte by byte and folded
//! in ASCII on both engines (PostgreSQL's columns are `COLLATE "C"`; SQLite's LIKE is made
//! case-sensitive per connection), so `_contains` respects case, `_icontains` ignores it, and
//! results sort the same everywhere.

use sea_query::{
    Alias, Condition as Sql, Expr, ExprTrait, Func, LikeExpr, NullOrdering, Order, Query as Select,
    SelectStatement,
};
use serde_json::Value;
use tessera_store::{Condition, Field, Kind, Op, Query};

use crate::Param;

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

/// One condition as a SQL condition.
pub(crate) fn condition(cond: &Condition) -> Sql {
    match cond {
        Condition::And(parts) => parts
            .iter()
            .fold(Sql::all(), |all, p| all.add(condition(p))),
        Condition::Or(parts) => parts
            .iter()
            .fold(Sql::any(), |any, p| any.add(condition(p))),
        Condition::Compare { field, op, value } => Sql::all().add(compare(field, *op, value)),
        Condition::Related { via, cond, none } => {
            // Inside the subquery, unqualified columns name the target's own.
            let mut linked = Select::select();
            linked
                .column(Alias::new(via.remote))
                .from(Alias::new(via.target.table))
                .cond_where(condition(cond))
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

/// Applies a query's filter, sort (then the primary key, as Directus) and window. Nulls sort
/// first ascending and last descending on both engines.
pub(crate) fn apply(s: &mut SelectStatement, q: &Query) {
    if let Some(f) = &q.filter {
        s.cond_where(condition(f));
    }
    for (field, desc) in &q.sort {
        let (order, nulls) = if *desc {
            (Order::Desc, NullOrdering::Last)
        } else {
            (Order::Asc, NullOrdering::First)
        };
        s.order_by_with_nulls(Alias::new(field.column), order, nulls);
    }
    s.order_by(Alias::new("id"), Order::Asc);
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
