//! Changes between instances sharing one database, over PostgreSQL's LISTEN/NOTIFY. An
//! announcement is a NOTIFY on [`CHANNEL`], tagged with the announcing instance so that it
//! does not hear itself. Each engine that is asked for changes keeps one connection of its own
//! listening, on a thread of its own (the driver is synchronous); it reconnects after a loss.
//! [`Change::Everything`] goes out each time listening starts (whatever was cached before may
//! have been changed unheard; the first one also tells that this instance now hears the
//! others) and when a loss is noticed. A silent connection is noticed within
//! the keepalive and TCP user timeouts, by a ping after every quiet second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tessera_store::Change;
use tokio::sync::broadcast;

use crate::{Settings, connect};

/// The notification channel every instance listens on.
pub(crate) const CHANNEL: &str = "tessera_changes";

/// Changes a slow reader may fall behind by before it is told to drop everything.
const BACKLOG: usize = 1024;

/// How long the listener waits for a notification before it pings and checks for a stop.
const QUIET: Duration = Duration::from_secs(1);

/// The listening side of one engine: started by the first subscriber, stopped with the engine.
pub(crate) struct Listener {
    changes: broadcast::Sender<Change>,
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// This instance's tag on what it announces.
pub(crate) fn tagged(instance: &str, change: Change) -> String {
    format!("{instance} {}", change.encode())
}

impl Listener {
    pub(crate) fn start(settings: Settings, instance: String) -> Self {
        let (changes, _) = broadcast::channel(BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, halt) = (changes.clone(), stop.clone());
        std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || listen(&settings, &instance, &tx, &halt))
            .expect("spawning the PostgreSQL listener thread");
        Self { changes, stop }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// The name the listening connections go by in `pg_stat_activity`.
pub(crate) const APPLICATION: &str = "tessera-listen";

fn listen(settings: &Settings, instance: &str, tx: &broadcast::Sender<Change>, stop: &AtomicBool) {
    let mine = format!("{instance} ");
    let mut settings = settings.clone();
    settings.config.application_name(APPLICATION);
    let settings = &settings;
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match connect(settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "listening for other instances' changes: retrying");
                std::thread::sleep(QUIET);
                continue;
            }
        };
        let c = &mut conn.client;
        if let Err(e) = c.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "listening for other instances' changes: retrying");
            continue;
        }
        let _ = tx.send(Change::Everything);
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let next = c.notifications().timeout_iter(QUIET).next();
            match next {
                Ok(Some(n)) => {
                    if !n.payload().starts_with(&mine) {
                        let body = n.payload().split_once(' ').map_or("", |(_, b)| b);
                        let _ = tx.send(Change::decode(body));
                    }
                }
                Ok(None) => {
                    if let Err(e) = c.simple_query("") {
                        tracing::warn!(error = %e, "lost the connection that hears other instances");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection that hears other instances");
                    break;
                }
            }
        }
        let _ = tx.send(Change::Everything);
    }
}
