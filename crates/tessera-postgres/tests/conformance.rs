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
                    "SELECT version FROM tessera_versions WHERE name = 'directus_users'",
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

/// Two writers crossing on two users: the first updates A, the second updates B, then the
/// first waits for B. The version row is taken only at commit, after the user rows, so the
/// second commits and the first follows; a version moved mid-transaction would have the
/// first hold it while the second waits for it holding B, and one of them would fail as a
/// deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_writers_crossing_on_two_rows_never_deadlock_on_the_version() {
    use serde_json::json;
    use tessera_store::schema::USERS;
    let Some(db) = tokio::task::spawn_blocking(|| Scratch::or_skip("PostgreSQL crossing writes"))
        .await
        .unwrap()
    else {
        return;
    };
    let store = open(&db).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let users = [(a, "a@example.com"), (b, "b@example.com")]
        .iter()
        .map(|(id, email)| tessera_store::Write::Insert {
            c: &USERS,
            values: vec![
                (USERS.field("id").unwrap(), json!(id.to_string())),
                (USERS.field("email").unwrap(), json!(email)),
            ],
        })
        .collect();
    store.write(users, None).await.unwrap();
    let config = db.config();
    let names = tokio::task::spawn_blocking(move || {
        let connect = || {
            let mut c = config.connect(postgres::NoTls).unwrap();
            c.batch_execute("SET lock_timeout = '10s'").unwrap();
            c
        };
        let (mut first, mut second, mut watch) = (connect(), connect(), connect());
        let set = |id: uuid::Uuid, name: &str| {
            format!("UPDATE directus_users SET first_name = '{name}' WHERE id = '{id}'")
        };
        first
            .batch_execute(&format!("BEGIN; {}", set(a, "first")))
            .unwrap();
        second
            .batch_execute(&format!("BEGIN; {}", set(b, "second")))
            .unwrap();
        let pid: i32 = first
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let finish = set(b, "first");
        let waiting = std::thread::spawn(move || first.batch_execute(&format!("{finish}; COMMIT")));
        // The first writer is now waiting for B, which the second holds.
        while watch
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted",
                &[&pid],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        second.batch_execute("COMMIT").unwrap();
        waiting.join().unwrap().unwrap();
        watch
            .query(
                "SELECT first_name FROM directus_users WHERE id IN ($1, $2) ORDER BY email",
                &[&a.to_string(), &b.to_string()],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(names, ["first", "first"]);
}
