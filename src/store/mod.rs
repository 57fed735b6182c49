//! Items, read through the cache and written through to the database: `Store` combines the
//! rooms below it (`db`, `cache`, `replication`) behind functions that say what they do (`get`,
//! `create`, `update`, `delete`, `list_page`), measuring each step; `open` builds it from its
//! own settings.
//!
//! Uses `db`, `cache`, `replication`, `metrics`, `config` and `telemetry`; nothing below it
//! uses it.

mod open;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use tracing::{Instrument, field::Empty};

use crate::cache::{
    CachedItem, ItemCache,
    edge::EdgePurger,
    items::{Lookup, Slot},
    marks::{self, Mark},
    metrics::CacheMetrics,
    shared::Lookup as SharedLookup,
};
pub use crate::db::DbFailure;
/// Every statement on the tables, named, with samples (for the plan test).
pub use crate::db::sql::catalog as statements;
pub use crate::db::sql::items::{Changes, NewItem, Precondition, WriteOutcome};
use crate::db::{
    Db, Model,
    batch::ReadBatcher,
    pool::{DbOp, Pool},
    sql::{idempotency, items as repo},
    write_batch::WriteBatcher,
};
use crate::replication::standby::{Fallback, Standbys};
pub use open::Sharing;

/// Items, read through the cache and written through to the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// How long an `Idempotency-Key` is remembered.
    idempotency_ttl: std::time::Duration,
    cache: Option<ItemCache>,
    cache_metrics: CacheMetrics,
    /// Where reads run; on PostgreSQL the same pool as `writes`.
    reads: Arc<Pool>,
    writes: Arc<Pool>,
    /// Item reads on the primary, batched unless `--db-read-batches 0`.
    item_reads: ReadBatcher,
    /// Item writes, committed in groups unless `--db-write-batches 0`.
    item_writes: WriteBatcher,
    /// Streaming standbys that may take lists and cache fills.
    standbys: Option<Arc<Standbys>>,
    /// Longest a cache fill may take (pool wait plus statement); past it the read fails, so a
    /// version mark older than this protects no fill in flight.
    fill_bound: std::time::Duration,
    /// Whether the cache must hear of other replicas' writes.
    sharing: Sharing,
    /// What runs beside the requests (listener, lag watch, checkpoints), until `close`.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    /// After this replica committed item `id` (as `cached`): the cache, Redis and the edge hear
    /// of it before the write is acknowledged.
    async fn written(&self, id: i64, cached: &Arc<CachedItem>, epoch: u64) {
        let Some(cache) = &self.cache else { return };
        cache.publish(id, cached.clone(), epoch).await;
        if let Some(shared) = cache.shared() {
            shared.written(cached).await;
        }
        if let Some(edge) = cache.edge() {
            edge.written(id).await;
        }
    }
}

impl Store {
    /// The database handles.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Publishes pool and cache gauges; called on the metrics interval.
    pub async fn sample_metrics(&self) {
        let i = &self.inner;
        let (read, write) = i.db.pool_stats();
        i.reads.sample(read);
        if !Arc::ptr_eq(&i.reads, &i.writes) {
            i.writes.sample(write);
        }
        if let Some(standbys) = &i.standbys {
            standbys.sample();
        }
        match &i.cache {
            Some(cache) => cache.sample().await,
            None => i.cache_metrics.sample(0),
        }
    }

    /// Drops the version marks no read can need any more: older than any fill in flight, and
    /// replayed by every standby that answers (see `marks`).
    pub fn prune_marks(&self) {
        let i = &self.inner;
        let Some(cache) = &i.cache else { return };
        let mut before = marks::before(marks::now(), i.fill_bound);
        if let Some(replayed) = i.standbys.as_ref().and_then(|s| s.replayed_by_all()) {
            before = before.min(replayed);
        }
        cache.marks().prune(before);
    }

    /// The item with `id`, ready to send, or `None` if there is none.
    pub async fn get(&self, id: i64) -> Result<Option<Arc<CachedItem>>, DbErr> {
        let i = &self.inner;
        let Some(cache) = &i.cache else {
            // No cache, so no version floors: reads that must see this replica's own writes
            // stay on the primary.
            // Boxed, as a miss below: see there.
            let model = Box::pin(self.read(id)).await?;
            return Ok(model.as_ref().map(CachedItem::from_model));
        };
        let span = tracing::debug_span!(
            "cache.get",
            cache.name = "items",
            item.id = id,
            cache.result = Empty
        );
        let (slot, lookup) = async {
            match cache.get(id).await {
                Some(slot) => Ok((slot, Lookup::Hit)),
                // Boxed: a load's future is kilobytes, and unboxed it would size this one and
                // every future around it, so each hit would move kilobytes it never uses.
                None => Box::pin(cache.load(id, |mark| self.load(id, mark))).await,
            }
        }
        .instrument(span.clone())
        .await?;
        let m = &i.cache_metrics;
        match lookup {
            Lookup::Hit => m.hit.increment(1),
            Lookup::Miss | Lookup::Bypass => m.miss.increment(1),
            Lookup::Coalesced => {
                m.miss.increment(1);
                m.coalesced.increment(1);
            }
        }
        span.record("cache.result", lookup.as_str());
        Ok(match slot {
            Slot::Found(item) => Some(item),
            Slot::Missing | Slot::Deleted => None,
        })
    }

    /// Reads item `id` for the cache within the fill bound: from a standby when one may take
    /// fills and its answer is at least as new as `mark` (what this replica knows was
    /// committed); else from the primary.
    async fn load(&self, id: i64, mark: Option<Mark>) -> Result<Slot, DbErr> {
        let i = &self.inner;
        // The fleet's second level first, while this replica knows what it may have missed (its
        // lease); its answer held to the mark as a standby's is (see `cache::shared`).
        let shared = i.cache.as_ref().filter(|c| c.coherence().now().serving());
        let mut fill_epoch = None;
        if let Some(shared) = shared.and_then(|c| c.shared()) {
            match shared.get(id).await {
                SharedLookup::Hit(slot) if mark.is_none_or(|m| m.admits(slot_version(&slot))) => {
                    return Ok(slot);
                }
                SharedLookup::Hit(_) | SharedLookup::Unavailable => {}
                SharedLookup::Miss { epoch } => fill_epoch = Some((shared, epoch)),
            }
        }
        let slot = self.load_from_database(id, mark).await?;
        if let Some((shared, epoch)) = fill_epoch {
            shared.fill(id, &slot, epoch);
        }
        Ok(slot)
    }

    /// `load`'s database part.
    async fn load_from_database(&self, id: i64, mark: Option<Mark>) -> Result<Slot, DbErr> {
        let i = &self.inner;
        let load = async {
            let marks_dropped = i.cache.as_ref().map_or(0, |c| c.marks().dropped_before());
            if let Some(s) = i
                .standbys
                .as_ref()
                .and_then(|s| s.pick_for_fill(marks_dropped))
            {
                match s.read(id).await {
                    Ok(model)
                        if mark.is_none_or(|m| m.admits(model.as_ref().map(|m| m.version))) =>
                    {
                        return Ok(slot_of(model));
                    }
                    Ok(_) => s.fell_back(Fallback::Floor),
                    Err(e) => s.fell_back(Fallback::of(&e)),
                }
            }
            Ok(slot_of(self.read(id).await?))
        };
        tokio::time::timeout(i.fill_bound, load)
            .await
            .unwrap_or(Err(DbErr::ConnectionAcquire(
                sea_orm::ConnAcquireErr::Timeout,
            )))
    }

    /// Item `id`, read from the primary whatever this replica's cache holds: what an edge cache
    /// stores on a miss (see `cache::edge`, rule 5).
    pub async fn get_fresh(&self, id: i64) -> Result<Option<Arc<CachedItem>>, DbErr> {
        let model = Box::pin(self.read(id)).await?;
        Ok(model.as_ref().map(CachedItem::from_model))
    }

    /// Whether answers are for an edge cache in front, and its purger.
    pub fn edge(&self) -> Option<&EdgePurger> {
        self.inner.cache.as_ref().and_then(|c| c.edge())
    }

    /// Reads item `id` on the primary, in a batch unless batching is off.
    async fn read(&self, id: i64) -> Result<Option<Model>, DbErr> {
        self.inner.item_reads.get(id).await
    }

    /// Creates an item and answers it as stored.
    pub async fn create(&self, item: NewItem) -> Result<Arc<CachedItem>, DbErr> {
        let this = self.clone();
        // Spawned so that a client hanging up cannot cancel the write between commit and cache update.
        detach(async move {
            let i = &this.inner;
            let epoch = i.cache_epoch();
            let model = i.item_writes.insert(item).await?;
            let cached = CachedItem::from_model(&model);
            i.written(model.id, &cached, epoch).await;
            Ok(cached)
        })
        .await
    }

    /// Creates an item once per `key`: a retry with the same key and request (`fingerprint`)
    /// gets the first answer back, concurrent retries and retries through other replicas
    /// included; a different request with the same key is refused.
    pub async fn create_once(
        &self,
        key: String,
        fingerprint: u64,
        item: NewItem,
    ) -> Result<Result<Arc<CachedItem>, KeyReused>, DbErr> {
        let this = self.clone();
        // Spawned, like every write: the key and the item commit together or not at all, and a
        // client hanging up cannot stop the cache update after the commit.
        detach(async move {
            let i = &this.inner;
            let epoch = i.cache_epoch();
            let ttl = i.idempotency_ttl;
            // The same bytes `CachedItem::from_model` sends.
            let answer = |m: &Model| serde_json::to_string(m).unwrap_or_default();
            let txn = idempotency::create_once(&i.db.write, key, fingerprint, item, ttl, answer);
            Ok(match i.writes.run(DbOp::Insert, txn).await? {
                idempotency::Once::Created(model) => {
                    let cached = CachedItem::from_model(&model);
                    i.written(model.id, &cached, epoch).await;
                    Ok(cached)
                }
                idempotency::Once::Replayed { id, body } => Ok(CachedItem::first_answer(id, body)),
                idempotency::Once::Reused => Err(KeyReused),
            })
        })
        .await
    }

    /// Forgets `Idempotency-Key`s older than their TTL; returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, DbErr> {
        let i = &self.inner;
        let q = idempotency::purge(&i.db.write, i.idempotency_ttl);
        i.writes.run(DbOp::Delete, q).await
    }

    /// Applies `changes` to item `id` if `pre` holds; bumps its version.
    pub async fn update(
        &self,
        id: i64,
        changes: Changes,
        pre: Precondition,
    ) -> Result<WriteOutcome<Arc<CachedItem>>, DbErr> {
        let this = self.clone();
        detach(async move {
            let i = &this.inner;
            let epoch = i.cache_epoch();
            Ok(match i.item_writes.update(id, changes, pre).await? {
                WriteOutcome::Done(model) => {
                    let cached = CachedItem::from_model(&model);
                    i.written(id, &cached, epoch).await;
                    WriteOutcome::Done(cached)
                }
                WriteOutcome::NotFound => WriteOutcome::NotFound,
                WriteOutcome::Conflict => WriteOutcome::Conflict,
            })
        })
        .await
    }

    /// Deletes item `id` if `pre` holds.
    pub async fn delete(&self, id: i64, pre: Precondition) -> Result<WriteOutcome<()>, DbErr> {
        let this = self.clone();
        detach(async move {
            let i = &this.inner;
            let outcome = i.item_writes.delete(id, pre).await?;
            if let (WriteOutcome::Done(()), Some(cache)) = (&outcome, &i.cache) {
                cache.tombstone(id).await;
                if let Some(shared) = cache.shared() {
                    shared.deleted(id).await;
                }
                if let Some(edge) = cache.edge() {
                    edge.written(id).await;
                }
            }
            Ok(outcome)
        })
        .await
    }

    /// One page of items in ascending id order, and the id to continue after, if any.
    pub async fn list_page(
        &self,
        after: Option<i64>,
        since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<(Vec<Model>, Option<i64>), DbErr> {
        let i = &self.inner;
        if let Some(s) = i.standbys.as_ref().and_then(|s| s.pick()) {
            let q = repo::list_page(&s.db, after, since, limit);
            match s.pool.run(DbOp::List, q).await {
                Ok(page) => return Ok(page),
                Err(e) => s.fell_back(Fallback::of(&e)),
            }
        }
        let q = repo::list_page(&i.db.read, after, since, limit);
        i.reads.run(DbOp::List, q).await
    }
}

/// Slack on top of the pool wait and the statement timeout before a fill counts as stuck.
const FILL_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The version a slot answers (`None`: no row), to hold it to a mark.
fn slot_version(slot: &Slot) -> Option<i64> {
    match slot {
        Slot::Found(item) => Some(item.version),
        Slot::Missing | Slot::Deleted => None,
    }
}

/// What the cache keeps for a row read from the database.
fn slot_of(model: Option<Model>) -> Slot {
    match model {
        Some(model) => Slot::Found(CachedItem::from_model(&model)),
        None => Slot::Missing,
    }
}

impl Inner {
    /// The cache epoch a write starts in (0 without a cache).
    fn cache_epoch(&self) -> u64 {
        self.cache.as_ref().map_or(0, ItemCache::epoch)
    }
}

/// An `Idempotency-Key` already used for a different request.
#[derive(Debug)]
pub struct KeyReused;

/// Runs `fut` on its own task (in the caller's span and trace), so dropping the caller does not
/// abort it halfway.
async fn detach<T: Send + 'static>(
    fut: impl Future<Output = Result<T, DbErr>> + Send + 'static,
) -> Result<T, DbErr> {
    tokio::spawn(crate::telemetry::with_current_trace(fut.in_current_span()))
        .await
        .map_err(|e| DbErr::Custom(format!("write task failed: {e}")))?
}
