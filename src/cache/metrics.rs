//! The item cache's counters and gauges.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use metrics::{Counter, Gauge};
use moka::notification::RemovalCause;

use super::items::Bound;
use crate::metrics::{Metrics, catalog::*};

/// Why an entry left the cache (the `cause` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Pushed out to stay within the capacity.
    Size,
    /// Its time to live ran out.
    Expired,
    /// Removed on purpose.
    Explicit,
    /// Replaced by a newer value (every update of a cached item).
    Replaced,
}

impl Eviction {
    /// Every cause, in index order.
    pub const ALL: [Self; 4] = [Self::Size, Self::Expired, Self::Explicit, Self::Replaced];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Expired => "expired",
            Self::Explicit => "explicit",
            Self::Replaced => "replaced",
        }
    }
}

impl From<RemovalCause> for Eviction {
    fn from(cause: RemovalCause) -> Self {
        match cause {
            RemovalCause::Size => Self::Size,
            RemovalCause::Expired => Self::Expired,
            RemovalCause::Explicit => Self::Explicit,
            RemovalCause::Replaced => Self::Replaced,
        }
    }
}

/// The item cache's counters and gauges.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hit: Counter,
    pub miss: Counter,
    pub coalesced: Counter,
    /// By `Eviction`.
    evicted: [Counter; Eviction::ALL.len()],
    entries: Gauge,
    marks: Gauge,
    bytes: Gauge,
    /// Bytes of bodies held now, kept exactly: added on insert, subtracted on removal.
    bytes_now: Arc<AtomicI64>,
}

impl CacheMetrics {
    pub fn new(metrics: &Metrics, bound: Bound) -> Self {
        let c = [("cache", "items")];
        metrics.gauge(&CACHE_CAPACITY, &c).set(bound.entries as f64);
        metrics
            .gauge(&CACHE_CAPACITY_BYTES, &c)
            .set(bound.bytes.unwrap_or(0) as f64);
        Self {
            hit: metrics.counter(&CACHE_GETS, &[("cache", "items"), ("result", "hit")]),
            miss: metrics.counter(&CACHE_GETS, &[("cache", "items"), ("result", "miss")]),
            coalesced: metrics.counter(&CACHE_LOAD_COALESCED, &c),
            evicted: Eviction::ALL.map(|cause| {
                metrics.counter(
                    &CACHE_EVICTIONS,
                    &[("cache", "items"), ("cause", cause.as_str())],
                )
            }),
            entries: metrics.gauge(&CACHE_ENTRIES, &c),
            marks: metrics.gauge(&CACHE_VERSION_MARKS, &c),
            bytes: metrics.gauge(&CACHE_SIZE_BYTES, &c),
            bytes_now: Arc::default(),
        }
    }

    /// Counts an entry of `bytes` leaving the cache for `cause`.
    pub fn evicted(&self, cause: Eviction, bytes: usize) {
        self.evicted[cause as usize].increment(1);
        self.sub_bytes(bytes);
    }

    pub fn add_bytes(&self, n: usize) {
        self.bytes_now.fetch_add(n as i64, Ordering::Relaxed);
    }

    fn sub_bytes(&self, n: usize) {
        self.bytes_now.fetch_sub(n as i64, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn bytes_now(&self) -> i64 {
        self.bytes_now.load(Ordering::Relaxed)
    }

    pub fn sample(&self, entries: u64) {
        self.entries.set(entries as f64);
        self.bytes
            .set(self.bytes_now.load(Ordering::Relaxed).max(0) as f64);
    }

    /// Publishes how many version marks are held.
    pub fn sample_marks(&self, held: usize) {
        self.marks.set(held as f64);
    }
}
