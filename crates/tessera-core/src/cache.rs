//! In-process caches that keep token checks, permission checks and `/users/me` off the
//! database: static-token lookups, access trees, session families, user records, the
//! permission rows of a set of policies and the rules resolved from them. Entries live a few seconds at most;
//! every write that could change an answer calls [`Caches::invalidate`], and a generation
//! counter keeps a read that raced such a write from caching its stale answer. Instances
//! sharing a database keep each other's caches true: each write is announced through the
//! store ([`announce`]), and [`follow`] applies what the others announce.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use serde_json::Value;
use tessera_store::{AccessTree, Change, Family, Principal, Record, Store};
use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use crate::error::Result;
use crate::jwt::VerifiedToken;
use crate::permissions::{Action, Granted};
use crate::query::Fields;
use crate::rules::Rule;
use crate::tally::{Cached, Tally};

/// The caches, shared by the auth and item services.
#[derive(Clone)]
pub struct Caches {
    /// Counts of lookups (and of what the auth service did), for operators.
    pub(crate) tally: Arc<Tally>,
    generation: Arc<AtomicU64>,
    /// Moved by every write to one session family, so that such writes (a refresh each) do
    /// not keep the other caches from filling.
    family_generation: Arc<AtomicU64>,
    pub(crate) static_tokens: Cache<String, Option<Principal>>,
    pub(crate) access: Cache<(Option<Uuid>, Option<Uuid>), Arc<AccessTree>>,
    pub(crate) sessions: Cache<Uuid, Option<Family>>,
    pub(crate) users: Cache<String, Option<Arc<Record>>>,
    pub(crate) aliases: Cache<(&'static str, String), Arc<Vec<Value>>>,
    /// Verified access tokens. A signature never changes, so writes do not clear this; expiry
    /// is checked on every hit.
    pub(crate) jwts: Cache<String, Arc<VerifiedToken>>,
    /// Serialised `/users/me` answers by user, `fields` and whether the read was limited.
    /// Kept one second only, so `last_access` (moved by every login and refresh) lags by at
    /// most that much without a per-refresh invalidation.
    pub(crate) me: Cache<MeKey, Option<Arc<str>>>,
    /// The permission rows of a set of policies (and whether app access adds the minimal
    /// ones).
    pub(crate) permissions: Cache<(Vec<Uuid>, bool), Arc<Granted>>,
    /// Rules resolved for one caller, collection and action (none that depends on `$NOW`).
    pub(crate) rules: Cache<RuleKey, Option<Arc<Rule>>>,
}

/// `/users/me` answers by user, `fields`, and the policies and flags that shaped them.
pub(crate) type MeKey = (Uuid, Fields, Vec<Uuid>, bool, bool);

/// A caller (user, role, policies, app flag), a collection and an action.
pub(crate) type RuleKey = (
    Option<Uuid>,
    Option<Uuid>,
    Vec<Uuid>,
    bool,
    &'static str,
    Action,
);

fn cache<K, V>(ttl: Duration) -> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

impl Caches {
    pub(crate) fn new() -> Self {
        let short = Duration::from_secs(2);
        let ttl = Duration::from_secs(5);
        Self {
            tally: Arc::default(),
            generation: Arc::new(AtomicU64::new(0)),
            family_generation: Arc::new(AtomicU64::new(0)),
            static_tokens: cache(ttl),
            access: cache(ttl),
            sessions: cache(short),
            users: cache(ttl),
            aliases: cache(ttl),
            me: cache(Duration::from_secs(1)),
            permissions: cache(ttl),
            rules: cache(ttl),
            jwts: cache(Duration::from_secs(60)),
        }
    }

    /// Forgets everything. Call after the write has committed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.static_tokens.invalidate_all();
        self.access.invalidate_all();
        self.sessions.invalidate_all();
        self.users.invalidate_all();
        self.aliases.invalidate_all();
        self.me.invalidate_all();
        self.permissions.invalidate_all();
        self.rules.invalidate_all();
    }

    /// Forgets one session family, after a write to it committed. Moving the family
    /// generation keeps a read of a family that started before the write from caching what it
    /// read.
    pub(crate) fn forget_family(&self, family: Uuid) {
        self.family_generation.fetch_add(1, Ordering::SeqCst);
        self.sessions.invalidate(&family);
    }

    /// The cached family `id`, or `load`'s, cached unless a write to any family or an
    /// invalidation ran meanwhile.
    pub(crate) async fn family(
        &self,
        id: Uuid,
        load: impl Future<Output = Result<Option<Family>>>,
    ) -> Result<Option<Family>> {
        self.load(
            Cached::Sessions,
            &self.sessions,
            Some(&self.family_generation),
            id,
            load,
        )
        .await
    }

    /// What the services sharing these caches counted.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Forgets one user's record (after a login or refresh moved its `last_access`).
    pub(crate) fn invalidate_user(&self, user: Uuid) {
        self.users.invalidate(&user.to_string());
    }

    /// The cached value for `key`, or `load`'s, cached unless an invalidation ran meanwhile.
    pub(crate) async fn get_or_load<K, V>(
        &self,
        which: Cached,
        cache: &Cache<K, V>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V>
    where
        K: Hash + Eq + Send + Sync + Clone + 'static,
        V: Clone + Send + Sync + 'static,
    {
        self.load(which, cache, None, key, load).await
    }

    /// Caches the pairs `load` returns, unless an invalidation ran meanwhile (as
    /// [`Caches::get_or_load`] does for one).
    pub(crate) async fn fill<K, V>(
        &self,
        cache: &Cache<K, V>,
        load: impl Future<Output = Result<Vec<(K, V)>>>,
    ) -> Result<()>
    where
        K: Hash + Eq + Send + Sync + Clone + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let before = self.generation.load(Ordering::SeqCst);
        let found = load.await?;
        for (key, value) in &found {
            cache.insert(key.clone(), value.clone());
        }
        if self.generation.load(Ordering::SeqCst) != before {
            for (key, _) in &found {
                cache.invalidate(key);
            }
        }
        Ok(())
    }

    async fn load<K, V>(
        &self,
        which: Cached,
        cache: &Cache<K, V>,
        local: Option<&AtomicU64>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V>
    where
        K: Hash + Eq + Send + Sync + Clone + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let found = cache.get(&key);
        self.tally.lookup(which, found.is_some());
        if let Some(v) = found {
            return Ok(v);
        }
        let stamp = || {
            (
                self.generation.load(Ordering::SeqCst),
                local.map(|g| g.load(Ordering::SeqCst)),
            )
        };
        let before = stamp();
        let value = load.await?;
        cache.insert(key.clone(), value.clone());
        if stamp() != before {
            cache.invalidate(&key);
        }
        Ok(value)
    }
}

/// Tells the other instances sharing the database about `change`, which has committed. A
/// failure is logged, not returned: the write stands, and the others' caches expire anyway.
pub(crate) async fn announce(store: &dyn Store, change: Change) {
    if let Err(e) = store.announce(change).await {
        tracing::warn!(error = %e, ?change, "telling other instances about a change failed");
    }
}

/// Applies what other instances announce to `caches`, until the store stops announcing. A
/// reader that fell behind drops everything.
pub async fn follow(mut changes: broadcast::Receiver<Change>, caches: Caches) {
    loop {
        match changes.recv().await {
            Ok(Change::Everything | Change::Listening) | Err(RecvError::Lagged(_)) => {
                caches.tally.heard();
                caches.invalidate();
            }
            Ok(Change::FamilyEnded(family)) => {
                caches.tally.heard();
                caches.forget_family(family);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_family_read_racing_its_rotation_is_not_kept() {
        let c = Caches::new();
        let family = Uuid::new_v4();
        let v = c
            .family(family, async {
                // The rotation commits and forgets the family while this read is in flight.
                c.forget_family(family);
                Ok(None)
            })
            .await
            .unwrap();
        assert!(v.is_none());
        assert!(c.sessions.get(&family).is_none());
    }

    #[tokio::test]
    async fn a_batch_of_alias_lists_racing_an_invalidation_is_not_kept() {
        let c = Caches::new();
        let key = |k: &str| ("policies", format!("directus_access.user:{k}"));
        c.fill(&c.aliases, async {
            // A write commits and invalidates while the page's lists are being read.
            c.invalidate();
            Ok(vec![
                (key("a"), Arc::new(vec![Value::from("p")])),
                (key("b"), Arc::new(Vec::new())),
            ])
        })
        .await
        .unwrap();
        assert!(c.aliases.get(&key("a")).is_none());
        assert!(c.aliases.get(&key("b")).is_none());
        // Without a write meanwhile, they are kept.
        c.fill(&c.aliases, async {
            Ok(vec![(key("a"), Arc::new(vec![Value::from("p")]))])
        })
        .await
        .unwrap();
        assert_eq!(c.aliases.get(&key("a")).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_load_racing_an_invalidation_is_not_kept() {
        let c = Caches::new();
        let v = c
            .get_or_load(Cached::Users, &c.users, "u".to_owned(), async {
                c.invalidate();
                Ok(None)
            })
            .await
            .unwrap();
        assert!(v.is_none());
        assert!(c.users.get("u").is_none());
        c.get_or_load(Cached::Users, &c.users, "u".to_owned(), async { Ok(None) })
            .await
            .unwrap();
        assert!(c.users.get("u").is_some());
    }

    #[tokio::test]
    async fn what_other_instances_announce_clears_everything() {
        let c = Caches::new();
        let (tx, rx) = broadcast::channel(2);
        let follower = tokio::spawn(follow(rx, c.clone()));
        c.sessions.insert(Uuid::new_v4(), None);
        c.users.insert("u".into(), None);
        tx.send(Change::Everything).unwrap();
        while !tx.is_empty() {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(c.sessions.iter().count() + c.users.iter().count(), 0);
        drop(tx);
        follower.await.unwrap();
    }

    #[tokio::test]
    async fn an_ended_family_is_forgotten_alone() {
        let c = Caches::new();
        let (tx, rx) = broadcast::channel(2);
        let (kept, ended) = (Uuid::new_v4(), Uuid::new_v4());
        c.sessions.insert(kept, None);
        c.sessions.insert(ended, None);
        tx.send(Change::FamilyEnded(ended)).unwrap();
        drop(tx);
        follow(rx, c.clone()).await;
        assert!(c.sessions.get(&ended).is_none() && c.sessions.get(&kept).is_some());
    }

    #[test]
    fn changes_travel_as_text_and_unknown_text_means_everything() {
        let f = Uuid::new_v4();
        for change in [Change::Everything, Change::FamilyEnded(f)] {
            assert_eq!(Change::decode(&change.encode()), change);
        }
        for odd in ["", "family", "family not-a-uuid", "role 1", "\u{0}"] {
            assert_eq!(Change::decode(odd), Change::Everything);
        }
    }

    #[tokio::test]
    async fn a_follower_that_fell_behind_forgets_everything() {
        let c = Caches::new();
        let (tx, rx) = broadcast::channel(1);
        c.users.insert("u".into(), None);
        // More than the channel holds, before the follower reads: it has missed some.
        tx.send(Change::Everything).unwrap();
        tx.send(Change::Everything).unwrap();
        drop(tx);
        follow(rx, c.clone()).await;
        assert!(c.users.get("u").is_none());
    }
}
