//! The store conformance suite on SQLite, each test on a fresh database file.

use std::sync::Arc;

use tessera_store::Store;

/// Two stores on one fresh file, as two processes would open it.
async fn make() -> Option<(tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = tessera_sqlite::Sqlite::open(&path).unwrap();
    let other = tessera_sqlite::Sqlite::open(&path).unwrap();
    Some((dir, Arc::new(store), Arc::new(other)))
}

tessera_store::conformance_suite!(make);

#[tokio::test]
async fn migrations_run_once_and_reopen_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(tessera_sqlite::Sqlite::open(&path).unwrap());
    let s = tessera_sqlite::Sqlite::open(&path).unwrap();
    assert_eq!(s.access_rows(None, None).await.unwrap().public.len(), 1);
}
