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

use super::{cache_metrics::CacheMetrics, entity::Model};

/// A ready-to-send item: its JSON body and ETag, so a hit costs a lookup and two refcount bumps.
#[derive(Debug)]
pub struct CachedItem {
    pub id: i64,
    pub version: i64,
    pub etag: String,
    pub body: Bytes,
}

impl CachedItem {
    /// Serializes `model` once; the same bytes answer the write and every later hit.
    pub fn from_model(model: &Model) -> Arc<Self> {
        // Serializing a Model (strings, numbers, timestamps, a JSON value) cannot fail.
        let body = serde_json::to_vec(model).unwrap_or_default();
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

/// The strong ETag of a version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
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
}

/// How a read was answered, for metrics and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// This request loaded the entry from the database.
    Miss,
    /// Another request was already loading it; this one waited and took its result.
    Coalesced,
}

impl Lookup {
    /// The value recorded on the cache span.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Coalesced => "coalesced",
        }
    }
}

struct Ttl {
    found: Duration,
    absent: Duration,
}

impl Expiry<i64, Slot> for Ttl {
    fn expire_after_create(&self, _: &i64, v: &Slot, _: Instant) -> Option<Duration> {
        Some(self.ttl(v))
    }
    fn expire_after_update(
        &self,
        _: &i64,
        v: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(v))
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

/// The item cache; cheap to clone.
#[derive(Clone)]
pub struct ItemCache {
    inner: Cache<i64, Slot>,
    metrics: CacheMetrics,
}

impl ItemCache {
    /// A cache of at most `capacity` entries; items live `ttl`, "not found" answers `negative_ttl`.
    pub fn new(
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
        metrics: CacheMetrics,
    ) -> Self {
        let m = metrics.clone();
        let inner = Cache::builder()
            .max_capacity(capacity)
            .expire_after(Ttl {
                found: ttl,
                absent: negative_ttl,
            })
            .eviction_listener(move |_id, slot: Slot, cause| {
                m.evicted(cause.into(), slot.bytes());
            })
            .build();
        Self { inner, metrics }
    }

    /// Applies pending evictions and publishes the entry count and size.
    pub async fn sample(&self) {
        self.inner.run_pending_tasks().await;
        self.metrics.sample(self.inner.entry_count());
    }

    /// The hot path: one lookup, no database.
    pub async fn get(&self, id: i64) -> Option<Slot> {
        self.inner.get(&id).await
    }

    /// Answers a miss: loads with `load` under the key's lock unless another request already has.
    pub async fn load<F, Fut, E>(&self, id: i64, load: F) -> Result<(Slot, Lookup), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Slot, E>>,
        E: Send + Sync + 'static,
    {
        let result = self
            .inner
            .entry(id)
            .and_try_compute_with(|existing| async move {
                match existing {
                    Some(_) => Ok(Op::Nop),
                    None => load().await.map(Op::Put),
                }
            })
            .await?;
        Ok(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => {
                self.metrics.add_bytes(e.value().bytes());
                (e.into_value(), Lookup::Miss)
            }
            CompResult::Unchanged(e) => (e.into_value(), Lookup::Coalesced),
            // Not produced by the closure above; answer as "not found" rather than panic.
            CompResult::StillNone(_) | CompResult::Removed(_) => (Slot::Missing, Lookup::Miss),
        })
    }

    /// After a committed create or update: replace an older entry or a cached "not found".
    pub async fn publish(&self, id: i64, item: Arc<CachedItem>) {
        let result = self
            .inner
            .entry(id)
            .and_compute_with(|existing| {
                let op = match existing.as_ref().map(|e| e.value()) {
                    Some(Slot::Found(old)) if old.version < item.version => {
                        Op::Put(Slot::Found(item))
                    }
                    Some(Slot::Missing) => Op::Put(Slot::Found(item)),
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        if let CompResult::ReplacedWith(e) = result {
            self.metrics.add_bytes(e.value().bytes());
        }
    }

    /// After a committed delete: leave a tombstone, whatever was there.
    pub async fn tombstone(&self, id: i64) {
        self.inner
            .entry(id)
            .and_compute_with(|_| std::future::ready(Op::Put(Slot::Deleted)))
            .await;
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

    fn cache() -> ItemCache {
        let metrics = crate::metrics::Metrics::new(true);
        ItemCache::new(
            100,
            Duration::from_secs(60),
            Duration::from_secs(60),
            CacheMetrics::new(&metrics, 100),
        )
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
                        .load(7, || async {
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
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .load(1, || async move {
                        let snapshot = item(1, 1); // read from the database before the write
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok::<_, std::convert::Infallible>(Slot::Found(snapshot))
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        let writer = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.publish(1, item(1, 2)).await })
        };
        tokio::task::yield_now().await;
        release_tx.send(()).unwrap();
        reader.await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(version(cache.get(1).await), Some(2));
    }

    #[tokio::test]
    async fn publish_keeps_newer_and_never_fills_empty_or_resurrects() {
        let cache = cache();
        cache.publish(1, item(1, 3)).await;
        assert_eq!(
            version(cache.get(1).await),
            None,
            "an empty slot stays empty"
        );

        let _ = cache
            .load(1, || async {
                Ok::<_, std::convert::Infallible>(Slot::Found(item(1, 3)))
            })
            .await;
        cache.publish(1, item(1, 2)).await;
        assert_eq!(
            version(cache.get(1).await),
            Some(3),
            "older write does not replace newer"
        );
        cache.publish(1, item(1, 4)).await;
        assert_eq!(version(cache.get(1).await), Some(4));

        cache.tombstone(1).await;
        cache.publish(1, item(1, 5)).await;
        assert_eq!(
            version(cache.get(1).await),
            Some(-1),
            "a late write does not resurrect a deleted item"
        );

        let _ = cache
            .load(2, || async {
                Ok::<_, std::convert::Infallible>(Slot::Missing)
            })
            .await;
        cache.publish(2, item(2, 1)).await;
        assert_eq!(
            version(cache.get(2).await),
            Some(1),
            "a create replaces a cached not-found"
        );
    }
}
