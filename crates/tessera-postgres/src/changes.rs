//! Instances sharing one database, over PostgreSQL's LISTEN/NOTIFY: what one changes, the
//! others hear, and each knows whether it is alone.
//!
//! Every message is a NOTIFY on [`CHANNEL`] whose payload starts with the sender's instance id,
//! so that no instance acts on its own. Each engine that is asked for changes keeps one
//! connection of its own listening (`application_name` [`APPLICATION`]), on a thread of its
//! own (the driver is synchronous), and reconnects after a loss.
//!
//! - `<id> *`: a write committed; everything cached may be stale ([`Change::Everything`]).
//! - `<id> family <uuid>`: a session family ended ([`Change::FamilyEnded`]).
//! - `<id> join`: a new instance is about to serve. Whoever hears it stops counting itself
//!   alone, drops its caches, and answers `<id> ack <joiner> <pid>` with the backend pid of its
//!   listening connection. The joiner serves once every listening connection it counted when
//!   it joined has answered (or after [`JOIN_WAIT`]).
//!
//! An instance is alone only while it listens, found no other listener when it started
//! listening, and has heard no other instance since (any message from another instance ends
//! it). Alone, the caches of what only it can change (session families) are exact; otherwise
//! the core reads them every time. A lost connection ends being alone and clears everything.
//! [`Change::Listening`] goes out once listening (and joining) is done, each time: the server
//! serves only after the first. A silent connection is noticed within the keepalive and TCP
//! user timeouts, by a ping after every quiet second.

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
    Changed(Change),
    Joined(&'a str),
    Answered { joiner: &'a str, pid: Option<i32> },
}

fn read(payload: &str) -> (&str, Heard<'_>) {
    let (from, body) = payload.split_once(' ').unwrap_or((payload, ""));
    let heard = match body.split_once(' ') {
        _ if body == "join" => Heard::Joined(from),
        Some(("ack", rest)) => {
            let (joiner, pid) = rest.split_once(' ').unwrap_or((rest, ""));
            Heard::Answered {
                joiner,
                pid: pid.parse().ok(),
            }
        }
        // `*`, `family <uuid>`, or a message of a newer version (read as "anything changed").
        _ => Heard::Changed(Change::decode(body)),
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
        let me: i32 = c.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        // Whoever listens from here on hears this instance's join; whoever listened before is
        // counted now, and must answer it.
        let others: HashSet<i32> = c
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[&APPLICATION],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if others.is_empty() {
            self.alone.store(true, Ordering::SeqCst);
        } else {
            self.join(c, me, others)?;
        }
        let _ = self.tx.send(Change::Listening);
        loop {
            if self.stopped() {
                return Ok(());
            }
            let next = c.notifications().timeout_iter(QUIET).next()?;
            match next {
                Some(n) => self.heard(c, me, n.payload())?,
                None => drop(c.simple_query("")?),
            }
        }
    }

    /// Tells the others this instance is about to serve, and waits until every listening
    /// connection in `others` has answered.
    fn join(
        &self,
        c: &mut Client,
        me: i32,
        mut others: HashSet<i32>,
    ) -> Result<(), postgres::Error> {
        self.alone.store(false, Ordering::SeqCst);
        notify(c, &format!("{} join", self.id))?;
        let until = Instant::now() + JOIN_WAIT;
        while !others.is_empty() {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                tracing::warn!(
                    unanswered = others.len(),
                    "not every instance answered this one's join; serving anyway"
                );
                return Ok(());
            };
            let next = c.notifications().timeout_iter(left).next()?;
            let Some(n) = next else { continue };
            if let (
                _,
                Heard::Answered {
                    joiner,
                    pid: Some(pid),
                },
            ) = read(n.payload())
                && joiner == self.id
            {
                others.remove(&pid);
            } else {
                self.heard(c, me, n.payload())?;
            }
        }
        Ok(())
    }

    /// Acts on one message; `me` is this listening connection's backend pid.
    fn heard(&self, c: &mut Client, me: i32, payload: &str) -> Result<(), postgres::Error> {
        let (from, heard) = read(payload);
        if from == self.id {
            return Ok(());
        }
        // Another instance exists: whatever it says, this one is not alone.
        if self.alone.load(Ordering::SeqCst) {
            self.not_alone();
        }
        match heard {
            Heard::Changed(change) => {
                let _ = self.tx.send(change);
            }
            Heard::Joined(joiner) => {
                notify(c, &format!("{} ack {joiner} {me}", self.id))?;
            }
            Heard::Answered { .. } => {}
        }
        Ok(())
    }
}
