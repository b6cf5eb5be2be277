//! `/auth`: login, refresh, logout and the provider list, with Directus's mode resolution,
//! bodies and cookies.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tessera_core::Error;
use tessera_core::access::Accountability;
use tessera_core::auth::{Issued, LogoutScope};
use tessera_proto::{AuthData, AuthMode};

use crate::AppState;
use crate::error::ApiResult;
use crate::http::{Data, JsonBody, client_meta, cookie, json_body, no_content, set_cookie};

/// `GET /auth`: no external providers.
pub async fn providers() -> Response {
    json_body(&json!({"data": [], "disableDefault": false}))
}

/// Renders tokens per mode: json puts both in the body; cookie moves the refresh token to a
/// cookie; session hands out only a session cookie holding the JWT.
fn respond(state: &AppState, mode: AuthMode, issued: Issued) -> Response {
    let now = state.auth.now_ms();
    let (data, cookie) = match mode {
        AuthMode::Json => (
            AuthData {
                expires: issued.expires_ms,
                refresh_token: Some(issued.refresh_token),
                access_token: Some(issued.access_token),
            },
            None,
        ),
        AuthMode::Cookie => (
            AuthData {
                expires: issued.expires_ms,
                refresh_token: None,
                access_token: Some(issued.access_token),
            },
            Some(set_cookie(
                &state.config.refresh_cookie,
                Some(&issued.refresh_token),
                now,
            )),
        ),
        AuthMode::Session => (
            AuthData {
                expires: issued.expires_ms,
                refresh_token: None,
                access_token: None,
            },
            Some(set_cookie(
                &state.config.session_cookie,
                Some(&issued.access_token),
                now,
            )),
        ),
    };
    let mut res = Data(data).into_response();
    if let Some(c) = cookie {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// `POST /auth/password/request`: 204 whether or not a mail goes out.
pub async fn password_request(
    State(state): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    body: JsonBody,
) -> ApiResult<Response> {
    state.resets.request(&body.object(), acc.ip).await?;
    Ok(no_content())
}

/// `POST /auth/password/reset`.
pub async fn password_reset(State(state): State<AppState>, body: JsonBody) -> ApiResult<Response> {
    state.resets.reset(&body.object()).await?;
    Ok(no_content())
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let meta = client_meta(&headers, acc.ip);
    let (mode, issued) = state.auth.login(&body.object(), meta, acc.ip).await?;
    Ok(respond(&state, mode, issued))
}

/// Resolves the mode and the refresh token as Directus does: `mode` as given, else json when
/// the body has `refresh_token`, else cookie.
fn resolve(
    state: &AppState,
    body: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<(Option<AuthMode>, String), Error> {
    let missing =
        || Error::payload("The refresh token is required in either the payload or cookie");
    let mode = match body.get("mode") {
        Some(Value::String(m)) => AuthMode::parse(m),
        Some(_) => None,
        None if body.contains_key("refresh_token") => Some(AuthMode::Json),
        None => Some(AuthMode::Cookie),
    };
    let token = match mode {
        Some(AuthMode::Json) => match body.get("refresh_token") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(missing()),
        },
        Some(AuthMode::Cookie) => cookie(headers, &state.config.refresh_cookie.name)
            .filter(|c| !c.is_empty())
            .ok_or_else(missing)?
            .to_owned(),
        Some(AuthMode::Session) => {
            let jwt = cookie(headers, &state.config.session_cookie.name)
                .filter(|c| !c.is_empty())
                .ok_or_else(missing)?;
            state.auth.session_token_of(jwt)?
        }
        None => return Err(missing()),
    };
    Ok((mode, token))
}

/// `POST /auth/refresh`.
pub async fn refresh(
    State(state): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let (mode, token) = resolve(&state, &body.object(), &headers)?;
    let mode = mode.unwrap_or_default();
    let issued = state
        .auth
        .refresh(mode, &token, client_meta(&headers, acc.ip), acc.ip)
        .await?;
    Ok(respond(&state, mode, issued))
}

/// `GET /auth/sessions`: the caller's live sessions (`?user=<id>`: another user's, for
/// admins).
pub async fn sessions(
    State(state): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let user = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned());
    Ok(Data(state.auth.sessions(&acc, user.as_deref()).await?).into_response())
}

/// `DELETE /auth/sessions/:id`: ends one session.
pub async fn end_session(
    State(state): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.auth.end_session(&acc, &id).await?;
    Ok(no_content())
}

/// `POST /auth/logout`: ends the session and clears whichever auth cookies the request had.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let body = body.object();
    let scope = LogoutScope::parse(&body)?;
    let (_, token) = resolve(&state, &body, &headers)?;
    state.auth.logout(&token, scope).await?;
    let mut res = no_content();
    let now = state.auth.now_ms();
    for c in [&state.config.refresh_cookie, &state.config.session_cookie] {
        if cookie(&headers, &c.name).is_some() {
            res.headers_mut()
                .append(header::SET_COOKIE, set_cookie(c, None, now));
        }
    }
    Ok(res)
}
