//! Group commit, and its twin for reads: work that waits at the same moment goes to the
//! database together, as one statement (live advances, session-family reads). While
//! every slot is busy, arrivals queue, and the next free slot takes up to [`MAX_BATCH`] of
//! them at once; a lone arrival goes out alone and at once. Each batch runs in a task of its
//! own, so a caller that gives up strands no one whose work rode in its batch, and work whose
//! caller gave up before it left the queue is dropped, never done late. The queue holds at
//! most [`MAX_QUEUE`] entries (abandoned ones are pruned when it fills; past it, callers are
//! told the database is unavailable). A batch that fails is retried one entry at a time
//! (those whose callers still wait), so that one bad entry cannot fail the others.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tessera_store::{StoreError, StoreResult};
use tokio::sync::{Semaphore, oneshot};

/// Entries in one batch at most.
pub(crate) const MAX_BATCH: usize = 32;

/// Entries waiting at most.
pub(crate) const MAX_QUEUE: usize = 4096;

struct Waiting<T, A> {
    item: T,
    answer: oneshot::Sender<StoreResult<A>>,
}

pub(crate) struct Batcher<T, A> {
    queue: Mutex<VecDeque<Waiting<T, A>>>,
    /// Batches in flight at once.
    slots: Arc<Semaphore>,
}

fn lost() -> StoreError {
    StoreError::Backend("a batch ended without an answer".into())
}

impl<T, A> Batcher<T, A>
where
    T: Clone + Send + 'static,
    A: Send + 'static,
{
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Up to a batch of the queued entries whose callers still wait.
    fn take(&self) -> Vec<Waiting<T, A>> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(w) = q.pop_front() else { break };
            if !w.answer.is_closed() {
                batch.push(w);
            }
        }
        batch
    }

    /// Queues `item`; whichever caller gets a free slot first sends what is queued through
    /// `run`, which answers each item of a batch in order.
    pub(crate) async fn submit<R, F>(&self, item: T, run: R) -> StoreResult<A>
    where
        R: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = StoreResult<Vec<A>>> + Send,
    {
        let (answer, mut rx) = oneshot::channel();
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= MAX_QUEUE {
                q.retain(|w| !w.answer.is_closed());
            }
            if q.len() >= MAX_QUEUE {
                return Err(StoreError::Unavailable(
                    "too much work is waiting for the database".into(),
                ));
            }
            q.push_back(Waiting { item, answer });
        }
        let slot = tokio::select! {
            biased;
            r = &mut rx => return r.unwrap_or_else(|_| Err(lost())),
            slot = self.slots.clone().acquire_owned() => slot,
        };
        let slot = slot.map_err(|_| lost())?;
        let batch = self.take();
        if !batch.is_empty() {
            tokio::spawn(async move {
                let _slot = slot;
                let (items, answers): (Vec<T>, Vec<_>) =
                    batch.into_iter().map(|w| (w.item, w.answer)).unzip();
                let alone = items.len() == 1;
                match run(items.clone()).await {
                    Ok(out) => {
                        for (answer, a) in answers.into_iter().zip(out) {
                            let _ = answer.send(Ok(a));
                        }
                    }
                    Err(e) if alone || matches!(e, StoreError::Unavailable(_)) => {
                        for answer in answers {
                            let _ = answer.send(Err(e.clone()));
                        }
                    }
                    Err(_) => {
                        for (answer, item) in answers.into_iter().zip(items) {
                            if answer.is_closed() {
                                continue;
                            }
                            let one = run(vec![item]).await;
                            let one = one.and_then(|v| v.into_iter().next().ok_or_else(lost));
                            let _ = answer.send(one);
                        }
                    }
                }
            });
        }
        rx.await.unwrap_or_else(|_| Err(lost()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// The item no batch holding it survives.
    const BAD: u32 = 1000;

    /// A runner that records its batches, answers each item doubled, fails any batch holding
    /// [`BAD`], and, while `hold` is set, waits for `go` before answering.
    #[derive(Clone, Default)]
    struct Runner {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        hold: Arc<std::sync::atomic::AtomicBool>,
        started: Arc<Notify>,
        go: Arc<Notify>,
        running: Arc<AtomicUsize>,
    }

    impl Runner {
        fn run(&self) -> impl Fn(Vec<u32>) -> BoxRun + Send + Sync + 'static {
            let r = self.clone();
            move |items| {
                let r = r.clone();
                Box::pin(async move {
                    r.batches.lock().unwrap().push(items.clone());
                    r.running.fetch_add(1, Ordering::SeqCst);
                    if r.hold.load(Ordering::SeqCst) {
                        r.started.notify_one();
                        r.go.notified().await;
                    }
                    r.running.fetch_sub(1, Ordering::SeqCst);
                    if items.contains(&BAD) {
                        return Err(StoreError::Backend("bad item".into()));
                    }
                    Ok(items.iter().map(|i| i * 2).collect())
                })
            }
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.batches.lock().unwrap().clone()
        }
    }

    type BoxRun = std::pin::Pin<Box<dyn Future<Output = StoreResult<Vec<u32>>> + Send>>;

    type Handle = tokio::task::JoinHandle<StoreResult<u32>>;

    /// Submits `item` from a task of its own.
    fn submit(b: &Arc<Batcher<u32, u32>>, r: &Runner, item: u32) -> Handle {
        let (b, run) = (b.clone(), r.run());
        tokio::spawn(async move { b.submit(item, run).await })
    }

    /// A batcher with one slot, held by a batch of `1` that waits for `go`; later batches run
    /// at once.
    async fn held() -> (Arc<Batcher<u32, u32>>, Runner, Handle) {
        let b = Arc::new(Batcher::new(1));
        let r = Runner::default();
        r.hold.store(true, Ordering::SeqCst);
        let first = submit(&b, &r, 1);
        r.started.notified().await;
        (b, r, first)
    }

    async fn until_queued(b: &Batcher<u32, u32>, n: usize) {
        while b.queue.lock().unwrap().len() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_item_goes_alone_and_at_once() {
        let b = Batcher::new(1);
        let r = Runner::default();
        assert_eq!(b.submit(4, r.run()).await.unwrap(), 8);
        assert_eq!(r.batches(), vec![vec![4]]);
    }

    #[tokio::test]
    async fn arrivals_while_the_slot_is_busy_go_together_in_order() {
        let (b, r, first) = held().await;
        r.hold.store(false, Ordering::SeqCst);
        let later: Vec<_> = (2..=40).map(|i| submit(&b, &r, i)).collect();
        until_queued(&b, 39).await;
        r.go.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (i, t) in (2..=40).zip(later) {
            assert_eq!(t.await.unwrap().unwrap(), i * 2);
        }
        let batches = r.batches();
        assert_eq!(batches[0], vec![1]);
        assert_eq!(batches[1], (2..=33).collect::<Vec<_>>());
        assert_eq!(batches[2], (34..=40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_item_whose_caller_gave_up_in_the_queue_never_runs() {
        let (b, r, first) = held().await;
        r.hold.store(false, Ordering::SeqCst);
        let abandoned = submit(&b, &r, 2);
        let kept = submit(&b, &r, 3);
        until_queued(&b, 2).await;
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        r.go.notify_one();
        first.await.unwrap().unwrap();
        assert_eq!(kept.await.unwrap().unwrap(), 6);
        assert_eq!(r.batches(), vec![vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_caller_giving_up_mid_batch_strands_no_one() {
        let (b, r, first) = held().await;
        let rider = submit(&b, &r, 5);
        // The batch that holds the slot is running; the caller that sent it leaves.
        first.abort();
        let _ = first.await;
        until_queued(&b, 1).await;
        r.hold.store(false, Ordering::SeqCst);
        r.go.notify_one();
        assert_eq!(rider.await.unwrap().unwrap(), 10);
        assert_eq!(r.running.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn one_bad_item_fails_alone() {
        let (b, r, first) = held().await;
        r.hold.store(false, Ordering::SeqCst);
        let rest: Vec<_> = [12, BAD, 14]
            .into_iter()
            .map(|i| submit(&b, &r, i))
            .collect();
        until_queued(&b, 3).await;
        r.go.notify_one();
        first.await.unwrap().unwrap();
        let out: Vec<_> = futures_answers(rest).await;
        assert_eq!(out[0].as_ref().unwrap(), &24);
        assert!(matches!(out[1], Err(StoreError::Backend(_))));
        assert_eq!(out[2].as_ref().unwrap(), &28);
        assert_eq!(r.batches()[1], vec![12, BAD, 14]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_forgets_abandoned_entries_first() {
        let (b, r, first) = held().await;
        r.hold.store(false, Ordering::SeqCst);
        let waiting: Vec<_> = (0..MAX_QUEUE as u32)
            .map(|i| submit(&b, &r, i + 5000))
            .collect();
        until_queued(&b, MAX_QUEUE).await;
        let refused = b.submit(0, r.run()).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))));
        // Callers that gave up make room.
        for w in &waiting[..10] {
            w.abort();
        }
        tokio::task::yield_now().await;
        let late = submit(&b, &r, 7);
        until_queued(&b, MAX_QUEUE - 9).await;
        r.go.notify_one();
        first.await.unwrap().unwrap();
        assert_eq!(late.await.unwrap().unwrap(), 14);
        for w in waiting.into_iter().skip(10) {
            w.await.unwrap().unwrap();
        }
    }

    async fn futures_answers(
        tasks: Vec<tokio::task::JoinHandle<StoreResult<u32>>>,
    ) -> Vec<StoreResult<u32>> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
