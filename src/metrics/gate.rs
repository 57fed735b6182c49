//! A gate in front of each connection pool: a semaphore with as many permits as the pool has
//! connections. sqlx exposes no waiter count and no wait-time hook, so the gate is where waiting
//! is measured — requests waiting, time waited, and waits that hit the acquire timeout (which
//! end in 503) — all in one place.

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use sea_orm::{ConnAcquireErr, DbErr};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Metrics, names::*};

/// Admission to one pool.
pub struct Gate {
    name: &'static str,
    permits: Semaphore,
    timeout: Duration,
    pending: Gauge,
    wait: Histogram,
    timeouts: Counter,
    idle: Gauge,
    used: Gauge,
}

impl Gate {
    /// A gate for pool `name` with `size` permits; waiting longer than `timeout` fails.
    pub fn new(
        metrics: &Metrics,
        name: &'static str,
        size: u32,
        min: u32,
        timeout: Duration,
    ) -> Self {
        let pool = [("pool", name)];
        metrics.gauge(DB_CONNECTION_MAX, &pool).set(f64::from(size));
        metrics
            .gauge(DB_CONNECTION_IDLE_MIN, &pool)
            .set(f64::from(min));
        Self {
            name,
            permits: Semaphore::new(size as usize),
            timeout,
            pending: metrics.gauge(DB_CONNECTION_PENDING, &pool),
            wait: metrics.histogram(DB_CONNECTION_WAIT_TIME, &pool),
            timeouts: metrics.counter(DB_CONNECTION_TIMEOUTS, &pool),
            idle: metrics.gauge(DB_CONNECTION_COUNT, &[("pool", name), ("state", "idle")]),
            used: metrics.gauge(DB_CONNECTION_COUNT, &[("pool", name), ("state", "used")]),
        }
    }

    /// The pool's label value.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits for a permit; past the timeout, fails as the pool itself would (answered 503).
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, DbErr> {
        if let Ok(permit) = self.permits.try_acquire() {
            self.wait.record(0.0);
            return Ok(permit);
        }
        let started = Instant::now();
        self.pending.increment(1.0);
        let _pending = Decrement(&self.pending);
        let result = tokio::time::timeout(self.timeout, self.permits.acquire()).await;
        self.wait.record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            Err(_elapsed) => {
                self.timeouts.increment(1);
                Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
            }
        }
    }

    /// Publishes the pool's current connection counts.
    pub fn sample(&self, size: u32, idle: usize) {
        let idle = idle.min(size as usize) as f64;
        self.idle.set(idle);
        self.used.set(f64::from(size) - idle);
    }
}

/// Decrements the pending gauge however the wait ends, cancellation included.
struct Decrement<'a>(&'a Gauge);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
