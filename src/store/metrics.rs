//! The store's metric handles: database operations by kind, and the cache's counters.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Instant,
};

use metrics::{Counter, Gauge, Histogram};
use sea_orm::DbErr;
use tracing::Instrument;

use crate::metrics::{Metrics, gate::Gate, names::*};

/// A kind of database operation (the `db_operation_name` label).
#[derive(Debug, Clone, Copy)]
pub enum DbOp {
    Select = 0,
    Insert = 1,
    Update = 2,
    Delete = 3,
    List = 4,
}

const OPS: [&str; 5] = ["select", "insert", "update", "delete", "list"];
/// Span names, `{operation} {table}` as the OpenTelemetry database conventions name them.
const SPAN_NAMES: [&str; 5] = [
    "select data_items",
    "insert data_items",
    "update data_items",
    "delete data_items",
    "list data_items",
];
const ERRORS: [&str; 3] = ["pool_timeout", "unavailable", "query"];

/// Timing and errors of database operations.
pub struct DbMetrics {
    system: &'static str,
    duration: [Histogram; 5],
    errors: [[Counter; 3]; 5],
}

impl DbMetrics {
    pub fn new(metrics: &Metrics, system: &'static str) -> Self {
        let duration = OPS.map(|op| {
            metrics.histogram(
                DB_OPERATION_DURATION,
                &[("db_operation_name", op), ("db_system_name", system)],
            )
        });
        let errors = OPS.map(|op| {
            ERRORS.map(|kind| {
                metrics.counter(
                    DB_OPERATION_ERRORS,
                    &[("db_operation_name", op), ("error_type", kind)],
                )
            })
        });
        Self {
            system,
            duration,
            errors,
        }
    }

    /// Runs `fut` as operation `op` through `gate`: waits for a connection permit, opens a span,
    /// and records the duration and any error.
    pub async fn run<T>(
        &self,
        op: DbOp,
        gate: &Gate,
        fut: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        let permit = gate.enter().await;
        let result = match permit {
            Ok(_permit) => {
                let span = tracing::debug_span!(
                    "db.query",
                    otel.name = SPAN_NAMES[op as usize],
                    otel.kind = "client",
                    db.system.name = self.system,
                    db.operation.name = OPS[op as usize],
                    db.collection.name = "data_items",
                    db.pool = gate.name(),
                );
                let started = Instant::now();
                let result = fut.instrument(span).await;
                self.duration[op as usize].record(started.elapsed().as_secs_f64());
                result
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.errors[op as usize][error_kind(e)].increment(1);
        }
        result
    }
}

fn error_kind(e: &DbErr) -> usize {
    match e {
        DbErr::ConnectionAcquire(_) => 0,
        e if crate::error::is_unavailable(e) => 1,
        _ => 2,
    }
}

/// The item cache's counters and gauges.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hit: Counter,
    pub miss: Counter,
    pub coalesced: Counter,
    /// By moka's removal cause: size, expired, explicit, replaced.
    pub evicted: [Counter; 4],
    pub entries: Gauge,
    pub bytes: Gauge,
    /// Bytes of bodies held now, kept exactly: added on insert, subtracted on removal.
    pub bytes_now: Arc<AtomicI64>,
}

impl CacheMetrics {
    pub fn new(metrics: &Metrics, capacity: u64) -> Self {
        let c = [("cache", "items")];
        metrics.gauge(CACHE_CAPACITY, &c).set(capacity as f64);
        Self {
            hit: metrics.counter(CACHE_GETS, &[("cache", "items"), ("result", "hit")]),
            miss: metrics.counter(CACHE_GETS, &[("cache", "items"), ("result", "miss")]),
            coalesced: metrics.counter(CACHE_LOAD_COALESCED, &c),
            evicted: ["size", "expired", "explicit", "replaced"].map(|cause| {
                metrics.counter(CACHE_EVICTIONS, &[("cache", "items"), ("cause", cause)])
            }),
            entries: metrics.gauge(CACHE_ENTRIES, &c),
            bytes: metrics.gauge(CACHE_SIZE_BYTES, &c),
            bytes_now: Arc::default(),
        }
    }

    pub fn add_bytes(&self, n: usize) {
        self.bytes_now.fetch_add(n as i64, Ordering::Relaxed);
    }

    pub fn sub_bytes(&self, n: usize) {
        self.bytes_now.fetch_sub(n as i64, Ordering::Relaxed);
    }

    pub fn sample(&self, entries: u64) {
        self.entries.set(entries as f64);
        self.bytes
            .set(self.bytes_now.load(Ordering::Relaxed).max(0) as f64);
    }
}
