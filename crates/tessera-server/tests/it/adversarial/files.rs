//! What lands on disk: the data directory, the database with its WAL and shared-memory files,
//! and the generated secret are readable by their owner only.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_database_its_wal_and_the_secret_are_private() {
    if on_postgres() {
        eprintln!("SQLite's files only: PostgreSQL keeps no file of Tessera's");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let db = data.join("data.db");
    let s = TestServer::spawn_in(dir, &db.display().to_string(), &[]).await;
    // A write, so that the WAL and its index exist.
    let (_, rt) = s.admin_tokens().await;
    assert_eq!(s.refresh_json(&rt).await.status, 200);
    assert_eq!(mode(&data), 0o700);
    for file in ["data.db", "data.db-wal", "data.db-shm", "secret"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}
