//! What both batchers (`batch` for reads, `write_batch` for writes) share: a bounded queue of
//! jobs, each with its reply and a claim flag (a job is either taken into a batch or given up by
//! its caller, never both); the dispatcher that takes queued jobs into batches, one per free
//! lane ("natural batching": no timer, a job that finds a lane free goes at once, alone); and the
//! caller's side, a wait bounded like a wait for a connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

/// Most jobs one batch holds.
pub const MAX_BATCH: usize = 64;

/// Most jobs queued, live or given up and not yet drained: past it a job fails at once, as a
/// pool timeout would (503), instead of piling up while the database is stuck.
const MAX_QUEUED: usize = 8_192;

/// Why a batch answered none of its jobs.
#[derive(Debug, Clone, Copy)]
pub enum BatchFailed {
    /// No connection became free in time: every job in it fails so (nothing ran).
    PoolTimeout,
    /// Its statement failed or it was rolled back: each job runs again alone, to meet its own
    /// outcome.
    RunAlone,
}

impl BatchFailed {
    /// What the batch's error `e` means for its jobs.
    pub fn of(e: &sea_orm::DbErr) -> Self {
        match super::failure::DbFailure::of(e) {
            super::failure::DbFailure::PoolTimeout => Self::PoolTimeout,
            _ => Self::RunAlone,
        }
    }
}

/// Answers every job of a failed batch (given as their replies).
pub fn fail_all<R>(replies: impl IntoIterator<Item = oneshot::Sender<Reply<R>>>, why: BatchFailed) {
    for reply in replies {
        let _ = reply.send(Err(why));
    }
}

/// A job's answer from its batch: its result and how many jobs the batch held.
pub type Reply<R> = Result<(R, usize), BatchFailed>;

/// One queued job and where its answer goes.
pub struct Job<T, R> {
    pub work: T,
    pub reply: oneshot::Sender<Reply<R>>,
    /// Set once, by whichever comes first: the dispatcher taking the job into a batch, or the
    /// caller giving up on its wait (then it is never run).
    claimed: Arc<AtomicBool>,
}

impl<T, R> Job<T, R> {
    /// Takes the job into a batch unless its caller has given up or gone.
    fn take(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel) && !self.reply.is_closed()
    }
}

/// The callers' end of a queue.
pub type Queue<T, R> = mpsc::Sender<Job<T, R>>;

/// Starts a dispatcher with at most `lanes` batches in flight (`None` for 0 lanes: no
/// batching). A batch starts with the oldest queued job and takes the jobs queued behind it, up
/// to `MAX_BATCH`, while `fits(first, next)` holds (a job that does not fit starts the next
/// batch); `run` runs it and answers each job. The dispatcher ends when the queue is dropped.
pub fn start<T, R, F, Fut>(lanes: u32, fits: fn(&T, &T) -> bool, run: F) -> Option<Queue<T, R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<Job<T, R>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if lanes == 0 {
        return None;
    }
    let (queue, waiting) = mpsc::channel(MAX_QUEUED);
    let lanes = Arc::new(Semaphore::new(lanes as usize));
    tokio::spawn(dispatch(waiting, lanes, fits, run));
    Some(queue)
}

async fn dispatch<T, R, F, Fut>(
    mut waiting: mpsc::Receiver<Job<T, R>>,
    lanes: Arc<Semaphore>,
    fits: fn(&T, &T) -> bool,
    run: F,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<Job<T, R>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut carried: Option<Job<T, R>> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match waiting.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(lane) = lanes.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Job<T, R>> = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            if batch
                .first()
                .is_some_and(|head| !fits(&head.work, &job.work))
            {
                carried = Some(job);
                break;
            }
            if job.take() {
                batch.push(job);
            }
            next = (batch.len() < MAX_BATCH)
                .then(|| waiting.try_recv().ok())
                .flatten();
        }
        if batch.is_empty() {
            continue;
        }
        let ran = run(batch);
        tokio::spawn(async move {
            ran.await;
            drop(lane);
        });
    }
}

/// How a caller's job ended.
pub enum Outcome<R> {
    /// Its batch answered.
    Done(R),
    /// The queue was full, or no batch took it within the wait: it fails as a pool timeout
    /// (and never runs); the caller counts it so (`Pool::gave_up`).
    GaveUp,
    /// Its batch got no connection in time (counted by the batch, for each of its jobs).
    NoConnection,
    /// Its batch failed, or the dispatcher is gone: it must run alone.
    RunAlone,
}

/// Queues `work` and waits up to `within` for a batch to take it (in `span`, which then records
/// the batch's size), then for its answer; a job taken just as the wait runs out is waited for,
/// since it will run.
pub async fn submit<T, R>(
    queue: &Queue<T, R>,
    work: T,
    within: Duration,
    span: &tracing::Span,
) -> Outcome<R> {
    let (reply, mut answer) = oneshot::channel();
    let claimed = Arc::new(AtomicBool::new(false));
    let job = Job {
        work,
        reply,
        claimed: claimed.clone(),
    };
    match queue.try_send(job) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => return Outcome::GaveUp,
        Err(mpsc::error::TrySendError::Closed(_)) => return Outcome::RunAlone,
    }
    let waited = tokio::time::timeout(within, &mut answer)
        .instrument(span.clone())
        .await;
    let reply = match waited {
        Ok(reply) => reply,
        Err(_) if !claimed.swap(true, Ordering::AcqRel) => return Outcome::GaveUp,
        // Taken into a batch just as the wait ran out: its answer is on the way.
        Err(_) => answer.instrument(span.clone()).await,
    };
    match reply {
        Ok(Ok((result, size))) => {
            // As an integer attribute (a usize would be exported as text).
            span.record("db.operation.batch.size", size as i64);
            Outcome::Done(result)
        }
        Ok(Err(BatchFailed::PoolTimeout)) => Outcome::NoConnection,
        Ok(Err(BatchFailed::RunAlone)) | Err(_) => Outcome::RunAlone,
    }
}
