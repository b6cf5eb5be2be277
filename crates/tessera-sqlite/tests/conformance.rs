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

#[tokio::test]
async fn text_conditions_go_through_the_trigram_index_not_a_scan() {
    use tessera_store::schema::USERS;
    let dir = tempfile::tempdir().unwrap();
    let s = tessera_sqlite::Sqlite::open(dir.path().join("t.db")).unwrap();
    for q in tessera_store::conformance::text_reads() {
        let plan = s.plan(&USERS, &q).await.unwrap();
        let trigram = plan
            .iter()
            .any(|l| l.contains("directus_users_text VIRTUAL TABLE INDEX"));
        // A prefix may go through the e-mail or name index instead; never a scan.
        let scan = plan
            .iter()
            .any(|l| l.split_whitespace().take(2).eq(["SCAN", "directus_users"]));
        assert!(
            (trigram || plan.iter().any(|l| l.contains("USING INDEX"))) && !scan,
            "{:?}: {plan:?}",
            q.filter
        );
    }
    // Two characters make no trigram: those conditions test every row, and still answer.
    let q = tessera_store::Query {
        filter: Some(tessera_store::Condition::Compare {
            field: USERS.field("email").unwrap(),
            op: tessera_store::Op::Contains,
            value: serde_json::json!("ad"),
        }),
        ..Default::default()
    };
    let plan = s.plan(&USERS, &q).await.unwrap();
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
    for (index, q) in tessera_store::conformance::sorted_reads() {
        let plan = s.plan(&USERS, &q).await.unwrap();
        // The first page sorts nothing; a deeper one sorts only its own rows, after finding
        // them in the index without reading the table.
        let uses = |what: &str| plan.iter().any(|l| l.contains(what));
        assert!(
            if q.offset == 0 {
                uses(&index) && !uses("TEMP B-TREE")
            } else {
                uses(&format!("COVERING INDEX {index}"))
            },
            "{:?} {}: {plan:?}",
            q.sort,
            q.offset
        );
    }
}
