//! Writes of single items, committed together ("group commit"): creates, updates and deletes
//! that arrive while every write lane is busy wait, and go to the database together, as the
//! statements of one transaction, instead of one transaction (and one commit) each. The shape is
//! the read batcher's (both run on `queue`): at most `lanes` batches in flight, no timer (a
//! write that finds a lane free goes at once, alone), a bounded queue, and a wait for a batch
//! bounded by the pool's acquire timeout.
//!
//! What each write keeps, exactly as without batching:
//! - its own outcome: the row it wrote, 404 or 412 (a precondition is checked by its own
//!   statement, against the row as the earlier writes of the batch left it);
//! - its own error: a batch in which any statement fails, or whose commit fails, is rolled back
//!   whole and each of its writes runs again alone, in its own transaction, so one bad write
//!   never fails its neighbours and every write meets the error its own statement meets;
//! - its order: a batch holds writes of one kind; within it, writes run in ascending id order
//!   (creates first), and two writes of the same id keep the order they arrived in. Ascending
//!   order means two batches never wait for each other's row locks in a cycle (PostgreSQL), so
//!   batches cannot deadlock each other;
//! - its measures: each write is counted and traced as its own operation (its span covers its
//!   wait for the batch and records the batch's size); the batch's statement time is recorded
//!   once, under the kind of write it holds.
//!
//! On SQLite there is one writer connection, so one lane: the transactions themselves are what
//! a write costs (and their hand-offs to the driver's thread), and a batch pays them once.
//!
//! The price: a batch waiting on a row lock held elsewhere holds its lane until the lock goes
//! (or the statement timeout), so while every lane waits so, other writes wait for one at most
//! the acquire timeout and fail as a pool timeout would (503), changing nothing.

use std::sync::Arc;

use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait,
};

use super::pool::{DbOp, Pool};
use super::queue::{self, BatchFailed, Job, Outcome, Queue};
use super::sql::entity::Model;
use super::sql::items::{self, Changes, NewItem, Precondition, WriteOutcome};

/// One write of one item.
#[derive(Debug, Clone)]
enum Write {
    Insert(NewItem),
    Update {
        id: i64,
        changes: Changes,
        pre: Precondition,
    },
    Delete {
        id: i64,
        pre: Precondition,
    },
}

/// What a write did.
#[derive(Debug)]
enum Written {
    Inserted(Model),
    Updated(WriteOutcome<Model>),
    Deleted(WriteOutcome<()>),
}

impl Write {
    /// The operation it is measured as.
    pub fn op(&self) -> DbOp {
        match self {
            Self::Insert(_) => DbOp::Insert,
            Self::Update { .. } => DbOp::Update,
            Self::Delete { .. } => DbOp::Delete,
        }
    }

    /// The order it runs in within a batch: creates (no row yet) first, then by id.
    fn order(&self) -> i64 {
        match self {
            Self::Insert(_) => i64::MIN,
            Self::Update { id, .. } | Self::Delete { id, .. } => *id,
        }
    }

    /// Runs its statement on `db` (a connection, or a batch's transaction).
    async fn apply(self, db: &impl ConnectionTrait) -> Result<Written, DbErr> {
        Ok(match self {
            Self::Insert(item) => Written::Inserted(items::insert(db, item).await?),
            Self::Update { id, changes, pre } => {
                Written::Updated(items::update(db, id, changes, &pre).await?)
            }
            Self::Delete { id, pre } => Written::Deleted(items::delete(db, id, &pre).await?),
        })
    }
}

/// A write in the queue.
type Pending = Job<Write, Written>;

/// Writes on the primary's write pool, committed in groups unless `--db-write-batches 0`.
pub struct WriteBatcher {
    db: DatabaseConnection,
    pool: Arc<Pool>,
    /// `None`: batching is off, each write is its own transaction.
    queue: Option<Queue<Write, Written>>,
}

impl WriteBatcher {
    /// A batcher for writes on `db` through `pool`, with at most `lanes` batches in flight (0:
    /// none, each write alone); it starts its dispatcher task, which ends when the batcher is
    /// dropped.
    pub fn start(db: DatabaseConnection, pool: Arc<Pool>, lanes: u32) -> Self {
        let (on, through) = (db.clone(), pool.clone());
        let same_kind = |first: &Write, next: &Write| first.op() == next.op();
        let queue = queue::start(lanes, same_kind, move |batch| {
            let (db, pool) = (on.clone(), through.clone());
            async move { run(&db, &pool, batch).await }
        });
        Self { db, pool, queue }
    }

    /// Creates `item`; the row as stored.
    pub async fn insert(&self, item: NewItem) -> Result<Model, DbErr> {
        match self.write(Write::Insert(item)).await? {
            Written::Inserted(model) => Ok(model),
            _ => Err(mismatched()),
        }
    }

    /// Applies `changes` to item `id` if `pre` holds.
    pub async fn update(
        &self,
        id: i64,
        changes: Changes,
        pre: Precondition,
    ) -> Result<WriteOutcome<Model>, DbErr> {
        match self.write(Write::Update { id, changes, pre }).await? {
            Written::Updated(outcome) => Ok(outcome),
            _ => Err(mismatched()),
        }
    }

    /// Deletes item `id` if `pre` holds.
    pub async fn delete(&self, id: i64, pre: Precondition) -> Result<WriteOutcome<()>, DbErr> {
        match self.write(Write::Delete { id, pre }).await? {
            Written::Deleted(outcome) => Ok(outcome),
            _ => Err(mismatched()),
        }
    }

    /// Applies `write`: in the next batch, or alone if batching is off or its batch was rolled
    /// back.
    async fn write(&self, write: Write) -> Result<Written, DbErr> {
        let op = write.op();
        if let Some(queue) = &self.queue {
            let span = self.pool.span(op);
            match queue::submit(queue, write.clone(), self.pool.timeout(), &span).await {
                Outcome::Done(written) => return Ok(written),
                Outcome::GaveUp => return Err(self.pool.gave_up(op)),
                Outcome::NoConnection => {
                    return Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
                }
                Outcome::RunAlone => {}
            }
        }
        self.pool.run(op, write.apply(&self.db)).await
    }
}

/// A write answered with another kind of result than it asked for: a bug here, never the
/// client's (answered 500).
fn mismatched() -> DbErr {
    DbErr::Custom("a write was answered with another kind of result".into())
}

/// Runs one batch in one transaction and answers each of its writes.
async fn run(db: &DatabaseConnection, pool: &Pool, mut batch: Vec<Pending>) {
    // Stable: two writes of one id keep their order.
    batch.sort_by_key(|p| p.work.order());
    // One kind per batch (see `start`).
    let op = batch.first().map_or(DbOp::Update, |p| p.work.op());
    let size = batch.len();
    // Each caller keeps its own copy to run alone if the batch fails: these are moved, not
    // copied again (a payload is up to 64 KiB).
    let (writes, replies): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|p| (p.work, p.reply)).unzip();
    let applied = pool
        .run_batch(op, size as u64, async {
            if let Some(updates) = one_statement(db, &writes) {
                return update_many(db, &updates).await;
            }
            let txn = db.begin().await?;
            let mut done = Vec::with_capacity(writes.len());
            for w in writes {
                match w.apply(&txn).await {
                    Ok(written) => done.push(written),
                    Err(e) => {
                        // Rolled back here, not left to the transaction's drop (which panics
                        // if it cannot even queue the rollback).
                        let _ = txn.rollback().await;
                        return Err(e);
                    }
                }
            }
            txn.commit().await?;
            Ok(done)
        })
        .await;
    match applied {
        Ok(done) => {
            for (reply, written) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok((written, size)));
            }
        }
        Err(e) => queue::fail_all(replies, BatchFailed::of(&e)),
    }
}

/// The batch as one multi-row `UPDATE` where that is exactly what its writes ask for: PostgreSQL
/// (one statement, one round trip, no transaction around it), all updates
/// without preconditions, of distinct ids (sorted ascending by `run`). Otherwise `None`, and the
/// writes run one by one in a transaction.
fn one_statement<'a>(
    db: &DatabaseConnection,
    writes: &'a [Write],
) -> Option<Vec<(i64, &'a Changes)>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return None;
    }
    let mut updates = Vec::with_capacity(writes.len());
    for w in writes {
        match w {
            Write::Update {
                id,
                changes,
                pre: Precondition::None,
            } if updates.last().is_none_or(|(last, _)| last < id) => {
                updates.push((*id, changes));
            }
            _ => return None,
        }
    }
    Some(updates)
}

/// Runs `updates` as one statement: each answered with its row, or not found.
async fn update_many(
    db: &DatabaseConnection,
    updates: &[(i64, &Changes)],
) -> Result<Vec<Written>, DbErr> {
    let mut rows = items::update_many(db, updates).await?;
    // The rows come back in no promised order: by id, as the updates are.
    rows.sort_unstable_by_key(|m| m.id);
    let mut rows = rows.into_iter().peekable();
    Ok(updates
        .iter()
        .map(|(id, _)| match rows.next_if(|m| m.id == *id) {
            Some(model) => Written::Updated(WriteOutcome::Done(model)),
            None => Written::Updated(WriteOutcome::NotFound),
        })
        .collect())
}
