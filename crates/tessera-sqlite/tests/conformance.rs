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

/// The plan of a read with `filter`, ordered and windowed as `/users` reads are.
async fn plan(s: &tessera_sqlite::SqliteStore, filter: tessera_store::Condition) -> Vec<String> {
    let q = tessera_store::Query {
        filter: Some(filter),
        limit: Some(25),
        ..Default::default()
    };
    s.plan(&tessera_store::schema::USERS, &q).await.unwrap()
}

#[tokio::test]
async fn text_conditions_go_through_the_trigram_index_not_a_scan() {
    use serde_json::json;
    use tessera_store::schema::USERS;
    use tessera_store::{Condition, Op};
    let dir = tempfile::tempdir().unwrap();
    let s = tessera_sqlite::Sqlite::open(dir.path().join("t.db")).unwrap();
    let on = |name: &str, op: Op, v: &str| Condition::Compare {
        field: USERS.field(name).unwrap(),
        op,
        value: json!(v),
    };
    let search = Condition::Or(vec![
        on("first_name", Op::IContains, "ada"),
        on("email", Op::IContains, "ada"),
        on("title", Op::IContains, "ada"),
    ]);
    for filter in [
        on("email", Op::Contains, "ada"),
        on("email", Op::IContains, "ADA"),
        on("last_name", Op::StartsWith, "Lov"),
        search,
    ] {
        let plan = plan(&s, filter.clone()).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("directus_users_text VIRTUAL TABLE INDEX")),
            "{filter:?}: {plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|l| l.split_whitespace().take(2).eq(["SCAN", "directus_users"])),
            "{filter:?}: {plan:?}"
        );
    }
    // Two characters make no trigram: those conditions test every row, and still answer.
    let plan = plan(&s, on("email", Op::Contains, "ad")).await;
    assert!(
        !plan.iter().any(|l| l.contains("directus_users_text")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn sorted_pages_read_an_index_in_order_either_way() {
    use tessera_store::schema::USERS;
    let dir = tempfile::tempdir().unwrap();
    let s = tessera_sqlite::Sqlite::open(dir.path().join("t.db")).unwrap();
    for name in [
        "email",
        "first_name",
        "last_name",
        "status",
        "last_access",
        "role",
    ] {
        let index = match name {
            "role" => "directus_users_role".to_owned(),
            _ => format!("directus_users_by_{name}"),
        };
        for (desc, offset) in [(false, 0), (true, 0), (false, 5000), (true, 5000)] {
            let q = tessera_store::Query {
                sort: vec![(USERS.field(name).unwrap(), desc)],
                limit: Some(25),
                offset,
                ..Default::default()
            };
            let plan = s.plan(&USERS, &q).await.unwrap();
            // The first page sorts nothing; a deeper one sorts only its own rows, after
            // finding them in the index without reading the table.
            let uses = |what: &str| plan.iter().any(|l| l.contains(what));
            assert!(
                if offset == 0 {
                    uses(&index) && !uses("TEMP B-TREE")
                } else {
                    uses(&format!("COVERING INDEX {index}"))
                },
                "{name} {desc} {offset}: {plan:?}"
            );
        }
    }
}
