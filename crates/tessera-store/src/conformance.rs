//! The store conformance suite: one body of tests every engine must pass, run by each engine
//! crate through [`conformance_suite!`](crate::conformance_suite). It covers what the core
//! relies on: users found by e-mail (ASCII case folded, nothing else), families that advance
//! in place, admission and attempt bookkeeping, conflicts named by field, batches that fail as
//! one, the filter language with identical answers and order (and, for 300 random filters
//! through relations, exactly the rows an in-memory reading of the filter accepts), and the races two instances or
//! two requests can run: concurrent refreshes of one family, two demotions of the last two
//! admins, and deep pages read while the other instance writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::schema::{ACCESS, Collection, POLICIES, ROLES, SETTINGS, USERS};
use crate::{
    Admission, AttemptChange, ClientMeta, Condition, EndSessions, FamilyChange, FamilyDecision,
    Guard, Hits, LiveAdvance, NewSession, Op, Query, Reads, Store, StoreError, StoreResult, Values,
    Write, Written,
};

/// Generates one `#[tokio::test]` per conformance test. `$make` is an async function that
/// returns `Option<(keep, Arc<dyn Store>, Arc<dyn Store>)>`: two stores on one fresh database,
/// as two instances would open it; `None` skips (after saying why); `keep` lives as long as the
/// test (a temporary directory, a scratch database).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@one $make;
            public_policy_belongs_to_nobody,
            users_are_found_by_ascii_folded_email_token_and_id,
            only_ascii_case_is_folded,
            families_advance_extend_and_end_in_place,
            only_a_live_family_advances_in_one_step,
            live_advances_at_once_each_get_their_own_answer,
            a_user_keeps_at_most_its_most_recently_used_families,
            refused_admission_opens_nothing_and_attempts_count,
            conflicts_name_their_field,
            a_failing_write_undoes_its_whole_batch,
            concurrent_writes_fail_alone,
            a_refusing_guard_undoes_the_write,
            text_operators_fold_ascii_case_only_where_asked,
            order_is_bytewise_with_nulls_smallest,
            values_keep_their_kind,
            windows_and_counts_agree,
            settings_update_by_their_id,
            expired_sessions_are_purged,
            announcements_go_out,
            filters_mean_the_same_in_sql_and_in_memory,
            tfa_changes_apply_only_where_the_state_allows,
            counters_keep_fixed_windows_and_holds,
            the_user_total_follows_every_insert_and_delete,
            text_searches_follow_every_write,
            alias_lists_of_many_items_equal_each_ones_own,
            pages_walked_by_many_readers_at_once_each_equal_their_window,
        );
        $crate::conformance_suite!(@two $make;
            concurrent_refreshes_each_see_the_last_generation,
            of_refreshes_racing_on_one_generation_one_advances,
            logins_evicting_sessions_that_refresh_meanwhile_never_fail,
            two_demotions_racing_cannot_remove_the_last_admin,
            hits_from_two_instances_at_once_are_all_counted,
            deep_pages_follow_every_write,
            a_page_read_while_a_write_waits_to_commit_sees_the_rows_before_it,
        );
    };
    (@one $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((_keep, store, _other)) = $make().await else { return };
                $crate::conformance::$name(store).await;
            }
        )*
    };
    (@two $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((_keep, store, other)) = $make().await else { return };
                $crate::conformance::$name(store, other).await;
            }
        )*
    };
}

fn field(c: &'static Collection, name: &str) -> &'static crate::Field {
    c.field(name)
        .unwrap_or_else(|| panic!("{} has no {name}", c.name))
}

fn values(c: &'static Collection, v: Value) -> Values {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (field(c, k), v.clone()))
        .collect()
}

fn insert(c: &'static Collection, v: Value) -> Write {
    Write::Insert {
        c,
        values: values(c, v),
    }
}

fn update(c: &'static Collection, id: &str, v: Value) -> Write {
    Write::Update {
        c,
        id: id.to_owned(),
        values: values(c, v),
        end: EndSessions::None,
    }
}

/// An admin role with an admin policy, and users in it.
struct Seed {
    role: Uuid,
    admins: Vec<Uuid>,
}

async fn seed(s: &Arc<dyn Store>, emails: &[&str]) -> Seed {
    let role = Uuid::new_v4();
    let policy = Uuid::new_v4();
    let mut writes = vec![
        insert(
            &ROLES,
            json!({"id": role.to_string(), "name": "Administrator"}),
        ),
        insert(
            &POLICIES,
            json!({"id": policy.to_string(), "name": "Administrator", "admin_access": true,
                   "app_access": true}),
        ),
        insert(
            &ACCESS,
            json!({"id": Uuid::new_v4().to_string(), "role": role.to_string(),
                   "policy": policy.to_string(), "sort": 1}),
        ),
    ];
    let mut admins = Vec::new();
    for (i, email) in emails.iter().enumerate() {
        let id = Uuid::new_v4();
        admins.push(id);
        writes.push(insert(
            &USERS,
            json!({"id": id.to_string(), "email": email, "password": "$argon2id$x",
                   "role": role.to_string(), "status": "active",
                   "token": format!("digest-{i}")}),
        ));
    }
    s.write(writes, None).await.expect("seed");
    Seed { role, admins }
}

fn session(user: Uuid, family: Uuid, now_ms: i64) -> NewSession {
    NewSession {
        family,
        token_hash: "t0".into(),
        user,
        now_ms,
        expires_ms: now_ms + 10_000,
        meta: ClientMeta {
            ip: Some("127.0.0.1".into()),
            user_agent: Some("test".into()),
            origin: None,
        },
        keep_at_most: 2,
    }
}

fn admit() -> crate::AdmitDecision {
    Box::new(|_| Admission::Admit { forgive: 0 })
}

fn advance(now_ms: i64) -> FamilyDecision {
    Box::new(move |_| FamilyChange::Advance {
        now_ms,
        expires_ms: now_ms + 10_000,
        token_hash: format!("t{now_ms}"),
        meta: ClientMeta::default(),
    })
}

fn compare(c: &'static Collection, name: &str, op: Op, value: Value) -> Condition {
    Condition::Compare {
        field: field(c, name),
        op,
        value,
    }
}

async fn names(s: &Arc<dyn Store>, q: Query) -> Vec<Value> {
    s.read_items(&USERS, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r["first_name"].clone())
        .collect()
}

fn filtered(cond: Condition) -> Query {
    Query {
        filter: Some(cond),
        ..Query::default()
    }
}

pub async fn public_policy_belongs_to_nobody(s: Arc<dyn Store>) {
    assert!(!s.has_users().await.unwrap());
    let rows = s.access_rows(None, None).await.unwrap();
    assert!(rows.chain.is_empty() && rows.by_role.is_empty() && rows.of_user.is_empty());
    assert_eq!(rows.public.len(), 1);
    assert_eq!(rows.public[0].id.to_string(), crate::PUBLIC_POLICY_ID);
    assert!(!rows.public[0].admin_access && !rows.public[0].app_access);
}

pub async fn users_are_found_by_ascii_folded_email_token_and_id(s: Arc<dyn Store>) {
    let seed = seed(&s, &["Admin@Example.COM"]).await;
    let id = seed.admins[0];
    let u = s.login_user("admin@example.com").await.unwrap().unwrap();
    assert_eq!(u.id, id);
    assert_eq!(u.email.as_deref(), Some("Admin@Example.COM"));
    assert_eq!(u.role, Some(seed.role));
    let p = s.principal_by_token("digest-0").await.unwrap().unwrap();
    assert_eq!((p.id, p.status.as_str()), (id, "active"));
    assert_eq!(s.principal(id).await.unwrap(), Some(p));
    assert!(s.principal_by_token("digest-1").await.unwrap().is_none());
    let rows = s.access_rows(Some(seed.role), Some(id)).await.unwrap();
    assert_eq!(rows.chain, vec![seed.role]);
    assert!(rows.by_role[0][0].admin_access);
    assert!(rows.of_user.is_empty());
    assert_eq!(s.count_items(&USERS, None).await.unwrap(), 1);
    assert!(s.has_users().await.unwrap());
}

pub async fn only_ascii_case_is_folded(s: Arc<dyn Store>) {
    seed(&s, &["Émile@Example.com"]).await;
    assert!(s.login_user("Émile@example.com").await.unwrap().is_some());
    assert!(s.login_user("émile@example.com").await.unwrap().is_none());
    // The unique e-mail folds ASCII case only, as lookups do.
    let twin = |email: &str| {
        insert(
            &USERS,
            json!({"id": Uuid::new_v4().to_string(), "email": email}),
        )
    };
    let err = s
        .write(vec![twin("ÉMILE@example.COM")], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { field: "email" }),
        "{err:?}"
    );
    s.write(vec![twin("émile@example.com")], None)
        .await
        .unwrap();
}

pub async fn families_advance_extend_and_end_in_place(s: Arc<dyn Store>) {
    let user = seed(&s, &["a@example.com"]).await.admins[0];
    let fam = Uuid::new_v4();
    let opened = s
        .open_session(session(user, fam, 1_000), admit())
        .await
        .unwrap();
    assert_eq!(opened.map(|o| o.user.id), Some(user));
    let before = s.change_family(fam, advance(2_000)).await.unwrap().unwrap();
    assert_eq!((before.generation, before.rotated_at_ms), (0, None));
    assert_eq!(before.token_hash, "t0");
    s.change_family(fam, advance(3_000)).await.unwrap();
    let f = s.family(fam).await.unwrap().unwrap();
    assert_eq!(f.generation, 2);
    assert_eq!(f.token_hash, "t3000");
    assert_eq!(f.rotated_at_ms, Some(3_000));
    assert_eq!(f.prev_rotated_at_ms, Some(2_000));
    assert_eq!(f.expires_ms, 13_000);
    assert_eq!((f.user.id, f.user.status.as_str()), (user, "active"));
    s.change_family(
        fam,
        Box::new(|_| FamilyChange::Extend {
            now_ms: 4_500,
            expires_ms: 20_000,
        }),
    )
    .await
    .unwrap();
    let f = s.family(fam).await.unwrap().unwrap();
    assert_eq!((f.generation, f.expires_ms), (2, 20_000));
    // The user's last access follows, to the second.
    let last = s.user_summaries().await.unwrap()[0].last_access_ms;
    assert_eq!(last, Some(4_500));
    s.change_family(fam, Box::new(|_| FamilyChange::End))
        .await
        .unwrap();
    assert!(s.family(fam).await.unwrap().is_none());
    assert!(
        s.change_family(fam, advance(5_000))
            .await
            .unwrap()
            .is_none()
    );
}

fn live(family: Uuid, live_hash: &str, now_ms: i64) -> LiveAdvance {
    LiveAdvance {
        family,
        live_hash: live_hash.into(),
        now_ms,
        next_hash: format!("t{now_ms}"),
        expires_ms: now_ms + 10_000,
        meta: ClientMeta::default(),
    }
}

pub async fn only_a_live_family_advances_in_one_step(s: Arc<dyn Store>) {
    let seed = seed(&s, &["a@example.com", "b@example.com"]).await;
    let (user, other) = (seed.admins[0], seed.admins[1]);
    let fam = Uuid::new_v4();
    s.open_session(session(user, fam, 1_000), admit())
        .await
        .unwrap();
    // Not the live token, a family that does not exist: nothing.
    assert_eq!(s.advance_live(live(fam, "t1", 2_000)).await.unwrap(), None);
    let missing = live(Uuid::new_v4(), "t0", 2_000);
    assert_eq!(s.advance_live(missing).await.unwrap(), None);
    let unchanged = s.family(fam).await.unwrap().unwrap();
    assert_eq!(
        (unchanged.generation, unchanged.token_hash.as_str()),
        (0, "t0")
    );
    // The live token: the family advances and the user comes back as it is.
    let u = s.advance_live(live(fam, "t0", 3_000)).await.unwrap();
    assert_eq!(u.map(|u| (u.id, u.role)), Some((user, Some(seed.role))));
    let f = s.family(fam).await.unwrap().unwrap();
    assert_eq!((f.generation, f.token_hash.as_str()), (1, "t3000"));
    assert_eq!((f.rotated_at_ms, f.prev_rotated_at_ms), (Some(3_000), None));
    assert_eq!(f.expires_ms, 13_000);
    let last = s.user_summaries().await.unwrap();
    let last = last.iter().find(|u| u.id == user).unwrap().last_access_ms;
    assert_eq!(last, Some(3_000));
    // The spent token no longer advances it.
    assert_eq!(s.advance_live(live(fam, "t0", 3_500)).await.unwrap(), None);
    // Past its expiry, the live token does not either.
    assert_eq!(
        s.advance_live(live(fam, "t3000", 13_001)).await.unwrap(),
        None
    );
    // Nor while its user is not active; another user's family is untouched by that.
    let theirs = Uuid::new_v4();
    s.open_session(session(other, theirs, 4_000), admit())
        .await
        .unwrap();
    let suspend = update(&USERS, &user.to_string(), json!({"status": "suspended"}));
    s.write(vec![suspend], None).await.unwrap();
    assert_eq!(
        s.advance_live(live(fam, "t3000", 5_000)).await.unwrap(),
        None
    );
    assert_eq!(s.family(fam).await.unwrap().unwrap().generation, 1);
    let u = s.advance_live(live(theirs, "t0", 5_000)).await.unwrap();
    assert_eq!(u.map(|u| u.id), Some(other));
}

pub async fn live_advances_at_once_each_get_their_own_answer(s: Arc<dyn Store>) {
    let seed = seed(&s, &["a@example.com", "b@example.com"]).await;
    let (user, idle) = (seed.admins[0], seed.admins[1]);
    let families: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    for (i, fam) in families.iter().enumerate() {
        let owner = if i % 10 == 9 { idle } else { user };
        let mut new = session(owner, *fam, 1_000);
        new.keep_at_most = 100;
        new.token_hash = format!("live{i}");
        s.open_session(new, admit()).await.unwrap();
    }
    let suspend = update(&USERS, &idle.to_string(), json!({"status": "suspended"}));
    s.write(vec![suspend], None).await.unwrap();
    // Every family twice, some with a token that is not its live one, all at once.
    let tasks: Vec<_> = (0..80)
        .map(|n| {
            let (i, twice) = (n % 40, n / 40);
            let s = s.clone();
            let mut a = live(families[i], &format!("live{i}"), 2_000 + n as i64);
            a.next_hash = format!("next{i}-{twice}");
            if i % 10 == 4 {
                a.live_hash = format!("spent{i}");
            }
            tokio::spawn(async move { s.advance_live(a).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for (i, fam) in families.iter().enumerate() {
        let f = s.family(*fam).await.unwrap().unwrap();
        let won: Vec<usize> = (0..2).filter(|t| answers[i + 40 * t].is_some()).collect();
        if i % 10 == 9 || i % 10 == 4 {
            assert!(won.is_empty(), "family {i} advanced: {won:?}");
            assert_eq!((f.generation, f.token_hash), (0, format!("live{i}")));
            continue;
        }
        assert_eq!(won.len(), 1, "family {i}: {won:?}");
        let answer = answers[i + 40 * won[0]].as_ref().unwrap();
        assert_eq!((answer.id, answer.role), (user, Some(seed.role)));
        assert_eq!(f.generation, 1);
        assert_eq!(f.token_hash, format!("next{i}-{}", won[0]));
        let now = 2_000 + (i + 40 * won[0]) as i64;
        assert_eq!((f.rotated_at_ms, f.expires_ms), (Some(now), now + 10_000));
    }
}

pub async fn a_user_keeps_at_most_its_most_recently_used_families(s: Arc<dyn Store>) {
    let user = seed(&s, &["a@example.com"]).await.admins[0];
    let families: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let open = |family: Uuid, now_ms: i64| {
        let s = s.clone();
        async move {
            s.open_session(session(user, family, now_ms), admit())
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert!(open(families[0], 1_000).await.evicted.is_empty());
    assert!(open(families[1], 2_000).await.evicted.is_empty());
    // The oldest family was refreshed since: the middle one is the least recently used.
    s.change_family(families[0], advance(2_600)).await.unwrap();
    assert_eq!(open(families[2], 3_000).await.evicted, [families[1]]);
    assert!(s.family(families[0]).await.unwrap().is_some());
    assert!(s.family(families[1]).await.unwrap().is_none());
    assert!(s.family(families[2]).await.unwrap().is_some());
}

pub async fn refused_admission_opens_nothing_and_attempts_count(s: Arc<dyn Store>) {
    let user = seed(&s, &["a@example.com"]).await.admins[0];
    let fam = Uuid::new_v4();
    let refused = s
        .open_session(session(user, fam, 1_000), Box::new(|_| Admission::Refuse))
        .await
        .unwrap();
    assert!(refused.is_none());
    assert!(s.family(fam).await.unwrap().is_none());
    for _ in 0..3 {
        s.record_login_failure(user).await.unwrap();
    }
    s.login_attempt(user, Box::new(|_| AttemptChange::Lock { until_ms: 99 }))
        .await
        .unwrap();
    let state = s
        .login_attempt(user, Box::new(|_| AttemptChange::None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((state.failed_logins, state.locked_until_ms), (3, Some(99)));
    // A success forgives the failures it was told of, lifts the lock, and nothing else.
    s.open_session(
        session(user, fam, 1_000),
        Box::new(|_| Admission::Admit { forgive: 2 }),
    )
    .await
    .unwrap();
    let state = s
        .login_attempt(user, Box::new(|_| AttemptChange::Suspend))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((state.failed_logins, state.locked_until_ms), (1, None));
    // Forgiving more than was counted leaves none, not fewer than none.
    s.open_session(
        session(user, Uuid::new_v4(), 1_000),
        Box::new(|_| Admission::Admit { forgive: 5 }),
    )
    .await
    .unwrap();
    // Suspension ended the user's sessions in its own transaction.
    assert!(s.family(fam).await.unwrap().is_none());
    let summary = &s.user_summaries().await.unwrap()[0];
    assert_eq!(
        (summary.status.as_str(), summary.failed_logins),
        ("suspended", 0)
    );
    s.record_login_failure(user).await.unwrap();
    s.clear_login_failures(user).await.unwrap();
    assert_eq!(s.user_summaries().await.unwrap()[0].failed_logins, 0);
    assert!(
        s.login_attempt(Uuid::new_v4(), Box::new(|_| AttemptChange::Suspend))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn conflicts_name_their_field(s: Arc<dyn Store>) {
    let seed = seed(&s, &["admin@example.com"]).await;
    let user = |v: Value| insert(&USERS, v);
    let cases = [
        (
            user(json!({"id": Uuid::new_v4().to_string(), "email": "ADMIN@example.com"})),
            "email",
        ),
        (
            user(json!({"id": Uuid::new_v4().to_string(), "token": "digest-0"})),
            "token",
        ),
        (user(json!({"id": seed.admins[0].to_string()})), "id"),
        (
            insert(
                &ROLES,
                json!({"id": seed.role.to_string(), "name": "Again"}),
            ),
            "id",
        ),
    ];
    for (write, expected) in cases {
        let err = s.write(vec![write], None).await.unwrap_err();
        match err {
            StoreError::Conflict { field } => assert_eq!(field, expected),
            other => panic!("expected a conflict on {expected}, got {other:?}"),
        }
    }
    let dangling = update(
        &USERS,
        &seed.admins[0].to_string(),
        json!({"role": Uuid::new_v4().to_string()}),
    );
    assert!(matches!(
        s.write(vec![dangling], None).await.unwrap_err(),
        StoreError::MissingReference { .. }
    ));
}

pub async fn a_failing_write_undoes_its_whole_batch(s: Arc<dyn Store>) {
    seed(&s, &["admin@example.com"]).await;
    let fresh = Uuid::new_v4().to_string();
    let err = s
        .write(
            vec![
                insert(&USERS, json!({"id": fresh, "email": "new@example.com"})),
                insert(
                    &USERS,
                    json!({"id": Uuid::new_v4().to_string(), "email": "admin@example.com"}),
                ),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "email" }));
    assert!(s.login_user("new@example.com").await.unwrap().is_none());
    assert_eq!(s.count_items(&USERS, None).await.unwrap(), 1);
    // Missing items are reported, not failed.
    let found = s
        .write(
            vec![
                update(&USERS, &Uuid::new_v4().to_string(), json!({"title": "x"})),
                Write::Delete {
                    c: &ROLES,
                    id: Uuid::new_v4().to_string(),
                },
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(found, [Written::Missing, Written::Missing]);
}

pub async fn concurrent_writes_fail_alone(s: Arc<dyn Store>) {
    seed(&s, &["admin@example.com"]).await;
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let mail = if i % 2 == 0 {
                "admin@example.com".to_owned()
            } else {
                format!("u{i}@example.com")
            };
            let s = s.clone();
            let w = insert(
                &USERS,
                json!({"id": Uuid::new_v4().to_string(), "email": mail}),
            );
            tokio::spawn(async move { s.write(vec![w], None).await })
        })
        .collect();
    let mut ok = 0;
    for w in writes {
        match w.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(e, StoreError::Conflict { field: "email" }),
                "{e:?}"
            ),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(s.count_items(&USERS, None).await.unwrap(), 11);
}

/// An admin with one open session family; the family.
async fn one_family(s: &Arc<dyn Store>) -> Uuid {
    let user = seed(s, &["a@example.com"]).await.admins[0];
    let fam = Uuid::new_v4();
    s.open_session(session(user, fam, 1_000), admit())
        .await
        .unwrap();
    fam
}

/// Half the work goes to each of two stores on one database (two instances).
fn either(i: i64, s: &Arc<dyn Store>, other: &Arc<dyn Store>) -> Arc<dyn Store> {
    if i % 2 == 0 { s.clone() } else { other.clone() }
}

pub async fn concurrent_refreshes_each_see_the_last_generation(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    let fam = one_family(&s).await;
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let s = either(i, &s, &other);
            tokio::spawn(async move { s.change_family(fam, advance(2_000 + i)).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().unwrap().unwrap().generation);
    }
    seen.sort_unstable();
    // Each decision saw the family as the previous one left it: no two read the same row.
    assert_eq!(seen, (0..24).collect::<Vec<u64>>());
    assert_eq!(s.family(fam).await.unwrap().unwrap().generation, 24);
}

pub async fn of_refreshes_racing_on_one_generation_one_advances(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    let fam = one_family(&s).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = either(i, &s, &other);
            tokio::spawn(async move {
                let decide: FamilyDecision = Box::new(move |f| {
                    if f.generation == 0 {
                        FamilyChange::Advance {
                            now_ms: 2_000,
                            expires_ms: 12_000,
                            token_hash: "t1".into(),
                            meta: ClientMeta::default(),
                        }
                    } else {
                        FamilyChange::None
                    }
                });
                s.change_family(fam, decide).await
            })
        })
        .collect();
    let mut applied_on_first = 0;
    for t in tasks {
        // The family each applied decision saw: only one saw generation 0.
        if t.await.unwrap().unwrap().unwrap().generation == 0 {
            applied_on_first += 1;
        }
    }
    assert_eq!(applied_on_first, 1);
    assert_eq!(s.family(fam).await.unwrap().unwrap().generation, 1);
}

pub async fn logins_evicting_sessions_that_refresh_meanwhile_never_fail(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    let user = seed(&s, &["a@example.com"]).await.admins[0];
    // A login locks its user, then deletes the sessions beyond the cap; a refresh on another
    // instance changes its session, then touches the user's last access; a purge deletes
    // expired sessions of any user. Run them against each other, repeatedly: none may fail
    // (a deadlock, a conflict) and every refresh either applies or finds its session gone.
    let mut live = Uuid::new_v4();
    s.open_session(
        NewSession {
            keep_at_most: 1,
            ..session(user, live, 1_000)
        },
        admit(),
    )
    .await
    .unwrap();
    for round in 0..40i64 {
        let next = Uuid::new_v4();
        let now = 10_000 + round * 2_000;
        let login = {
            let s = s.clone();
            tokio::spawn(async move {
                s.open_session(
                    NewSession {
                        keep_at_most: 1,
                        ..session(user, next, now)
                    },
                    admit(),
                )
                .await
            })
        };
        let refreshes: Vec<_> = (0..3)
            .map(|i| {
                let other = other.clone();
                tokio::spawn(async move { other.change_family(live, advance(now + 500 + i)).await })
            })
            .collect();
        let purge = {
            let other = other.clone();
            tokio::spawn(async move { other.purge_expired_sessions(now).await })
        };
        login.await.unwrap().expect("the login");
        for r in refreshes {
            r.await.unwrap().expect("the refresh");
        }
        purge.await.unwrap().expect("the purge");
        live = next;
    }
    // The last login's session is the one left.
    assert!(s.family(live).await.unwrap().is_some());
}

/// Counts active users with an admin policy through their role, as the guard sees them.
fn active_admins(r: &mut dyn Reads) -> StoreResult<usize> {
    let active = filtered(compare(&USERS, "status", Op::Eq, json!("active")));
    let mut n = 0;
    for u in r.read_items(&USERS, &active)? {
        let role = u["role"].as_str().and_then(|r| Uuid::parse_str(r).ok());
        let rows = r.access_rows(role, None)?;
        if rows.by_role.iter().flatten().any(|p| p.admin_access) {
            n += 1;
        }
    }
    Ok(n)
}

/// A guard keeping at least one admin, that can hold its write at a known point.
struct KeepsAnAdmin {
    before: usize,
    /// Set while this guard holds its write, after the write, before the commit.
    holding: Option<Arc<AtomicBool>>,
    release: Option<std::sync::mpsc::Receiver<()>>,
    /// Set if this guard looked while another guarded write was held.
    overlapped: Arc<AtomicBool>,
    other_holding: Option<Arc<AtomicBool>>,
}

impl Guard for KeepsAnAdmin {
    fn before(&mut self, r: &mut dyn Reads) -> StoreResult<()> {
        if let Some(other) = &self.other_holding
            && other.load(Ordering::SeqCst)
        {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        self.before = active_admins(r)?;
        Ok(())
    }

    fn after(self: Box<Self>, r: &mut dyn Reads) -> StoreResult<bool> {
        let after = active_admins(r)?;
        if let (Some(holding), Some(release)) = (&self.holding, &self.release) {
            holding.store(true, Ordering::SeqCst);
            let _ = release.recv_timeout(Duration::from_secs(10));
            holding.store(false, Ordering::SeqCst);
        }
        Ok(self.before == 0 || after > 0)
    }
}

pub async fn a_refusing_guard_undoes_the_write(s: Arc<dyn Store>) {
    let seed = seed(&s, &["a@example.com"]).await;
    let id = seed.admins[0].to_string();
    let guard = KeepsAnAdmin {
        before: 0,
        holding: None,
        release: None,
        overlapped: Arc::default(),
        other_holding: None,
    };
    let err = s
        .write(
            vec![update(&USERS, &id, json!({"status": "suspended"}))],
            Some(Box::new(guard)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused), "{err:?}");
    assert_eq!(
        s.principal(seed.admins[0]).await.unwrap().unwrap().status,
        "active"
    );
}

pub async fn two_demotions_racing_cannot_remove_the_last_admin(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    let seed = seed(&s, &["a@example.com", "b@example.com"]).await;
    let a_holding = Arc::new(AtomicBool::new(false));
    let overlapped = Arc::new(AtomicBool::new(false));
    let (release, held) = std::sync::mpsc::channel();
    // Suspends user `id` on `store`, under `guard`.
    let demote = |store: &Arc<dyn Store>, id: Uuid, guard: KeepsAnAdmin| {
        let store = store.clone();
        tokio::spawn(async move {
            let suspend = update(&USERS, &id.to_string(), json!({"status": "suspended"}));
            store.write(vec![suspend], Some(Box::new(guard))).await
        })
    };
    // A demotes the first admin and is held inside its transaction, after its write…
    let a = demote(
        &s,
        seed.admins[0],
        KeepsAnAdmin {
            before: 0,
            holding: Some(a_holding.clone()),
            release: Some(held),
            overlapped: overlapped.clone(),
            other_holding: None,
        },
    );
    while !a_holding.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // …while B, on the other instance, demotes the second. B must not look before A is done.
    let b = demote(
        &other,
        seed.admins[1],
        KeepsAnAdmin {
            before: 0,
            holding: None,
            release: None,
            overlapped: overlapped.clone(),
            other_holding: Some(a_holding.clone()),
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        !overlapped.load(Ordering::SeqCst),
        "B looked while A was held"
    );
    assert!(a.is_ok(), "{a:?}");
    assert!(matches!(b, Err(StoreError::Refused)), "{b:?}");
    assert_eq!(
        s.principal(seed.admins[1]).await.unwrap().unwrap().status,
        "active"
    );
}

/// Users with these first names (and e-mails derived from them).
async fn people(s: &Arc<dyn Store>, first_names: &[Option<&str>]) {
    let writes = first_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            insert(
                &USERS,
                json!({"id": format!("00000000-0000-4000-8000-{i:012}"), "first_name": n,
                       "email": format!("p{i}@example.com")}),
            )
        })
        .collect();
    s.write(writes, None).await.unwrap();
}

pub async fn text_operators_fold_ascii_case_only_where_asked(s: Arc<dyn Store>) {
    people(
        &s,
        &[
            Some("alpha"),
            Some("Alpha"),
            Some("ÄLPHA"),
            Some("beta"),
            Some("50%_off"),
            Some("500 off"),
            None,
        ],
    )
    .await;
    let q = |op, v: &str| filtered(compare(&USERS, "first_name", op, json!(v)));
    assert_eq!(names(&s, q(Op::Contains, "Alp")).await, [json!("Alpha")]);
    assert_eq!(
        names(&s, q(Op::IContains, "ALP")).await,
        [json!("alpha"), json!("Alpha")]
    );
    assert_eq!(
        names(&s, q(Op::IStartsWith, "al")).await,
        [json!("alpha"), json!("Alpha")]
    );
    assert_eq!(
        names(&s, q(Op::IEndsWith, "PHA")).await,
        [json!("alpha"), json!("Alpha"), json!("ÄLPHA")]
    );
    assert_eq!(names(&s, q(Op::StartsWith, "Ä")).await, [json!("ÄLPHA")]);
    assert_eq!(names(&s, q(Op::EndsWith, "ta")).await, [json!("beta")]);
    // Wildcards in operands are literal.
    assert_eq!(names(&s, q(Op::Contains, "%_")).await, [json!("50%_off")]);
    // Negations keep nulls out, as SQL's NOT LIKE does on both engines.
    assert_eq!(
        names(&s, q(Op::NotIContains, "a")).await,
        [json!("50%_off"), json!("500 off")]
    );
    assert_eq!(
        names(&s, q(Op::NotContains, "a")).await,
        [json!("ÄLPHA"), json!("50%_off"), json!("500 off")]
    );
    let empty = filtered(compare(&USERS, "title", Op::Empty, Value::Null));
    assert_eq!(
        s.count_items(&USERS, empty.filter.as_ref()).await.unwrap(),
        7
    );
}

pub async fn order_is_bytewise_with_nulls_smallest(s: Arc<dyn Store>) {
    people(
        &s,
        &[
            Some("beta"),
            None,
            Some("ÄLPHA"),
            Some("alpha"),
            Some("Alpha"),
        ],
    )
    .await;
    let sorted = |desc| Query {
        sort: vec![(field(&USERS, "first_name"), desc)],
        ..Query::default()
    };
    assert_eq!(
        names(&s, sorted(false)).await,
        [
            Value::Null,
            json!("Alpha"),
            json!("alpha"),
            json!("beta"),
            json!("ÄLPHA")
        ]
    );
    assert_eq!(
        names(&s, sorted(true)).await,
        [
            json!("ÄLPHA"),
            json!("beta"),
            json!("alpha"),
            json!("Alpha"),
            Value::Null
        ]
    );
    // Without a sort, items come in primary-key order.
    let ids: Vec<Value> = s
        .read_items(&USERS, &Query::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r["id"].clone())
        .collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_by_key(|v| v.as_str().unwrap_or_default().to_owned());
    assert_eq!(ids, sorted_ids);
    let summaries: Vec<_> = s
        .user_summaries()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(summaries[0].as_deref(), Some("p0@example.com"));
}

pub async fn values_keep_their_kind(s: Arc<dyn Store>) {
    people(&s, &[Some("a"), Some("b"), Some("c")]).await;
    let id = |i: u32| format!("00000000-0000-4000-8000-{i:012}");
    s.write(
        vec![
            update(
                &USERS,
                &id(0),
                json!({"last_access": 1_795_000_000_123i64, "email_notifications": false,
                       "tags": ["x", {"y": 1}], "auth_data": null}),
            ),
            update(
                &USERS,
                &id(1),
                json!({"last_access": 0, "email_notifications": true}),
            ),
        ],
        None,
    )
    .await
    .unwrap();
    let rows = s.read_items(&USERS, &Query::default()).await.unwrap();
    assert_eq!(rows[0]["last_access"], json!(1_795_000_000_123i64));
    assert_eq!(rows[0]["email_notifications"], json!(false));
    assert_eq!(rows[0]["tags"], json!(["x", {"y": 1}]));
    assert_eq!(rows[1]["email_notifications"], json!(true));
    assert_eq!(rows[2]["last_access"], Value::Null);
    let after = filtered(compare(&USERS, "last_access", Op::Gt, json!(1_000)));
    assert_eq!(names(&s, after).await, [json!("a")]);
    let off = filtered(compare(&USERS, "email_notifications", Op::Eq, json!(false)));
    assert_eq!(names(&s, off).await, [json!("a")]);
    let listed = filtered(compare(
        &USERS,
        "last_access",
        Op::In,
        json!([0, 1_795_000_000_123i64]),
    ));
    assert_eq!(names(&s, listed).await, [json!("a"), json!("b")]);
    let none = filtered(compare(&USERS, "first_name", Op::In, json!([])));
    assert!(names(&s, none).await.is_empty());
    let all = filtered(compare(&USERS, "first_name", Op::Nin, json!([])));
    assert_eq!(names(&s, all).await.len(), 3);
    let no_time = filtered(compare(&USERS, "last_access", Op::Empty, Value::Null));
    assert_eq!(names(&s, no_time).await, [json!("c")]);
}

pub async fn windows_and_counts_agree(s: Arc<dyn Store>) {
    people(&s, &[Some("a"), Some("b"), Some("c"), Some("d"), Some("e")]).await;
    let window = |limit, offset| Query {
        limit,
        offset,
        ..Query::default()
    };
    assert_eq!(
        names(&s, window(Some(2), 1)).await,
        [json!("b"), json!("c")]
    );
    assert_eq!(names(&s, window(None, 3)).await, [json!("d"), json!("e")]);
    assert!(names(&s, window(Some(0), 0)).await.is_empty());
    let either = Condition::Or(vec![
        compare(&USERS, "first_name", Op::Eq, json!("a")),
        Condition::And(vec![
            compare(&USERS, "first_name", Op::Gte, json!("c")),
            compare(&USERS, "first_name", Op::Neq, json!("d")),
        ]),
    ]);
    assert_eq!(s.count_items(&USERS, Some(&either)).await.unwrap(), 3);
    assert_eq!(s.count_items(&USERS, None).await.unwrap(), 5);
    assert_eq!(
        s.count_items(&USERS, Some(&Condition::Or(vec![])))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.count_items(&USERS, Some(&Condition::And(vec![])))
            .await
            .unwrap(),
        5
    );
}

pub async fn settings_update_by_their_id(s: Arc<dyn Store>) {
    let before = s.settings().await.unwrap();
    assert_eq!(before["project_name"], json!("Directus"));
    assert_eq!(before["public_registration"], json!(false));
    let found = s
        .write(
            vec![update(
                &SETTINGS,
                "1",
                json!({"project_name": "Tessera", "auth_login_attempts": 3}),
            )],
            None,
        )
        .await
        .unwrap();
    assert_eq!(found, [Written::Found]);
    let after = s.settings().await.unwrap();
    assert_eq!(after["project_name"], json!("Tessera"));
    assert_eq!(after["auth_login_attempts"], json!(3));
    let role = seed(&s, &[]).await.role;
    let aliases = ROLES.alias("users").unwrap();
    assert!(
        s.alias_values(aliases, &role.to_string(), None)
            .await
            .unwrap()
            .is_empty()
    );
    // A limit keeps the first values in key order.
    let seeded = seed(&s, &["a@example.com", "b@example.com", "c@example.com"]).await;
    let mut admins: Vec<Value> = seeded.admins.iter().map(|u| json!(u.to_string())).collect();
    admins.sort_by_key(|v| v.as_str().map(str::to_owned));
    let members = |limit| {
        let s = s.clone();
        async move {
            s.alias_values(aliases, &seeded.role.to_string(), limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(members(None).await, admins);
    assert_eq!(members(Some(2)).await, admins[..2]);
    s.ping().await.unwrap();
}

pub async fn expired_sessions_are_purged(s: Arc<dyn Store>) {
    let user = seed(&s, &["a@example.com"]).await.admins[0];
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    s.open_session(session(user, old, 1_000), admit())
        .await
        .unwrap();
    s.open_session(session(user, new, 50_000), admit())
        .await
        .unwrap();
    assert_eq!(s.purge_expired_sessions(11_001).await.unwrap(), 1);
    assert!(s.family(old).await.unwrap().is_none());
    assert!(s.family(new).await.unwrap().is_some());
    // Ending a user's sessions with a write spares the one named.
    let third = Uuid::new_v4();
    s.open_session(session(user, third, 60_000), admit())
        .await
        .unwrap();
    s.write(
        vec![Write::Update {
            c: &USERS,
            id: user.to_string(),
            values: values(&USERS, json!({"title": "t"})),
            end: EndSessions::AllExcept(third),
        }],
        None,
    )
    .await
    .unwrap();
    assert!(s.family(new).await.unwrap().is_none());
    assert!(s.family(third).await.unwrap().is_some());
    // A user's live sessions, most recently used first, with what they were opened from.
    let fourth = Uuid::new_v4();
    s.open_session(session(user, fourth, 61_000), admit())
        .await
        .unwrap();
    let live = s.sessions_of(user, 62_000).await.unwrap();
    let ids: Vec<Uuid> = live.iter().map(|l| l.id).collect();
    assert_eq!(ids, [fourth, third]);
    assert_eq!(live[0].created_ms, 61_000);
    assert_eq!(live[0].last_used_ms, 61_000);
    assert_eq!(live[0].expires_ms, 71_000);
    assert_eq!(live[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(live[0].user_agent.as_deref(), Some("test"));
    assert_eq!(s.sessions_of(user, 70_500).await.unwrap().len(), 1);
    assert!(s.sessions_of(Uuid::new_v4(), 0).await.unwrap().is_empty());
}

/// The unfiltered user count (kept by triggers) agrees with a filtered one (counted) after
/// single and batched inserts, a failed batch, and deletes.
pub async fn the_user_total_follows_every_insert_and_delete(s: Arc<dyn Store>) {
    let everyone = Condition::Compare {
        field: USERS.key(),
        op: Op::NotNull,
        value: Value::Null,
    };
    let agree = |expected: u64| {
        let (s, everyone) = (s.clone(), everyone.clone());
        async move {
            assert_eq!(s.count_items(&USERS, None).await.unwrap(), expected);
            assert_eq!(
                s.count_items(&USERS, Some(&everyone)).await.unwrap(),
                expected
            );
        }
    };
    agree(0).await;
    let seed = seed(&s, &["a@example.com", "b@example.com", "c@example.com"]).await;
    agree(3).await;
    // A batch that fails undoes its count with its rows.
    let clash = insert(
        &USERS,
        json!({"id": Uuid::new_v4().to_string(), "email": "a@example.com"}),
    );
    let fine = insert(
        &USERS,
        json!({"id": Uuid::new_v4().to_string(), "email": "d@example.com"}),
    );
    assert!(s.write(vec![fine, clash], None).await.is_err());
    agree(3).await;
    s.write(
        vec![Write::Delete {
            c: &USERS,
            id: seed.admins[0].to_string(),
        }],
        None,
    )
    .await
    .unwrap();
    agree(2).await;
}

pub async fn counters_keep_fixed_windows_and_holds(s: Arc<dyn Store>) {
    let hit = |amount, now| {
        let s = s.clone();
        async move { s.count_hit("ip:a", amount, 1_000, now).await.unwrap() }
    };
    assert_eq!(
        hit(1, 10_000).await,
        Hits {
            hits: 1,
            until_ms: 11_000
        }
    );
    assert_eq!(
        hit(1, 10_500).await,
        Hits {
            hits: 2,
            until_ms: 11_000
        }
    );
    // A refund lowers the count without moving the window.
    assert_eq!(
        hit(-1, 10_600).await,
        Hits {
            hits: 1,
            until_ms: 11_000
        }
    );
    // The window ended: the next hit opens a new one.
    assert_eq!(
        hit(1, 11_000).await,
        Hits {
            hits: 1,
            until_ms: 12_000
        }
    );
    // Waits: claimed only where none runs.
    assert_eq!(s.held("hold:a", 0).await.unwrap(), None);
    assert!(s.claim("hold:a", 20_000, 10_000).await.unwrap());
    assert!(!s.claim("hold:a", 30_000, 19_999).await.unwrap());
    assert_eq!(s.held("hold:a", 14_000).await.unwrap(), Some(20_000));
    assert!(s.claim("hold:a", 25_000, 20_000).await.unwrap());
    assert_eq!(s.held("hold:a", 20_000).await.unwrap(), Some(25_000));
    assert_eq!(s.held("hold:a", 25_000).await.unwrap(), None);
    s.forget_counts(vec!["hold:a".into(), "nothing".into()])
        .await
        .unwrap();
    assert_eq!(s.held("hold:a", 0).await.unwrap(), None);
    s.forget_counts(Vec::new()).await.unwrap();
    // Housekeeping drops what ended, and only that.
    assert!(s.claim("hold:b", 30_000, 0).await.unwrap());
    assert_eq!(s.purge_counts(20_000).await.unwrap(), 1);
    assert_eq!(s.held("hold:b", 20_000).await.unwrap(), Some(30_000));
}

/// Two instances hitting one counter at once: every hit counts once, and each answer is a
/// different count; claiming one wait at once, one wins.
pub async fn hits_from_two_instances_at_once_are_all_counted(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            s.count_hit("shared", 1, 60_000, 1_000).await.unwrap().hits
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<i64>>());
    // Of twenty claims of one wait at once, from both instances, one wins.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            s.claim("wait", 90_000, 1_000).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

pub async fn announcements_go_out(s: Arc<dyn Store>) {
    s.announce(crate::Change::Everything).await.unwrap();
    s.announce(crate::Change::FamilyEnded(Uuid::new_v4()))
        .await
        .unwrap();
}

pub async fn tfa_changes_apply_only_where_the_state_allows(s: Arc<dyn Store>) {
    use crate::TfaChange;
    let user = Uuid::new_v4();
    s.write(
        vec![insert(
            &USERS,
            json!({"id": user.to_string(), "email": "t@example.com"}),
        )],
        None,
    )
    .await
    .unwrap();
    let change = |c: TfaChange| {
        let s = s.clone();
        async move { s.change_tfa(user, c).await.unwrap() }
    };
    let enable = |pending: &str, step| TfaChange::Enable {
        secret: "sealed".into(),
        pending: pending.into(),
        step,
    };
    assert!(
        !change(TfaChange::UseStep(1)).await,
        "no TFA, no step to use"
    );
    assert!(change(TfaChange::Pending("p1".into())).await);
    assert!(
        !change(enable("other", 5)).await,
        "only the pending secret enables"
    );
    assert!(change(enable("p1", 5)).await);
    let state = s.tfa(user).await.unwrap().unwrap();
    assert_eq!(state.secret.as_deref(), Some("sealed"));
    assert_eq!(state.pending, None);
    assert_eq!(state.last_step, Some(5));
    assert!(!change(TfaChange::Pending("p2".into())).await, "TFA is on");
    assert!(!change(TfaChange::UseStep(5)).await, "a step is good once");
    assert!(!change(TfaChange::UseStep(4)).await);
    assert!(change(TfaChange::UseStep(6)).await);
    assert!(!change(TfaChange::Disable { step: Some(6) }).await);
    assert!(change(TfaChange::Disable { step: Some(7) }).await);
    assert_eq!(s.tfa(user).await.unwrap().unwrap().secret, None);
    assert!(
        !change(TfaChange::Disable { step: None }).await,
        "already off"
    );
    assert!(s.tfa(Uuid::new_v4()).await.unwrap().is_none());
}

/// A small deterministic generator (xorshift), so a failing case names its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// Texts chosen to trip engines: case, non-ASCII, LIKE wildcards, the empty string.
const TEXTS: &[&str] = &[
    "alpha",
    "Alpha",
    "ÄLPHA",
    "al",
    "",
    "50%_off",
    "_",
    "%",
    "b",
    "PHA",
    "say \"pha\"",
    "o'pha",
];
const TIMES: &[i64] = &[0, 1_000, 86_400_000, 1_700_000_000_000];

/// What the filter language means, written independently of SQL: a comparison with a null
/// holds only for the null checks (and `_nin` of nothing); text compares byte by byte and folds
/// ASCII case only where asked.
fn holds(cond: &Condition, rec: &crate::Record, roles: &[crate::Record]) -> bool {
    match cond {
        Condition::And(parts) => parts.iter().all(|p| holds(p, rec, roles)),
        Condition::Or(parts) => parts.iter().any(|p| holds(p, rec, roles)),
        Condition::Related { via, cond, none } => {
            let linked = roles.iter().any(|r| {
                r.get(via.remote) == rec.get(via.local)
                    && rec.get(via.local).is_some_and(|v| !v.is_null())
                    && holds(cond, r, roles)
            });
            linked != *none
        }
        Condition::Compare { field, op, value } => {
            let got = rec.get(field.name).cloned().unwrap_or(Value::Null);
            let text = |v: &Value| v.as_str().map(str::to_owned);
            let order = |a: &Value, b: &Value| match (a, b) {
                (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
                (Value::Number(x), Value::Number(y)) => {
                    x.as_i64().zip(y.as_i64()).map(|(x, y)| x.cmp(&y))
                }
                (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
                _ => None,
            };
            let like = |fold: bool, f: fn(&str, &str) -> bool| match (text(&got), text(value)) {
                (Some(g), Some(v)) if fold => f(&g.to_ascii_lowercase(), &v.to_ascii_lowercase()),
                (Some(g), Some(v)) => f(&g, &v),
                _ => false,
            };
            let listed = || value.as_array().cloned().unwrap_or_default();
            let empty_text = field.kind == crate::Kind::String && got.as_str() == Some("");
            match op {
                Op::Null => got.is_null(),
                Op::NotNull => !got.is_null(),
                Op::Empty => got.is_null() || empty_text,
                Op::NotEmpty => !got.is_null() && !empty_text,
                Op::Eq if value.is_null() => got.is_null(),
                Op::Neq if value.is_null() => !got.is_null(),
                Op::Nin if listed().is_empty() => true,
                _ if got.is_null() => false,
                Op::Eq => got == *value,
                Op::Neq => got != *value,
                Op::In => listed().contains(&got),
                Op::Nin => !listed().contains(&got),
                Op::Gt => order(&got, value) == Some(std::cmp::Ordering::Greater),
                Op::Gte => order(&got, value).is_some_and(|o| o.is_ge()),
                Op::Lt => order(&got, value) == Some(std::cmp::Ordering::Less),
                Op::Lte => order(&got, value).is_some_and(|o| o.is_le()),
                Op::Contains => like(false, |g, v| g.contains(v)),
                Op::IContains => like(true, |g, v| g.contains(v)),
                Op::NotContains => like(false, |g, v| !g.contains(v)),
                Op::NotIContains => like(true, |g, v| !g.contains(v)),
                Op::StartsWith => like(false, |g, v| g.starts_with(v)),
                Op::IStartsWith => like(true, |g, v| g.starts_with(v)),
                Op::EndsWith => like(false, |g, v| g.ends_with(v)),
                Op::IEndsWith => like(true, |g, v| g.ends_with(v)),
            }
        }
    }
}

/// A value from `make`, or (one time in four) null.
fn maybe(d: &mut Dice, make: impl FnOnce(&mut Dice) -> Value) -> Value {
    if d.below(4) == 0 {
        Value::Null
    } else {
        make(d)
    }
}

/// A random comparison on a text, boolean or time field of `c`.
fn random_compare(d: &mut Dice, c: &'static Collection) -> Condition {
    let (name, kind) = d.pick(&match c.name {
        "directus_roles" => vec![("name", 0), ("description", 0)],
        _ => vec![
            ("first_name", 0),
            ("title", 0),
            ("email_notifications", 1),
            ("last_access", 2),
        ],
    });
    let text = |d: &mut Dice| Value::from(d.pick(TEXTS));
    let time = |d: &mut Dice| Value::from(d.pick(TIMES));
    let (op, value) = match kind {
        0 => {
            let op = d.pick(&[
                Op::Eq,
                Op::Neq,
                Op::In,
                Op::Nin,
                Op::Null,
                Op::NotNull,
                Op::Empty,
                Op::NotEmpty,
                Op::Contains,
                Op::IContains,
                Op::NotContains,
                Op::NotIContains,
                Op::StartsWith,
                Op::IStartsWith,
                Op::EndsWith,
                Op::IEndsWith,
                Op::Gt,
                Op::Gte,
                Op::Lt,
                Op::Lte,
            ]);
            let value = match op {
                Op::In | Op::Nin => Value::Array((0..d.below(4)).map(|_| text(d)).collect()),
                Op::Eq if d.below(8) == 0 => Value::Null,
                _ => text(d),
            };
            (op, value)
        }
        1 => (
            d.pick(&[Op::Eq, Op::Neq, Op::Null, Op::NotNull]),
            Value::Bool(d.below(2) == 0),
        ),
        _ => {
            let op = d.pick(&[
                Op::Eq,
                Op::Neq,
                Op::Gt,
                Op::Gte,
                Op::Lt,
                Op::Lte,
                Op::In,
                Op::Null,
            ]);
            let value = match op {
                Op::In => Value::Array((0..d.below(3)).map(|_| time(d)).collect()),
                _ => time(d),
            };
            (op, value)
        }
    };
    compare(c, name, op, value)
}

/// A random filter over users, up to `depth` groups deep, sometimes through the role.
fn random_filter(d: &mut Dice, depth: usize) -> Condition {
    match d.below(if depth == 0 { 2 } else { 5 }) {
        0 | 1 => random_compare(d, &USERS),
        2 => Condition::Related {
            via: USERS.relation("role").expect("users have a role"),
            cond: Box::new(random_compare(d, &ROLES)),
            none: false,
        },
        n => {
            let parts = (0..1 + d.below(3))
                .map(|_| random_filter(d, depth - 1))
                .collect();
            if n == 3 {
                Condition::And(parts)
            } else {
                Condition::Or(parts)
            }
        }
    }
}

pub async fn filters_mean_the_same_in_sql_and_in_memory(s: Arc<dyn Store>) {
    let mut d = Dice(0x9E37_79B9_7F4A_7C15);
    let mut roles = Vec::new();
    let mut writes = Vec::new();
    for _ in 0..4 {
        let role = json!({"id": Uuid::new_v4().to_string(), "name": d.pick(TEXTS),
            "description": maybe(&mut d, |d| Value::from(d.pick(TEXTS)))});
        writes.push(insert(&ROLES, role.clone()));
        roles.push(role.as_object().cloned().expect("an object"));
    }
    let mut users = Vec::new();
    for _ in 0..24 {
        let role = roles[d.below(roles.len())]["id"].clone();
        let user = json!({
            "id": Uuid::new_v4().to_string(),
            "first_name": maybe(&mut d, |d| Value::from(d.pick(TEXTS))),
            "title": maybe(&mut d, |d| Value::from(d.pick(TEXTS))),
            "email_notifications": maybe(&mut d, |d| Value::Bool(d.below(2) == 0)),
            "last_access": maybe(&mut d, |d| Value::from(d.pick(TIMES))),
            "role": maybe(&mut d, |_| role),
        });
        writes.push(insert(&USERS, user.clone()));
        users.push(user.as_object().cloned().expect("an object"));
    }
    s.write(writes, None).await.unwrap();
    for case in 0..300 {
        let cond = random_filter(&mut d, 3);
        let mut expected: Vec<String> = users
            .iter()
            .filter(|u| holds(&cond, u, &roles))
            .map(|u| u["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        expected.sort();
        let found = s.read_items(&USERS, &filtered(cond.clone())).await.unwrap();
        let mut got: Vec<String> = found
            .iter()
            .map(|u| u["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, expected, "case {case}: {cond:?}");
        let counted = s.count_items(&USERS, Some(&cond)).await.unwrap();
        assert_eq!(
            counted as usize,
            expected.len(),
            "case {case}: count of {cond:?}"
        );
    }
}

/// Text conditions long enough to go through the trigram index find exactly the rows they
/// match after inserts, updates (of indexed and other columns) and deletes, with quotes and
/// wildcards in the term, alone, under OR and AND, and as a `search` shapes them.
pub async fn text_searches_follow_every_write(s: Arc<dyn Store>) {
    people(
        &s,
        &[
            Some("Adalind"),
            Some("say \"ada\" twice"),
            Some("o'ada%_x"),
            Some("ÄDAlind"),
            None,
        ],
    )
    .await;
    let id = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let apply = |w: Write| {
        let s = s.clone();
        async move {
            s.write(vec![w], None).await.unwrap();
        }
    };
    let q = |op, v: &str| filtered(compare(&USERS, "first_name", op, json!(v)));
    assert_eq!(
        names(&s, q(Op::IContains, "ADA")).await,
        [
            json!("Adalind"),
            json!("say \"ada\" twice"),
            json!("o'ada%_x")
        ]
    );
    assert_eq!(
        names(&s, q(Op::Contains, "\"ada\"")).await,
        [json!("say \"ada\" twice")]
    );
    assert_eq!(
        names(&s, q(Op::Contains, "'ada%_")).await,
        [json!("o'ada%_x")]
    );
    assert_eq!(
        names(&s, q(Op::IStartsWith, "ÄdAL")).await,
        [json!("ÄDAlind")]
    );
    assert_eq!(
        names(&s, q(Op::EndsWith, "lind")).await,
        [json!("Adalind"), json!("ÄDAlind")]
    );
    // The index finds a term in any of its columns; the exact test keeps the asked one.
    apply(update(&USERS, &id(4), json!({"title": "Adamant"}))).await;
    assert_eq!(
        names(&s, q(Op::IContains, "adam")).await,
        Vec::<Value>::new()
    );
    let title = filtered(compare(&USERS, "title", Op::IContains, json!("adam")));
    assert_eq!(names(&s, title).await, [Value::Null]);
    // An update of the indexed text moves the row from the old term to the new one.
    apply(update(&USERS, &id(0), json!({"first_name": "Beatrix"}))).await;
    assert_eq!(
        names(&s, q(Op::IContains, "DALIND")).await,
        [json!("ÄDAlind")]
    );
    assert_eq!(
        names(&s, q(Op::Contains, "atrix")).await,
        [json!("Beatrix")]
    );
    // An update of other columns leaves the text found.
    apply(update(
        &USERS,
        &id(0),
        json!({"email_notifications": false}),
    ))
    .await;
    assert_eq!(
        names(&s, q(Op::Contains, "atrix")).await,
        [json!("Beatrix")]
    );
    // As `search` builds it: several fields on one term, or an id.
    let search = Condition::Or(vec![
        compare(&USERS, "first_name", Op::IContains, json!("atri")),
        compare(&USERS, "email", Op::IContains, json!("atri")),
        compare(&USERS, "id", Op::Eq, json!(id(3))),
    ]);
    assert_eq!(
        names(&s, filtered(search)).await,
        [json!("Beatrix"), json!("ÄDAlind")]
    );
    let both = Condition::And(vec![
        compare(&USERS, "first_name", Op::IContains, json!("lind")),
        compare(&USERS, "email", Op::IContains, json!("p3@")),
    ]);
    assert_eq!(names(&s, filtered(both)).await, [json!("ÄDAlind")]);
    // A deleted row is gone from the index; a new one with the same text is found.
    apply(Write::Delete {
        c: &USERS,
        id: id(0),
    })
    .await;
    assert_eq!(
        names(&s, q(Op::Contains, "atrix")).await,
        Vec::<Value>::new()
    );
    apply(insert(
        &USERS,
        json!({"id": Uuid::new_v4().to_string(), "first_name": "Beatrix",
                   "email": "again@example.com"}),
    ))
    .await;
    assert_eq!(
        names(&s, q(Op::Contains, "atrix")).await,
        [json!("Beatrix")]
    );
    assert_eq!(
        s.count_items(
            &USERS,
            Some(&compare(&USERS, "first_name", Op::IContains, json!("TRIX")))
        )
        .await
        .unwrap(),
        1
    );
}

/// Reads of users whose plans each engine's own tests check for index use (plans are
/// engine-specific, so they are not asserted here): text conditions, alone and as `search`
/// shapes them, each a page of 25. Their terms match one user of those the PostgreSQL test
/// loads (`user<i>@example.com`, `First<i>`).
pub fn text_reads() -> Vec<Query> {
    let on = |name: &str, op: Op, v: &str| compare(&USERS, name, op, json!(v));
    let search = Condition::Or(vec![
        on("first_name", Op::IContains, "st12345"),
        on("email", Op::IContains, "st12345"),
        on("title", Op::IContains, "st12345"),
    ]);
    [
        on("email", Op::Contains, "er12345@"),
        on("email", Op::IContains, "ER12345@"),
        on("first_name", Op::StartsWith, "First12345"),
        search,
    ]
    .into_iter()
    .map(|filter| Query {
        filter: Some(filter),
        limit: Some(25),
        ..Query::default()
    })
    .collect()
}

/// Pages read one after another, again, backwards and far ahead equal the same window of a
/// read of everything, on sorts a page can be continued on (by key, by one column either way,
/// nulls and ties included, by two ascending, with a filter) and on sorts it cannot, while
/// the other instance inserts, renames and deletes between pages, or touches only
/// `last_access` (which the collection's version ignores: it moves a row only on the sort
/// that reads it, which is never continued).
pub async fn deep_pages_follow_every_write(s: Arc<dyn Store>, other: Arc<dyn Store>) {
    let user = |i: usize| {
        json!({
            "id": Uuid::new_v4().to_string(),
            "email": format!("u{:03}@example.com", (i * 17) % 1000),
            "first_name": if i.is_multiple_of(5) { Value::Null } else { json!(format!("n{}", i % 7)) },
            "status": if i.is_multiple_of(3) { "suspended" } else { "active" },
        })
    };
    let writes = (0..40).map(|i| insert(&USERS, user(i))).collect();
    s.write(writes, None).await.unwrap();
    let active = compare(&USERS, "status", Op::Eq, json!("active"));
    type Read<'a> = (Vec<(&'a str, bool)>, Option<Condition>);
    let reads: Vec<Read<'_>> = vec![
        (vec![], None),
        (vec![("email", false)], None),
        (vec![("email", true)], None),
        (vec![("first_name", false)], None),
        (vec![("first_name", true)], None),
        (vec![("status", false), ("first_name", false)], None),
        (vec![("status", true), ("first_name", true)], None),
        (vec![("email", false)], Some(active)),
        (vec![("last_access", true)], None),
    ];
    let mut made = 40;
    for (sort, filter) in &reads {
        let q = |offset: u64, limit: Option<u64>| Query {
            filter: filter.clone(),
            sort: sort.iter().map(|(f, d)| (field(&USERS, f), *d)).collect(),
            limit,
            offset,
        };
        let ids = |found: Vec<crate::Record>| -> Vec<Value> {
            found.into_iter().map(|r| r["id"].clone()).collect()
        };
        for (step, offset) in [5, 10, 15, 15, 20, 10, 30, 25, 35, 40, 45, 5, 6]
            .into_iter()
            .enumerate()
        {
            let all = ids(s.read_items(&USERS, &q(0, None)).await.unwrap());
            let page = ids(s.read_items(&USERS, &q(offset, Some(5))).await.unwrap());
            let want: Vec<Value> = all.iter().skip(offset as usize).take(5).cloned().collect();
            assert_eq!(page, want, "sort {sort:?}, offset {offset}, step {step}");
            let pick = |i: usize| all[i % all.len()].as_str().unwrap().to_owned();
            let write = match step % 4 {
                0 => {
                    made += 1;
                    insert(&USERS, user(made))
                }
                1 => update(
                    &USERS,
                    &pick(offset as usize + 2),
                    json!({"email": format!("a{made}@example.com"), "first_name": "a",
                           "status": "active"}),
                ),
                2 => Write::Delete {
                    c: &USERS,
                    id: pick(offset as usize),
                },
                _ => update(&USERS, &pick(1), json!({"last_access": 1_000 + step})),
            };
            other.write(vec![write], None).await.unwrap();
        }
    }
}

/// The ids of every user on `sort` (by e-mail, ascending or not), and the page of five at
/// `offset`.
async fn by_email(s: &Arc<dyn Store>, desc: bool, offset: u64) -> (Vec<Value>, Vec<Value>) {
    let q = |offset: u64, limit: Option<u64>| Query {
        sort: vec![(field(&USERS, "email"), desc)],
        limit,
        offset,
        ..Query::default()
    };
    let ids = |found: Vec<crate::Record>| -> Vec<Value> {
        found.into_iter().map(|r| r["id"].clone()).collect()
    };
    let all = ids(s.read_items(&USERS, &q(0, None)).await.unwrap());
    let page = ids(s.read_items(&USERS, &q(offset, Some(5))).await.unwrap());
    (all, page)
}

fn window(all: &[Value], offset: u64) -> Vec<Value> {
    all.iter().skip(offset as usize).take(5).cloned().collect()
}

fn walkers(n: usize) -> Vec<Write> {
    (0..n)
        .map(|i| {
            insert(
                &USERS,
                json!({"id": Uuid::new_v4().to_string(),
                       "email": format!("m{:03}@example.com", (i * 37) % 1000)}),
            )
        })
        .collect()
}

/// The other instance's write is held after its statements, before its commit, while pages
/// here are continued from remembered rows: they show the rows as they were. Once it commits,
/// the next page shows the rows as they are (the version moved), not a position remembered
/// before.
pub async fn a_page_read_while_a_write_waits_to_commit_sees_the_rows_before_it(
    s: Arc<dyn Store>,
    other: Arc<dyn Store>,
) {
    s.write(walkers(30), None).await.unwrap();
    let (before, page) = by_email(&s, false, 5).await;
    assert_eq!(page, window(&before, 5));
    let holding = Arc::new(AtomicBool::new(false));
    let (release, wait) = std::sync::mpsc::channel();
    let guard = KeepsAnAdmin {
        before: 0,
        holding: Some(holding.clone()),
        release: Some(wait),
        overlapped: Arc::default(),
        other_holding: None,
    };
    let moved = before[20].as_str().unwrap().to_owned();
    // Every row after the remembered ones moves one place: one moved ahead of them, one added
    // ahead of them, one ahead of them deleted.
    let writes = vec![
        update(&USERS, &moved, json!({"email": "a-first@example.com"})),
        insert(
            &USERS,
            json!({"id": Uuid::new_v4().to_string(), "email": "a-second@example.com"}),
        ),
        Write::Delete {
            c: &USERS,
            id: before[3].as_str().unwrap().to_owned(),
        },
    ];
    let write = tokio::spawn(async move { other.write(writes, Some(Box::new(guard))).await });
    while !holding.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for offset in [10, 15] {
        let (all, page) = by_email(&s, false, offset).await;
        assert_eq!(all, before, "held, at {offset}");
        assert_eq!(page, window(&before, offset), "held, at {offset}");
    }
    release.send(()).unwrap();
    write.await.unwrap().unwrap();
    for offset in [20, 25, 15] {
        let (all, page) = by_email(&s, false, offset).await;
        assert_ne!(all, before);
        assert_eq!(page, window(&all, offset), "committed, at {offset}");
    }
}

/// Many readers walk pages of two sorts at once, sharing what they remember, then again after
/// a write: every page equals its window of a read of everything.
pub async fn pages_walked_by_many_readers_at_once_each_equal_their_window(s: Arc<dyn Store>) {
    s.write(walkers(60), None).await.unwrap();
    for round in 0..2 {
        let truth = [
            by_email(&s, false, 0).await.0,
            by_email(&s, true, 0).await.0,
        ];
        let readers: Vec<_> = (0..12)
            .map(|r| {
                let (s, truth) = (s.clone(), truth.clone());
                tokio::spawn(async move {
                    let desc = r % 2 == 1;
                    for step in 0..10 {
                        let offset = 5 + ((r * 7 + step * 5) % 50) as u64;
                        let (_, page) = by_email(&s, desc, offset).await;
                        let want = window(&truth[usize::from(desc)], offset);
                        assert_eq!(page, want, "round {round}, reader {r}, at {offset}");
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.await.unwrap();
        }
        // A write that fails (its e-mails are taken) changes nothing; one that succeeds moves
        // the first user to the end.
        s.write(walkers(3), None).await.unwrap_err();
        let first = truth[0][0].as_str().unwrap().to_owned();
        s.write(
            vec![update(
                &USERS,
                &first,
                json!({"email": format!("z-last{round}@example.com")}),
            )],
            None,
        )
        .await
        .unwrap();
    }
}

/// The alias lists of many items read at once equal each item's own list, cut to the same
/// limit per item; an item with none is left out, and keys beyond one statement's batch are
/// read too.
pub async fn alias_lists_of_many_items_equal_each_ones_own(s: Arc<dyn Store>) {
    let users = ROLES.alias("users").unwrap();
    let roles: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    let mut writes: Vec<Write> = roles
        .iter()
        .map(|r| insert(&ROLES, json!({"id": r, "name": "Listed"})))
        .collect();
    for (i, role) in [(0, 5), (2, 3)]
        .iter()
        .flat_map(|(r, n)| (0..*n).map(move |_| *r))
        .enumerate()
    {
        writes.push(insert(
            &USERS,
            json!({"id": Uuid::new_v4().to_string(), "email": format!("l{i}@example.com"),
                   "role": roles[role]}),
        ));
    }
    s.write(writes, None).await.unwrap();
    let mut asked = roles.clone();
    asked.extend((0..1200).map(|_| Uuid::new_v4().to_string()));
    for limit in [2, 100] {
        let lists = s.alias_values_of(users, &asked, limit).await.unwrap();
        assert_eq!(lists.len(), 2, "limit {limit}");
        for role in &roles {
            let own = s.alias_values(users, role, Some(limit)).await.unwrap();
            assert_eq!(lists.get(role).cloned().unwrap_or_default(), own);
        }
        assert_eq!(lists[&roles[0]].len(), 5.min(limit as usize));
    }
}

/// Every write that changes a column `/users` shows moves the users' version (as `version`
/// reads it, through the engine's own connection), inserts and deletes included, and a role's
/// deletion that clears its users' `role`; `last_access`, which logins and refreshes write,
/// does not, nor does writing a value a column already holds.
pub async fn the_user_version_moves_with_every_shown_column<F, Fut>(s: &dyn Store, version: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let (id, role) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let before = version().await;
    s.write(
        vec![
            insert(&ROLES, json!({"id": role, "name": "Versioned"})),
            insert(&USERS, json!({"id": id, "email": "v@example.com"})),
        ],
        None,
    )
    .await
    .unwrap();
    let mut last = version().await;
    assert_ne!(last, before, "an insert");
    for (n, f) in USERS
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name != "id")
    {
        let value = match (f.name, f.kind) {
            ("role", _) => json!(role),
            (_, crate::Kind::Uuid) => json!(Uuid::new_v4().to_string()),
            (_, crate::Kind::Json) => json!({ "n": n }),
            (_, crate::Kind::Boolean) => json!(false),
            (_, crate::Kind::Integer | crate::Kind::Timestamp) => json!(1_000 + n),
            _ => json!(format!("v{n}")),
        };
        let write = |value: &Value| Write::Update {
            c: &USERS,
            id: id.clone(),
            values: vec![(f, value.clone())],
            end: EndSessions::None,
        };
        s.write(vec![write(&value)], None).await.unwrap();
        let now = version().await;
        assert_eq!(now != last, f.name != "last_access", "{}", f.name);
        last = now;
        s.write(vec![write(&value)], None).await.unwrap();
        assert_eq!(version().await, last, "{} written again", f.name);
    }
    for (what, gone) in [("a role's deletion", &ROLES), ("a deletion", &USERS)] {
        let key = if gone.name == ROLES.name { &role } else { &id };
        s.write(
            vec![Write::Delete {
                c: gone,
                id: key.clone(),
            }],
            None,
        )
        .await
        .unwrap();
        let now = version().await;
        assert_ne!(now, last, "{what}");
        last = now;
    }
}

/// Fills an empty store with 60 users and reads one deep page of each sort a page can be
/// continued on; returns, for each, the index that sort reads and the next page, which the
/// engines' plan tests expect to start on that index's range rather than walk its offset.
pub async fn walked_reads(s: &dyn Store) -> Vec<(String, Query)> {
    let writes = (0..60)
        .map(|i| {
            insert(
                &USERS,
                json!({"id": Uuid::new_v4().to_string(), "email": format!("w{i}@example.com"),
                       "first_name": format!("n{}", i % 9)}),
            )
        })
        .collect();
    s.write(writes, None).await.unwrap();
    let mut reads = Vec::new();
    for (sort, index) in [
        (vec![], "directus_users_pkey"),
        (vec![("email", false)], "directus_users_by_email"),
        (vec![("email", true)], "directus_users_by_email"),
        (vec![("first_name", false)], "directus_users_by_first_name"),
        (vec![("status", true)], "directus_users_by_status"),
    ] {
        let at = |offset| Query {
            sort: sort.iter().map(|(f, d)| (field(&USERS, f), *d)).collect(),
            limit: Some(5),
            offset,
            ..Query::default()
        };
        s.read_items(&USERS, &at(25)).await.unwrap();
        reads.push((index.to_owned(), at(30)));
    }
    reads
}

/// Sorted pages of users, first and deep (offset 5000), both ways, on every sortable field:
/// each with the index it must read (see [`text_reads`]).
pub fn sorted_reads() -> Vec<(String, Query)> {
    let mut reads = Vec::new();
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
            let q = Query {
                sort: vec![(field(&USERS, name), desc)],
                limit: Some(25),
                offset,
                ..Query::default()
            };
            reads.push((index.clone(), q));
        }
    }
    reads
}
