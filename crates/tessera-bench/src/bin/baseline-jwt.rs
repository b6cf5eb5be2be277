//! Baseline: verify an HS256 Directus-style JWT from the `Authorization` header and answer
//! JSON, with nothing else. The ceiling for JWT-authenticated reads.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

static KEY: std::sync::OnceLock<(DecodingKey, Validation)> = std::sync::OnceLock::new();

async fn me(headers: HeaderMap) -> Result<axum::Json<Value>, StatusCode> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let (key, validation) = KEY.get_or_init(|| {
        let secret = std::env::var("SECRET").unwrap_or_default();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["directus"]);
        (DecodingKey::from_secret(secret.as_bytes()), v)
    });
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map_err(|_| StatusCode::FORBIDDEN)?;
    Ok(axum::Json(json!({"data": {"id": data.claims.get("id")}})))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new().route("/users/me", get(me));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
