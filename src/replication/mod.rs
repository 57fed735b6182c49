//! What keeps several replicas and the standbys honest: a feed hears every committed change
//! (and this replica's heartbeats, which hold the cache's lease) and applies it to the cache:
//! `stream` reads PostgreSQL's commit log (logical decoding, `pgoutput` decoded in
//! `pgoutput`), `listener` the trigger's `NOTIFY` channel where logical decoding is not
//! available; `standby` reads from streaming standbys, watching their lag behind a breaker.
//!
//! Uses `cache`, `db`, `metrics` and `config`; never `store`.

pub(crate) mod listener;
mod pgoutput;
pub(crate) mod standby;
pub(crate) mod stream;

use std::sync::Arc;

use crate::cache::ItemCache;
use crate::config::Invalidation;
use crate::metrics::Metrics;
use listener::{Beat, Heard, Measures};
use standby::Standbys;

/// How a replica hears of other replicas' changes (`cache_invalidation_feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// PostgreSQL's commit log, through a temporary logical replication slot.
    Stream,
    /// The table's trigger, through `LISTEN`.
    Trigger,
}

impl Feed {
    /// Both, in label order.
    pub const ALL: [Self; 2] = [Self::Stream, Self::Trigger];

    /// The `feed` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Trigger => "trigger",
        }
    }

    /// The feed `--invalidation` asks for, where the server at `url` allows it; said once.
    pub async fn choose(asked: Invalidation, url: &str) -> Self {
        if asked == Invalidation::Trigger {
            return Self::Trigger;
        }
        match stream::available(url, FEED_PROBE).await {
            Ok(()) => {
                tracing::info!("invalidation: PostgreSQL's commit log (logical decoding)");
                Self::Stream
            }
            Err(why) => {
                tracing::warn!(
                    why,
                    "invalidation: the commit log cannot be streamed here, so the trigger's \
                     notifications are used: every write waits for a cluster-wide commit lock \
                     (set wal_level = logical and grant REPLICATION to stream instead)"
                );
                Self::Trigger
            }
        }
    }
}

/// Longest the start-up probe of the commit-log feed may take.
const FEED_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `cache` coherent with changes committed anywhere, through `feed` from `url` (the
/// primary), until aborted: the feed, this replica's heartbeats through it, and the lease
/// watch side by side. Returning heartbeats also tell the `standbys` where the primary's WAL was
/// when they left.
pub async fn run(
    feed: Feed,
    url: String,
    cache: ItemCache,
    metrics: Arc<Metrics>,
    standbys: Option<Arc<Standbys>>,
) {
    let replica = rand::random::<u64>();
    let coherence = cache.coherence().clone();
    let measures = Measures::new(&metrics);
    let heard = Heard {
        cache: &cache,
        m: &measures,
        replica,
        standbys: standbys.as_deref(),
    };
    let lease = listener::watch_lease(&coherence, &cache);
    match feed {
        Feed::Stream => {
            let beats = listener::heartbeat(&url, &coherence, replica, Beat::Message);
            tokio::join!(stream::follow(&url, &heard), beats, lease);
        }
        Feed::Trigger => {
            let beats = listener::heartbeat(&url, &coherence, replica, Beat::Notify);
            tokio::join!(listener::listen(&url, &heard), beats, lease);
        }
    }
}
