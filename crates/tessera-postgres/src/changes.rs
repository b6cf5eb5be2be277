//! Instances sharing one database, over PostgreSQL's LISTEN/NOTIFY: what one changes, the
//! others hear, and each knows whether it is alone.
//!
//! Every message is a NOTIFY on [`CHANNEL`] whose payload starts with the sender's instance id,
//! so that no instance acts on its own. Each engine that is asked for changes keeps one
//! connection of its own listening (`application_name` [`APPLICATION`]), on a thread of its
//! own (the driver is synchronous), and reconnects after a loss.
//!
//! - `<id> *`: a write committed; everything cached may be stale ([`Change::Everything`]).
//! - `<id> join`: a new instance is about to serve. Whoever hears it stops counting itself
//!   alone, drops its caches, and answers `<id> ack <joiner>`. The joiner serves once every
//!   instance listening when it joined has answered (or after [`JOIN_WAIT`]).
//!
//! An instance is alone only while it listens, found no other listener when it started
//! listening, and has heard no join since. Alone, the caches of what only it can change (session
//! families) are exact; otherwise the core reads them every time. A lost connection ends being
//! alone and clears everything, and so does listening again, since announcements may have been
//! missed meanwhile. The first [`Change::Everything`] also tells the server that this instance
//! now hears the others. A silent connection is noticed within the keepalive and TCP user
//! timeouts, by a ping after every quiet second.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tessera_store::Change;
use tokio::sync::broadcast;

use crate::{Settings, connect};

/// The notification channel every instance listens on.
pub(crate) const CHANNEL: &str = "tessera_changes";

/// The name the listening connections go by in `pg_stat_activity`.
pub(crate) const APPLICATION: &str = "tessera-listen";

/// Changes a slow reader may fall behind by before it is told to drop everything.
const BACKLOG: usize = 1024;

/// How long the listener waits for a notification before it pings and checks for a stop.
const QUIET: Duration = Duration::from_secs(1);

/// How long a joining instance waits for the others to answer.
const JOIN_WAIT: Duration = Duration::from_secs(5);

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
    /// Starts listening; `alone` is kept up to date from then on.
    pub(crate) fn start(settings: Settings, instance: String, alone: Arc<AtomicBool>) -> Self {
        let (changes, _) = broadcast::channel(BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let me = Me {
            id: instance,
            tx: changes.clone(),
            stop: stop.clone(),
            alone,
        };
        std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || me.listen(settings))
            .expect("spawning the PostgreSQL listener thread");
        Self { changes, stop }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// One message heard from another instance.
enum Heard<'a> {
    Changed,
    Joined(&'a str),
    Answered { joiner: &'a str, by: &'a str },
}

fn read(payload: &str) -> (&str, Heard<'_>) {
    let (from, body) = payload.split_once(' ').unwrap_or((payload, ""));
    let heard = match body.split_once(' ') {
        _ if body == "join" => Heard::Joined(from),
        Some(("ack", joiner)) => Heard::Answered { joiner, by: from },
        // `*`, or a message of a newer version: the safe reading is that anything changed.
        _ => Heard::Changed,
    };
    (from, heard)
}

fn notify(c: &mut Client, payload: &str) -> Result<(), postgres::Error> {
    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .map(drop)
}

struct Me {
    id: String,
    tx: broadcast::Sender<Change>,
    stop: Arc<AtomicBool>,
    alone: Arc<AtomicBool>,
}

impl Me {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Drops whatever this instance cached, and stops counting itself alone.
    fn not_alone(&self) {
        self.alone.store(false, Ordering::SeqCst);
        let _ = self.tx.send(Change::Everything);
    }

    fn listen(self, settings: Settings) {
        let mut settings = settings;
        settings.config.application_name(APPLICATION);
        while !self.stopped() {
            match connect(&settings) {
                Ok(mut conn) => {
                    if let Err(e) = self.session(&mut conn.client) {
                        tracing::warn!(error = %e, "lost the connection that hears other instances");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other instances: retrying");
                    std::thread::sleep(QUIET);
                }
            }
            self.not_alone();
        }
    }

    /// Listens on one connection until it fails or the engine stops.
    fn session(&self, c: &mut Client) -> Result<(), postgres::Error> {
        c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        // Whoever listens from here on hears this instance's join; whoever listened before is
        // counted now, and must answer it.
        let others: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[&APPLICATION],
            )?
            .get(0);
        if others > 0 {
            self.join(c, usize::try_from(others).unwrap_or(usize::MAX))?;
        } else {
            self.alone.store(true, Ordering::SeqCst);
        }
        // Whatever was cached before now may be stale; this also says "listening".
        let _ = self.tx.send(Change::Everything);
        loop {
            if self.stopped() {
                return Ok(());
            }
            let next = c.notifications().timeout_iter(QUIET).next()?;
            match next {
                Some(n) => self.heard(c, n.payload())?,
                None => drop(c.simple_query("")?),
            }
        }
    }

    /// Tells the others this instance is about to serve, and waits for `others` answers.
    fn join(&self, c: &mut Client, others: usize) -> Result<(), postgres::Error> {
        self.alone.store(false, Ordering::SeqCst);
        notify(c, &format!("{} join", self.id))?;
        let until = Instant::now() + JOIN_WAIT;
        let mut answered = HashSet::new();
        while answered.len() < others {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                tracing::warn!(
                    answered = answered.len(),
                    others,
                    "not every instance answered this one's join; serving anyway"
                );
                return Ok(());
            };
            let next = c.notifications().timeout_iter(left).next()?;
            let Some(n) = next else { continue };
            if let (_, Heard::Answered { joiner, by }) = read(n.payload())
                && joiner == self.id
            {
                answered.insert(by.to_owned());
            } else {
                self.heard(c, n.payload())?;
            }
        }
        Ok(())
    }

    fn heard(&self, c: &mut Client, payload: &str) -> Result<(), postgres::Error> {
        let (from, heard) = read(payload);
        if from == self.id {
            return Ok(());
        }
        match heard {
            Heard::Changed => {
                let _ = self.tx.send(Change::Everything);
            }
            Heard::Joined(joiner) => {
                self.not_alone();
                notify(c, &format!("{} ack {joiner}", self.id))?;
            }
            Heard::Answered { .. } => {}
        }
        Ok(())
    }
}
