//! Data access: the database (`repo`), the coherent cache in front of it (`cache`), and `Store`,
//! which combines them behind functions that say what they do.

pub mod cache;
pub mod db;
pub mod entity;
pub mod repo;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DbErr;

use crate::config::CacheSettings;
use cache::{CachedItem, ItemCache, Lookup, Slot};
pub use db::Db;
pub use entity::Model;
pub use repo::{Changes, NewItem, Precondition, WriteOutcome};

/// Items, read through the cache and written through to the database.
#[derive(Clone)]
pub struct Store {
    db: Db,
    cache: Option<ItemCache>,
}

impl Store {
    /// A store over `db`, with a cache unless its capacity is 0.
    pub fn new(db: Db, settings: &CacheSettings) -> Self {
        let cache = (settings.cache_capacity > 0).then(|| {
            ItemCache::new(
                settings.cache_capacity,
                settings.cache_ttl,
                settings.cache_negative_ttl,
            )
        });
        Self { db, cache }
    }

    /// The database handles.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The item with `id`, ready to send, or `None` if there is none.
    #[tracing::instrument(level = "debug", skip_all, fields(id = id, cache))]
    pub async fn get(&self, id: i64) -> Result<Option<Arc<CachedItem>>, DbErr> {
        let Some(cache) = &self.cache else {
            return Ok(repo::get(&self.db.read, id)
                .await?
                .as_ref()
                .map(CachedItem::from_model));
        };
        let (slot, lookup) = match cache.get(id).await {
            Some(slot) => (slot, Lookup::Hit),
            None => cache.load(id, || self.load(id)).await?,
        };
        tracing::Span::current().record("cache", tracing::field::debug(lookup));
        Ok(match slot {
            Slot::Found(item) => Some(item),
            Slot::Missing | Slot::Deleted => None,
        })
    }

    async fn load(&self, id: i64) -> Result<Slot, DbErr> {
        Ok(match repo::get(&self.db.read, id).await? {
            Some(model) => Slot::Found(CachedItem::from_model(&model)),
            None => Slot::Missing,
        })
    }

    /// Creates an item and answers it as stored.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn create(&self, item: NewItem) -> Result<Arc<CachedItem>, DbErr> {
        let this = self.clone();
        // Spawned so that a client hanging up cannot cancel the write between commit and cache update.
        detach(async move {
            let model = repo::insert(&this.db.write, item).await?;
            let cached = CachedItem::from_model(&model);
            if let Some(cache) = &this.cache {
                cache.publish(model.id, cached.clone()).await;
            }
            Ok(cached)
        })
        .await
    }

    /// Applies `changes` to item `id` if `pre` holds; bumps its version.
    #[tracing::instrument(level = "debug", skip_all, fields(id = id))]
    pub async fn update(
        &self,
        id: i64,
        changes: Changes,
        pre: Precondition,
    ) -> Result<WriteOutcome<Arc<CachedItem>>, DbErr> {
        let this = self.clone();
        detach(async move {
            Ok(
                match repo::update(&this.db.write, id, changes, &pre).await? {
                    WriteOutcome::Done(model) => {
                        let cached = CachedItem::from_model(&model);
                        if let Some(cache) = &this.cache {
                            cache.publish(id, cached.clone()).await;
                        }
                        WriteOutcome::Done(cached)
                    }
                    WriteOutcome::NotFound => WriteOutcome::NotFound,
                    WriteOutcome::Conflict => WriteOutcome::Conflict,
                },
            )
        })
        .await
    }

    /// Deletes item `id` if `pre` holds.
    #[tracing::instrument(level = "debug", skip_all, fields(id = id))]
    pub async fn delete(&self, id: i64, pre: Precondition) -> Result<WriteOutcome<()>, DbErr> {
        let this = self.clone();
        detach(async move {
            let outcome = repo::delete(&this.db.write, id, &pre).await?;
            if let (WriteOutcome::Done(()), Some(cache)) = (&outcome, &this.cache) {
                cache.tombstone(id).await;
            }
            Ok(outcome)
        })
        .await
    }

    /// One page of items in ascending id order, and the id to continue after, if any.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn list_page(
        &self,
        after: Option<i64>,
        since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<(Vec<Model>, Option<i64>), DbErr> {
        repo::list_page(&self.db.read, after, since, limit).await
    }
}

/// Runs `fut` on its own task, so dropping the caller does not abort it halfway.
async fn detach<T: Send + 'static>(
    fut: impl Future<Output = Result<T, DbErr>> + Send + 'static,
) -> Result<T, DbErr> {
    tokio::spawn(fut)
        .await
        .map_err(|e| DbErr::Custom(format!("write task failed: {e}")))?
}
