//! Reads of single items by id, batched: item reads that arrive while the database is busy with
//! earlier ones go to it together, as one `WHERE id IN (…)` query, instead of one round trip each.
//!
//! At most `lanes` batches are in flight at once. A read that finds a lane free goes out at once,
//! alone, so a quiet service answers as fast as before; under load, reads queue while every lane
//! is busy and leave together in the next batch ("natural batching": no timer, no added wait).
//! Each read is still admitted through the pool (its connection permit and acquire timeout) as
//! part of its batch, counted as one read, and traced as its own `select data_items` span, which
//! covers its wait for the batch and says how many items the batch held (`db.operation.batch.size`).
//!
//! A read waits for a batch at most the pool's acquire timeout, as it would wait for a connection;
//! past it, it fails the same way (503 + Retry-After, counted as a timed-out wait). The pool's
//! pending and wait measures see a batch as one operation: a read queued for a batch is not
//! waiting for a connection (under load, reads queue for batches by design), and that wait shows
//! in its span and its request's latency instead. A batch that gets no connection in time fails
//! each of its reads so; a batch whose query fails answers none of them, and each runs its own
//! query, so every request gets the error its own query met, as without batching. Once taken
//! into a batch, a read waits for its query, which `--db-statement-timeout` bounds. The queue is
//! bounded too (`MAX_QUEUED`): reads that gave up stay in it until drained, so while the
//! database is stuck a full queue fails new reads at once rather than growing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::{ConnAcquireErr, DatabaseConnection, DbErr};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::failure::DbFailure;
use super::pool::{DbOp, Pool};
use super::sql::{entity::Model, items::get_many};

/// Most items one batch asks for.
pub const MAX_BATCH: usize = 64;

/// Most reads queued for batches, live or given up and not yet drained: past it a read fails at
/// once as a pool timeout would (503), instead of piling up while the database is stuck.
const MAX_QUEUED: usize = 8_192;

/// What a read in a batch gets back: the row (if any) and how many reads the batch held, or
/// why the batch failed.
type Reply = Result<(Option<Model>, usize), BatchFailed>;

#[derive(Clone, Copy)]
enum BatchFailed {
    /// No connection became free in time: every read in it fails so.
    PoolTimeout,
    /// The query failed: each read runs on its own, to meet its own error.
    Query,
}

struct Waiter {
    id: i64,
    reply: oneshot::Sender<Reply>,
    /// Set once, by whichever comes first: the dispatcher taking the read into a batch, or the
    /// read giving up on its wait.
    claimed: Arc<AtomicBool>,
}

impl Waiter {
    /// Takes the read into a batch unless it has given up or gone.
    fn take(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel) && !self.reply.is_closed()
    }
}

/// Reads of single items on one pool of one database, batched unless `--db-read-batches 0`.
pub struct ReadBatcher {
    db: DatabaseConnection,
    pool: Arc<Pool>,
    /// `None`: batching is off, each read runs its own query.
    queue: Option<mpsc::Sender<Waiter>>,
}

impl ReadBatcher {
    /// A batcher for reads on `db` through `pool`, with at most `lanes` batches in flight (0:
    /// none, each read alone); it starts its dispatcher task, which ends when the batcher is
    /// dropped.
    pub fn start(db: DatabaseConnection, pool: Arc<Pool>, lanes: u32) -> Self {
        let queue = (lanes > 0).then(|| {
            let (queue, waiting) = mpsc::channel(MAX_QUEUED);
            let lanes = Arc::new(Semaphore::new(lanes as usize));
            tokio::spawn(dispatch(waiting, db.clone(), pool.clone(), lanes));
            queue
        });
        Self { db, pool, queue }
    }

    /// The item with `id`, read in the next batch, or alone if batching is off or its batch
    /// failed (its own query then says why).
    pub async fn get(&self, id: i64) -> Result<Option<Model>, DbErr> {
        if let Some(queue) = &self.queue
            && let Some(answer) = self.in_batch(queue, id).await
        {
            return answer;
        }
        self.pool
            .run(DbOp::Select, super::sql::items::get(&self.db, id))
            .await
    }

    /// `id` read in the next batch; `None` if the batch's query failed (or the dispatcher is
    /// gone), for the read to run alone.
    async fn in_batch(
        &self,
        queue: &mpsc::Sender<Waiter>,
        id: i64,
    ) -> Option<Result<Option<Model>, DbErr>> {
        let span = self.pool.span(DbOp::Select);
        let (reply, mut answer) = oneshot::channel();
        let claimed = Arc::new(AtomicBool::new(false));
        let waiter = Waiter {
            id,
            reply,
            claimed: claimed.clone(),
        };
        match queue.try_send(waiter) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Some(Err(self.pool.gave_up(DbOp::Select)));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        }
        let waited = tokio::time::timeout(self.pool.timeout(), &mut answer)
            .instrument(span.clone())
            .await;
        let reply = match waited {
            Ok(reply) => reply,
            Err(_) if !claimed.swap(true, Ordering::AcqRel) => {
                return Some(Err(self.pool.gave_up(DbOp::Select)));
            }
            // Taken into a batch just as the wait ran out: its answer is on the way.
            Err(_) => answer.instrument(span.clone()).await,
        };
        match reply {
            Ok(Ok((row, size))) => {
                // As an integer attribute (a usize would be exported as text).
                span.record("db.operation.batch.size", size as i64);
                Some(Ok(row))
            }
            Ok(Err(BatchFailed::PoolTimeout)) => {
                Some(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)))
            }
            Ok(Err(BatchFailed::Query)) | Err(_) => None,
        }
    }
}

/// Takes queued reads into batches, one per free lane.
async fn dispatch(
    mut waiting: mpsc::Receiver<Waiter>,
    db: DatabaseConnection,
    pool: Arc<Pool>,
    lanes: Arc<Semaphore>,
) {
    while let Some(first) = waiting.recv().await {
        let Ok(lane) = lanes.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            if w.take() {
                batch.push(w);
            }
            next = (batch.len() < MAX_BATCH)
                .then(|| waiting.try_recv().ok())
                .flatten();
        }
        if batch.is_empty() {
            continue;
        }
        let (db, pool) = (db.clone(), pool.clone());
        tokio::spawn(async move {
            run(&db, &pool, batch).await;
            drop(lane);
        });
    }
}

/// Runs one batch and answers each of its reads.
async fn run(db: &DatabaseConnection, pool: &Pool, mut batch: Vec<Waiter>) {
    batch.sort_unstable_by_key(|w| w.id);
    let mut ids: Vec<i64> = batch.iter().map(|w| w.id).collect();
    ids.dedup();
    let size = batch.len();
    let rows = match pool
        .run_batch(DbOp::Select, size as u64, get_many(db, ids))
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            let why = match DbFailure::of(&e) {
                DbFailure::PoolTimeout => BatchFailed::PoolTimeout,
                DbFailure::Unavailable | DbFailure::Query => BatchFailed::Query,
            };
            for w in batch {
                let _ = w.reply.send(Err(why));
            }
            return;
        }
    };
    // Both sorted by id: walk them together.
    let mut rows = rows.into_iter().peekable();
    let mut waiters = batch.into_iter().peekable();
    while let Some(w) = waiters.next() {
        while rows.next_if(|r| r.id < w.id).is_some() {}
        let row = match rows.peek() {
            Some(r) if r.id == w.id => {
                // The last read of this id takes the row; any before it get a copy.
                if waiters.peek().is_some_and(|next| next.id == w.id) {
                    Some(r.clone())
                } else {
                    rows.next()
                }
            }
            _ => None,
        };
        let _ = w.reply.send(Ok((row, size)));
    }
}
