//! `/users`, `/roles` and `/settings`: the admin item routes and the caller's own `/users/me`.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_core::access::Accountability;
use tessera_core::items::Me;
use tessera_core::query::ReadQuery;
use tessera_store::Collection;
use tessera_store::schema::{ROLES, USERS};

use crate::AppState;
use crate::error::ApiResult;
use crate::http::{Data, JsonBody, json_body, no_content, raw_data};

fn query(raw: &Option<String>) -> ApiResult<ReadQuery> {
    Ok(ReadQuery::parse(raw.as_deref().unwrap_or(""))?)
}

async fn list(
    state: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    raw: &Option<String>,
) -> ApiResult<Response> {
    let (items, meta) = state.items.read_many(c, acc, &query(raw)?).await?;
    Ok(match meta {
        Some(meta) => json_body(&json!({"data": items, "meta": meta})),
        None => Data(items).into_response(),
    })
}

async fn create(
    state: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    raw: &Option<String>,
    body: Value,
) -> ApiResult<Response> {
    let rq = &query(raw)?;
    let one = |id: String| async move { state.items.read_one(c, acc, &id, rq).await };
    match body {
        Value::Array(items) => {
            let mut ids = Vec::new();
            for item in &items {
                match state.items.create(c, acc, item).await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        // All or nothing: undo the items this batch already created.
                        for id in &ids {
                            if let Err(undo) = state.items.delete(c, acc, id).await {
                                tracing::warn!(error = %undo, %id, "undoing a failed batch create");
                            }
                        }
                        return Err(e.into());
                    }
                }
            }
            let read = async {
                let mut out = Vec::new();
                for id in ids {
                    out.push(one(id).await?);
                }
                Ok(out)
            };
            read_back(read.await)
        }
        item => {
            let id = state.items.create(c, acc, &item).await?;
            read_back(one(id).await)
        }
    }
}

/// The answer to a write that has been saved: the item(s) as the caller may read them back,
/// or 204 when the requested fields cannot be read (as Directus answers), so that a client
/// never takes a saved write for a failed one and repeats it.
fn read_back<T: serde::Serialize>(read: tessera_core::Result<T>) -> ApiResult<Response> {
    match read {
        Ok(v) => Ok(Data(v).into_response()),
        Err(tessera_core::Error::Forbidden(_)) => Ok(no_content()),
        Err(e) => Err(e.into()),
    }
}

/// Re-reads an updated item; 204 when the caller may not read it back.
async fn reread(
    state: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    id: &str,
    rq: &ReadQuery,
) -> ApiResult<Response> {
    read_back(state.items.read_one(c, acc, id, rq).await)
}

macro_rules! item_routes {
    ($c:expr, $list:ident, $create:ident, $get:ident, $update:ident, $delete:ident) => {
        pub async fn $list(
            State(s): State<AppState>,
            Extension(acc): Extension<Arc<Accountability>>,
            RawQuery(q): RawQuery,
        ) -> ApiResult<Response> {
            list(&s, $c, &acc, &q).await
        }

        pub async fn $create(
            State(s): State<AppState>,
            Extension(acc): Extension<Arc<Accountability>>,
            RawQuery(q): RawQuery,
            body: JsonBody,
        ) -> ApiResult<Response> {
            create(&s, $c, &acc, &q, body.0).await
        }

        pub async fn $get(
            State(s): State<AppState>,
            Extension(acc): Extension<Arc<Accountability>>,
            Path(id): Path<String>,
            RawQuery(q): RawQuery,
        ) -> ApiResult<Response> {
            Ok(Data(s.items.read_one($c, &acc, &id, &query(&q)?).await?).into_response())
        }

        pub async fn $update(
            State(s): State<AppState>,
            Extension(acc): Extension<Arc<Accountability>>,
            Path(id): Path<String>,
            RawQuery(q): RawQuery,
            body: JsonBody,
        ) -> ApiResult<Response> {
            let rq = query(&q)?;
            s.items.update($c, &acc, &id, &body.0).await?;
            reread(&s, $c, &acc, &id, &rq).await
        }

        pub async fn $delete(
            State(s): State<AppState>,
            Extension(acc): Extension<Arc<Accountability>>,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            s.items.delete($c, &acc, &id).await?;
            Ok(no_content())
        }
    };
}

item_routes!(
    &USERS,
    list_users,
    create_users,
    get_user,
    update_user,
    delete_user
);
item_routes!(
    &ROLES,
    list_roles,
    create_roles,
    get_role,
    update_role,
    delete_role
);

/// `GET /users/me`.
pub async fn me(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Ok(match s.items.me(&acc, &query(&q)?).await? {
        Me::Json(json) => raw_data(&json),
        Me::IdOnly(id) => Data(json!({"id": id})).into_response(),
    })
}

/// `PATCH /users/me`.
pub async fn update_me(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let rq = query(&q)?;
    let id = s.items.update_me(&acc, &body.0).await?;
    reread(&s, &USERS, &acc, &id.to_string(), &rq).await
}

/// `GET /settings`.
pub async fn settings(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Ok(Data(s.items.settings(&acc, &query(&q)?).await?).into_response())
}

/// `PATCH /settings`.
pub async fn update_settings(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let rq = query(&q)?;
    s.items.update_settings(&acc, &body.0).await?;
    read_back(s.items.settings(&acc, &rq).await)
}
