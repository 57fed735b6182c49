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

use super::entity::Model;

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

/// How a read was answered, for metrics and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// This request loaded the entry from the database.
    Miss,
    /// Another request was already loading it; this one waited and took its result.
    Coalesced,
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
}

impl ItemCache {
    /// A cache of at most `capacity` entries; items live `ttl`, "not found" answers `negative_ttl`.
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        let inner = Cache::builder()
            .max_capacity(capacity)
            .expire_after(Ttl {
                found: ttl,
                absent: negative_ttl,
            })
            .build();
        Self { inner }
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
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => (e.into_value(), Lookup::Miss),
            CompResult::Unchanged(e) => (e.into_value(), Lookup::Coalesced),
            // Not produced by the closure above; answer as "not found" rather than panic.
            CompResult::StillNone(_) | CompResult::Removed(_) => (Slot::Missing, Lookup::Miss),
        })
    }

    /// After a committed create or update: replace an older entry or a cached "not found".
    pub async fn publish(&self, id: i64, item: Arc<CachedItem>) {
        self.inner
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
    }

    /// After a committed delete: leave a tombstone, whatever was there.
    pub async fn tombstone(&self, id: i64) {
        self.inner
            .entry(id)
            .and_compute_with(|_| std::future::ready(Op::Put(Slot::Deleted)))
            .await;
    }
}
