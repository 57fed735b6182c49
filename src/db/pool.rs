//! The way every query runs: through a `Pool`, which admits it to a connection (a semaphore with
//! as many permits as the pool has connections), opens its span, and records its duration and
//! any error.
//!
//! sqlx exposes no waiter count and no wait-time hook, so admission is where waiting is measured:
//! requests waiting, time waited, and waits that hit the acquire timeout (answered 503).

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use sea_orm::{ConnAcquireErr, DbErr};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{PoolSize, PoolStats, failure::DbFailure};
use crate::metrics::{Metrics, catalog::*};

/// A kind of database operation (the `db_operation_name` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbOp {
    Select,
    Insert,
    Update,
    Delete,
    List,
}

impl DbOp {
    /// Every operation, in index order.
    pub const ALL: [Self; 5] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::List,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::List => "list",
        }
    }

    /// Whether the operation only reads (and so may run on a standby).
    pub const fn is_read(self) -> bool {
        matches!(self, Self::Select | Self::List)
    }

    /// The span name, `{operation} {table}` as the OpenTelemetry database conventions say.
    pub const fn span_name(self) -> &'static str {
        match self {
            Self::Select => "select data_items",
            Self::Insert => "insert data_items",
            Self::Update => "update data_items",
            Self::Delete => "delete data_items",
            Self::List => "list data_items",
        }
    }
}

/// Admission to one connection pool, and the measures of the queries run through it.
pub struct Pool {
    name: &'static str,
    system: &'static str,
    permits: Semaphore,
    timeout: Duration,
    pending: Gauge,
    wait: Histogram,
    timeouts: Counter,
    idle: Gauge,
    used: Gauge,
    /// By `DbOp`.
    duration: [Histogram; DbOp::ALL.len()],
    /// By `DbOp`, then `DbFailure`.
    errors: [[Counter; DbFailure::ALL.len()]; DbOp::ALL.len()],
    /// By `DbOp`, for the reads only.
    reads: [Option<Counter>; DbOp::ALL.len()],
}

impl Pool {
    /// Pool `name` of database `system` (`sqlite`, `postgresql`) with `size.max` permits;
    /// waiting longer than `timeout` fails.
    pub fn new(
        metrics: &Metrics,
        name: &'static str,
        system: &'static str,
        size: PoolSize,
        timeout: Duration,
    ) -> Self {
        let pool = [("pool", name)];
        metrics
            .gauge(&DB_CONNECTION_MAX, &pool)
            .set(f64::from(size.max));
        metrics
            .gauge(&DB_CONNECTION_IDLE_MIN, &pool)
            .set(f64::from(size.min));
        let duration = DbOp::ALL.map(|op| {
            metrics.histogram(
                &DB_OPERATION_DURATION,
                &[
                    ("db_operation_name", op.as_str()),
                    ("db_system_name", system),
                ],
            )
        });
        let errors = DbOp::ALL.map(|op| {
            DbFailure::ALL.map(|kind| {
                metrics.counter(
                    &DB_OPERATION_ERRORS,
                    &[
                        ("db_operation_name", op.as_str()),
                        ("error_type", kind.as_str()),
                    ],
                )
            })
        });
        let reads = DbOp::ALL.map(|op| {
            op.is_read().then(|| {
                metrics.counter(
                    &DB_READS,
                    &[("pool", name), ("db_operation_name", op.as_str())],
                )
            })
        });
        Self {
            name,
            system,
            permits: Semaphore::new(size.max as usize),
            timeout,
            pending: metrics.gauge(&DB_CONNECTION_PENDING, &pool),
            wait: metrics.histogram(&DB_CONNECTION_WAIT_TIME, &pool),
            timeouts: metrics.counter(&DB_CONNECTION_TIMEOUTS, &pool),
            idle: metrics.gauge(&DB_CONNECTION_COUNT, &[("pool", name), ("state", "idle")]),
            used: metrics.gauge(&DB_CONNECTION_COUNT, &[("pool", name), ("state", "used")]),
            duration,
            errors,
            reads,
        }
    }

    /// The pool's name (the `pool` label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The span of one query of `op` on this pool (a batched read records its batch's size).
    pub fn span(&self, op: DbOp) -> tracing::Span {
        tracing::debug_span!(
            "db.query",
            otel.name = op.span_name(),
            otel.kind = "client",
            db.system.name = self.system,
            db.operation.name = op.as_str(),
            db.collection.name = "data_items",
            db.pool = self.name,
            db.operation.batch.size = tracing::field::Empty,
        )
    }

    /// Runs `query` as operation `op`: waits for a connection permit, opens a span, and records
    /// the duration and any error.
    pub async fn run<T>(
        &self,
        op: DbOp,
        query: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        self.measure(op, 1, query, || self.span(op)).await
    }

    /// Runs `query`, one batch of `reads` reads, as `run` does (one operation: one permit, one
    /// wait, one duration) but with no span of its own, since each read traces its own wait (see
    /// `batch`); each read counts as a read, and a wait that times out fails each of them.
    pub async fn run_batch<T>(
        &self,
        op: DbOp,
        reads: u64,
        query: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        self.measure(op, reads, query, tracing::Span::none).await
    }

    async fn measure<T>(
        &self,
        op: DbOp,
        reads: u64,
        query: impl Future<Output = Result<T, DbErr>>,
        span: impl FnOnce() -> tracing::Span,
    ) -> Result<T, DbErr> {
        if let Some(counter) = &self.reads[op as usize] {
            counter.increment(reads);
        }
        let (result, failed) = match self.admit().await {
            Ok(_permit) => {
                let started = Instant::now();
                let result = query.instrument(span()).await;
                self.duration[op as usize].record(started.elapsed().as_secs_f64());
                (result, 1)
            }
            // No permit: every read in the operation fails (a timeout is answered 503 to each).
            Err(e) => {
                if timed_out(&e) {
                    self.timeouts.increment(reads);
                }
                (Err(e), reads)
            }
        };
        if let Err(e) = &result {
            self.errors[op as usize][DbFailure::of(e) as usize].increment(failed);
        }
        result
    }

    /// Waits for a permit (measured as pending and waited); past the timeout, fails as the pool
    /// itself would (answered 503).
    async fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DbErr> {
        if let Ok(permit) = self.permits.try_acquire() {
            self.wait.record(0.0);
            return Ok(permit);
        }
        let started = Instant::now();
        self.pending.increment(1.0);
        let _pending = Decrement(&self.pending);
        let result = self.acquire().await;
        self.wait.record(started.elapsed().as_secs_f64());
        result
    }

    /// Waits for a permit, at most the timeout.
    async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DbErr> {
        match tokio::time::timeout(self.timeout, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            Err(_elapsed) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }

    /// How long a wait for a connection may last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A read of `op` waited the timeout for a batch to take it: fails as a wait for a
    /// connection would.
    pub fn gave_up(&self, op: DbOp) -> DbErr {
        self.timeouts.increment(1);
        let e = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        self.errors[op as usize][DbFailure::of(&e) as usize].increment(1);
        e
    }

    /// Publishes the pool's current connection counts.
    pub fn sample(&self, stats: PoolStats) {
        let idle = stats.idle.min(stats.open as usize) as f64;
        self.idle.set(idle);
        self.used.set(f64::from(stats.open) - idle);
    }
}

/// Whether a wait for a permit ran out (rather than the pool closing).
fn timed_out(e: &DbErr) -> bool {
    matches!(e, DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
}

/// Decrements the pending gauge however the wait ends, cancellation included.
struct Decrement<'a>(&'a Gauge);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
