//! The store conformance suite on PostgreSQL, each test on a scratch database of its own.
//! Without a reachable server the tests say so and skip, except under `CI=true`.

use std::sync::Arc;

use tessera_postgres::scratch::Scratch;
use tessera_postgres::{Postgres, Settings};
use tessera_store::Store;

fn settings(db: &Scratch) -> Settings {
    Settings {
        config: db.config(),
        pool_max: 8,
        pool_min: 1,
    }
}

async fn open(db: &Scratch) -> Arc<dyn Store> {
    let s = settings(db);
    let store = tokio::task::spawn_blocking(move || Postgres::open(s))
        .await
        .unwrap()
        .unwrap();
    Arc::new(store)
}

/// Two stores (two pools) on one scratch database, as two instances would open it.
async fn make() -> Option<(Scratch, Arc<dyn Store>, Arc<dyn Store>)> {
    let db = tokio::task::spawn_blocking(|| Scratch::or_skip("PostgreSQL conformance"))
        .await
        .unwrap()?;
    let (store, other) = (open(&db).await, open(&db).await);
    Some((db, store, other))
}

tessera_store::conformance_suite!(make);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_migrate_once() {
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("PostgreSQL migrations"))
        .await
        .unwrap()
    else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let s = settings(&db);
            tokio::task::spawn_blocking(move || Postgres::open(s).map(|_| ()))
        })
        .collect();
    for s in starts {
        s.await.unwrap().unwrap();
    }
    let s = settings(&db);
    let store = tokio::task::spawn_blocking(move || Postgres::open(s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.access_rows(None, None).await.unwrap().public.len(), 1);
}
