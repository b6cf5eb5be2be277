//! Password hashing: argon2 PHC strings, compatible both ways with node-argon2 (Directus).
//! Hashing and verification run on one low-priority thread per core, so at most one hash per
//! core is in flight (each default hash holds 64 MiB) and request handling preempts them.
//! An unknown account is verified against a dummy hash of the same cost, so it takes as long
//! as a wrong password.

use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, PasswordVerifier, Version};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

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

/// The hashing service: a fixed set of low-priority threads, one per core, fed by a queue.
#[derive(Clone)]
pub struct Passwords {
    settings: Arc<HashSettings>,
    jobs: std::sync::mpsc::Sender<HashJob>,
    dummy: Arc<OnceCell<String>>,
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

impl Passwords {
    /// A service hashing at most `concurrency` passwords at once (normally the number of
    /// cores); further requests queue.
    pub fn new(settings: HashSettings, concurrency: usize) -> Result<Self> {
        settings
            .hasher()
            .map_err(|e| Error::Internal(format!("argon2 settings: {e}")))?;
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..concurrency.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hash_worker(queue))
                .map_err(|e| Error::Internal(format!("starting a hashing thread: {e}")))?;
        }
        Ok(Self {
            settings: Arc::new(settings),
            jobs,
            dummy: Arc::new(OnceCell::new()),
        })
    }

    /// Runs `f` on a hashing thread. A dropped caller does not free the thread early: the
    /// hash finishes, and only then does the next one start.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(f());
            }))
            .map_err(|_| Error::Internal("hash pool closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("hash task failed".into()))
    }

    /// Hashes a new password with the configured settings.
    pub async fn hash(&self, password: String) -> Result<String> {
        let settings = self.settings.clone();
        self.blocking(move || {
            let argon = settings.hasher().map_err(Error::Internal)?;
            argon
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `phc`. With no stored hash the password is checked against
    /// a dummy hash, so the answer (false) takes the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        let (phc, real) = match phc {
            Some(p) => (p, true),
            None => (self.dummy_hash().await?, false),
        };
        let ok = self
            .blocking(move || {
                Argon2::default()
                    .verify_password(password.as_bytes(), phc.as_str())
                    .is_ok()
            })
            .await?;
        Ok(ok && real)
    }

    async fn dummy_hash(&self) -> Result<String> {
        self.dummy
            .get_or_try_init(|| self.hash(crate::tokens::random_token()))
            .await
            .cloned()
    }
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
        let p = Passwords::new(cheap(), 2).unwrap();
        let h = p.hash("hunter2".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(p.verify("hunter2".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("hunter3".into(), Some(h)).await.unwrap());
        assert!(!p.verify("x".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn verifies_node_argon2_hashes() {
        let p = Passwords::new(cheap(), 1).unwrap();
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
        let pd = Passwords::new(with_data, 1).unwrap();
        let h = pd.hash("pw".into()).await.unwrap();
        assert!(h.contains("data="), "{h}");
        assert!(p.verify("pw".into(), Some(h)).await.unwrap());
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
