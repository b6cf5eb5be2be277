//! Where a client keeps its session: in memory, in a JSON file (mode 0600, atomic replace, an
//! advisory lock so processes sharing the file take turns refreshing), or in any custom
//! [`TokenStore`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// The tokens of one session. `Debug` never shows a token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The server this session belongs to (set by the CLI's profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires, in Unix milliseconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |t: &Option<String>| t.as_ref().map(|_| "<hidden>");
        f.debug_struct("Session")
            .field("url", &self.url)
            .field("access_token", &hidden(&self.access_token))
            .field("refresh_token", &hidden(&self.refresh_token))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Held while a refresh runs; dropping it lets the next process in.
pub struct StoreGuard(Option<File>);

impl StoreGuard {
    /// A guard that excludes nobody (stores private to one process).
    pub fn none() -> Self {
        StoreGuard(None)
    }
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            // Closing the file releases the lock too; unlocking first makes the hand-over prompt.
            let _ = f.unlock();
        }
    }
}

/// A place to keep a session. Implement the three methods for a custom store; override
/// [`TokenStore::lock`] if several processes share it.
pub trait TokenStore: Send + Sync + 'static {
    fn load(&self) -> Result<Option<Session>, ClientError>;
    fn save(&self, session: &Session) -> Result<(), ClientError>;
    fn clear(&self) -> Result<(), ClientError>;
    /// Exclusive access across processes for the duration of a refresh. Blocks until granted.
    fn lock(&self) -> Result<StoreGuard, ClientError> {
        Ok(StoreGuard::none())
    }
}

/// A session kept in memory.
#[derive(Default)]
pub struct MemoryStore(Mutex<Option<Session>>);

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> ClientError {
    ClientError::Store("memory store lock poisoned".into())
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Option<Session>, ClientError> {
        Ok(self.0.lock().map_err(poisoned)?.clone())
    }

    fn save(&self, session: &Session) -> Result<(), ClientError> {
        *self.0.lock().map_err(poisoned)? = Some(session.clone());
        Ok(())
    }

    fn clear(&self) -> Result<(), ClientError> {
        *self.0.lock().map_err(poisoned)? = None;
        Ok(())
    }
}

/// A session kept in a JSON file, readable by its owner only.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Store(format!("{}: {e}", path.display()))
}

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> Result<Option<Session>, ClientError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClientError::Store(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&self.path, e)),
        }
    }

    /// Writes a temporary file beside the target and renames it over, so a reader never sees
    /// a half-written session.
    fn save(&self, session: &Session) -> Result<(), ClientError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(
            ".tmp{}-{}",
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = self.path.with_file_name(tmp_name);
        let bytes =
            serde_json::to_vec_pretty(session).map_err(|e| ClientError::Store(e.to_string()))?;
        let mut f = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))
    }

    fn clear(&self) -> Result<(), ClientError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.path, e)),
            _ => Ok(()),
        }
    }

    /// An exclusive advisory lock on `<file>.lock`.
    fn lock(&self) -> Result<StoreGuard, ClientError> {
        let path = self.lock_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let f = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.lock().map_err(|e| io(&path, e))?;
        Ok(StoreGuard(Some(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(r: &str) -> Session {
        Session {
            url: Some("http://x".into()),
            access_token: Some("a".into()),
            refresh_token: Some(r.into()),
            expires_at: Some(1),
        }
    }

    #[test]
    fn debug_hides_tokens() {
        let d = format!("{:?}", session("super-secret-refresh"));
        assert!(!d.contains("super-secret-refresh"));
        assert!(d.contains("<hidden>"));
    }

    #[test]
    fn file_store_round_trip_private_and_atomic() {
        let dir = std::env::temp_dir().join(format!("tessera-client-{}", std::process::id()));
        let store = FileStore::new(dir.join("profile.json"));
        assert_eq!(store.load().unwrap(), None);
        store.save(&session("r1")).unwrap();
        store.save(&session("r2")).unwrap();
        assert_eq!(store.load().unwrap(), Some(session("r2")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        let _g = store.lock().unwrap();
        store.clear().unwrap();
        assert_eq!(store.load().unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
