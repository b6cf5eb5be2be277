//! Counts of what the core did, for operators (`GET /server/metrics`): logins and refreshes by
//! outcome, refresh tokens replayed after their grace window, and cache lookups by cache and
//! result. Counting is a few atomic adds; what a count means is decided here, once.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The outcome a login or refresh answer counts as.
fn outcome<T>(r: &Result<T>) -> usize {
    match r {
        Ok(_) => 0,
        Err(Error::InvalidCredentials) => 1,
        Err(Error::UserSuspended) => 2,
        Err(Error::ServiceUnavailable { .. }) => 3,
        Err(_) => 4,
    }
}

/// Outcome labels, in [`outcome`]'s order.
pub const OUTCOMES: [&str; 5] = [
    "success",
    "invalid_credentials",
    "user_suspended",
    "unavailable",
    "other_error",
];

/// The caches whose lookups are counted.
#[derive(Debug, Clone, Copy)]
pub enum Cached {
    StaticTokens,
    Access,
    Sessions,
    Users,
    Aliases,
    Me,
    Permissions,
    Rules,
}

/// Cache labels, in [`Cached`]'s order.
pub const CACHES: [&str; 8] = [
    "static_tokens",
    "access",
    "sessions",
    "users",
    "aliases",
    "me",
    "permissions",
    "rules",
];

#[derive(Default)]
pub struct Tally {
    logins: [AtomicU64; 5],
    refreshes: [AtomicU64; 5],
    replays: AtomicU64,
    hits: [AtomicU64; 8],
    misses: [AtomicU64; 8],
    heard: AtomicU64,
}

/// What [`Tally::read`] gives: each count with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub logins: Vec<(&'static str, u64)>,
    pub refreshes: Vec<(&'static str, u64)>,
    pub replays: u64,
    /// `(cache, hits, misses)`.
    pub caches: Vec<(&'static str, u64, u64)>,
    /// Announcements of other instances heard.
    pub heard: u64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Tally {
    pub(crate) fn login<T>(&self, r: &Result<T>) {
        add(&self.logins[outcome(r)]);
    }

    pub(crate) fn refresh<T>(&self, r: &Result<T>) {
        add(&self.refreshes[outcome(r)]);
    }

    pub(crate) fn replay(&self) {
        add(&self.replays);
    }

    pub(crate) fn lookup(&self, cache: Cached, hit: bool) {
        let counts = if hit { &self.hits } else { &self.misses };
        add(&counts[cache as usize]);
    }

    pub(crate) fn heard(&self) {
        add(&self.heard);
    }

    pub fn read(&self) -> Counts {
        let by = |counts: &[AtomicU64; 5]| {
            OUTCOMES
                .iter()
                .zip(counts)
                .map(|(l, c)| (*l, get(c)))
                .collect()
        };
        Counts {
            logins: by(&self.logins),
            refreshes: by(&self.refreshes),
            replays: get(&self.replays),
            caches: CACHES
                .iter()
                .enumerate()
                .map(|(i, l)| (*l, get(&self.hits[i]), get(&self.misses[i])))
                .collect(),
            heard: get(&self.heard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_under_their_outcome() {
        let t = Tally::default();
        t.login(&Ok(()));
        t.login::<()>(&Err(Error::InvalidCredentials));
        t.login::<()>(&Err(Error::InvalidCredentials));
        t.refresh::<()>(&Err(Error::UserSuspended));
        t.lookup(Cached::Me, true);
        t.lookup(Cached::Me, false);
        t.lookup(Cached::StaticTokens, false);
        let c = t.read();
        assert_eq!(
            &c.logins[..2],
            &[("success", 1), ("invalid_credentials", 2)]
        );
        assert_eq!(c.refreshes[2], ("user_suspended", 1));
        assert_eq!(c.caches[5], ("me", 1, 1));
        assert_eq!(c.caches[0], ("static_tokens", 0, 1));
    }
}
