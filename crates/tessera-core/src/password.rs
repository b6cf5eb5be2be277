//! Password hashing: argon2 PHC strings, compatible both ways with node-argon2 (Directus).
//! Hashing and verification run on one low-priority thread per core, so at most one hash per
//! core is in flight (each default hash holds 64 MiB) and request handling preempts them.
//! Callers wait for a free thread in a bounded queue: a full queue refuses at once (503), and
//! a caller that goes away (its client hung up) leaves the queue without hashing.
//! An unknown account is verified against a dummy hash of the same cost, so it takes as long
//! as a wrong password.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::probe::{NoProbe, Point, Probe};

/// The `HASH_*` settings for new hashes. Defaults are node-argon2's: argon2id, m=65536 KiB,
/// t=3, p=4, 32-byte output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSettings {
    pub memory_cost: u32,
    pub time_cost: u32,
    pub parallelism: u32,
    pub hash_length: usize,
    /// 0 = argon2d, 1 = argon2i, 2 = argon2id.
    pub variant: u8,
    pub associated_data: Option<Vec<u8>>,
}

impl Default for HashSettings {
    fn default() -> Self {
        Self {
            memory_cost: 65536,
            time_cost: 3,
            parallelism: 4,
            hash_length: 32,
            variant: 2,
            associated_data: None,
        }
    }
}

impl HashSettings {
    /// Checks the settings can build an argon2 instance; the message names the problem.
    pub fn hasher(&self) -> std::result::Result<Argon2<'static>, String> {
        let algorithm = match self.variant {
            0 => Algorithm::Argon2d,
            1 => Algorithm::Argon2i,
            2 => Algorithm::Argon2id,
            other => return Err(format!("unknown argon2 type {other} (0, 1 or 2)")),
        };
        let mut b = ParamsBuilder::new();
        b.m_cost(self.memory_cost)
            .t_cost(self.time_cost)
            .p_cost(self.parallelism)
            .output_len(self.hash_length);
        if let Some(data) = &self.associated_data {
            b.data(AssociatedData::new(data).map_err(|e| e.to_string())?);
        }
        let params = b.build().map_err(|e| e.to_string())?;
        Ok(Argon2::new(algorithm, Version::V0x13, params))
    }
}

type HashJob = Box<dyn FnOnce() + Send>;

/// How many hashes may wait for a free hashing thread by default.
pub const DEFAULT_QUEUE_LIMIT: usize = 32;

/// Counters of the hashing service.
#[derive(Debug, Default)]
struct Counters {
    hashed: AtomicU64,
    refused: AtomicU64,
    waiting: AtomicUsize,
}

/// What the hashing service has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashStats {
    /// Hashes computed (new passwords and verifications).
    pub hashed: u64,
    /// Requests refused because the queue was full.
    pub refused: u64,
    /// Requests holding a place in the queue now (waiting for a thread, or for the work that
    /// leads to their hash).
    pub waiting: usize,
}

/// The hashing service: a fixed set of low-priority threads, one per core, fed through a
/// bounded queue.
#[derive(Clone)]
pub struct Passwords {
    settings: Arc<HashSettings>,
    jobs: std::sync::mpsc::Sender<HashJob>,
    /// One permit per hashing thread; a job holds one until its hash is done.
    threads: Arc<Semaphore>,
    concurrency: usize,
    queue_limit: usize,
    counters: Arc<Counters>,
    probe: Arc<dyn Probe>,
    /// A hash of a random password, made on a hashing thread the first time it is needed.
    dummy: Arc<OnceLock<String>>,
}

/// Nice value of the hashing threads: request handling preempts them, so a login storm
/// cannot starve reads, while idle cores still go to logins.
const HASH_NICENESS_PRIORITY: u8 = 22;

fn hash_worker(queue: Arc<Mutex<std::sync::mpsc::Receiver<HashJob>>>) {
    let priority = thread_priority::ThreadPriorityValue::try_from(HASH_NICENESS_PRIORITY)
        .map(thread_priority::ThreadPriority::Crossplatform);
    if let Ok(p) = priority
        && let Err(e) = thread_priority::set_current_thread_priority(p)
    {
        tracing::debug!(error = ?e, "could not lower the hashing thread's priority");
    }
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// A place in the hashing queue. Taken before the work that leads to a hash (a login takes
/// it first of all), so that a full queue refuses before anything else happens; dropped, it
/// leaves the queue, whether it was used, refused, or its caller went away.
pub struct Ticket {
    passwords: Passwords,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.passwords
            .counters
            .waiting
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl Passwords {
    /// A service hashing at most `concurrency` passwords at once (normally the number of
    /// cores) with at most `queue_limit` more waiting.
    pub fn new(settings: HashSettings, concurrency: usize, queue_limit: usize) -> Result<Self> {
        Self::with_probe(settings, concurrency, queue_limit, Arc::new(NoProbe))
    }

    /// As [`Passwords::new`], telling `probe` when a hash is about to run.
    pub fn with_probe(
        settings: HashSettings,
        concurrency: usize,
        queue_limit: usize,
        probe: Arc<dyn Probe>,
    ) -> Result<Self> {
        settings
            .hasher()
            .map_err(|e| Error::Internal(format!("argon2 settings: {e}")))?;
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hash_worker(queue))
                .map_err(|e| Error::Internal(format!("starting a hashing thread: {e}")))?;
        }
        Ok(Self {
            settings: Arc::new(settings),
            jobs,
            threads: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue_limit,
            counters: Arc::new(Counters::default()),
            probe,
            dummy: Arc::new(OnceLock::new()),
        })
    }

    /// How many hashes run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// What the service has done so far.
    pub fn stats(&self) -> HashStats {
        HashStats {
            hashed: self.counters.hashed.load(Ordering::SeqCst),
            refused: self.counters.refused.load(Ordering::SeqCst),
            waiting: self.counters.waiting.load(Ordering::SeqCst),
        }
    }

    /// A place in the queue, or 503 "Under pressure" at once when the queue is full: when
    /// `queue_limit` callers wait beyond the hashing threads that are free.
    pub fn ticket(&self) -> Result<Ticket> {
        let ahead = self.counters.waiting.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket {
            passwords: self.clone(),
        };
        if ahead >= self.queue_limit + self.threads.available_permits() {
            self.counters.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::under_pressure());
        }
        Ok(ticket)
    }

    /// Hashes a new password with the configured settings.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.ticket()?.hash(password).await
    }

    /// Whether `password` matches `phc` (see [`Ticket::verify`]).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        self.ticket()?.verify(password, phc).await
    }
}

impl Ticket {
    /// Runs `f` on a hashing thread once one is free. A caller dropped while waiting leaves the
    /// queue and `f` never runs. Once started, a hash runs to its end and keeps its thread
    /// until then, even if the caller goes.
    async fn run<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let passwords = self.passwords.clone();
        let permit = passwords
            .threads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("hash pool closed".into()))?;
        drop(self);
        passwords.probe.reached(Point::Hashing).await;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let counters = passwords.counters.clone();
        passwords
            .jobs
            .send(Box::new(move || {
                let _thread = permit;
                if reply.is_closed() {
                    return;
                }
                let out = f();
                counters.hashed.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(out);
            }))
            .map_err(|_| Error::Internal("hash pool closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("hash task failed".into()))
    }

    /// Hashes a new password with the configured settings.
    pub async fn hash(self, password: String) -> Result<String> {
        let settings = self.passwords.settings.clone();
        self.run(move || hash_with(&settings, &password)).await?
    }

    /// Whether `password` matches `phc`. With no stored hash the password is checked against
    /// a dummy hash of the same cost, so the answer (false) takes as long.
    pub async fn verify(self, password: String, phc: Option<String>) -> Result<bool> {
        let settings = self.passwords.settings.clone();
        let dummy = self.passwords.dummy.clone();
        self.run(move || {
            let (phc, real) = match phc {
                Some(p) => (p, true),
                None => {
                    let made = dummy.get_or_init(|| {
                        hash_with(&settings, &crate::tokens::random_token()).unwrap_or_default()
                    });
                    (made.clone(), false)
                }
            };
            let ok = Argon2::default()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok();
            ok && real
        })
        .await
    }
}

/// A PHC string for `password` under `settings`.
fn hash_with(settings: &HashSettings, password: &str) -> Result<String> {
    let argon = settings.hasher().map_err(Error::Internal)?;
    argon
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashSettings {
        HashSettings {
            memory_cost: 1024,
            time_cost: 1,
            parallelism: 1,
            ..HashSettings::default()
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = Passwords::new(cheap(), 2, DEFAULT_QUEUE_LIMIT).unwrap();
        let h = p.hash("hunter2".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(p.verify("hunter2".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("hunter3".into(), Some(h)).await.unwrap());
        assert!(!p.verify("x".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn verifies_node_argon2_hashes() {
        let p = Passwords::new(cheap(), 1, DEFAULT_QUEUE_LIMIT).unwrap();
        // Made by node-argon2 (Directus): parameters in m,p,t order; one with associated data.
        let node = "$argon2id$v=19$m=4096,p=1,t=3$c29tZXNhbHRzb21lc2FsdA$Qv0W7pYc+RKVOrvfCRmPWYJpFx2Ww8ZhJ2kuHOPnkJs";
        let reference = HashSettings {
            memory_cost: 4096,
            time_cost: 3,
            parallelism: 1,
            ..HashSettings::default()
        }
        .hasher()
        .unwrap();
        let mut out = [0u8; 32];
        reference
            .hash_password_into(b"password", b"somesaltsomesalt", &mut out)
            .unwrap();
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD_NO_PAD.encode(out);
        let node = node.replace("Qv0W7pYc+RKVOrvfCRmPWYJpFx2Ww8ZhJ2kuHOPnkJs", &expected);
        assert!(
            p.verify("password".into(), Some(node.clone()))
                .await
                .unwrap()
        );
        assert!(!p.verify("wrong".into(), Some(node)).await.unwrap());

        let with_data = HashSettings {
            associated_data: Some(b"directus".to_vec()),
            ..cheap()
        };
        let pd = Passwords::new(with_data, 1, DEFAULT_QUEUE_LIMIT).unwrap();
        let h = pd.hash("pw".into()).await.unwrap();
        assert!(h.contains("data="), "{h}");
        assert!(p.verify("pw".into(), Some(h)).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_abandoned_callers_never_hash() {
        let gate = crate::probe::Gate::new(Point::Hashing);
        let p = Passwords::with_probe(cheap(), 1, 2, gate.clone()).unwrap();
        let hash = |p: &Passwords| {
            let p = p.clone();
            tokio::spawn(async move { p.hash("pw".into()).await })
        };
        // One hash holds the only thread at the gate; two more wait: the queue is full.
        let held = hash(&p);
        gate.arrivals(1).await;
        let queued = [hash(&p), hash(&p)];
        while p.stats().waiting < 2 {
            tokio::task::yield_now().await;
        }
        let refused = p.hash("pw".into()).await.unwrap_err();
        assert_eq!(refused.code(), tessera_proto::ErrorCode::ServiceUnavailable);
        assert_eq!(p.stats().refused, 1);
        // Callers that go away leave the queue at once, and their hashes never run.
        for q in queued {
            q.abort();
        }
        while p.stats().waiting > 0 {
            tokio::task::yield_now().await;
        }
        gate.open();
        assert!(held.await.unwrap().is_ok());
        assert_eq!(p.stats().hashed, 1);
        assert_eq!(gate.arrived(), 1);
    }

    #[test]
    fn bad_settings_are_reported() {
        let bad = HashSettings {
            variant: 7,
            ..HashSettings::default()
        };
        assert!(bad.hasher().unwrap_err().contains("argon2 type"));
    }
}
