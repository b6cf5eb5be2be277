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

#[tokio::test]
async fn a_page_after_a_remembered_one_starts_on_its_index_range() {
    use tessera_store::schema::USERS;
    let dir = tempfile::tempdir().unwrap();
    let s = tessera_sqlite::Sqlite::open(dir.path().join("t.db")).unwrap();
    for (index, q) in tessera_store::conformance::walked_reads(&s).await {
        let plan = s.plan(&USERS, &q).await.unwrap();
        // The key is SQLite's rowid-less primary key index; the others are named.
        let index = match index.as_str() {
            "directus_users_pkey" => "sqlite_autoindex_directus_users_1",
            other => other,
        };
        let range = plan
            .iter()
            .any(|l| l.contains(index) && [">?", "<?", ">(?", "<(?"].iter().any(|r| l.contains(r)));
        assert!(range, "{:?}: {plan:?}", q.sort);
    }
}

#[tokio::test]
async fn the_user_version_moves_with_every_shown_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = tessera_sqlite::Sqlite::open(&path).unwrap();
    let version = || {
        let path = path.clone();
        async move {
            let c = rusqlite::Connection::open(path).unwrap();
            c.query_row(
                "SELECT version FROM tessera_versions WHERE name = 'directus_users'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        }
    };
    tessera_store::conformance::the_user_version_moves_with_every_shown_column(&s, version).await;
}
