//! Bounded storage: a client refreshing in a loop, with a huge user agent, keeps one row and
//! a database that stops growing; a client logging in in a loop keeps a bounded number.

use serde_json::json;

use super::*;

fn one(c: &Db, sql: &str) -> i64 {
    c.one(sql, &[])
}

/// Pages the database file holds after a checkpoint (the WAL copied back), on SQLite. On
/// PostgreSQL, the space of a row's old versions comes back when no snapshot can see them any
/// more, which other work on the cluster decides, so no size is measured there: the row count
/// and the column sizes are.
fn pages(c: &Db) -> Option<i64> {
    match c {
        Db::Sqlite(conn) => {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            Some(one(c, "PRAGMA page_count"))
        }
        Db::Postgres(_) => None,
    }
}

#[tokio::test]
async fn a_client_refreshing_in_a_loop_keeps_one_row_and_a_flat_database() {
    let s = TestServer::spawn(&[]).await;
    let (_, mut token) = s.admin_tokens().await;
    let agent = "A".repeat(60_000);
    let origin = format!("https://{}.example.com", "o".repeat(10_000));
    let headers = [("user-agent", agent.as_str()), ("origin", origin.as_str())];
    let refresh = async |token: &str| {
        let r = s
            .call(
                "POST",
                "/auth/refresh",
                &headers,
                Some(json!({"refresh_token": token})),
            )
            .await;
        refresh_of(&r)
    };
    for _ in 0..50 {
        token = refresh(&token).await;
    }
    let c = s.database();
    let after_warmup = pages(&c);
    for _ in 0..500 {
        token = refresh(&token).await;
    }
    assert_eq!(one(&c, "SELECT COUNT(*) FROM directus_sessions"), 1);
    assert!(one(&c, "SELECT max(length(user_agent)) FROM directus_sessions") <= 1024);
    assert!(one(&c, "SELECT max(length(origin)) FROM directus_sessions") <= 255);
    if let (Some(before), Some(after)) = (after_warmup, pages(&c)) {
        assert!(
            after <= before + 2,
            "the database grew from {before} to {after} pages"
        );
    }
}

#[tokio::test]
async fn logins_and_logouts_leave_no_rows_behind() {
    let s = TestServer::spawn(&[]).await;
    for _ in 0..20 {
        let (_, rt) = s.admin_tokens().await;
        let next = refresh_of(&s.refresh_json(&rt).await);
        assert_eq!(s.logout_json(&next).await.status, 204);
    }
    let c = s.database();
    assert_eq!(one(&c, "SELECT COUNT(*) FROM directus_sessions"), 0);
}

#[tokio::test]
async fn a_client_logging_in_in_a_loop_keeps_a_bounded_number_of_sessions() {
    let s = TestServer::spawn(&[("SESSION_MAX_PER_USER", "3")]).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(s.admin_tokens().await.1);
    }
    let c = s.database();
    assert_eq!(one(&c, "SELECT COUNT(*) FROM directus_sessions"), 3);
    // The least recently used went first: the oldest logins are over, the latest work.
    assert_eq!(s.refresh_json(&tokens[0]).await.status, 401);
    for t in &tokens[7..] {
        assert_eq!(s.refresh_json(t).await.status, 200);
    }
}
