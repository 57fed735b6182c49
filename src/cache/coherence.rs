//! Whether this replica's cache may be trusted, as one atomic word: a lease bit (the cache may
//! serve hits and take fills) and an epoch (bumped by every flush). Cache entries carry the
//! epoch they were read in; an entry of another epoch is never served. The hit path reads this
//! word once.
//!
//! In single-instance mode (SQLite, or `--single-instance`) the lease is always held and the
//! epoch never moves. With several replicas (`replication::listener`), the lease is held while this
//! replica's own heartbeats come back through the invalidation channel within the lease bound,
//! and every gap in the channel flushes the cache.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use metrics::{Counter, Gauge};

use crate::metrics::{Metrics, catalog::*};

const LEASE: u64 = 1 << 63;

/// One reading of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State(u64);

impl State {
    /// Whether the cache may serve hits and take fills.
    pub fn serving(self) -> bool {
        self.0 & LEASE != 0
    }

    /// The current epoch: only entries read in it are served.
    pub fn epoch(self) -> u64 {
        self.0 & !LEASE
    }
}

/// Why the cache was flushed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The listener (re)connected: notifications may have been missed before it listened.
    Reconnect,
    /// The listener's connection failed.
    Error,
    /// Nothing, not even a heartbeat, arrived within the lease bound: the connection is presumed
    /// dead and replaced.
    Silence,
    /// This replica's own heartbeat did not come back within the lease bound.
    Lease,
    /// The table was truncated (by hand: the service never does).
    Truncate,
}

impl Flush {
    pub const ALL: [Self; 5] = [
        Self::Reconnect,
        Self::Error,
        Self::Silence,
        Self::Lease,
        Self::Truncate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reconnect => "reconnect",
            Self::Error => "error",
            Self::Silence => "silence",
            Self::Lease => "lease",
            Self::Truncate => "truncate",
        }
    }
}

/// The shared state and its measures.
pub struct Coherence {
    state: AtomicU64,
    /// The lease holds until this many milliseconds after `start`.
    lease_until_ms: AtomicU64,
    /// When the latest flush happened, in milliseconds after `start` (0: never).
    flushed_at_ms: AtomicU64,
    start: Instant,
    bound: Duration,
    held: Gauge,
    flushes: [Counter; Flush::ALL.len()],
}

impl Coherence {
    /// Single-instance: the lease is held for good.
    pub fn single_instance(metrics: &Metrics) -> Self {
        let c = Self::new(metrics, Duration::MAX);
        c.state.store(LEASE, Ordering::Release);
        c.lease_until_ms.store(u64::MAX, Ordering::Release);
        c.held.set(1.0);
        c
    }

    /// With several replicas: no lease until the first heartbeat comes back within `bound`.
    pub fn replicated(metrics: &Metrics, bound: Duration) -> Self {
        Self::new(metrics, bound)
    }

    fn new(metrics: &Metrics, bound: Duration) -> Self {
        let flushes = Flush::ALL.map(|r| {
            metrics.counter(
                &CACHE_FLUSHES,
                &[("cache", "items"), ("reason", r.as_str())],
            )
        });
        let held = metrics.gauge(&CACHE_LEASE_HELD, &[("cache", "items")]);
        held.set(0.0);
        Self {
            state: AtomicU64::new(0),
            lease_until_ms: AtomicU64::new(0),
            flushed_at_ms: AtomicU64::new(0),
            start: Instant::now(),
            bound,
            held,
            flushes,
        }
    }

    /// The state now: one atomic load.
    pub fn now(&self) -> State {
        State(self.state.load(Ordering::Acquire))
    }

    /// The lease bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Milliseconds since this replica started, the clock of heartbeats.
    pub fn clock_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A gap: starts a new epoch (nothing cached before is served again, and no fill that read
    /// the database before now is either) and drops the lease until the next heartbeat returns.
    pub fn flush(&self, reason: Flush) {
        // Before the epoch moves: whoever sees the new epoch sees when it began.
        self.flushed_at_ms.store(self.clock_ms(), Ordering::Release);
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = (current & !LEASE) + 1;
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.lease_until_ms.store(0, Ordering::Release);
        self.held.set(0.0);
        self.flushes[reason as usize].increment(1);
    }

    /// Our heartbeat sent at `sent_ms` came back: every change committed before it was sent has
    /// been delivered, so the lease holds until `sent_ms` plus the bound.
    pub fn heartbeat_returned(&self, sent_ms: u64) {
        let until = sent_ms.saturating_add(self.bound_ms());
        self.lease_until_ms.fetch_max(until, Ordering::AcqRel);
        if self.clock_ms() < until && !self.now().serving() {
            self.state.fetch_or(LEASE, Ordering::AcqRel);
            self.held.set(1.0);
        }
    }

    /// Whether a heartbeat sent at `sent_ms` left after the flush that began `epoch` (read
    /// before calling; epoch 0 began with no flush): then every change committed before that
    /// flush was committed before the heartbeat was sent.
    pub fn sent_in_epoch(&self, epoch: u64, sent_ms: u64) -> bool {
        epoch == 0 || sent_ms > self.flushed_at_ms.load(Ordering::Acquire)
    }

    /// Whether the lease is held but no heartbeat has renewed it in time (then flush with
    /// `Flush::Lease`).
    pub fn lease_overdue(&self) -> bool {
        self.now().serving() && self.clock_ms() >= self.lease_until_ms.load(Ordering::Acquire)
    }

    /// How long the lease still holds, if it is held.
    pub fn lease_left(&self) -> Option<Duration> {
        if !self.now().serving() {
            return None;
        }
        let until = self.lease_until_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(until.saturating_sub(self.clock_ms())))
    }

    fn bound_ms(&self) -> u64 {
        u64::try_from(self.bound.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_move_the_epoch_and_the_lease_follows_heartbeats() {
        let metrics = Metrics::new(true);
        let c = Coherence::replicated(&metrics, Duration::from_secs(1));
        assert!(!c.now().serving(), "no lease before a heartbeat");
        c.heartbeat_returned(c.clock_ms());
        assert!(c.now().serving());
        let e = c.now().epoch();
        c.flush(Flush::Reconnect);
        assert_eq!(c.now().epoch(), e + 1);
        assert!(!c.now().serving(), "a flush drops the lease");
        c.heartbeat_returned(c.clock_ms());
        assert!(c.now().serving(), "the next heartbeat restores it");
        assert_eq!(c.now().epoch(), e + 1, "in the new epoch");

        // Heartbeats sent before the flush that began this epoch prove nothing about it.
        let sent_before = c.clock_ms();
        c.flush(Flush::Error);
        let flushed_at = c.clock_ms();
        assert!(!c.sent_in_epoch(c.now().epoch(), sent_before));
        while c.clock_ms() <= flushed_at {
            std::hint::spin_loop();
        }
        assert!(c.sent_in_epoch(c.now().epoch(), c.clock_ms()));

        let stale = Coherence::replicated(&metrics, Duration::ZERO);
        stale.heartbeat_returned(stale.clock_ms());
        assert!(
            !stale.now().serving(),
            "a heartbeat older than the bound grants nothing"
        );

        let short = Coherence::replicated(&metrics, Duration::from_millis(1));
        short.heartbeat_returned(short.clock_ms());
        assert!(short.now().serving());
        let granted = short.clock_ms();
        while short.clock_ms() < granted + 2 {
            std::hint::spin_loop();
        }
        assert!(short.lease_overdue(), "the lease runs out");
        short.flush(Flush::Lease);
        assert!(!short.now().serving());
        assert!(!short.lease_overdue());
        let single = Coherence::single_instance(&metrics);
        assert!(single.sent_in_epoch(0, 0), "epoch 0 began with no flush");
        assert!(single.now().serving());
        assert!(!single.lease_overdue());
    }
}
