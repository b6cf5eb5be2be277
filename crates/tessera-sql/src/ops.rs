//! Every store operation, written once over a [`Conn`]. Writes run inside the engine's
//! transaction; the user row a login or an attempt decides on is read `FOR UPDATE` (a no-op
//! where writers already run one at a time), so two instances suspending or logging in at once
//! serialise on the row instead of racing. Session families change by compare and set on their
//! generation, without a transaction around the decision.

use sea_query::{
    Alias, Expr, ExprTrait, Func, IntoIden, LockBehavior, LockType, NullOrdering, OnConflict,
    Order, Query, SelectStatement, TableRef, UpdateStatement, ValueTuple,
};
use serde_json::Value;
use tessera_store::schema::{Collection, Kind, Relation, Table};
use tessera_store::{
    AccessRows, Admission, AdmitDecision, AttemptChange, AttemptDecision, Condition, EndSessions,
    Family, FamilyChange, FamilyDecision, Guard, Hits, LiveAdvance, LoginState, LoginUser,
    NewSession, Opened, PolicyRow, Principal, Query as ItemQuery, Reads, Record, SessionInfo,
    StoreError, StoreResult, TfaChange, TfaState, UserSummary, Values, Write, Written,
};
use uuid::Uuid;

use crate::filter::{apply, bind, col, condition};
use crate::pages::{Mark, Marks, Paging};
use crate::{Cell, Conn, Dialect, Param, Row, row, rows, run};

const USERS: &str = "directus_users";
const SESSIONS: &str = "directus_sessions";
const ROLES: &str = "directus_roles";
const ACCESS: &str = "directus_access";
const POLICIES: &str = "directus_policies";
const LIMITS: &str = "tessera_limits";

/// The key guarded writes serialise on.
const GUARDED_WRITES: i64 = 0x7465_7373_6572_6131;

/// Role chains stop after this many steps.
const MAX_ROLE_DEPTH: usize = 64;

fn t(name: &str) -> Alias {
    Alias::new(name)
}

/// `table.column`.
fn tc(table: &str, column: &str) -> Expr {
    Expr::col((t(table), t(column)))
}

fn cell(r: &Row, i: usize) -> &Cell {
    r.get(i).unwrap_or(&Cell::Null)
}

fn text(r: &Row, i: usize) -> Option<String> {
    cell(r, i).text()
}

fn int(r: &Row, i: usize) -> Option<i64> {
    cell(r, i).int()
}

fn uuid(r: &Row, i: usize) -> Option<Uuid> {
    cell(r, i).uuid()
}

/// A stored value read back as JSON for a field of this kind.
fn json(kind: Kind, c: &Cell) -> Value {
    match (kind, c) {
        (_, Cell::Null) => Value::Null,
        (Kind::Boolean, c) => Value::Bool(c.bool()),
        (Kind::Json, Cell::Text(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        (Kind::Csv, Cell::Text(s)) if s.is_empty() => Value::Array(Vec::new()),
        (Kind::Csv, Cell::Text(s)) => Value::Array(
            s.split(',')
                .map(|part| Value::String(part.to_owned()))
                .collect(),
        ),
        (_, Cell::Int(i)) => Value::from(*i),
        (_, Cell::Real(r)) => Value::from(*r),
        (_, Cell::Text(s)) => Value::String(s.clone()),
        (_, Cell::Bool(b)) => Value::Bool(*b),
    }
}

/// The statement a read of `c` runs for `q` on this connection's dialect; with `paging`, it
/// also returns the collection's version as a last column, and with a mark it starts there.
fn select_items(
    x: &dyn Conn,
    c: &'static Collection,
    q: &ItemQuery,
    paging: Option<(&Paging, Option<&Mark>)>,
) -> SelectStatement {
    let mut s = Query::select();
    s.columns(c.fields.iter().map(|f| t(f.column)))
        .from(t(c.table));
    let mut from = None;
    if let Some((paging, mark)) = paging {
        s.expr(paging.version());
        if let Some(mark) = mark {
            s.and_where(paging.version().eq(mark.version));
            from = Some(paging.from(mark));
        }
    }
    apply(&mut s, c, x.dialect(), q, from);
    s
}

/// The statement a read of `c` for `q` runs first, given what `marks` remember: continued
/// from the nearest mark, or counted from the start with the version beside it, or (a read
/// that cannot be continued) plain.
fn first_statement(
    x: &dyn Conn,
    c: &'static Collection,
    q: &ItemQuery,
    marks: Option<&Marks>,
) -> (SelectStatement, Option<(Paging, Option<Mark>)>) {
    let paging = marks.and_then(|_| Paging::of(c, x.dialect(), q, |s| crate::render(x, s)));
    let Some(paging) = paging else {
        return (select_items(x, c, q, None), None);
    };
    let mark = marks.and_then(|m| m.nearest(&paging, q.offset));
    let s = match &mark {
        Some(m) => {
            let rest = ItemQuery {
                offset: q.offset - m.position,
                ..q.clone()
            };
            select_items(x, c, &rest, Some((&paging, Some(m))))
        }
        None => select_items(x, c, q, Some((&paging, None))),
    };
    (s, Some((paging, mark)))
}

/// The items of `c` that `q` selects. Where `marks` is given, a deep page is continued from
/// a remembered row when it can be, and its ends are remembered (see `pages`).
pub(crate) fn read_items(
    x: &mut dyn Conn,
    c: &'static Collection,
    q: &ItemQuery,
    marks: Option<&Marks>,
) -> StoreResult<Vec<Record>> {
    let (s, paging) = first_statement(x, c, q, marks);
    let mut found = rows(x, &s)?;
    if let (Some((paging, mark)), Some(marks)) = (paging, marks) {
        let full = found.len() as u64 == q.limit.unwrap_or_default();
        if mark.is_some() && !full {
            // Short: the version moved on, or the page ends the walk. Either way, by offset.
            marks.forget(&paging);
            let again = select_items(x, c, q, Some((&paging, None)));
            found = rows(x, &again)?;
        }
        let version = found.first().and_then(|r| r.last()).and_then(Cell::int);
        if let Some(version) = version {
            marks.remember(&paging, version, q.offset, &found);
        }
    }
    Ok(found
        .iter()
        .map(|r| {
            c.fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.to_owned(), json(f.kind, cell(r, i))))
                .collect()
        })
        .collect())
}

/// How the engine plans the statement [`read_items`] would run first for `q` now.
pub(crate) fn plan_items(
    x: &mut dyn Conn,
    c: &'static Collection,
    q: &ItemQuery,
    marks: Option<&Marks>,
) -> StoreResult<Vec<String>> {
    let (s, _) = first_statement(x, c, q, marks);
    let (sql, params) = crate::render(x, &s);
    let explain = match x.dialect() {
        Dialect::Sqlite => "EXPLAIN QUERY PLAN",
        Dialect::Postgres => "EXPLAIN",
    };
    Ok(x.query(&format!("{explain} {sql}"), &params)?
        .iter()
        .filter_map(|r| r.last().and_then(Cell::text))
        .collect())
}

pub(crate) fn count_items(
    x: &mut dyn Conn,
    c: &'static Collection,
    filter: Option<&Condition>,
) -> StoreResult<u64> {
    let mut s = Query::select();
    match filter {
        // Kept by triggers (migrations): one row, however many users there are.
        None if c.table == USERS => {
            s.column(t("n"))
                .from(t("tessera_counts"))
                .and_where(col("name").eq(USERS));
        }
        None => {
            s.expr(Expr::cust("COUNT(*)")).from(t(c.table));
        }
        Some(f) => {
            s.expr(Expr::cust("COUNT(*)"))
                .from(t(c.table))
                .cond_where(condition(c, x.dialect(), f));
        }
    }
    let n = row(x, &s)?.and_then(|r| int(&r, 0)).unwrap_or_default();
    Ok(u64::try_from(n).unwrap_or_default())
}

fn insert(x: &mut dyn Conn, c: &'static Collection, values: &Values) -> StoreResult<Written> {
    let key = c.key();
    let mut s = Query::insert();
    s.into_table(t(c.table))
        .columns(values.iter().map(|(f, _)| t(f.column)))
        .values_panic(values.iter().map(|(f, v)| Expr::val(bind(f.kind, v))))
        .returning_col(t(key.column));
    let made = row(x, &s)?.ok_or_else(|| StoreError::Backend("an insert made no row".into()))?;
    Ok(Written::Inserted(json(key.kind, cell(&made, 0))))
}

/// A guard's view of the transaction it guards.
struct TxReads<'a>(&'a mut dyn Conn);

impl Reads for TxReads<'_> {
    fn read_items(&mut self, c: &'static Collection, q: &ItemQuery) -> StoreResult<Vec<Record>> {
        read_items(self.0, c, q, None)
    }

    fn access_rows(&mut self, role: Option<Uuid>, user: Option<Uuid>) -> StoreResult<AccessRows> {
        access_rows(self.0, role, user)
    }
}

/// Runs `write` between the guard's two looks, serialised with every other guarded write.
fn guarded<R>(
    x: &mut dyn Conn,
    guard: Option<Box<dyn Guard>>,
    write: impl FnOnce(&mut dyn Conn) -> StoreResult<R>,
) -> StoreResult<R> {
    let Some(mut guard) = guard else {
        return write(x);
    };
    x.serialize(GUARDED_WRITES)?;
    guard.before(&mut TxReads(x))?;
    let out = write(x)?;
    if guard.after(&mut TxReads(x))? {
        Ok(out)
    } else {
        Err(StoreError::Refused)
    }
}

fn end_sessions(x: &mut dyn Conn, user: &str, end: &EndSessions) -> StoreResult<()> {
    let mut s = Query::delete();
    s.from_table(t(SESSIONS)).and_where(col("user").eq(user));
    match end {
        EndSessions::None => return Ok(()),
        EndSessions::All => {}
        EndSessions::AllExcept(family) => {
            s.and_where(col("family").ne(family.to_string()));
        }
    }
    run(x, &s)?;
    Ok(())
}

fn update(
    x: &mut dyn Conn,
    c: &'static Collection,
    id: &str,
    values: &Values,
    end: &EndSessions,
) -> StoreResult<Written> {
    let found = if values.is_empty() {
        let mut s = Query::select();
        s.expr(Expr::cust("1"))
            .from(t(c.table))
            .and_where(by_key(c, id));
        row(x, &s)?.is_some()
    } else {
        let mut s = Query::update();
        s.table(t(c.table))
            .values(
                values
                    .iter()
                    .map(|(f, v)| (t(f.column), Expr::val(bind(f.kind, v)))),
            )
            .and_where(by_key(c, id));
        run(x, &s)? > 0
    };
    if found {
        end_sessions(x, id, end)?;
    }
    Ok(written(found))
}

fn written(found: bool) -> Written {
    if found {
        Written::Found
    } else {
        Written::Missing
    }
}

/// The condition naming item `id` by its key, bound as the key's kind.
fn by_key(c: &'static Collection, id: &str) -> Expr {
    let key = c.key();
    let value = match key.kind {
        Kind::Integer => id.parse::<i64>().map_or(Value::Null, Value::from),
        _ => Value::String(id.to_owned()),
    };
    col(key.column).eq(Expr::val(bind(key.kind, &value)))
}

fn delete(x: &mut dyn Conn, c: &'static Collection, id: &str) -> StoreResult<Written> {
    let mut s = Query::delete();
    s.from_table(t(c.table)).and_where(by_key(c, id));
    Ok(written(run(x, &s)? > 0))
}

pub(crate) fn write(
    x: &mut dyn Conn,
    writes: Vec<Write>,
    guard: Option<Box<dyn Guard>>,
) -> StoreResult<Vec<Written>> {
    guarded(x, guard, |x| {
        writes
            .iter()
            .map(|w| match w {
                Write::Insert { c, values } => insert(x, c, values),
                Write::Update { c, id, values, end } => update(x, c, id, values, end),
                Write::Delete { c, id } => delete(x, c, id),
            })
            .collect()
    })
}

pub(crate) fn alias_values(
    x: &mut dyn Conn,
    alias: &'static Relation,
    id: &str,
    limit: Option<u64>,
) -> StoreResult<Vec<Value>> {
    let key = alias.target.key();
    let mut s = Query::select();
    s.column(t(key.column))
        .from(t(alias.target.table))
        .and_where(col(alias.remote).eq(id))
        .order_by(t(key.column), Order::Asc);
    if let Some(limit) = limit {
        s.limit(limit);
    }
    Ok(rows(x, &s)?
        .iter()
        .map(|r| json(key.kind, cell(r, 0)))
        .collect())
}

/// Items whose alias lists one statement reads; more go in several.
const ALIAS_BATCH: usize = 500;

/// The first `limit` values of the alias lists of the items `ids`, in key order, by item.
pub(crate) fn alias_values_of(
    x: &mut dyn Conn,
    alias: &'static Relation,
    ids: &[String],
    limit: u64,
) -> StoreResult<std::collections::HashMap<String, Vec<Value>>> {
    let key = alias.target.key();
    let mut lists: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for chunk in ids.chunks(ALIAS_BATCH) {
        // Each item's rows numbered in key order, so that the cut is per item.
        let numbered = format!(
            "ROW_NUMBER() OVER (PARTITION BY \"{}\" ORDER BY \"{}\")",
            alias.remote, key.column
        );
        let mut inner = Query::select();
        inner
            .column(t(alias.remote))
            .column(t(key.column))
            .expr_as(Expr::cust(numbered), t("n"))
            .from(t(alias.target.table))
            .and_where(col(alias.remote).is_in(chunk.iter().map(String::as_str)));
        let mut s = Query::select();
        s.column(t(alias.remote))
            .column(t(key.column))
            .from_subquery(inner, t("numbered"))
            .and_where(col("n").lte(i64::try_from(limit).unwrap_or(i64::MAX)))
            .order_by(t(alias.remote), Order::Asc)
            .order_by(t(key.column), Order::Asc);
        for r in rows(x, &s)? {
            if let Some(owner) = text(&r, 0) {
                lists
                    .entry(owner)
                    .or_default()
                    .push(json(key.kind, cell(&r, 1)));
            }
        }
    }
    Ok(lists)
}

/// Which user a lookup names.
pub(crate) enum ByUser {
    Id(Uuid),
    /// The e-mail, lower-cased in ASCII.
    Email(String),
    /// The digest of a static token.
    Token(String),
}

fn where_user(s: &mut SelectStatement, by: ByUser) {
    s.from(t(USERS)).and_where(match by {
        ByUser::Id(id) => col("id").eq(id.to_string()),
        ByUser::Email(email) => Expr::from(Func::lower(col("email"))).eq(email),
        ByUser::Token(digest) => col("token_hash").eq(digest),
    });
}

/// The login view of a user, locked for the transaction when `lock`.
pub(crate) fn login_user(
    x: &mut dyn Conn,
    by: ByUser,
    lock: bool,
) -> StoreResult<Option<LoginUser>> {
    let mut s = Query::select();
    s.columns(
        [
            "id",
            "role",
            "status",
            "provider",
            "password",
            "tfa_secret",
            "email",
        ]
        .map(t),
    );
    where_user(&mut s, by);
    if lock {
        s.lock(LockType::NoKeyUpdate);
    }
    Ok(row(x, &s)?.map(|r| LoginUser {
        id: uuid(&r, 0).unwrap_or_default(),
        role: uuid(&r, 1),
        status: text(&r, 2).unwrap_or_default(),
        provider: text(&r, 3).unwrap_or_default(),
        password: text(&r, 4),
        tfa_secret: text(&r, 5),
        email: text(&r, 6),
    }))
}

pub(crate) fn principal(x: &mut dyn Conn, by: ByUser) -> StoreResult<Option<Principal>> {
    let mut s = Query::select();
    s.columns(["id", "role", "status"].map(t));
    where_user(&mut s, by);
    Ok(row(x, &s)?.map(|r| Principal {
        id: uuid(&r, 0).unwrap_or_default(),
        role: uuid(&r, 1),
        status: text(&r, 2).unwrap_or_default(),
    }))
}

/// Which access rows attach a policy.
enum Holder {
    Role(Uuid),
    User(Uuid),
    Nobody,
}

fn policies(x: &mut dyn Conn, holder: Holder) -> StoreResult<Vec<PolicyRow>> {
    let mut s = Query::select();
    s.expr(tc(POLICIES, "id"))
        .expr(tc(POLICIES, "admin_access"))
        .expr(tc(POLICIES, "app_access"))
        .expr(tc(POLICIES, "enforce_tfa"))
        .expr(tc(POLICIES, "ip_access"))
        .from(t(ACCESS))
        .inner_join(
            t(POLICIES),
            tc(POLICIES, "id").equals((t(ACCESS), t("policy"))),
        );
    match holder {
        Holder::Role(r) => s.and_where(tc(ACCESS, "role").eq(r.to_string())),
        Holder::User(u) => s.and_where(tc(ACCESS, "user").eq(u.to_string())),
        Holder::Nobody => s
            .and_where(tc(ACCESS, "role").is_null())
            .and_where(tc(ACCESS, "user").is_null()),
    };
    s.order_by_with_nulls((t(ACCESS), t("sort")), Order::Asc, NullOrdering::First)
        .order_by((t(ACCESS), t("id")), Order::Asc);
    Ok(rows(x, &s)?
        .iter()
        .map(|r| PolicyRow {
            id: uuid(r, 0).unwrap_or_default(),
            admin_access: cell(r, 1).bool(),
            app_access: cell(r, 2).bool(),
            enforce_tfa: cell(r, 3).bool(),
            ip_access: text(r, 4),
        })
        .collect())
}

pub(crate) fn access_rows(
    x: &mut dyn Conn,
    role: Option<Uuid>,
    user: Option<Uuid>,
) -> StoreResult<AccessRows> {
    let mut chain = Vec::new();
    let mut next = role;
    while let Some(id) = next {
        let mut s = Query::select();
        s.column(t("parent"))
            .from(t(ROLES))
            .and_where(col("id").eq(id.to_string()));
        let Some(r) = row(x, &s)? else { break };
        let seen = chain.contains(&id);
        chain.push(id);
        if seen || chain.len() >= MAX_ROLE_DEPTH {
            break;
        }
        next = uuid(&r, 0);
    }
    let by_role = chain
        .iter()
        .map(|r| policies(x, Holder::Role(*r)))
        .collect::<StoreResult<_>>()?;
    let of_user = match user {
        Some(u) => policies(x, Holder::User(u))?,
        None => Vec::new(),
    };
    Ok(AccessRows {
        chain,
        by_role,
        of_user,
        public: policies(x, Holder::Nobody)?,
    })
}

pub(crate) fn login_attempt(
    x: &mut dyn Conn,
    user: Uuid,
    decide: AttemptDecision,
) -> StoreResult<Option<LoginState>> {
    let id = user.to_string();
    let mut s = Query::select();
    s.columns(["status", "failed_logins", "login_locked_until"].map(t))
        .from(t(USERS))
        .and_where(col("id").eq(id.as_str()))
        .lock(LockType::NoKeyUpdate);
    let Some(r) = row(x, &s)? else {
        return Ok(None);
    };
    let state = LoginState {
        status: text(&r, 0).unwrap_or_default(),
        failed_logins: int(&r, 1).unwrap_or_default(),
        locked_until_ms: int(&r, 2),
    };
    let mut u = Query::update();
    u.table(t(USERS)).and_where(col("id").eq(id.as_str()));
    match decide(&state) {
        AttemptChange::None => {}
        AttemptChange::Lock { until_ms } => {
            u.value(t("login_locked_until"), until_ms);
            run(x, &u)?;
        }
        AttemptChange::Suspend => {
            u.value(t("status"), "suspended");
            run(x, &u)?;
            end_sessions(x, &id, &EndSessions::All)?;
        }
    }
    Ok(Some(state))
}

pub(crate) fn record_login_failure(x: &mut dyn Conn, user: Uuid) -> StoreResult<()> {
    let mut u = Query::update();
    u.table(t(USERS))
        .value(t("failed_logins"), col("failed_logins").add(1))
        .and_where(col("id").eq(user.to_string()));
    run(x, &u)?;
    Ok(())
}

pub(crate) fn clear_login_failures(x: &mut dyn Conn, user: Uuid) -> StoreResult<()> {
    let mut u = Query::update();
    u.table(t(USERS))
        .value(t("failed_logins"), 0)
        .value(t("login_locked_until"), Expr::val(Option::<i64>::None))
        .and_where(col("id").eq(user.to_string()));
    run(x, &u)?;
    Ok(())
}

pub(crate) fn user_summaries(x: &mut dyn Conn) -> StoreResult<Vec<UserSummary>> {
    let mut s = Query::select();
    s.columns(
        [
            "id",
            "email",
            "status",
            "role",
            "failed_logins",
            "login_locked_until",
            "last_access",
        ]
        .map(t),
    )
    .from(t(USERS))
    .order_by_expr_with_nulls(
        Func::lower(col("email")).into(),
        Order::Asc,
        NullOrdering::First,
    )
    .order_by(t("id"), Order::Asc);
    Ok(rows(x, &s)?
        .iter()
        .map(|r| UserSummary {
            id: uuid(r, 0).unwrap_or_default(),
            email: text(r, 1),
            status: text(r, 2).unwrap_or_default(),
            role: uuid(r, 3),
            failed_logins: int(r, 4).unwrap_or_default(),
            locked_until_ms: int(r, 5),
            last_access_ms: int(r, 6),
        })
        .collect())
}

pub(crate) fn open_session(
    x: &mut dyn Conn,
    s: NewSession,
    admit: AdmitDecision,
) -> StoreResult<Option<Opened>> {
    let user = s.user.to_string();
    let Some(found) = login_user(x, ByUser::Id(s.user), true)? else {
        return Ok(None);
    };
    let Admission::Admit { forgive } = admit(&found) else {
        return Ok(None);
    };
    let mut i = Query::insert();
    i.into_table(t(SESSIONS))
        .columns(
            [
                "family",
                "user",
                "generation",
                "token_hash",
                "created",
                "expires",
                "ip",
                "user_agent",
                "origin",
            ]
            .map(t),
        )
        .values_panic([
            s.family.to_string().into(),
            user.as_str().into(),
            0i64.into(),
            s.token_hash.into(),
            s.now_ms.into(),
            s.expires_ms.into(),
            s.meta.ip.into(),
            s.meta.user_agent.into(),
            s.meta.origin.into(),
        ]);
    run(x, &i)?;
    let mut u = Query::update();
    u.table(t(USERS))
        .value(
            t("failed_logins"),
            Func::greatest([Expr::val(0i64), col("failed_logins").sub(forgive)]),
        )
        .value(t("login_locked_until"), Expr::val(Option::<i64>::None))
        .value(t("last_access"), s.now_ms)
        .and_where(col("id").eq(user.as_str()));
    run(x, &u)?;
    // The family just opened is kept whatever the clocks say; of the others, the most
    // recently used up to the cap.
    let family = s.family.to_string();
    let mut kept = Query::select();
    kept.column(t("family"))
        .from(t(SESSIONS))
        .and_where(col("user").eq(user.as_str()))
        .and_where(col("family").ne(family.as_str()))
        .order_by_expr(
            Func::coalesce([col("rotated_at"), col("created")]).into(),
            Order::Desc,
        )
        .order_by(t("family"), Order::Asc)
        .limit(u64::from(s.keep_at_most.saturating_sub(1)));
    let mut evict = Query::delete();
    evict
        .from_table(t(SESSIONS))
        .and_where(col("user").eq(user.as_str()))
        .and_where(col("family").ne(family.as_str()))
        .and_where(col("family").not_in_subquery(kept))
        .returning_col(t("family"));
    let evicted = rows(x, &evict)?.iter().filter_map(|r| uuid(r, 0)).collect();
    Ok(Some(Opened {
        user: Principal {
            id: found.id,
            role: found.role,
            status: found.status,
        },
        evicted,
    }))
}

/// A family with its user, and the user's last access.
/// The families named, each with its user's `last_access`.
fn family_rows(
    x: &mut dyn Conn,
    ids: &[Uuid],
) -> StoreResult<std::collections::HashMap<Uuid, (Family, Option<i64>)>> {
    const S: &str = "s";
    let mut q = Query::select();
    q.expr(tc(S, "generation"))
        .expr(tc(S, "expires"))
        .expr(tc(S, "rotated_at"))
        .expr(tc(S, "prev_rotated_at"))
        .expr(tc(USERS, "id"))
        .expr(tc(USERS, "role"))
        .expr(tc(USERS, "status"))
        .expr(tc(S, "token_hash"))
        .expr(tc(USERS, "last_access"))
        .expr(tc(S, "family"))
        .from_as(t(SESSIONS), t(S))
        .inner_join(t(USERS), tc(USERS, "id").equals((t(S), t("user"))))
        .and_where(tc(S, "family").is_in(ids.iter().map(Uuid::to_string)));
    Ok(rows(x, &q)?
        .into_iter()
        .filter_map(|r| {
            let id = uuid(&r, 9)?;
            let family = Family {
                id,
                generation: int(&r, 0)
                    .and_then(|g| u64::try_from(g).ok())
                    .unwrap_or_default(),
                token_hash: text(&r, 7).unwrap_or_default(),
                expires_ms: int(&r, 1).unwrap_or_default(),
                rotated_at_ms: int(&r, 2),
                prev_rotated_at_ms: int(&r, 3),
                user: Principal {
                    id: uuid(&r, 4).unwrap_or_default(),
                    role: uuid(&r, 5),
                    status: text(&r, 6).unwrap_or_default(),
                },
            };
            Some((id, (family, int(&r, 8))))
        })
        .collect())
}

fn family_row(x: &mut dyn Conn, id: Uuid) -> StoreResult<Option<(Family, Option<i64>)>> {
    Ok(family_rows(x, &[id])?.remove(&id))
}

/// The families named, in order (a batch of session checks).
pub(crate) fn families(x: &mut dyn Conn, ids: Vec<Uuid>) -> StoreResult<Vec<Option<Family>>> {
    let found = family_rows(x, &ids)?;
    Ok(ids
        .iter()
        .map(|id| found.get(id).map(|(f, _)| f.clone()))
        .collect())
}

/// What an advance to the next generation writes, given as expressions: values for one
/// family, or a batch's columns.
struct Advance {
    now: Expr,
    expires: Expr,
    token_hash: Expr,
    ip: Expr,
    user_agent: Expr,
    origin: Expr,
}

/// Sets what an advance to the next generation writes.
fn advance(u: &mut UpdateStatement, a: Advance) {
    u.value(t("generation"), col("generation").add(1))
        .value(t("token_hash"), a.token_hash)
        .value(t("prev_rotated_at"), col("rotated_at"))
        .value(t("rotated_at"), a.now)
        .value(t("expires"), a.expires)
        .value(t("ip"), a.ip)
        .value(t("user_agent"), a.user_agent)
        .value(t("origin"), a.origin);
}

/// Sets the user's `last_access` to `now_ms` unless `seen` (as read with the family) is less
/// than a second old: a second's precision is plenty, and most refreshes skip this write.
fn touch(x: &mut dyn Conn, user: Uuid, seen: Option<i64>, now_ms: i64) -> StoreResult<()> {
    if seen.is_some_and(|at| at >= now_ms - 1000) {
        return Ok(());
    }
    let mut u = Query::update();
    u.table(t(USERS))
        .value(t("last_access"), now_ms)
        .and_where(col("id").eq(user.to_string()))
        .and_where(
            col("last_access")
                .is_null()
                .or(col("last_access").lt(now_ms - 1000)),
        );
    run(x, &u)?;
    Ok(())
}

/// `(SELECT column FROM users WHERE id = sessions.user)`, for the family's user inside a
/// statement on the sessions table.
fn user_column(column: &str) -> Expr {
    let mut q = Query::select();
    q.expr(tc(USERS, column))
        .from(t(USERS))
        .and_where(tc(USERS, "id").equals((t(SESSIONS), t("user"))));
    Expr::from(q)
}

/// Applies a batch of live advances in one conditional update: each family advances only if
/// its live digest, expiry and user are as its entry names them. The batch joins as a list of
/// values, so that each family is found by its key whatever plan the database caches. Answers
/// in the batch's order; a family named twice advances at most once (for its first entry).
pub(crate) fn advance_live(
    x: &mut dyn Conn,
    batch: Vec<LiveAdvance>,
) -> StoreResult<Vec<Option<Principal>>> {
    const V: &str = "v";
    let mut seen = std::collections::HashSet::new();
    let mut firsts: Vec<LiveAdvance> = batch
        .iter()
        .filter(|a| seen.insert(a.family))
        .cloned()
        .collect();
    // Rows are locked in key order, whatever order the requests came in: two batches naming
    // the same families can then never hold one each and wait for the other (a deadlock).
    firsts.sort_by_key(|a| a.family.to_string());
    let list = firsts
        .iter()
        .map(|a| {
            ValueTuple::Many(vec![
                a.family.to_string().into(),
                a.live_hash.clone().into(),
                a.next_hash.clone().into(),
                a.now_ms.into(),
                a.expires_ms.into(),
                a.meta.ip.clone().into(),
                a.meta.user_agent.clone().into(),
                a.meta.origin.clone().into(),
            ])
        })
        .collect();
    // Both engines name a list's columns `column1`, `column2`, …; a parameter in it is text
    // to PostgreSQL until cast.
    let v = |n: usize| tc(V, &format!("column{n}"));
    let v_int = |n: usize| v(n).cast_as(t("BIGINT"));
    let mut u = Query::update();
    let a = Advance {
        now: v_int(4),
        expires: v_int(5),
        token_hash: v(3),
        ip: v(6),
        user_agent: v(7),
        origin: v(8),
    };
    advance(&mut u, a);
    u.table(t(SESSIONS))
        .from(TableRef::ValuesList(list, t(V).into_iden()))
        .and_where(tc(SESSIONS, "family").equals((t(V), t("column1"))))
        .and_where(tc(SESSIONS, "token_hash").equals((t(V), t("column2"))))
        .and_where(tc(SESSIONS, "expires").gte(v_int(4)))
        // The user's own row, by its key: an `IN (active users)` list would be built from
        // every active user on each batch.
        .and_where(user_column("status").eq("active"))
        .returning(Query::returning().exprs([
            tc(SESSIONS, "family"),
            tc(SESSIONS, "user"),
            user_column("role"),
            user_column("last_access"),
        ]));
    let mut advanced = std::collections::HashMap::new();
    for r in rows(x, &u)? {
        let user = Principal {
            id: uuid(&r, 1).unwrap_or_default(),
            role: uuid(&r, 2),
            status: "active".to_owned(),
        };
        advanced.insert(uuid(&r, 0).unwrap_or_default(), (user, int(&r, 3)));
    }
    // Each user's last access once, at the latest of its advances.
    let mut touched: std::collections::HashMap<Uuid, (Option<i64>, i64)> = Default::default();
    for a in &firsts {
        if let Some((user, seen)) = advanced.get(&a.family) {
            let e = touched.entry(user.id).or_insert((*seen, a.now_ms));
            e.1 = Ord::max(e.1, a.now_ms);
        }
    }
    for (user, (seen, now_ms)) in touched {
        touch(x, user, seen, now_ms)?;
    }
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let first = batch[..i].iter().all(|b| b.family != a.family);
            advanced
                .get(&a.family)
                .filter(|_| first)
                .map(|(user, _)| user.clone())
        })
        .collect())
}

/// How many times a decision is retried against a family that keeps changing under it. Each
/// failed attempt means another writer's change landed, so this bounds the writers that can
/// race on one family at once, not the time one waits.
const MAX_FAMILY_ATTEMPTS: usize = 64;

/// Reads the family, decides, and writes the change only if the family still has the
/// generation the decision saw (compare and set); otherwise reads again. Each statement may be
/// its own transaction: none holds a lock while the decision is made, so two instances
/// refreshing, checking or ending one family never wait on each other, and the one that loses
/// decides again on what the winner wrote.
pub(crate) fn change_family(
    x: &mut dyn Conn,
    id: Uuid,
    decide: &FamilyDecision,
) -> StoreResult<Option<Family>> {
    for _ in 0..MAX_FAMILY_ATTEMPTS {
        let Some((found, last_access)) = family_row(x, id)? else {
            return Ok(None);
        };
        let key = id.to_string();
        let seen = i64::try_from(found.generation).unwrap_or(i64::MAX);
        let same = || {
            col("family")
                .eq(key.as_str())
                .and(col("generation").eq(seen))
        };
        let mut u = Query::update();
        u.table(t(SESSIONS)).cond_where(same());
        let (written, touched) = match decide(&found) {
            FamilyChange::None => return Ok(Some(found)),
            FamilyChange::End => {
                let mut d = Query::delete();
                d.from_table(t(SESSIONS)).cond_where(same());
                (run(x, &d)?, None)
            }
            FamilyChange::Advance {
                now_ms,
                expires_ms,
                token_hash,
                meta,
            } => {
                let a = Advance {
                    now: Expr::val(now_ms),
                    expires: Expr::val(expires_ms),
                    token_hash: Expr::val(token_hash),
                    ip: Expr::val(meta.ip),
                    user_agent: Expr::val(meta.user_agent),
                    origin: Expr::val(meta.origin),
                };
                advance(&mut u, a);
                (run(x, &u)?, Some(now_ms))
            }
            FamilyChange::Extend { now_ms, expires_ms } => {
                u.value(t("expires"), expires_ms);
                (run(x, &u)?, Some(now_ms))
            }
        };
        if written == 0 {
            continue;
        }
        if let Some(now_ms) = touched {
            touch(x, found.user.id, last_access, now_ms)?;
        }
        return Ok(Some(found));
    }
    Err(StoreError::Backend(format!(
        "session family {id} kept changing under {MAX_FAMILY_ATTEMPTS} attempts"
    )))
}

/// Expired families deleted per statement.
const PURGE_BATCH: u64 = 10_000;

/// Deletes expired families in batches, skipping any another transaction holds (a user's
/// sessions being ended, evicted or refreshed), so that the purge never waits for a lock and
/// never takes part in a deadlock; what it skips goes next time.
pub(crate) fn tfa(x: &mut dyn Conn, user: Uuid) -> StoreResult<Option<TfaState>> {
    let mut q = Query::select();
    q.columns(
        [
            "email",
            "external_identifier",
            "provider",
            "tfa_secret",
            "tfa_pending",
            "tfa_last_step",
        ]
        .map(t),
    )
    .from(t(USERS))
    .and_where(col("id").eq(user.to_string()));
    Ok(row(x, &q)?.map(|r| TfaState {
        email: text(&r, 0),
        external_identifier: text(&r, 1),
        provider: text(&r, 2).unwrap_or_default(),
        secret: text(&r, 3),
        pending: text(&r, 4),
        last_step: int(&r, 5),
    }))
}

pub(crate) fn change_tfa(x: &mut dyn Conn, user: Uuid, change: &TfaChange) -> StoreResult<bool> {
    let mut u = Query::update();
    u.table(t(USERS)).and_where(col("id").eq(user.to_string()));
    let unused = |step: i64| {
        col("tfa_last_step")
            .is_null()
            .or(col("tfa_last_step").lt(step))
    };
    match change {
        TfaChange::Pending(sealed) => {
            u.value(t("tfa_pending"), sealed.clone())
                .and_where(col("tfa_secret").is_null());
        }
        TfaChange::Enable {
            secret,
            pending,
            step,
        } => {
            u.value(t("tfa_secret"), secret.clone())
                .value(t("tfa_pending"), Expr::val(Option::<String>::None))
                .value(t("tfa_last_step"), *step)
                .and_where(col("tfa_secret").is_null())
                .and_where(col("tfa_pending").eq(pending.clone()));
        }
        TfaChange::Disable { step } => {
            u.value(t("tfa_secret"), Expr::val(Option::<String>::None))
                .value(t("tfa_pending"), Expr::val(Option::<String>::None))
                .value(t("tfa_last_step"), Expr::val(Option::<i64>::None))
                .and_where(col("tfa_secret").is_not_null());
            if let Some(step) = step {
                u.and_where(unused(*step));
            }
        }
        TfaChange::UseStep(step) => {
            u.value(t("tfa_last_step"), *step)
                .and_where(col("tfa_secret").is_not_null())
                .and_where(unused(*step));
        }
    }
    Ok(run(x, &u)? == 1)
}

pub(crate) fn sessions_of(
    x: &mut dyn Conn,
    user: Uuid,
    now_ms: i64,
) -> StoreResult<Vec<SessionInfo>> {
    let mut q = Query::select();
    q.columns(
        [
            "family",
            "created",
            "rotated_at",
            "expires",
            "ip",
            "user_agent",
        ]
        .map(t),
    )
    .from(t(SESSIONS))
    .and_where(col("user").eq(user.to_string()))
    .and_where(col("expires").gte(now_ms))
    .order_by(t("family"), Order::Asc);
    let mut found: Vec<SessionInfo> = rows(x, &q)?
        .iter()
        .filter_map(|r| {
            let created_ms = int(r, 1).unwrap_or_default();
            Some(SessionInfo {
                id: uuid(r, 0)?,
                created_ms,
                last_used_ms: int(r, 2).unwrap_or(created_ms),
                expires_ms: int(r, 3).unwrap_or_default(),
                ip: text(r, 4),
                user_agent: text(r, 5),
            })
        })
        .collect();
    found.sort_by(|a, b| b.last_used_ms.cmp(&a.last_used_ms).then(a.id.cmp(&b.id)));
    Ok(found)
}

pub(crate) fn purge_expired_sessions(x: &mut dyn Conn, now_ms: i64) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let mut expired = Query::select();
        expired
            .column(t("family"))
            .from(t(SESSIONS))
            .and_where(col("expires").lt(now_ms))
            // No ORDER BY: it would walk the whole table in key order instead of the expiry
            // index (a skipped row never waits, so no order is needed against deadlocks).
            .limit(PURGE_BATCH)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        let mut d = Query::delete();
        d.from_table(t(SESSIONS))
            .and_where(col("family").in_subquery(expired));
        let n = run(x, &d)?;
        total += n;
        if n < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// `tessera_limits.<column>`, for the upserts below (`excluded` would not render alike).
fn limit(column: &str) -> Expr {
    tc(LIMITS, column)
}

pub(crate) fn count_hit(
    x: &mut dyn Conn,
    key: &str,
    amount: i64,
    window_ms: i64,
    now_ms: i64,
) -> StoreResult<Hits> {
    let end = now_ms.saturating_add(window_ms);
    let open = limit("until_ms").lte(now_ms);
    let mut s = Query::insert();
    s.into_table(t(LIMITS))
        .columns(["key", "hits", "until_ms"].map(t))
        .values_panic([key.into(), amount.into(), end.into()])
        .on_conflict(
            OnConflict::column(t("key"))
                .values([
                    (
                        t("hits"),
                        Expr::case(open.clone(), amount)
                            .finally(limit("hits").add(amount))
                            .into(),
                    ),
                    (
                        t("until_ms"),
                        Expr::case(open, end).finally(limit("until_ms")).into(),
                    ),
                ])
                .to_owned(),
        )
        .returning(Query::returning().columns(["hits", "until_ms"].map(t)));
    let r = row(x, &s)?.ok_or_else(|| StoreError::Backend("upsert returned no row".into()))?;
    Ok(Hits {
        hits: int(&r, 0).unwrap_or_default(),
        until_ms: int(&r, 1).unwrap_or(end),
    })
}

pub(crate) fn claim(x: &mut dyn Conn, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool> {
    // Inserted, or updated where the last wait has ended: a row comes back. A running wait
    // skips the update and nothing does.
    let mut s = Query::insert();
    s.into_table(t(LIMITS))
        .columns(["key", "hits", "until_ms"].map(t))
        .values_panic([key.into(), 0.into(), until_ms.into()])
        .on_conflict(
            OnConflict::column(t("key"))
                .value(t("until_ms"), until_ms)
                .action_and_where(limit("until_ms").lte(now_ms))
                .to_owned(),
        )
        .returning_col(t("until_ms"));
    Ok(row(x, &s)?.is_some())
}

pub(crate) fn held(x: &mut dyn Conn, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
    let mut s = Query::select();
    s.column(t("until_ms"))
        .from(t(LIMITS))
        .and_where(col("key").eq(key))
        .and_where(col("until_ms").gt(now_ms));
    Ok(row(x, &s)?.and_then(|r| int(&r, 0)))
}

pub(crate) fn forget_counts(x: &mut dyn Conn, keys: &[String]) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut d = Query::delete();
    d.from_table(t(LIMITS))
        .and_where(col("key").is_in(keys.iter().map(String::as_str)));
    run(x, &d)?;
    Ok(())
}

pub(crate) fn purge_counts(x: &mut dyn Conn, now_ms: i64) -> StoreResult<u64> {
    let mut d = Query::delete();
    d.from_table(t(LIMITS))
        .and_where(col("until_ms").lt(now_ms));
    run(x, &d)
}

pub(crate) fn ping(x: &mut dyn Conn) -> StoreResult<()> {
    let mut s = Query::select();
    s.expr(Expr::cust("1"));
    row(x, &s)?;
    Ok(())
}

/// A stored value as a data move carries it, whatever the column's kind.
fn carried(c: &Cell) -> Value {
    match c {
        Cell::Null => Value::Null,
        Cell::Int(i) => Value::from(*i),
        Cell::Real(r) => Value::from(*r),
        Cell::Text(s) => Value::String(s.clone()),
        Cell::Bool(b) => Value::Bool(*b),
    }
}

/// A carried value as a parameter; each engine converts it to its column's type.
fn carry(v: &Value) -> Param {
    match v {
        Value::Null => Param::String(None),
        Value::Bool(b) => Param::Bool(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Param::BigInt(Some(i)),
            None => Param::Double(n.as_f64()),
        },
        Value::String(s) => Param::String(Some(s.clone())),
        other => Param::String(Some(other.to_string())),
    }
}

/// Up to `limit` rows of `columns` of `table` after key `after`, in key order (a data move's
/// read, of Tessera's database or another program's).
pub(crate) fn page<C: AsRef<str>>(
    x: &mut dyn Conn,
    table: &str,
    columns: &[C],
    key: &str,
    after: Option<Value>,
    limit: u64,
) -> StoreResult<Vec<Vec<Value>>> {
    let mut q = Query::select();
    q.columns(columns.iter().map(|c| t(c.as_ref())))
        .from(t(table))
        .order_by(t(key), Order::Asc)
        .limit(limit);
    if let Some(after) = after {
        q.and_where(col(key).gt(carry(&after)));
    }
    Ok(rows(x, &q)?
        .iter()
        .map(|r| (0..columns.len()).map(|i| carried(cell(r, i))).collect())
        .collect())
}

/// Writes a data move's rows into `table`; see [`tessera_store::Store::load`].
pub(crate) fn load(
    x: &mut dyn Conn,
    table: &'static Table,
    rows: Vec<Vec<Value>>,
    later: bool,
) -> StoreResult<()> {
    let written: Vec<usize> = (0..table.columns.len())
        .filter(|&i| table.copy_key || table.columns[i] != table.key)
        .collect();
    for row in rows {
        let mut s = Query::insert();
        s.into_table(t(table.name))
            .columns(written.iter().map(|&i| t(table.columns[i])))
            .values_panic(written.iter().map(|&i| {
                let v = row.get(i).unwrap_or(&Value::Null);
                let deferred = !later && table.later.contains(&table.columns[i]);
                Expr::val(if deferred {
                    Param::String(None)
                } else {
                    carry(v)
                })
            }));
        if table.copy_key {
            s.on_conflict(
                OnConflict::column(t(table.key))
                    .update_columns(written.iter().map(|&i| t(table.columns[i])))
                    .to_owned(),
            );
        }
        run(x, &s)?;
    }
    Ok(())
}
