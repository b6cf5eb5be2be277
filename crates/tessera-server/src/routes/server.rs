//! `/server`: ping, health and info.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tessera_core::Error;
use tessera_core::access::Accountability;

use crate::AppState;
use crate::error::ApiResult;
use crate::http::Data;

/// Tessera's version, reported where Directus reports its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /server/ping`.
pub async fn ping() -> Response {
    let mut res = "pong".into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// `GET /server/health`: 403 for anonymous callers; admins also see the checks. With
/// `HEALTHCHECK_ENABLED=false` the route does not exist.
pub async fn health(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
) -> ApiResult<Response> {
    if !s.config.healthcheck_enabled {
        return Err(Error::RouteNotFound("/server/health".into()).into());
    }
    if acc.user.is_none() && acc.role.is_none() {
        return Err(Error::Forbidden(None).into());
    }
    let started = tokio::time::Instant::now();
    let db = s.store.ping().await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let status = if db.is_ok() { "ok" } else { "error" };
    let body = if acc.admin {
        let mut check = json!({
            "status": status,
            "componentType": "datastore",
            "observedUnit": "ms",
            "observedValue": (elapsed * 1000.0).round() / 1000.0,
            "threshold": 150
        });
        if let Err(e) = &db {
            check["output"] = Value::String(error_output(e));
        }
        let mut checks = Map::new();
        checks.insert(format!("{}:responseTime", s.store.engine()), json!([check]));
        json!({
            "status": status,
            "releaseId": VERSION,
            "serviceId": s.config.public_url,
            "checks": checks
        })
    } else {
        json!({"status": status})
    };
    let code = if db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(health_response(code, body))
}

/// The health report when the database is unreachable before the caller could even be
/// identified: the bare status, as any authenticated caller would see it.
pub fn database_unreachable() -> Response {
    health_response(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "error"}))
}

fn health_response(code: StatusCode, body: Value) -> Response {
    let mut res = (code, axum::Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/health+json; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// What an admin's health report says of a failed database check: the kind of failure, never
/// the driver's text (which can name hosts and users).
fn error_output(e: &tessera_store::StoreError) -> String {
    match e {
        tessera_store::StoreError::Unavailable(_) => "Database is unreachable".into(),
        _ => "Database check failed".into(),
    }
}

/// `GET /server/info`: the project block for everyone, version and limits for users.
pub async fn info(
    State(s): State<AppState>,
    Extension(acc): Extension<Arc<Accountability>>,
) -> ApiResult<Response> {
    let settings = s.store.settings().await?;
    let mut project = Map::new();
    for key in [
        "project_name",
        "project_descriptor",
        "project_logo",
        "project_color",
        "default_appearance",
        "default_language",
        "public_note",
        "public_registration",
        "public_registration_verify_email",
    ] {
        project.insert(
            key.into(),
            settings.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    let setup_completed = s.store.has_users().await?;
    let mut data = Map::new();
    data.insert("project".into(), Value::Object(project));
    data.insert("setupCompleted".into(), setup_completed.into());
    if acc.user.is_some() {
        // As Directus reports it: the points and the window in seconds.
        let rate = s.limiter.as_ref().map_or(Value::Bool(false), |l| {
            let l = l.limit();
            json!({"points": l.points, "duration": l.window_ms as f64 / 1000.0})
        });
        data.insert("rateLimit".into(), rate);
        data.insert("rateLimitGlobal".into(), Value::Bool(false));
        data.insert("queryLimit".into(), json!({"default": 100, "max": -1}));
        data.insert("websocket".into(), Value::Bool(false));
    }
    if acc.user.is_some() || !setup_completed {
        data.insert("version".into(), VERSION.into());
    }
    Ok(Data(Value::Object(data)).into_response())
}
