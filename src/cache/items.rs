//! The coherent read cache in front of `GET /data/{id}`.
//!
//! Coherence rule: once a write has been acknowledged, no later read may answer an older value.
//! Every change to an entry goes through moka's per-key compute lock (`entry().and_*compute_with`),
//! so loads and post-commit updates of one id are serialized:
//! - a miss loads from the database *inside* the lock and keeps any entry already there, so N
//!   concurrent misses cause one database read and a slow load can never overwrite a newer value
//!   that a writer stored meanwhile (the writer's update waits for the lock, then replaces it);
//! - a writer, after its commit, replaces only an entry that is older than what it wrote (or a
//!   cached "not found"), and never fills an empty slot: the next read loads the truth instead,
//!   so a late writer cannot resurrect an item whose tombstone has already expired;
//! - a delete, after its commit, always leaves a tombstone (ids are never reused).
//!
//! Across replicas (see `coherence` and `replication::listener`): every entry carries the epoch it was read
//! in and is served only in that epoch, so a flush (a gap in the invalidation channel) retires
//! everything cached before it, fills that read the database before it included; while the
//! lease is not held the cache serves nothing and stores nothing; a change notification drops an
//! entry older than the change, under the same per-key lock as everything else.
//!
//! What this replica knows was committed (its own writes and deletes, change notices) is also
//! recorded as a version mark (`marks`), outside the cache: facts about the database, kept in any
//! epoch, with or without the lease, whatever the cache admits or evicts. A fill gets the id's
//! mark (a standby's answer older than it is read again on the primary, see `Store::load`), and
//! after storing its answer looks at the mark again: a notice that arrived meanwhile is applied
//! without waiting for the fill's lock (so one slow fill cannot stall the feed), and the fill
//! drops what it stored if the mark is newer.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::{
    Expiry,
    future::Cache,
    ops::compute::{CompResult, Op},
};

use super::{
    coherence::Coherence,
    edge::EdgePurger,
    marks::{Mark, Marks},
    metrics::CacheMetrics,
    shared::SharedCache,
};
use crate::db::Model;

/// A ready-to-send item: its JSON body and ETag, so a hit costs a lookup and two refcount bumps.
#[derive(Debug)]
pub struct CachedItem {
    pub id: i64,
    pub version: i64,
    /// The ETag's bytes (`"3"`), ready to send: shared, never copied, by every answer.
    pub etag: Bytes,
    pub body: Bytes,
}

impl CachedItem {
    /// The ETag as text (`"3"`).
    pub fn etag_str(&self) -> &str {
        // Made by `etag` from digits and quotes, so always text.
        std::str::from_utf8(&self.etag).unwrap_or_default()
    }
}

impl CachedItem {
    /// Serializes `model` once; the same bytes answer the write and every later hit.
    pub fn from_model(model: &Model) -> Arc<Self> {
        // Serializing a Model (strings, numbers, timestamps, a JSON value) cannot fail.
        let mut body = serde_json::to_vec(model).unwrap_or_default();
        // The serializer doubles its buffer as it goes; a cached body keeps only its bytes.
        body.shrink_to_fit();
        Arc::new(Self {
            id: model.id,
            version: model.version,
            etag: etag(model.version),
            body: Bytes::from(body),
        })
    }
}

impl CachedItem {
    /// The answer a create gave, replayed for a retry with the same `Idempotency-Key`.
    pub fn first_answer(id: i64, body: String) -> Arc<Self> {
        Arc::new(Self {
            id,
            version: 1,
            etag: etag(1),
            body: Bytes::from(body),
        })
    }
}

/// The strong ETag of a version, as the bytes of its header value.
pub fn etag(version: i64) -> Bytes {
    Bytes::from(format!("\"{version}\""))
}

/// What the cache knows about one id.
#[derive(Debug, Clone)]
pub enum Slot {
    Found(Arc<CachedItem>),
    /// The database had no such row when it was loaded (a create replaces this at once).
    Missing,
    /// The item was deleted; ids are never reused, so this is final.
    Deleted,
}

impl Slot {
    /// Bytes of body this entry holds.
    fn bytes(&self) -> usize {
        match self {
            Slot::Found(item) => item.body.len(),
            Slot::Missing | Slot::Deleted => 0,
        }
    }

    /// Whether this answer is at least as new as `mark`.
    fn meets(&self, mark: Option<Mark>) -> bool {
        match (self, mark) {
            (_, None) => true,
            (Slot::Found(item), Some(m)) => m.admits(Some(item.version)),
            (Slot::Missing | Slot::Deleted, Some(m)) => m.admits(None),
        }
    }
}

/// A cache entry: what is known about one id, and the epoch it was learned in.
#[derive(Debug, Clone)]
pub struct Entry {
    epoch: u64,
    slot: Slot,
}

/// A committed change to an item, as the invalidation channel announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or updated, now at this version.
    Written(i64),
    Deleted,
}

/// How a read was answered, for metrics and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// This request loaded the entry from the database.
    Miss,
    /// Another request was already loading it; this one waited and took its result.
    Coalesced,
    /// The cache holds no lease: read from the database, stored nothing.
    Bypass,
}

impl Lookup {
    /// The value recorded on the cache span.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Coalesced => "coalesced",
            Lookup::Bypass => "bypass",
        }
    }
}

struct Ttl {
    found: Duration,
    absent: Duration,
}

impl Expiry<i64, Entry> for Ttl {
    fn expire_after_create(&self, _: &i64, v: &Entry, _: Instant) -> Option<Duration> {
        Some(self.ttl(&v.slot))
    }
    fn expire_after_update(
        &self,
        _: &i64,
        v: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(&v.slot))
    }
}

impl Ttl {
    fn ttl(&self, v: &Slot) -> Duration {
        match v {
            Slot::Found(_) => self.found,
            Slot::Missing | Slot::Deleted => self.absent,
        }
    }
}

/// What bounds the cache: entries, and optionally bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub entries: u64,
    pub bytes: Option<u64>,
}

/// What an entry costs beyond its body, for the byte budget: the entry, the item and its ETag,
/// and moka's own bookkeeping, as measured (resident memory per entry minus the body, in
/// BENCHMARKS.md).
pub const ENTRY_OVERHEAD: u64 = 1024;

/// The item cache; cheap to clone.
#[derive(Clone)]
pub struct ItemCache {
    inner: Cache<i64, Entry>,
    metrics: CacheMetrics,
    coherence: Arc<Coherence>,
    marks: Arc<Marks>,
    /// The fleet's second level, if any: it hears every change and gap this cache hears.
    shared: Option<SharedCache>,
    /// The edge cache's purger (`--edge-max-age`), told of every change and gap.
    edge: Option<EdgePurger>,
}

impl ItemCache {
    /// A cache within `bound`; items live `ttl`, "not found" answers `negative_ttl`.
    pub fn new(
        bound: Bound,
        ttl: Duration,
        negative_ttl: Duration,
        metrics: CacheMetrics,
        coherence: Arc<Coherence>,
    ) -> Self {
        let m = metrics.clone();
        let builder = match bound.bytes {
            None => Cache::builder().max_capacity(bound.entries),
            // moka has one capacity: weigh entries in bytes, but never below the budget's share
            // per entry, so the entry count stays within its own bound too.
            Some(budget) => {
                let share = budget.div_ceil(bound.entries.max(1));
                Cache::builder()
                    .max_capacity(budget)
                    .weigher(move |_id, e: &Entry| {
                        let bytes = e.slot.bytes() as u64 + ENTRY_OVERHEAD;
                        u32::try_from(bytes.max(share)).unwrap_or(u32::MAX)
                    })
            }
        };
        let inner = builder
            .expire_after(Ttl {
                found: ttl,
                absent: negative_ttl,
            })
            .eviction_listener(move |_id, entry: Entry, cause| {
                m.evicted(cause.into(), entry.slot.bytes());
            })
            .build();
        Self {
            inner,
            metrics,
            coherence,
            marks: Arc::new(Marks::default()),
            shared: None,
            edge: None,
        }
    }

    /// This cache telling `edge` of every change and gap.
    pub fn with_edge(mut self, edge: EdgePurger) -> Self {
        self.edge = Some(edge);
        self
    }

    /// The edge cache's purger, if there is an edge.
    pub fn edge(&self) -> Option<&EdgePurger> {
        self.edge.as_ref()
    }

    /// This cache with `shared` as its second level.
    pub fn with_shared(mut self, shared: SharedCache) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The second level, if any.
    pub fn shared(&self) -> Option<&SharedCache> {
        self.shared.as_ref()
    }

    /// The version marks this cache records and fills obey.
    pub fn marks(&self) -> &Arc<Marks> {
        &self.marks
    }

    /// Applies pending evictions and publishes the entry count and size.
    pub async fn sample(&self) {
        self.inner.run_pending_tasks().await;
        self.metrics.sample(self.inner.entry_count());
        self.metrics.sample_marks(self.marks.held());
    }

    /// The hot path: one state reading, one lookup, no database.
    pub async fn get(&self, id: i64) -> Option<Slot> {
        let state = self.coherence.now();
        if !state.serving() {
            return None;
        }
        let entry = self.inner.get(&id).await?;
        (entry.epoch == state.epoch()).then_some(entry.slot)
    }

    /// Answers a miss: loads with `load` under the key's lock unless another request already has
    /// (in this epoch); without the lease, loads and stores nothing. `load` gets the id's mark,
    /// if any: what it returns must be at least that new.
    pub async fn load<F, Fut, E>(&self, id: i64, load: F) -> Result<(Slot, Lookup), E>
    where
        F: FnOnce(Option<Mark>) -> Fut,
        Fut: Future<Output = Result<Slot, E>>,
        E: Send + Sync + 'static,
    {
        let state = self.coherence.now();
        if !state.serving() {
            return Ok((load(self.marks.get(id)).await?, Lookup::Bypass));
        }
        let epoch = state.epoch();
        let marks = &self.marks;
        // What a load answered when it was too old to keep.
        let unkept = std::sync::Mutex::new(None);
        let unkept_ref = &unkept;
        let result = self
            .inner
            .entry(id)
            .and_try_compute_with(|existing| async move {
                match existing.as_ref().map(|e| e.value()) {
                    Some(e) if e.epoch == epoch => Ok(Op::Nop),
                    // Tagged with the epoch read before the load: if a flush came meanwhile,
                    // this entry is never served.
                    _ => {
                        let slot = load(marks.get(id)).await?;
                        // A change heard while loading: answer, but do not keep, the older.
                        if slot.meets(marks.get(id)) {
                            return Ok(Op::Put(Entry { epoch, slot }));
                        }
                        *unkept_ref.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
                        Ok(Op::Remove)
                    }
                }
            })
            .await?;
        Ok(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => {
                let slot = e.into_value().slot;
                self.metrics.add_bytes(slot.bytes());
                // A notice applied between the check above and the store (it takes no lock):
                // its mark is recorded before it removes, so one of the two sees the other.
                if !slot.meets(self.marks.get(id)) {
                    self.inner.invalidate(&id).await;
                }
                (slot, Lookup::Miss)
            }
            CompResult::Unchanged(e) => (e.into_value().slot, Lookup::Coalesced),
            // Stored nothing: a newer change was heard during the load.
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                let slot = unkept.lock().unwrap_or_else(|p| p.into_inner()).take();
                (slot.unwrap_or(Slot::Missing), Lookup::Miss)
            }
        })
    }

    /// The epoch a write starts in; pass it to `publish` after the commit.
    pub fn epoch(&self) -> u64 {
        self.coherence.now().epoch()
    }

    /// After a committed create or update that started in `epoch`: records its mark, and replaces
    /// an older entry or a cached "not found" of that epoch. Never fills an empty slot. After a
    /// flush (the epoch moved during the write) it drops an older entry instead of storing: the
    /// write may have raced with changes whose notices were lost, so the next read loads.
    pub async fn publish(&self, id: i64, item: Arc<CachedItem>, epoch: u64) {
        self.marks.record(id, Mark::Version(item.version));
        let state = self.coherence.now();
        if !state.serving() {
            return;
        }
        if state.epoch() != epoch {
            self.drop_older(id, item.version).await;
            return;
        }
        let result = self
            .inner
            .entry(id)
            .and_compute_with(|existing| {
                // A newer change already heard (a delete whose tombstone a fill overwrote, or a
                // later write's notice): this version must not be stored.
                if !self
                    .marks
                    .get(id)
                    .is_none_or(|m| m.admits(Some(item.version)))
                {
                    return std::future::ready(Op::Nop);
                }
                let op = match existing.as_ref().map(|e| e.value()) {
                    Some(Entry {
                        epoch: e,
                        slot: Slot::Found(old),
                    }) if *e == epoch && old.version < item.version => Op::Put(Entry {
                        epoch,
                        slot: Slot::Found(item),
                    }),
                    Some(Entry {
                        epoch: e,
                        slot: Slot::Missing,
                    }) if *e == epoch => Op::Put(Entry {
                        epoch,
                        slot: Slot::Found(item),
                    }),
                    // An entry of another epoch is never served; the next read replaces it.
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        if let CompResult::ReplacedWith(e) | CompResult::Inserted(e) = result {
            self.metrics.add_bytes(e.value().slot.bytes());
        }
    }

    /// After a committed delete: records it, and leaves a tombstone whatever was there (deletes
    /// are final, so the current epoch may keep it). Takes no key lock: a fill in flight sees
    /// the mark and keeps nothing older.
    pub async fn tombstone(&self, id: i64) {
        self.marks.record(id, Mark::Deleted);
        let state = self.coherence.now();
        if !state.serving() {
            return;
        }
        let entry = Entry {
            epoch: state.epoch(),
            slot: Slot::Deleted,
        };
        self.inner.insert(id, entry).await;
    }

    /// A change committed anywhere (this replica included): records its mark and drops what is
    /// older. Takes no key lock, so a slow fill of the same id cannot hold up the feed. Returns
    /// whether anything changed here.
    pub async fn invalidate(&self, id: i64, change: Change) -> bool {
        if let Some(shared) = &self.shared {
            shared.heard(id, change);
        }
        if let Some(edge) = &self.edge {
            edge.heard(id);
        }
        match change {
            Change::Deleted => {
                let known = self.inner.get(&id).await;
                self.tombstone(id).await;
                !matches!(known.map(|e| e.slot), Some(Slot::Deleted))
            }
            Change::Written(version) => {
                self.marks.record(id, Mark::Version(version));
                self.drop_older(id, version).await
            }
        }
    }

    /// Drops the entry of `id` unless it already holds `version` or newer (or a delete).
    async fn drop_older(&self, id: i64, version: i64) -> bool {
        let current = match self.inner.get(&id).await {
            None => return false,
            Some(e) => e.slot,
        };
        match current {
            Slot::Deleted => false,
            Slot::Found(item) if item.version >= version => false,
            // A newer entry stored between the look and the removal only costs a miss.
            Slot::Found(_) | Slot::Missing => {
                self.inner.invalidate(&id).await;
                true
            }
        }
    }

    /// Retires every entry and drops the lease (see `Coherence::flush`), and frees the memory.
    pub fn flush(&self, reason: super::coherence::Flush) {
        if let Some(shared) = &self.shared {
            shared.flushed();
        }
        if let Some(edge) = &self.edge {
            edge.flushed();
        }
        self.coherence.flush(reason);
        self.inner.invalidate_all();
    }

    /// The coherence state this cache follows.
    pub fn coherence(&self) -> &Arc<Coherence> {
        &self.coherence
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;

    fn item(id: i64, version: i64) -> Arc<CachedItem> {
        Arc::new(CachedItem {
            id,
            version,
            etag: etag(version),
            body: Bytes::from(format!("v{version}")),
        })
    }

    fn cache_with(coherence: Coherence) -> ItemCache {
        let metrics = crate::metrics::Metrics::new(true);
        ItemCache::new(
            Bound {
                entries: 100,
                bytes: None,
            },
            Duration::from_secs(60),
            Duration::from_secs(60),
            CacheMetrics::new(
                &metrics,
                Bound {
                    entries: 100,
                    bytes: None,
                },
            ),
            Arc::new(coherence),
        )
    }

    fn cache() -> ItemCache {
        cache_with(Coherence::single_instance(&crate::metrics::Metrics::new(
            true,
        )))
    }

    /// A replicated cache whose lease is held (its heartbeat just came back).
    fn replicated() -> ItemCache {
        let metrics = crate::metrics::Metrics::new(true);
        let c = Coherence::replicated(&metrics, Duration::from_secs(60));
        c.heartbeat_returned(c.clock_ms());
        cache_with(c)
    }

    type Loaded = Result<(Slot, Lookup), std::convert::Infallible>;

    /// Fills a cache bounded by `bound` with 200 items of `body` bytes; returns its entries and
    /// the bytes of body it holds.
    async fn fill_bounded(bound: Bound, body: usize) -> (u64, u64) {
        let metrics = crate::metrics::Metrics::new(true);
        let coherence = Arc::new(Coherence::single_instance(&metrics));
        let c = ItemCache::new(
            bound,
            Duration::from_secs(60),
            Duration::from_secs(60),
            CacheMetrics::new(&metrics, bound),
            coherence,
        );
        for id in 0..200 {
            let it = Arc::new(CachedItem {
                id,
                version: 1,
                etag: etag(1),
                body: Bytes::from(vec![b'x'; body]),
            });
            let loaded: Loaded = c.load(id, |_| async { Ok(Slot::Found(it)) }).await;
            assert!(loaded.is_ok());
            c.inner.run_pending_tasks().await;
        }
        c.inner.run_pending_tasks().await;
        let bytes = c.inner.iter().map(|(_, e)| e.slot.bytes() as u64).sum();
        (c.inner.entry_count(), bytes)
    }

    #[tokio::test]
    async fn a_byte_budget_bounds_large_items_and_the_count_still_bounds_small_ones() {
        // 64 KiB bodies, room for 100 entries but only ~10 of them by bytes.
        let budget = 10 * (65_536 + ENTRY_OVERHEAD);
        let big = Bound {
            entries: 100,
            bytes: Some(budget),
        };
        let (entries, bytes) = fill_bounded(big, 65_536).await;
        assert!(entries > 0 && entries <= 10, "{entries} entries");
        assert!(bytes + entries * ENTRY_OVERHEAD <= budget, "{bytes} bytes");
        // Tiny bodies under a large budget: the entry count is the bound that bites.
        let small = Bound {
            entries: 20,
            bytes: Some(1 << 30),
        };
        let (entries, _) = fill_bounded(small, 10).await;
        assert!(entries > 0 && entries <= 20, "{entries} entries");
        // Without a budget: the count alone, whatever the size.
        let count_only = Bound {
            entries: 50,
            bytes: None,
        };
        let (entries, bytes) = fill_bounded(count_only, 65_536).await;
        assert!(entries > 10 && entries <= 50, "{entries} entries");
        assert!(
            bytes > budget,
            "64 KiB items are not weighed without a budget"
        );
    }

    /// The bytes gauge is kept by hand (added on a fill, taken off by the eviction listener):
    /// under concurrent fills, replacements and evictions it still ends equal to what the cache
    /// holds, and what it holds is within the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bytes_held_are_counted_exactly_under_concurrent_fills() {
        const BODY: usize = 8_000;
        let bound = Bound {
            entries: 1_000,
            bytes: Some(5 * (BODY as u64 + ENTRY_OVERHEAD + 200)),
        };
        let metrics = crate::metrics::Metrics::new(true);
        let counted = CacheMetrics::new(&metrics, bound);
        let c = ItemCache::new(
            bound,
            Duration::from_secs(60),
            Duration::from_secs(60),
            counted.clone(),
            Arc::new(Coherence::single_instance(&metrics)),
        );
        let body = |id: i64, extra: usize| Bytes::from(vec![b'x'; BODY + id as usize + extra]);
        let writers = (0..4i64).map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for n in 0..300i64 {
                    let id = (n * 7 + t * 13) % 30;
                    let it = Arc::new(CachedItem {
                        id,
                        version: 1,
                        etag: etag(1),
                        body: body(id, 0),
                    });
                    let loaded: Loaded = c
                        .load(id, |_| async move {
                            tokio::task::yield_now().await;
                            Ok(Slot::Found(it))
                        })
                        .await;
                    assert!(loaded.is_ok());
                    if n % 3 == 0 {
                        let newer = Arc::new(CachedItem {
                            id,
                            version: 2 + n,
                            etag: etag(2 + n),
                            body: body(id, 100),
                        });
                        c.publish(id, newer, c.epoch()).await;
                    }
                }
            })
        });
        let writers: Vec<_> = writers.collect();
        let sampler = {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    c.sample().await;
                    tokio::task::yield_now().await;
                }
            })
        };
        for w in writers {
            w.await.expect("writer");
        }
        sampler.await.expect("sampler");
        c.inner.run_pending_tasks().await;
        let held: u64 = c.inner.iter().map(|(_, e)| e.slot.bytes() as u64).sum();
        assert_eq!(counted.bytes_now() as u64, held);
        let entries = c.inner.entry_count();
        assert!(entries >= 1, "the cache holds what fits");
        assert!(held + entries * ENTRY_OVERHEAD <= bound.bytes.unwrap_or(0));
    }

    /// A miss on `snapshot`'s id whose database read (returning `snapshot`) has happened and
    /// which holds the key's lock until `release` is sent.
    async fn slow_load(
        cache: &ItemCache,
        snapshot: Arc<CachedItem>,
    ) -> (tokio::task::JoinHandle<Loaded>, oneshot::Sender<()>) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let cache = cache.clone();
        let reader = tokio::spawn(async move {
            cache
                .load(snapshot.id, |_| async move {
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Ok(Slot::Found(snapshot))
                })
                .await
        });
        started_rx.await.unwrap();
        (reader, release_tx)
    }

    async fn fill(cache: &ItemCache, id: i64, slot: Slot) {
        let _ = cache
            .load(id, |_| async { Ok::<_, std::convert::Infallible>(slot) })
            .await;
    }

    fn version(slot: Option<Slot>) -> Option<i64> {
        match slot {
            Some(Slot::Found(i)) => Some(i.version),
            Some(Slot::Deleted) => Some(-1),
            Some(Slot::Missing) => Some(0),
            None => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_load_once() {
        let cache = cache();
        let loads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .load(7, |_| async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, std::convert::Infallible>(Slot::Found(item(7, 1)))
                        })
                        .await
                        .map(|(_, lookup)| lookup)
                })
            })
            .collect();
        let mut lookups = Vec::new();
        for t in tasks {
            lookups.push(t.await.unwrap().unwrap());
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load for 32 concurrent misses"
        );
        assert_eq!(lookups.iter().filter(|l| **l == Lookup::Miss).count(), 1);
        assert_eq!(
            lookups.iter().filter(|l| **l == Lookup::Coalesced).count(),
            31
        );
    }

    /// The classic race: a read-miss loads v1, a writer commits v2 and publishes while the load is
    /// still running; the slow load must not leave v1 in the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_load_cannot_overwrite_newer_write() {
        let cache = cache();
        let (reader, release) = slow_load(&cache, item(1, 1)).await;
        let writer = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.publish(1, item(1, 2), cache.epoch()).await })
        };
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        reader.await.unwrap().unwrap();
        writer.await.unwrap();
        // v2 itself, or nothing (the fill saw v2's mark and kept nothing; the next read loads).
        let now = version(cache.get(1).await);
        assert!(matches!(now, Some(2) | None), "{now:?}");
        if now.is_none() {
            fill_expecting(&cache, 1, Some(Mark::Version(2)), Slot::Found(item(1, 2))).await;
        }
        assert_eq!(version(cache.get(1).await), Some(2));
    }

    #[tokio::test]
    async fn publish_keeps_newer_and_never_fills_empty_or_resurrects() {
        let cache = cache();
        cache.publish(1, item(1, 3), cache.epoch()).await;
        assert_eq!(
            version(cache.get(1).await),
            None,
            "an empty slot stays empty"
        );

        let _ = cache
            .load(1, |_| async {
                Ok::<_, std::convert::Infallible>(Slot::Found(item(1, 3)))
            })
            .await;
        cache.publish(1, item(1, 2), cache.epoch()).await;
        assert_eq!(
            version(cache.get(1).await),
            Some(3),
            "older write does not replace newer"
        );
        cache.publish(1, item(1, 4), cache.epoch()).await;
        assert_eq!(version(cache.get(1).await), Some(4));

        cache.tombstone(1).await;
        cache.publish(1, item(1, 5), cache.epoch()).await;
        assert_eq!(
            version(cache.get(1).await),
            Some(-1),
            "a late write does not resurrect a deleted item"
        );

        let _ = cache
            .load(2, |_| async {
                Ok::<_, std::convert::Infallible>(Slot::Missing)
            })
            .await;
        cache.publish(2, item(2, 1), cache.epoch()).await;
        assert_eq!(
            version(cache.get(2).await),
            Some(1),
            "a create replaces a cached not-found"
        );
    }

    /// A load that read the database before a flush must not be served after it, even though
    /// it stores its result afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_retires_a_load_that_read_before_it() {
        let cache = replicated();
        let (reader, release) = slow_load(&cache, item(1, 1)).await;
        cache.flush(super::super::coherence::Flush::Reconnect);
        // The lease returns in the new epoch before the old load stores its result.
        let coherence = cache.coherence();
        coherence.heartbeat_returned(coherence.clock_ms());
        release.send(()).unwrap();
        let (_, lookup) = reader.await.unwrap().unwrap();
        assert_eq!(lookup, Lookup::Miss);
        assert_eq!(
            version(cache.get(1).await),
            None,
            "the old epoch is not served"
        );
        fill(&cache, 1, Slot::Found(item(1, 2))).await;
        assert_eq!(
            version(cache.get(1).await),
            Some(2),
            "the next read loads again"
        );
    }

    #[tokio::test]
    async fn notifications_drop_older_entries_only() {
        let cache = replicated();
        fill(&cache, 1, Slot::Found(item(1, 3))).await;
        assert!(
            !cache.invalidate(1, Change::Written(3)).await,
            "our own write"
        );
        assert!(
            !cache.invalidate(1, Change::Written(2)).await,
            "an older change"
        );
        assert_eq!(version(cache.get(1).await), Some(3));
        assert!(cache.invalidate(1, Change::Written(4)).await);
        assert_eq!(
            version(cache.get(1).await),
            None,
            "dropped, to be read again"
        );

        fill(&cache, 2, Slot::Missing).await;
        assert!(
            cache.invalidate(2, Change::Written(1)).await,
            "a create elsewhere"
        );
        assert_eq!(version(cache.get(2).await), None);

        fill(&cache, 3, Slot::Found(item(3, 1))).await;
        cache.invalidate(3, Change::Deleted).await;
        cache.invalidate(3, Change::Written(9)).await;
        assert_eq!(version(cache.get(3).await), Some(-1), "deletes are final");
    }

    /// A load that must see `mark` and answers `slot`.
    async fn fill_expecting(cache: &ItemCache, id: i64, mark: Option<Mark>, slot: Slot) {
        let (_, lookup) = cache
            .load(id, |seen| async move {
                assert_eq!(seen, mark, "the fill of {id} gets the mark");
                Ok::<_, std::convert::Infallible>(slot)
            })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
    }

    #[tokio::test]
    async fn writes_and_notices_leave_marks_that_fills_see_and_hits_never_serve() {
        let cache = replicated();
        assert!(
            !cache.invalidate(1, Change::Written(3)).await,
            "nothing cached"
        );
        assert_eq!(version(cache.get(1).await), None, "a mark is not a hit");
        fill_expecting(&cache, 1, Some(Mark::Version(3)), Slot::Found(item(1, 3))).await;
        assert_eq!(version(cache.get(1).await), Some(3));

        assert!(cache.invalidate(1, Change::Written(5)).await);
        assert_eq!(version(cache.get(1).await), None, "the older item is gone");
        fill_expecting(&cache, 1, Some(Mark::Version(5)), Slot::Found(item(1, 5))).await;
        assert!(
            !cache.invalidate(1, Change::Written(4)).await,
            "an older notice changes nothing"
        );

        cache.publish(2, item(2, 7), cache.epoch()).await;
        assert_eq!(version(cache.get(2).await), None, "our write, not cached");
        fill_expecting(&cache, 2, Some(Mark::Version(7)), Slot::Found(item(2, 7))).await;

        fill(&cache, 4, Slot::Missing).await;
        assert!(
            cache.invalidate(4, Change::Written(1)).await,
            "created elsewhere"
        );
        fill_expecting(&cache, 4, Some(Mark::Version(1)), Slot::Found(item(4, 1))).await;

        cache.tombstone(5).await;
        assert!(!cache.invalidate(5, Change::Written(9)).await);
        assert_eq!(version(cache.get(5).await), Some(-1), "deletes stay final");
        assert_eq!(cache.marks().get(5), Some(Mark::Deleted));
    }

    /// A fill older than its mark (a standby behind) is answered but never kept.
    #[tokio::test]
    async fn a_fill_older_than_the_mark_is_not_kept() {
        let cache = replicated();
        cache.publish(1, item(1, 4), cache.epoch()).await;
        let (slot, lookup) = cache
            .load(1, |_| async {
                Ok::<_, std::convert::Infallible>(Slot::Found(item(1, 3)))
            })
            .await
            .unwrap();
        assert_eq!((version(Some(slot)), lookup), (Some(3), Lookup::Miss));
        assert_eq!(version(cache.get(1).await), None, "not kept");
        cache.tombstone(2).await;
        cache.flush(super::super::coherence::Flush::Lease);
        let c = cache.coherence();
        c.heartbeat_returned(c.clock_ms());
        fill(&cache, 2, Slot::Found(item(2, 1))).await;
        assert_eq!(
            version(cache.get(2).await),
            None,
            "a delete outlives a flush"
        );
    }

    /// Marks do not go through the cache's admission: in a cache full of often-read entries, a
    /// write to a rarely-read id still reaches that id's next fill (defect 1 of issue 25).
    #[tokio::test]
    async fn marks_survive_a_full_cache() {
        let cache = replicated();
        for round in 0..5 {
            for id in 0..100 {
                if round == 0 {
                    fill(&cache, id, Slot::Found(item(id, 1))).await;
                }
                let _ = cache.get(id).await;
            }
        }
        for id in 1_000..1_200 {
            cache.publish(id, item(id, 2), cache.epoch()).await;
            cache.tombstone(id + 1_000).await;
        }
        cache.inner.run_pending_tasks().await;
        assert!(cache.inner.entry_count() <= 100);
        for id in 1_000..1_200 {
            fill_expecting(&cache, id, Some(Mark::Version(2)), Slot::Found(item(id, 2))).await;
            assert_eq!(cache.marks().get(id + 1_000), Some(Mark::Deleted));
        }
    }

    /// A notice for an id whose fill is stuck in the database applies at once, and the fill,
    /// when it ends, keeps nothing older (defect 7 of issue 25).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_fill_does_not_hold_up_a_notice() {
        let cache = replicated();
        let (reader, release) = slow_load(&cache, item(1, 1)).await;
        let applied = tokio::time::timeout(
            Duration::from_secs(10),
            cache.invalidate(1, Change::Written(2)),
        )
        .await;
        assert!(applied.is_ok(), "the notice waited for the fill's lock");
        release.send(()).unwrap();
        let (slot, _) = reader.await.unwrap().unwrap();
        assert_eq!(version(Some(slot)), Some(1), "the reader gets what it read");
        assert_eq!(version(cache.get(1).await), None, "but it is not kept");
    }

    /// A write during which the cache was flushed (and the lease came back) still keeps its
    /// replica from answering the older version (defect 6 of issue 25).
    #[tokio::test]
    async fn a_write_across_a_flush_drops_the_older_entry() {
        let cache = replicated();
        let started_in = cache.epoch();
        cache.flush(super::super::coherence::Flush::Reconnect);
        let c = cache.coherence();
        c.heartbeat_returned(c.clock_ms());
        fill(&cache, 1, Slot::Found(item(1, 1))).await;
        assert_eq!(version(cache.get(1).await), Some(1));
        cache.publish(1, item(1, 2), started_in).await;
        assert_eq!(version(cache.get(1).await), None, "v1 is no longer served");
        fill_expecting(&cache, 1, Some(Mark::Version(2)), Slot::Found(item(1, 2))).await;
    }

    /// Without the lease, writes and deletes still leave marks, and the bypassing reads (which
    /// may go to a standby) get them (defect 5 of issue 25).
    #[tokio::test]
    async fn without_the_lease_marks_are_kept_and_given_to_reads() {
        let metrics = crate::metrics::Metrics::new(true);
        let cache = cache_with(Coherence::replicated(&metrics, Duration::from_secs(60)));
        cache.tombstone(1).await;
        cache.publish(2, item(2, 5), cache.epoch()).await;
        let seen = |id| {
            let cache = cache.clone();
            async move {
                let (_, lookup) = cache
                    .load(id, |mark| async move {
                        Ok::<_, std::convert::Infallible>(match mark {
                            Some(Mark::Version(v)) => Slot::Found(item(id, v)),
                            _ => Slot::Deleted,
                        })
                    })
                    .await
                    .unwrap();
                assert_eq!(lookup, Lookup::Bypass);
                cache.marks().get(id)
            }
        };
        assert_eq!(seen(1).await, Some(Mark::Deleted));
        assert_eq!(seen(2).await, Some(Mark::Version(5)));
    }

    #[tokio::test]
    async fn without_the_lease_nothing_is_served_or_stored() {
        let metrics = crate::metrics::Metrics::new(true);
        let cache = cache_with(Coherence::replicated(&metrics, Duration::from_secs(60)));
        let (slot, lookup) = cache
            .load(1, |_| async {
                Ok::<_, std::convert::Infallible>(Slot::Found(item(1, 1)))
            })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Bypass);
        assert_eq!(version(Some(slot)), Some(1), "answered from the database");
        cache
            .coherence()
            .heartbeat_returned(cache.coherence().clock_ms());
        assert_eq!(version(cache.get(1).await), None, "nothing was stored");
    }
}
