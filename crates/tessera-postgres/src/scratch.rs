//! Throw-away databases for tests and benchmarks: each [`Scratch`] is a fresh database on the
//! server `TESSERA_TEST_PG` names (default: the local one, trust auth), dropped when the value
//! is dropped. Where no server answers, the caller is told so it can skip loudly — except under
//! `CI=true`, where that is a failure.

use postgres::{Config, NoTls};

/// The administrative connection string scratch databases are created through.
pub fn admin_url() -> String {
    std::env::var("TESSERA_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

/// A database that exists until this is dropped.
pub struct Scratch {
    name: String,
    config: Config,
}

impl Scratch {
    /// Creates a fresh database, or says why it could not. Blocks.
    pub fn create() -> Result<Self, String> {
        let admin: Config = admin_url()
            .parse()
            .map_err(|e| format!("TESSERA_TEST_PG: {e}"))?;
        let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
        let mut client = admin
            .clone()
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect(NoTls)
            .map_err(|e| {
                let hosts = admin.get_hosts();
                format!(
                    "PostgreSQL ({hosts:?}, port {:?}) is not reachable: {e}",
                    admin.get_ports()
                )
            })?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("creating {name}: {e}"))?;
        // Whoever made it, should it outlive its maker.
        if let Some(maker) = std::thread::current().name() {
            let maker = maker.replace('\'', "");
            let _ = client.batch_execute(&format!("COMMENT ON DATABASE {name} IS '{maker}'"));
        }
        let mut config = admin;
        config.dbname(&name);
        Ok(Self { name, config })
    }

    /// Creates a fresh database; `None` (after saying so on stderr) where PostgreSQL is not
    /// reachable outside CI. Panics under `CI=true`, where the tests must run.
    pub fn or_skip(what: &str) -> Option<Self> {
        match Self::create() {
            Ok(s) => Some(s),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{what}: PostgreSQL is required under CI=true: {why}")
            }
            Err(why) => {
                eprintln!("\n*** SKIPPED {what}: {why} ***\n");
                None
            }
        }
    }

    /// How to connect to it.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's address (`host:port`), where it is reached over TCP.
    pub fn address(&self) -> Option<String> {
        let host = match self.config.get_hosts().first()? {
            postgres::config::Host::Tcp(h) => h.clone(),
            _ => return None,
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        Some(format!("{host}:{port}"))
    }

    /// A connection string for it.
    pub fn url(&self) -> String {
        let admin = admin_url();
        match admin.split_whitespace().any(|p| p.starts_with("dbname=")) {
            true => admin
                .split_whitespace()
                .map(|p| {
                    if p.starts_with("dbname=") {
                        format!("dbname={}", self.name)
                    } else {
                        p.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            false => format!("{admin} dbname={}", self.name),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let name = self.name.clone();
        let drop_it = move || -> Result<(), String> {
            let admin: Config = admin_url()
                .parse()
                .map_err(|e: postgres::Error| e.to_string())?;
            let mut client = admin
                .clone()
                .connect_timeout(std::time::Duration::from_secs(3))
                .connect(NoTls)
                .map_err(|e| e.to_string())?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .map_err(|e| e.to_string())
        };
        // The synchronous client runs its own runtime: keep it off any async worker.
        let outcome = std::thread::spawn(drop_it)
            .join()
            .unwrap_or_else(|_| Err("the drop thread panicked".into()));
        if let Err(e) = outcome {
            eprintln!("dropping scratch database {}: {e}", self.name);
        }
    }
}
