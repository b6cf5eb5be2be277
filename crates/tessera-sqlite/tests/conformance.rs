//! The store conformance suite on SQLite, each test on a fresh database file.

use std::sync::Arc;

use tessera_store::Store;

async fn make() -> Option<(tempfile::TempDir, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = tessera_sqlite::Sqlite::open(dir.path().join("t.db")).unwrap();
    Some((dir, Arc::new(store)))
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
