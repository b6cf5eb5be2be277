//! Named points in the login path where a test can hold a request, so that a race is tested
//! by stopping one side at a known point rather than by hoping for a timing. In production
//! the probe is [`NoProbe`], which returns at once.

use async_trait::async_trait;

/// A point a request passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// A hashing slot is held and the hash is about to run.
    Hashing,
    /// A login attempt has been judged against the attempt limit (let through to a password
    /// check or refused); nothing has been hashed for it yet.
    AttemptJudged,
    /// A login's password matched; its session is not opened yet.
    PasswordVerified,
    /// A password reset's token and new password were checked; the password is not swapped
    /// yet.
    ResetChecked,
}

/// Told when a request reaches a [`Point`]; the request waits until `reached` returns.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    async fn reached(&self, point: Point);
}

/// The production probe: never holds anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

#[async_trait]
impl Probe for NoProbe {
    async fn reached(&self, _point: Point) {}
}

/// A probe for tests: holds every request that reaches one point until [`Gate::open`], and
/// counts the arrivals so a test knows when the requests it sent are held.
pub struct Gate {
    point: Point,
    arrived: tokio::sync::watch::Sender<usize>,
    opened: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    /// A closed gate at `point`.
    pub fn new(point: Point) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            point,
            arrived: tokio::sync::watch::Sender::new(0),
            opened: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Waits until `n` requests in all have reached the point.
    pub async fn arrivals(&self, n: usize) {
        let mut rx = self.arrived.subscribe();
        let _ = rx.wait_for(|a| *a >= n).await;
    }

    /// How many requests have reached the point so far.
    pub fn arrived(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.opened.send_replace(true);
    }

    /// Holds requests again from now on (a test that needed the point open while it set up).
    pub fn close(&self) {
        self.opened.send_replace(false);
    }
}

#[async_trait]
impl Probe for Gate {
    async fn reached(&self, point: Point) {
        if point != self.point {
            return;
        }
        let mut open = self.opened.subscribe();
        self.arrived.send_modify(|a| *a += 1);
        let _ = open.wait_for(|o| *o).await;
    }
}
