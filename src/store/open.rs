//! Building the store from its own settings (`--database-*`, `--db-*`, `--cache-*`): connect and
//! migrate, decide once whether there is a cache and whether it must stay coherent with other
//! replicas, connect the standbys, and start what runs beside the requests (the invalidation
//! listener, the standbys' lag watch, SQLite's WAL checkpoints). `Store::close` stops them.

use std::sync::{Arc, Mutex};

use sea_orm::DbBackend;

use super::{FILL_MARGIN, Inner, Store};
use crate::cache::{
    Coherence, ItemCache,
    edge::EdgePurger,
    items::Bound,
    metrics::CacheMetrics,
    shared::{self, SharedCache},
};
use crate::config::{CacheSettings, DbSettings};
use crate::db::{self, batch::ReadBatcher, pool::Pool, write_batch::WriteBatcher};
use crate::metrics::{Metrics, catalog::CACHE_INVALIDATION_FEED};
use crate::replication::{self, Feed, listener, standby::Standbys};

/// Whether this replica's cache must hear of other replicas' writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// SQLite, or `--single-instance`: this process is the only writer that matters.
    SingleInstance,
    /// PostgreSQL with several replicas: a lease and the invalidation channel.
    Replicated,
}

impl Store {
    /// Connects, applies migrations when `migrate` says so, and builds the store with its
    /// cache, standbys and background tasks, recording into `metrics`.
    pub async fn open(
        db_settings: &DbSettings,
        cache_settings: &CacheSettings,
        migrate: bool,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let db = db::connect(db_settings).await?;
        tracing::info!(database = %db::describe(&db_settings.url), "connected");
        if migrate {
            db::migrate(&db, &db_settings.url).await?;
        }
        listener::register(metrics);
        let c = cache_settings;
        let sharing = if db.backend() == DbBackend::Postgres && !c.single_instance {
            Sharing::Replicated
        } else {
            Sharing::SingleInstance
        };
        let coherence = Arc::new(match sharing {
            Sharing::Replicated => Coherence::replicated(metrics, c.lease),
            Sharing::SingleInstance => Coherence::single_instance(metrics),
        });
        let bound = Bound {
            entries: c.capacity,
            bytes: c.max_bytes,
        };
        let cache_metrics = CacheMetrics::new(metrics, bound);
        let shared = match &c.redis_url {
            Some(url) if c.capacity > 0 => {
                shared::register(metrics);
                let shared =
                    SharedCache::new(url, &c.redis_prefix, c.redis_timeout, c.ttl, metrics)
                        .map_err(anyhow::Error::msg)?;
                tracing::info!("cache: a second level in Redis, shared by the replicas");
                Some(shared)
            }
            Some(_) => {
                tracing::warn!("--redis-url is ignored: the cache is off (--cache-capacity 0)");
                None
            }
            None => None,
        };
        let mut tasks = Vec::new();
        let single = sharing == Sharing::SingleInstance;
        let edge = start_edge(c, &coherence, single, metrics, &mut tasks)?;
        let cache = (c.capacity > 0).then(|| {
            let m = cache_metrics.clone();
            let mut cache = ItemCache::new(bound, c.ttl, c.negative_ttl, m, coherence.clone());
            if let Some(shared) = shared {
                cache = cache.with_shared(shared);
            }
            if let Some(edge) = edge {
                cache = cache.with_edge(edge);
            }
            cache
        });
        let listening = sharing == Sharing::Replicated && cache.is_some();
        let standbys =
            Standbys::connect(db_settings, metrics, coherence.clone(), listening).await?;
        if let Some(s) = &standbys {
            tasks.push(tokio::spawn(s.clone().watch(db.write.clone())));
        }
        if db.is_sqlite_file() {
            tasks.push(tokio::spawn(db::checkpoint_wal(db.write.clone())));
        }
        let feeds = Feed::ALL.map(|f| {
            (
                f,
                metrics.gauge(&CACHE_INVALIDATION_FEED, &[("feed", f.as_str())]),
            )
        });
        if let Some(cache) = cache.as_ref().filter(|_| listening) {
            let url = c
                .listen_url
                .clone()
                .unwrap_or_else(|| db_settings.url.clone());
            let feed = Feed::choose(c.invalidation, &url).await;
            for (f, gauge) in &feeds {
                gauge.set(if *f == feed { 1.0 } else { 0.0 });
            }
            let (cache, metrics, standbys) = (cache.clone(), metrics.clone(), standbys.clone());
            let feeding = replication::run(feed, url, cache, metrics, standbys);
            tasks.push(tokio::spawn(feeding));
            wait_for_lease(&coherence).await;
        }
        if let Some(shared) = cache.as_ref().and_then(|c| c.shared().cloned()) {
            tasks.push(tokio::spawn(keep_alive(shared, coherence.clone(), c.lease)));
        }
        let system = match db.backend() {
            DbBackend::Postgres => "postgresql",
            _ => "sqlite",
        };
        let timeout = db_settings.acquire_timeout;
        let pool = |name, size| Arc::new(Pool::new(metrics, name, system, size, timeout));
        let (read, write) = db.sizes;
        let (reads, writes) = if db.shared {
            let main = pool("main", read);
            (main.clone(), main)
        } else {
            (pool("read", read), pool("write", write))
        };
        let item_reads =
            ReadBatcher::start(db.read.clone(), reads.clone(), db_settings.read_batches);
        // SQLite has one writer connection: a second batch would only wait for it.
        let write_lanes = match db.backend() {
            DbBackend::Sqlite => db_settings.write_batches.min(1),
            _ => db_settings.write_batches,
        };
        let item_writes = WriteBatcher::start(db.write.clone(), writes.clone(), write_lanes);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                sharing,
                idempotency_ttl: c.idempotency_ttl,
                cache,
                cache_metrics,
                reads,
                writes,
                item_reads,
                item_writes,
                standbys,
                fill_bound: db_settings.acquire_timeout
                    + db_settings.statement_timeout
                    + FILL_MARGIN,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Whether this replica's cache is kept coherent with other replicas.
    pub fn sharing(&self) -> Sharing {
        self.inner.sharing
    }

    /// Whether reads may go to streaming standbys.
    pub fn has_standbys(&self) -> bool {
        self.inner.standbys.is_some()
    }

    /// Whether the cache has a second level in Redis.
    pub fn has_redis(&self) -> bool {
        self.inner
            .cache
            .as_ref()
            .is_some_and(|c| c.shared().is_some())
    }

    /// Stops the background tasks and closes every connection.
    pub async fn close(&self) {
        let i = &self.inner;
        let tasks = std::mem::take(&mut *i.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
        i.db.close().await;
        if let Some(standbys) = &i.standbys {
            standbys.close().await;
        }
    }
}

/// Waits (a few lease bounds at most) for the first heartbeat, so a replica starts serving with
/// its cache on; without it the service still answers, from the database.
async fn wait_for_lease(coherence: &Coherence) {
    let deadline = std::time::Instant::now() + coherence.bound() * 5;
    while !coherence.now().serving() {
        if std::time::Instant::now() > deadline {
            tracing::warn!("no cache lease yet: serving from the database until heartbeats return");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tracing::info!("cache coherent across replicas (lease held)");
}

/// The edge cache's purger and its task, when `--edge-max-age` is set (the settings checked:
/// an edge without purges, or without the cache whose feed drives them, would go stale).
fn start_edge(
    c: &CacheSettings,
    coherence: &Arc<Coherence>,
    single_instance: bool,
    metrics: &Arc<Metrics>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Option<EdgePurger>> {
    let e = &c.edge;
    e.check().map_err(anyhow::Error::msg)?;
    let (Some(max_age), Some(url)) = (e.edge_max_age, e.edge_purge_url.clone()) else {
        return Ok(None);
    };
    if c.capacity == 0 {
        anyhow::bail!(
            "--edge-max-age needs the cache (--cache-capacity above 0): its feed drives the purges"
        );
    }
    let (edge, task) =
        EdgePurger::start(e, max_age, url, coherence.clone(), single_instance, metrics)?;
    tasks.push(task);
    tracing::info!(max_age = ?max_age, "edge: answers cacheable by a shared cache in front, purged on every change");
    Ok(Some(edge))
}

/// While this replica holds its lease, says so to the fleet's Redis (see `cache::shared`),
/// every half lease, for two leases.
async fn keep_alive(shared: SharedCache, coherence: Arc<Coherence>, lease: std::time::Duration) {
    let mut tick = tokio::time::interval(lease / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if coherence.now().serving() {
            shared.alive(lease * 2).await;
        }
    }
}
