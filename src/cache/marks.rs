//! Version marks: what this replica knows was committed, per id (a version, or a delete), kept
//! apart from the cache so that no admission or eviction policy can drop one while it matters.
//!
//! A mark matters for two kinds of read that may have started before the change it records:
//! - a cache fill in flight (it read the database before the commit): after storing, the fill
//!   looks at the mark and drops what it stored if the mark is newer (see `items`);
//! - a fill from a streaming standby, which may not have replayed the change yet: it is taken
//!   only if at least as new as the mark, else read again on the primary (see `Store::load`).
//!
//! So a mark is kept until no such read can miss it: until every fill that started before it has
//! ended (fills are bounded in time) and, with standbys, until each serving standby has replayed
//! past a primary WAL position sampled after it (`Store::prune_marks`). A standby may take fills
//! only once it has replayed past every mark ever dropped (`dropped_before`), so a mark dropped
//! early (the map full, or pruned while a standby was down) sends fills to the primary instead.

use std::{
    collections::HashMap,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Most marks held; past it every mark is dropped at once (standbys take no fills until they
/// have replayed past that moment). With pruning, a replica holds about its change rate times
/// the fill bound, far below this.
pub const MAX_MARKS: usize = 1 << 18;

/// What is known to have been committed for one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// This version (or a newer one) exists.
    Version(i64),
    /// The item was deleted; ids are never reused, so this is final.
    Deleted,
}

impl Mark {
    /// The newer of two marks (a delete is newer than any version).
    fn max(self, other: Self) -> Self {
        match (self, other) {
            (Mark::Version(a), Mark::Version(b)) => Mark::Version(a.max(b)),
            _ => Mark::Deleted,
        }
    }

    /// Whether a row read with `version` (`None`: no row) is at least as new as this mark.
    pub fn admits(self, version: Option<i64>) -> bool {
        match self {
            Mark::Version(v) => version.is_some_and(|r| r >= v),
            Mark::Deleted => version.is_none(),
        }
    }
}

/// A point in time on one monotonic clock, in nanoseconds; shared with the standby watch.
pub type Stamp = u64;

/// Now, as a `Stamp`.
pub fn now() -> Stamp {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    // 584 years of nanoseconds fit in a u64.
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `stamp` moved back by `by`, never below 0.
pub fn before(stamp: Stamp, by: Duration) -> Stamp {
    stamp.saturating_sub(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX))
}

/// The marks of one replica.
pub struct Marks {
    map: Mutex<HashMap<i64, (Mark, Stamp)>>,
    /// Marks recorded before this may have been dropped.
    dropped_before: AtomicU64,
    cap: usize,
    /// Test-only fault: marks are dropped silently, as the cache's admission policy used to drop
    /// version floors kept inside it (the simulation must catch this).
    #[cfg(test)]
    pub(crate) forget: std::sync::atomic::AtomicBool,
}

impl Default for Marks {
    fn default() -> Self {
        Self::with_cap(MAX_MARKS)
    }
}

impl Marks {
    /// Marks bounded by `cap` entries.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            dropped_before: AtomicU64::new(0),
            cap: cap.max(1),
            #[cfg(test)]
            forget: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records that `mark` was committed for `id` (keeping the newer of it and what is known).
    pub fn record(&self, id: i64, mark: Mark) {
        #[cfg(test)]
        if self.forget.load(Ordering::Relaxed) {
            return;
        }
        let stamp = now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.cap && !map.contains_key(&id) {
            // Dropping them all at once, and saying so, is safe: standbys wait to catch up.
            map.clear();
            self.dropped_before.fetch_max(stamp, Ordering::AcqRel);
        }
        let entry = map.entry(id).or_insert((mark, stamp));
        *entry = (entry.0.max(mark), stamp);
    }

    /// The mark of `id`, if one is held.
    pub fn get(&self, id: i64) -> Option<Mark> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).map(|(mark, _)| *mark)
    }

    /// Drops the marks recorded before `stamp`.
    pub fn prune(&self, stamp: Stamp) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, at)| *at >= stamp);
        self.dropped_before.fetch_max(stamp, Ordering::AcqRel);
    }

    /// Marks recorded before this may be gone: a standby serves fills only once it has
    /// replayed past a primary position sampled after it.
    pub fn dropped_before(&self) -> Stamp {
        self.dropped_before.load(Ordering::Acquire)
    }

    /// How many marks are held.
    pub fn held(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_the_newest_and_a_delete_is_final() {
        let m = Marks::default();
        m.record(1, Mark::Version(3));
        m.record(1, Mark::Version(2));
        assert_eq!(m.get(1), Some(Mark::Version(3)));
        m.record(1, Mark::Deleted);
        m.record(1, Mark::Version(9));
        assert_eq!(m.get(1), Some(Mark::Deleted));
        assert!(Mark::Version(3).admits(Some(3)) && !Mark::Version(3).admits(Some(2)));
        assert!(!Mark::Version(3).admits(None));
        assert!(Mark::Deleted.admits(None) && !Mark::Deleted.admits(Some(4)));
    }

    #[test]
    fn a_full_map_drops_everything_and_says_since_when() {
        let m = Marks::with_cap(10);
        for id in 0..10 {
            m.record(id, Mark::Version(1));
        }
        assert_eq!(m.dropped_before(), 0);
        let before = now();
        m.record(10, Mark::Version(1));
        assert!(m.dropped_before() >= before, "the drop is announced");
        assert_eq!(m.held(), 1, "only the newest is kept");
        assert_eq!(m.get(10), Some(Mark::Version(1)));
    }

    #[test]
    fn pruning_drops_only_older_marks() {
        let m = Marks::default();
        m.record(1, Mark::Version(1));
        let cut = now();
        m.record(2, Mark::Deleted);
        m.prune(cut);
        assert_eq!(m.get(1), None);
        assert_eq!(m.get(2), Some(Mark::Deleted));
        assert_eq!(m.dropped_before(), cut);
    }
}
