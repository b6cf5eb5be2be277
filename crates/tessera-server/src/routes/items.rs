//! The item routes of `/users`, `/roles`, `/policies`, `/access` and `/permissions` (list,
//! read, create one or many, update one, many or by query, delete one or many), the caller's
//! own `/users/me`, `/roles/me`, `/policies/me/globals`, `/permissions/me`, and `/settings`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tessera_core::access::Accountability;
use tessera_core::items::{Items, Me};
use tessera_core::query::ReadQuery;
use tessera_store::Collection;
use tessera_store::schema::USERS;

use crate::AppState;
use crate::error::ApiResult;
use crate::http::{Data, JsonBody, json_body, no_content, raw_data};
use crate::oas::{self, Api};

type Caller = Extension<Arc<Accountability>>;

fn query(raw: &Option<String>) -> ApiResult<ReadQuery> {
    Ok(ReadQuery::parse(raw.as_deref().unwrap_or(""))?)
}

/// The answer to a write that has been saved: the item(s) as the caller may read them back,
/// or 204 when it may not read them (as Directus answers), so that a client never takes a
/// saved write for a failed one and repeats it.
fn read_back<T: serde::Serialize>(read: tessera_core::Result<T>) -> ApiResult<Response> {
    match read {
        Ok(v) => Ok(Data(v).into_response()),
        Err(tessera_core::Error::Forbidden(_)) => Ok(no_content()),
        Err(e) => Err(e.into()),
    }
}

async fn list(
    s: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    raw: &Option<String>,
) -> ApiResult<Response> {
    let (items, meta) = s.items.read_many(c, acc, &query(raw)?).await?;
    Ok(match meta {
        Some(meta) => json_body(&json!({"data": items, "meta": meta})),
        None => Data(items).into_response(),
    })
}

async fn create(
    s: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    raw: &Option<String>,
    body: Value,
) -> ApiResult<Response> {
    let rq = query(raw)?;
    match body {
        Value::Array(items) => {
            let keys = s.items.create_many(c, acc, &items).await?;
            read_back(s.items.read_keys(c, acc, &keys, &rq).await)
        }
        item => {
            let key = s.items.create(c, acc, &item).await?;
            read_back(s.items.read_one(c, acc, &key, &rq).await)
        }
    }
}

async fn update_batch(
    s: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    raw: &Option<String>,
    body: Value,
) -> ApiResult<Response> {
    let rq = query(raw)?;
    let keys = s.items.update_batch(c, acc, &body).await?;
    read_back(s.items.read_keys(c, acc, &keys, &rq).await)
}

async fn update_one(
    s: &AppState,
    c: &'static Collection,
    acc: &Accountability,
    key: &str,
    raw: &Option<String>,
    body: Value,
) -> ApiResult<Response> {
    let rq = query(raw)?;
    s.items.update(c, acc, key, &body).await?;
    read_back(s.items.read_one(c, acc, key, &rq).await)
}

/// Adds the item routes of collection `c` under `path`.
pub fn collection(api: Api, path: &str, c: &'static Collection) -> Api {
    let (on_collection, on_item) = oas::collection_ops(c);
    api.route(
            path,
            get(move |State(s): State<AppState>, Extension(acc): Caller, RawQuery(q): RawQuery| async move {
                list(&s, c, &acc, &q).await
            })
            .post(move |State(s): State<AppState>, Extension(acc): Caller, RawQuery(q): RawQuery, body: JsonBody| async move {
                create(&s, c, &acc, &q, body.0).await
            })
            .patch(move |State(s): State<AppState>, Extension(acc): Caller, RawQuery(q): RawQuery, body: JsonBody| async move {
                update_batch(&s, c, &acc, &q, body.0).await
            })
            .delete(move |State(s): State<AppState>, Extension(acc): Caller, body: JsonBody| async move {
                s.items.delete_batch(c, &acc, &body.0).await?;
                ApiResult::Ok(no_content())
            }),
            on_collection,
        )
        .route(
            &format!("{path}/{{id}}"),
            get(move |State(s): State<AppState>, Extension(acc): Caller, Path(id): Path<String>, RawQuery(q): RawQuery| async move {
                ApiResult::Ok(Data(s.items.read_one(c, &acc, &id, &query(&q)?).await?).into_response())
            })
            .patch(move |State(s): State<AppState>, Extension(acc): Caller, Path(id): Path<String>, RawQuery(q): RawQuery, body: JsonBody| async move {
                update_one(&s, c, &acc, &id, &q, body.0).await
            })
            .delete(move |State(s): State<AppState>, Extension(acc): Caller, Path(id): Path<String>| async move {
                s.items.delete_many(c, &acc, &[id]).await?;
                ApiResult::Ok(no_content())
            }),
            on_item,
        )
}

/// `/items/<collection>` and `/items/<collection>/<id>`, any method: refused.
pub async fn items_of(Path(path): Path<Vec<(String, String)>>) -> ApiResult<Response> {
    let collection = path
        .iter()
        .find(|(k, _)| k == "collection")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    Err(Items::no_items(collection).into())
}

/// `POST /users/me/tfa/generate`.
pub async fn tfa_generate(
    State(s): State<AppState>,
    Extension(acc): Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    let (secret, url) = s.auth.tfa_generate(&acc, &body.object()).await?;
    Ok(Data(json!({"secret": secret, "otpauth_url": url})).into_response())
}

/// `POST /users/me/tfa/enable`.
pub async fn tfa_enable(
    State(s): State<AppState>,
    Extension(acc): Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    let key = acc.user.map(|u| u.to_string()).unwrap_or_default();
    let permit = s.items.permit_field(&USERS, &acc, &key, "tfa_secret");
    s.auth.tfa_enable(&acc, &body.object(), permit).await?;
    Ok(no_content())
}

/// `POST /users/me/tfa/disable`.
pub async fn tfa_disable(
    State(s): State<AppState>,
    Extension(acc): Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    let key = acc.user.map(|u| u.to_string()).unwrap_or_default();
    let permit = s.items.permit_field(&USERS, &acc, &key, "tfa_secret");
    s.auth.tfa_disable(&acc, &body.object(), permit).await?;
    Ok(no_content())
}

/// `POST /users/:id/tfa/disable` (admins).
pub async fn tfa_disable_for(
    State(s): State<AppState>,
    Extension(acc): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.auth.tfa_disable_for(&acc, &id).await?;
    Ok(no_content())
}

/// `GET /users/me`.
pub async fn me(
    State(s): State<AppState>,
    Extension(acc): Caller,
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
    Extension(acc): Caller,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let rq = query(&q)?;
    let id = s.items.update_me(&acc, &body.0).await?;
    read_back(s.items.read_one(&USERS, &acc, &id.to_string(), &rq).await)
}

/// `GET /roles/me`.
pub async fn roles_me(
    State(s): State<AppState>,
    Extension(acc): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Ok(Data(s.items.roles_me(&acc, &query(&q)?).await?).into_response())
}

/// `GET /policies/me/globals`.
pub async fn policy_globals(Extension(acc): Caller) -> Response {
    Data(Items::globals(&acc)).into_response()
}

/// `GET /permissions/me`.
pub async fn permissions_me(
    State(s): State<AppState>,
    Extension(acc): Caller,
) -> ApiResult<Response> {
    Ok(Data(s.items.permissions_me(&acc).await?).into_response())
}

/// `GET /settings`.
pub async fn settings(
    State(s): State<AppState>,
    Extension(acc): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Ok(Data(s.items.settings(&acc, &query(&q)?).await?).into_response())
}

/// `PATCH /settings`.
pub async fn update_settings(
    State(s): State<AppState>,
    Extension(acc): Caller,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let rq = query(&q)?;
    s.items.update_settings(&acc, &body.0).await?;
    read_back(s.items.settings(&acc, &rq).await)
}
