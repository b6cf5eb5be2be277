//! The PostgreSQL side of the bench: a scratch database for Tessera, the raw single-row update
//! rate of the same server (the ceiling refresh is measured against), and refresh tokens
//! loaded straight into the sessions table.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use postgres::{Config, NoTls};
use tessera_core::tokens::{RefreshId, digest, refresh_token};
use tessera_postgres::scratch::Scratch;

/// Connections the raw update rate uses at once: the size of Tessera's pool.
pub const CONNECTIONS: usize = 10;

/// Raw single-row update rate: `CONNECTIONS` clients, each one autocommit
/// `UPDATE … SET token = new WHERE token = old` at a time on its own rows of a 100k-row
/// session-shaped table (the least a refresh must do), for `secs`.
pub fn update_rate(db: &Scratch, secs: f64) -> Result<f64> {
    let config = db.config();
    let mut c = config.connect(NoTls)?;
    c.batch_execute(
        "CREATE TABLE raw_s (token text COLLATE \"C\" PRIMARY KEY, \"user\" text NOT NULL,
                             expires bigint NOT NULL);
         INSERT INTO raw_s SELECT lpad(i::text, 64, '0'), 'u', 0 FROM generate_series(0, 99999) i;",
    )?;
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            let config: Config = config.clone();
            std::thread::spawn(move || -> Result<usize> {
                let mut c = config.connect(NoTls)?;
                let stmt = c.prepare("UPDATE raw_s SET token = $2 WHERE token = $1")?;
                let mut tokens: Vec<String> = (w..100_000)
                    .step_by(CONNECTIONS)
                    .map(|i| format!("{i:064}"))
                    .collect();
                let mut n = 0usize;
                while start.elapsed().as_secs_f64() < secs {
                    let i = n % tokens.len();
                    let next = digest(&tokens[i]);
                    c.execute(&stmt, &[&tokens[i], &next])?;
                    tokens[i] = next;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| anyhow::anyhow!("update worker panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Inserts `n` live sessions of `user` with COPY and returns their refresh tokens.
pub fn prepare_refresh_tokens(
    db: &Scratch,
    secret: &str,
    user: &str,
    n: usize,
) -> Result<Vec<String>> {
    let mut c = db.config().connect(NoTls)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut tokens = Vec::with_capacity(n);
    let mut w = c
        .copy_in(
            "COPY directus_sessions (family, \"user\", generation, token_hash, created, expires)
             FROM STDIN",
        )
        .context("COPY into directus_sessions")?;
    for _ in 0..n {
        let family = uuid::Uuid::new_v4();
        let token = refresh_token(
            secret.as_bytes(),
            RefreshId {
                family,
                generation: 0,
            },
        );
        writeln!(
            w,
            "{family}\t{user}\t0\t{}\t{now}\t{}",
            digest(&token),
            now + 86_400_000
        )?;
        tokens.push(token);
    }
    w.finish()?;
    Ok(tokens)
}
