//! Request limits: where their counters live (memory, the database, or a store the server
//! provides such as Redis), the per-client request limiter (`RATE_LIMITER_*`), and the
//! throttle that slows guessing at login and at password-reset requests with delays that
//! double with every attempt past a free allowance, per client IP and per account.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tessera_store::{Hits, Store, StoreResult};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::tokens::digest;

/// Where limit counters live. Keys are opaque; the limiters below choose them.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// As [`Store::count_hit`].
    async fn hit(&self, key: &str, amount: i64, window_ms: i64, now_ms: i64) -> StoreResult<Hits>;
    /// As [`Store::claim`].
    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool>;
    /// As [`Store::held`].
    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>>;
    /// As [`Store::forget_counts`].
    async fn forget(&self, keys: Vec<String>) -> StoreResult<()>;
}

/// Counters of this process only, bounded: under a flood of keys the least used go first.
pub struct MemoryCounters {
    entries: moka::sync::Cache<String, Hits>,
}

/// Keys one process keeps at most.
const MEMORY_KEYS: u64 = 100_000;

impl Default for MemoryCounters {
    fn default() -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(MEMORY_KEYS)
                .time_to_idle(Duration::from_secs(6 * 3600))
                .build(),
        }
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn hit(&self, key: &str, amount: i64, window_ms: i64, now_ms: i64) -> StoreResult<Hits> {
        let entry = self.entries.entry(key.to_owned()).and_upsert_with(|old| {
            match old.map(|e| e.into_value()) {
                Some(h) if h.until_ms > now_ms => Hits {
                    hits: h.hits + amount,
                    until_ms: h.until_ms,
                },
                _ => Hits {
                    hits: amount,
                    until_ms: now_ms.saturating_add(window_ms),
                },
            }
        });
        Ok(entry.into_value())
    }

    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool> {
        let mut claimed = false;
        self.entries.entry(key.to_owned()).and_upsert_with(|old| {
            match old.map(|e| e.into_value()) {
                Some(h) if h.until_ms > now_ms => h,
                _ => {
                    claimed = true;
                    Hits { hits: 0, until_ms }
                }
            }
        });
        Ok(claimed)
    }

    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        Ok(self
            .entries
            .get(key)
            .map(|h| h.until_ms)
            .filter(|until| *until > now_ms))
    }

    async fn forget(&self, keys: Vec<String>) -> StoreResult<()> {
        for k in keys {
            self.entries.invalidate(&k);
        }
        Ok(())
    }
}

/// Counters in the database every instance shares.
pub struct StoreCounters(pub Arc<dyn Store>);

#[async_trait]
impl Counters for StoreCounters {
    async fn hit(&self, key: &str, amount: i64, window_ms: i64, now_ms: i64) -> StoreResult<Hits> {
        self.0.count_hit(key, amount, window_ms, now_ms).await
    }

    async fn claim(&self, key: &str, until_ms: i64, now_ms: i64) -> StoreResult<bool> {
        self.0.claim(key, until_ms, now_ms).await
    }

    async fn held(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        self.0.held(key, now_ms).await
    }

    async fn forget(&self, keys: Vec<String>) -> StoreResult<()> {
        self.0.forget_counts(keys).await
    }
}

/// A counter store that cannot answer: the request is refused rather than let through
/// unlimited.
fn unreachable(service: &'static str) -> impl FnOnce(tessera_store::StoreError) -> Error {
    move |e| {
        tracing::warn!(error = %e, "rate limiter store failed");
        Error::ServiceUnavailable {
            service,
            reason: "Rate limiter unreachable".into(),
        }
    }
}

/// The client a limit counts under: an IPv4 address, or the /64 an IPv6 address belongs to
/// (one subscriber's network: its other addresses are the same client).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// `RATE_LIMITER_POINTS` requests per `RATE_LIMITER_DURATION`, per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub points: u32,
    pub window_ms: i64,
}

/// The per-client request limiter: a fixed window per IP.
pub struct RateLimiter {
    counters: Arc<dyn Counters>,
    clock: Arc<dyn Clock>,
    limit: Limit,
}

impl RateLimiter {
    pub fn new(counters: Arc<dyn Counters>, clock: Arc<dyn Clock>, limit: Limit) -> Self {
        Self {
            counters,
            clock,
            limit,
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Counts one request of `ip`; refuses it past the limit.
    pub async fn check(&self, ip: IpAddr) -> Result<()> {
        let now = self.clock.now_ms();
        let h = self
            .counters
            .hit(
                &format!("rate:{}", client_key(ip)),
                1,
                self.limit.window_ms,
                now,
            )
            .await
            .map_err(unreachable("rate-limiter"))?;
        if h.hits > i64::from(self.limit.points) {
            return Err(Error::RequestsExceeded {
                limit: self.limit.points,
                retry_after_ms: h.until_ms - now,
                reset_ms: h.until_ms,
            });
        }
        Ok(())
    }
}

/// How the throttle grows its delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Attempts one account may make in a window before delays start.
    pub account_free: u32,
    /// Attempts one client IP may make in a window before delays start.
    pub ip_free: u32,
    /// The first delay; each further attempt doubles it.
    pub first_delay_ms: i64,
    /// The longest delay.
    pub max_delay_ms: i64,
    /// How long attempts are remembered, from the first of a window.
    pub window_ms: i64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account_free: 5,
            ip_free: 20,
            first_delay_ms: 1_000,
            max_delay_ms: 5 * 60_000,
            window_ms: 3_600_000,
        }
    }
}

impl ThrottleSettings {
    /// The wait after the `n`th attempt of a window, when `free` go without one.
    pub fn delay_after(&self, n: i64, free: u32) -> i64 {
        let past = n - i64::from(free);
        if past <= 0 {
            return 0;
        }
        let doublings = u32::try_from(past - 1).unwrap_or(u32::MAX).min(40);
        self.first_delay_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.max_delay_ms)
    }
}

/// Slows repeated attempts of one kind (`login`, `reset`): every attempt is counted when it
/// starts (so that abandoning a request does not dodge the count), and past the free
/// allowance the next attempt from the same IP or for the same account must wait a delay
/// that doubles each time. Keys are the submitted e-mail, not a user, so that a throttled
/// answer says nothing about whether the account exists.
pub struct Throttle {
    kind: &'static str,
    counters: Arc<dyn Counters>,
    clock: Arc<dyn Clock>,
    settings: ThrottleSettings,
}

/// An attempt the throttle let through: what [`Throttle::succeeded`] gives back.
pub struct Attempt {
    ip: Option<String>,
    account: String,
}

impl Throttle {
    pub fn new(
        kind: &'static str,
        counters: Arc<dyn Counters>,
        clock: Arc<dyn Clock>,
        settings: ThrottleSettings,
    ) -> Self {
        Self {
            kind,
            counters,
            clock,
            settings,
        }
    }

    fn key(&self, what: &str, id: &str) -> String {
        format!("{}:{what}:{id}", self.kind)
    }

    /// Counts the attempt under its account and its IP. Within the free allowance it goes
    /// through; past it, it goes through only if no wait runs for that key, and then starts
    /// one (doubling with the count). Of attempts arriving at once, one starts the wait and
    /// the others are refused, so a burst gets no more tries than a patient client.
    pub async fn attempt(&self, ip: Option<IpAddr>, account: &str) -> Result<Attempt> {
        let now = self.clock.now_ms();
        let failed = || unreachable("authentication");
        // Digested: the key is as short for a megabyte of input as for an address, and no
        // address is kept in a shared store.
        let account = self.key("account", &digest(&account.to_ascii_lowercase()));
        let ip = ip.map(|ip| self.key("ip", &client_key(ip)));
        // The IP first: a client already waiting adds nothing under anyone's account.
        let keys = [
            ip.as_ref().map(|k| (k, self.settings.ip_free)),
            Some((&account, self.settings.account_free)),
        ];
        for (key, free) in keys.into_iter().flatten() {
            let h = self
                .counters
                .hit(key, 1, self.settings.window_ms, now)
                .await
                .map_err(failed())?;
            let delay = self.settings.delay_after(h.hits, free);
            if delay == 0 {
                continue;
            }
            let wait = format!("{key}:wait");
            if !self
                .counters
                .claim(&wait, now + delay, now)
                .await
                .map_err(failed())?
            {
                let until = self
                    .counters
                    .held(&wait, now)
                    .await
                    .map_err(failed())?
                    .unwrap_or(now + 1);
                return Err(Error::RequestsExceeded {
                    limit: free,
                    retry_after_ms: until - now,
                    reset_ms: until,
                });
            }
        }
        Ok(Attempt { ip, account })
    }

    /// A login that succeeded: its account starts afresh and its IP gets the attempt back.
    /// A failure here is logged; the login stands.
    pub async fn succeeded(&self, a: Attempt) {
        let now = self.clock.now_ms();
        let mut out = self
            .counters
            .forget(vec![format!("{}:wait", a.account), a.account])
            .await;
        if let (Ok(()), Some(ip)) = (&out, a.ip) {
            out = self
                .counters
                .hit(&ip, -1, self.settings.window_ms, now)
                .await
                .map(drop);
        }
        if let Err(e) = out {
            tracing::warn!(error = %e, kind = self.kind, "clearing the throttle failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn throttle(clock: &ManualClock) -> Throttle {
        Throttle::new(
            "login",
            Arc::new(MemoryCounters::default()),
            Arc::new(clock.clone()),
            ThrottleSettings {
                account_free: 2,
                ip_free: 3,
                first_delay_ms: 1_000,
                max_delay_ms: 4_000,
                window_ms: 60_000,
            },
        )
    }

    fn waits(r: Result<Attempt>) -> i64 {
        match r {
            Err(Error::RequestsExceeded { retry_after_ms, .. }) => retry_after_ms,
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => 0,
        }
    }

    #[test]
    fn an_ipv6_network_is_one_client() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(client_key(IpAddr::from([10, 0, 0, 1])), "10.0.0.1");
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let s = ThrottleSettings {
            first_delay_ms: 1_000,
            max_delay_ms: 5_000,
            ..ThrottleSettings::default()
        };
        let d: Vec<i64> = (1..=9).map(|n| s.delay_after(n, 3)).collect();
        assert_eq!(d, [0, 0, 0, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
        assert_eq!(s.delay_after(i64::MAX, 0), 5_000);
    }

    #[tokio::test]
    async fn an_account_waits_longer_after_each_attempt_past_its_allowance() {
        let clock = ManualClock::new(1_000_000);
        let t = throttle(&clock);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        assert_eq!(waits(t.attempt(ip, "A@x.io").await), 0);
        assert_eq!(waits(t.attempt(ip, "a@x.io").await), 0);
        // The third attempt goes through and starts a first wait.
        assert_eq!(waits(t.attempt(ip, "a@x.io").await), 0);
        assert_eq!(waits(t.attempt(None, "a@x.io").await), 1_000);
        clock.advance_ms(1_000);
        // The fifth (the refused one counted) starts a wait of 4 s, and the IP's first.
        assert_eq!(waits(t.attempt(ip, "a@x.io").await), 0);
        assert_eq!(waits(t.attempt(ip, "b@x.io").await), 1_000);
        // The IP's wait answers first, and the account is not counted meanwhile.
        assert_eq!(waits(t.attempt(ip, "a@x.io").await), 1_000);
        assert_eq!(waits(t.attempt(None, "a@x.io").await), 4_000);
        clock.advance_ms(4_000);
        // A fresh IP does not reset the account's count.
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(waits(t.attempt(other, "a@x.io").await), 0);
        assert_eq!(waits(t.attempt(other, "a@x.io").await), 4_000);
        clock.advance_ms(60_000);
        assert_eq!(waits(t.attempt(ip, "a@x.io").await), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_a_burst_past_the_allowance_one_attempt_goes_through() {
        let clock = ManualClock::new(0);
        let t = throttle(&clock);
        for _ in 0..2 {
            t.attempt(None, "a@x.io").await.unwrap();
        }
        let burst = burst(&t).await;
        assert_eq!(burst.iter().filter(|w| **w == 0).count(), 1, "{burst:?}");
    }

    /// Twenty attempts for one account started together.
    async fn burst(t: &Throttle) -> Vec<i64> {
        let mut set = tokio::task::JoinSet::new();
        let t = Arc::new(Throttle::new(
            "login",
            t.counters.clone(),
            t.clock.clone(),
            t.settings,
        ));
        for _ in 0..20 {
            let t = t.clone();
            set.spawn(async move { waits(t.attempt(None, "a@x.io").await) });
        }
        set.join_all().await
    }

    #[tokio::test]
    async fn success_clears_the_account_and_refunds_the_ip() {
        let clock = ManualClock::new(0);
        let t = throttle(&clock);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..2 {
            t.attempt(ip, "a@x.io").await.unwrap();
        }
        let ok = t.attempt(ip, "a@x.io").await.unwrap();
        t.succeeded(ok).await;
        // The account starts afresh; the IP has used two of its three.
        assert_eq!(waits(t.attempt(None, "a@x.io").await), 0);
        assert_eq!(waits(t.attempt(ip, "b@x.io").await), 0);
        assert_eq!(waits(t.attempt(ip, "c@x.io").await), 0);
        assert_eq!(waits(t.attempt(ip, "d@x.io").await), 1_000);
    }

    #[tokio::test]
    async fn the_request_limiter_refuses_past_its_points_until_the_window_ends() {
        let clock = ManualClock::new(0);
        let l = RateLimiter::new(
            Arc::new(MemoryCounters::default()),
            Arc::new(clock.clone()),
            Limit {
                points: 2,
                window_ms: 1_000,
            },
        );
        let ip = IpAddr::from([10, 0, 0, 1]);
        l.check(ip).await.unwrap();
        clock.advance_ms(400);
        l.check(ip).await.unwrap();
        match l.check(ip).await {
            Err(Error::RequestsExceeded {
                limit: 2,
                retry_after_ms: 600,
                reset_ms: 1_000,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        l.check(IpAddr::from([10, 0, 0, 2])).await.unwrap();
        clock.advance_ms(600);
        l.check(ip).await.unwrap();
    }
}
