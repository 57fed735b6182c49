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
//! bounded too (`queue::MAX_QUEUED`): reads that gave up stay in it until drained, so while the
//! database is stuck a full queue fails new reads at once rather than growing.

use std::sync::Arc;

use sea_orm::{ConnAcquireErr, DatabaseConnection, DbErr};

use super::pool::{DbOp, Pool};
use super::queue::{self, BatchFailed, Job, Outcome, Queue};
use super::sql::{entity::Model, items::get_many};

/// A read in the queue: the id it asks for.
type Waiter = Job<i64, Option<Model>>;

/// Reads of single items on one pool of one database, batched unless `--db-read-batches 0`.
pub struct ReadBatcher {
    db: DatabaseConnection,
    pool: Arc<Pool>,
    /// `None`: batching is off, each read runs its own query.
    queue: Option<Queue<i64, Option<Model>>>,
}

impl ReadBatcher {
    /// A batcher for reads on `db` through `pool`, with at most `lanes` batches in flight (0:
    /// none, each read alone); its dispatcher ends when the batcher is dropped.
    pub fn start(db: DatabaseConnection, pool: Arc<Pool>, lanes: u32) -> Self {
        let (on, through) = (db.clone(), pool.clone());
        let queue = queue::start(
            lanes,
            |_, _| true,
            move |batch| {
                let (db, pool) = (on.clone(), through.clone());
                async move { run(&db, &pool, batch).await }
            },
        );
        Self { db, pool, queue }
    }

    /// The item with `id`, read in the next batch, or alone if batching is off or its batch
    /// failed (its own query then says why).
    pub async fn get(&self, id: i64) -> Result<Option<Model>, DbErr> {
        if let Some(queue) = &self.queue {
            let span = self.pool.span(DbOp::Select);
            match queue::submit(queue, id, self.pool.timeout(), &span).await {
                Outcome::Done(row) => return Ok(row),
                Outcome::GaveUp => return Err(self.pool.gave_up(DbOp::Select)),
                Outcome::NoConnection => {
                    return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
                }
                Outcome::RunAlone => {}
            }
        }
        self.pool
            .run(DbOp::Select, super::sql::items::get(&self.db, id))
            .await
    }
}

/// Runs one batch and answers each of its reads.
async fn run(db: &DatabaseConnection, pool: &Pool, mut batch: Vec<Waiter>) {
    batch.sort_unstable_by_key(|w| w.work);
    let mut ids: Vec<i64> = batch.iter().map(|w| w.work).collect();
    ids.dedup();
    let size = batch.len();
    let rows = match pool
        .run_batch(DbOp::Select, size as u64, get_many(db, ids))
        .await
    {
        Ok(rows) => rows,
        Err(e) => return queue::fail_all(batch.into_iter().map(|w| w.reply), BatchFailed::of(&e)),
    };
    // Both sorted by id: walk them together.
    let mut rows = rows.into_iter().peekable();
    let mut waiters = batch.into_iter().peekable();
    while let Some(w) = waiters.next() {
        while rows.next_if(|r| r.id < w.work).is_some() {}
        let row = match rows.peek() {
            Some(r) if r.id == w.work => {
                // The last read of this id takes the row; any before it get a copy.
                if waiters.peek().is_some_and(|next| next.work == w.work) {
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
