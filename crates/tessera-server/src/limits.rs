//! Where limit counters live when `RATE_LIMITER_STORE` picks one (memory, the database,
//! Redis), the Redis counters themselves, and the middleware that applies the per-client
//! request limit (`RATE_LIMITER_*`) to every route, `/server/ping` included, as Directus does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tessera_core::limits::{Counters, MemoryCounters, StoreCounters};
use tessera_store::{Hits, Store, StoreError, StoreResult};

use crate::AppState;
use crate::error::ApiError;
use crate::http::client_ip;

/// `RATE_LIMITER_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimiterStore {
    Memory,
    /// The PostgreSQL database the instances share.
    Database,
    /// A Redis server, by URL.
    Redis(String),
}

/// How long one Redis round trip may take before the request is refused.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Key prefix of Tessera's counters in Redis.
const PREFIX: &str = "tessera:limit:";

/// Adds `ARGV[1]` to a counter, opening a window of `ARGV[2]` ms when it has none; answers
/// the count and the window's remaining ms.
const HIT: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}
";

/// Counters in Redis, shared by every instance that names the same server.
pub struct RedisCounters {
    conn: ConnectionManager,
    hit: redis::Script,
}

impl RedisCounters {
    /// Connects lazily: a Redis that is down at start refuses requests until it is up.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("RATE_LIMITER_REDIS is not a Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            hit: redis::Script::new(HIT),
        })
    }
}

fn failed(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

#[async_trait]
impl Counters for RedisCounters {
    async fn hit(&self, key: &str, amount: i64, window_ms: i64, now_ms: i64) -> StoreResult<Hits> {
        let (hits, ttl): (i64, i64) = self
            .hit
            .key(format!("{PREFIX}{key}"))
            .arg(amount)
            .arg(window_ms.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(Hits {
            hits,
            until_ms: now_ms + ttl,
        })
    }

    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool> {
        let keep = until_ms - now_ms;
        if keep <= 0 {
            return Ok(true);
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{PREFIX}{key}"))
            .arg(until_ms)
            .arg("NX")
            .arg("PX")
            .arg(keep)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(set.is_some())
    }

    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        let until: Option<i64> = redis::cmd("GET")
            .arg(format!("{PREFIX}{key}"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(until.filter(|u| *u > now_ms))
    }

    async fn forget(&self, keys: Vec<String>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("DEL")
            .arg(
                keys.iter()
                    .map(|k| format!("{PREFIX}{k}"))
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// The counters `RATE_LIMITER_STORE` names.
pub fn counters(store: &LimiterStore, db: &Arc<dyn Store>) -> anyhow::Result<Arc<dyn Counters>> {
    Ok(match store {
        LimiterStore::Memory => Arc::new(MemoryCounters::default()),
        LimiterStore::Database => Arc::new(StoreCounters(db.clone())),
        LimiterStore::Redis(url) => Arc::new(RedisCounters::new(url)?),
    })
}

/// Counts the request against its client's limit; answers 429 past it.
pub async fn limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // The router adds this layer only when the limiter is on.
    if let Some(limiter) = &s.limiter
        && let Some(ip) = client_ip(&req, &s)
        && let Err(e) = limiter.check(ip).await
    {
        return ApiError(e).into_response();
    }
    next.run(req).await
}
