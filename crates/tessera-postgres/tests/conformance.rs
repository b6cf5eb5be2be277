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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_conditions_and_sorts_go_through_indexes_not_a_scan() {
    use tessera_store::schema::USERS;
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("PostgreSQL text index"))
        .await
        .unwrap()
    else {
        return;
    };
    let s = settings(&db);
    let store = tokio::task::spawn_blocking(move || Postgres::open(s))
        .await
        .unwrap()
        .unwrap();
    // Enough users, with statistics, that a scan costs more than the index.
    let config = db.config();
    tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.batch_execute(
            "INSERT INTO directus_users (id, email, first_name, last_name) \
             SELECT gen_random_uuid(), 'user' || i || '@example.com', 'First' || i, \
                    'Last' || (i % 997) \
             FROM generate_series(1, 20000) i; \
             ANALYZE directus_users;",
        )
        .unwrap();
    })
    .await
    .unwrap();
    for q in tessera_store::conformance::text_reads() {
        let plan = store.plan(&USERS, &q).await.unwrap();
        assert!(
            plan.iter().any(|l| l.contains("Index Scan"))
                && !plan.iter().any(|l| l.contains("Seq Scan")),
            "{:?}: {plan:#?}",
            q.filter
        );
    }
    // A sorted page reads an index in order, forwards or backwards, and sorts nothing; a
    // deeper page finds its window in the same index and sorts only its own rows.
    for (index, q) in tessera_store::conformance::sorted_reads() {
        let plan = store.plan(&USERS, &q).await.unwrap();
        let sorted_rows = plan
            .iter()
            .filter(|l| l.contains("Sort  (cost"))
            .any(|l| !l.contains("rows=25 "));
        assert!(
            plan.iter().any(|l| l.contains(&index))
                && !plan.iter().any(|l| l.contains("Seq Scan"))
                && !sorted_rows
                && (q.offset > 0 || !plan.iter().any(|l| l.contains("Sort"))),
            "{:?} {}: {plan:#?}",
            q.sort,
            q.offset
        );
    }
    // A page after a remembered one starts on its index's range from the remembered row.
    for (index, q) in tessera_store::conformance::walked_reads(&store).await {
        let plan = store.plan(&USERS, &q).await.unwrap();
        let range = plan.windows(2).any(|l| {
            l[0].contains(&index)
                && l[1].contains("Index Cond: (")
                && (l[1].contains(">=") || l[1].contains("<="))
        });
        assert!(range, "{:?}: {plan:#?}", q.sort);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_version_moves_with_every_shown_column() {
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("PostgreSQL user version"))
        .await
        .unwrap()
    else {
        return;
    };
    let store = open(&db).await;
    let config = db.config();
    let version = || {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut c = config.connect(postgres::NoTls).unwrap();
                c.query_one(
                    "SELECT version FROM tessera_counts WHERE name = 'directus_users'",
                    &[],
                )
                .unwrap()
                .get(0)
            })
            .await
            .unwrap()
        }
    };
    tessera_store::conformance::the_user_version_moves_with_every_shown_column(&*store, version)
        .await;
}
