//! Cross-replica cache invalidation on PostgreSQL: one `LISTEN` connection per replica on the
//! `data_items` channel, fed by the table's trigger (every committed change, in commit order),
//! plus this replica's own heartbeats sent through the same channel.
//!
//! Lost notifications are detected, not hoped away: the connection is replaced, and the cache
//! flushed, whenever it reports a reconnect or an error or goes silent for the lease bound (with
//! heartbeats every fifth of the bound, silence means a dead connection); and the lease (see
//! `cache::coherence`) lapses, watched to the millisecond, whenever our own heartbeat has not
//! come back within the bound.

use std::time::Duration;

use metrics::{Counter, Histogram};
use sea_orm::sqlx::{
    Connection, Executor,
    postgres::{PgConnection, PgListener},
};

use super::standby::Standbys;
use crate::cache::{
    coherence::{Coherence, Flush},
    items::{Change, ItemCache},
};
use crate::db::sql::positions::{self, HEARTBEAT, HEARTBEAT_MESSAGE};
use crate::metrics::{Metrics, catalog::*};

/// The channel the `data_items` trigger notifies (migration `m20261127_000002_replicas`).
pub const CHANNEL: &str = "data_items";

/// What arrived on the channel (or, for the commit-log feed, what a decoded change or
/// message means).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Notice {
    /// `I|U|D:<id>:<version>:<unix seconds>`
    Change {
        id: i64,
        change: Change,
        at_unix: f64,
    },
    /// `T:<unix seconds>`: the table was truncated.
    Truncated,
    /// `H:<replica>:<sent ms>[:<primary WAL position when sent>]`
    Heartbeat {
        replica: u64,
        sent_ms: u64,
        lsn: Option<u64>,
    },
}

impl Notice {
    pub(super) fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(':');
        let kind = parts.next()?;
        if kind == "T" {
            return Some(Self::Truncated);
        }
        if kind == "H" {
            let replica = u64::from_str_radix(parts.next()?, 16).ok()?;
            let sent_ms = parts.next()?.parse().ok()?;
            let lsn = match parts.next() {
                Some(text) => Some(positions::parse_lsn(text)?),
                None => None,
            };
            return Some(Self::Heartbeat {
                replica,
                sent_ms,
                lsn,
            });
        }
        let id = parts.next()?.parse().ok()?;
        let version = parts.next()?.parse().ok()?;
        let at_unix = parts.next()?.parse().ok()?;
        let change = match kind {
            "I" | "U" => Change::Written(version),
            "D" => Change::Deleted,
            _ => return None,
        };
        Some(Self::Change {
            id,
            change,
            at_unix,
        })
    }
}

/// The feed's measures (either feed).
pub(super) struct Measures {
    applied: Counter,
    ignored: Counter,
    pub(super) reconnects: Counter,
    change_lag: Histogram,
    heartbeat_lag: Histogram,
}

impl Measures {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let result =
            |r| metrics.counter(&CACHE_INVALIDATIONS, &[("cache", "items"), ("result", r)]);
        let lag =
            |k| metrics.histogram(&CACHE_NOTIFICATION_LAG, &[("cache", "items"), ("kind", k)]);
        Self {
            applied: result("applied"),
            ignored: result("ignored"),
            reconnects: metrics.counter(&CACHE_LISTENER_RECONNECTS, &[("cache", "items")]),
            change_lag: lag("change"),
            heartbeat_lag: lag("heartbeat"),
        }
    }
}

/// Registers the listener's series (so they exist, at 0, on every replica and backend).
pub fn register(metrics: &Metrics) {
    let _ = Measures::new(metrics);
}

/// What the listener acts on.
pub(super) struct Heard<'a> {
    pub cache: &'a ItemCache,
    pub m: &'a Measures,
    pub replica: u64,
    pub standbys: Option<&'a Standbys>,
}

/// Listens until aborted, replacing the connection (and flushing) on every gap.
pub(super) async fn listen(url: &str, heard: &Heard<'_>) {
    let (cache, m) = (heard.cache, heard.m);
    let coherence = cache.coherence();
    let bound = coherence.bound();
    let mut first = true;
    loop {
        let mut listener = match connect(url, bound).await {
            Ok(l) => l,
            Err(e) => {
                // No lease is held here (none yet, or dropped at the gap): nothing to flush.
                tracing::warn!(error = %e, "invalidation listener cannot connect; retrying");
                tokio::time::sleep(bound / 5).await;
                continue;
            }
        };
        // The gap's flush retired everything cached before it, and without the lease nothing
        // was stored since; the lease returns with the first heartbeat sent after LISTEN.
        if !first {
            m.reconnects.increment(1);
        }
        first = false;
        tracing::info!("invalidation listener connected");
        let gap = loop {
            match tokio::time::timeout(bound, listener.try_recv()).await {
                Ok(Ok(Some(n))) => handle(n.payload(), heard).await,
                Ok(Ok(None)) => break Flush::Reconnect,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "invalidation listener failed");
                    break Flush::Error;
                }
                Err(_silent) => break Flush::Silence,
            }
        };
        tracing::warn!(
            reason = gap.as_str(),
            "invalidation channel gap: cache flushed"
        );
        cache.flush(gap);
    }
}

async fn connect(url: &str, bound: Duration) -> Result<PgListener, sea_orm::sqlx::Error> {
    let connecting = async {
        let mut listener = PgListener::connect(url).await?;
        // Reconnects are ours to make (and to flush for).
        listener.eager_reconnect(false);
        if let Err(e) = (&mut listener).execute(positions::ENABLE_NOTIFY).await {
            tracing::error!(
                error = %e,
                "cannot enable the notifying trigger on data_items: this replica serves no \
                 hits until it is enabled (ALTER TABLE data_items ENABLE TRIGGER ...)"
            );
        }
        listener.listen(CHANNEL).await?;
        Ok(listener)
    };
    tokio::time::timeout(bound.max(Duration::from_secs(1)), connecting)
        .await
        .unwrap_or(Err(sea_orm::sqlx::Error::PoolTimedOut))
}

async fn handle(payload: &str, heard: &Heard<'_>) {
    match Notice::parse(payload) {
        Some(notice) => apply(notice, heard).await,
        None => tracing::warn!(payload, "unreadable invalidation notice"),
    }
}

/// Acts on one notice: a change invalidates, our own heartbeat renews the lease, a truncate
/// flushes.
pub(super) async fn apply(notice: Notice, heard: &Heard<'_>) {
    let (cache, m) = (heard.cache, heard.m);
    match notice {
        Notice::Change {
            id,
            change,
            at_unix,
        } => {
            if cache.invalidate(id, change).await {
                m.applied.increment(1);
            } else {
                m.ignored.increment(1);
            }
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            m.change_lag.record((now - at_unix).max(0.0));
        }
        Notice::Heartbeat {
            replica: from,
            sent_ms,
            lsn,
        } if from == heard.replica => {
            let coherence = cache.coherence();
            coherence.heartbeat_returned(sent_ms);
            if let (Some(standbys), Some(lsn)) = (heard.standbys, lsn) {
                standbys.heartbeat_returned(sent_ms, lsn);
            }
            let lag_ms = coherence.clock_ms().saturating_sub(sent_ms);
            m.heartbeat_lag.record(lag_ms as f64 / 1000.0);
        }
        // Other replicas' heartbeats.
        Notice::Heartbeat { .. } => {}
        Notice::Truncated => {
            tracing::warn!("data_items was truncated: cache flushed");
            cache.flush(Flush::Truncate);
        }
    }
}

/// How a heartbeat travels.
#[derive(Debug, Clone, Copy)]
pub(super) enum Beat {
    /// Notified on the trigger's channel.
    Notify,
    /// A logical decoding message, read back from the commit-log feed.
    Message,
}

/// The logical decoding message prefix of our heartbeats.
pub(super) const MESSAGE_PREFIX: &str = "data_api";

/// Sends a heartbeat every fifth of the lease bound, on a connection of its own.
pub(super) async fn heartbeat(url: &str, coherence: &Coherence, replica: u64, beat: Beat) {
    let bound = coherence.bound();
    let mut tick = tokio::time::interval(bound / 5);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<PgConnection> = None;
    loop {
        tick.tick().await;
        if conn.is_none() {
            conn = tokio::time::timeout(bound, PgConnection::connect(url))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(c) = conn.as_mut() else { continue };
        let payload = format!("H:{replica:x}:{}:", coherence.clock_ms());
        // The primary's WAL position as the heartbeat leaves (see `standby`).
        let (sql, target) = match beat {
            Beat::Notify => (HEARTBEAT, CHANNEL),
            Beat::Message => (HEARTBEAT_MESSAGE, MESSAGE_PREFIX),
        };
        let sent = sea_orm::sqlx::query(sql)
            .bind(target)
            .bind(payload)
            .execute(&mut *c);
        if !matches!(tokio::time::timeout(bound, sent).await, Ok(Ok(_))) {
            conn = None;
        }
    }
}

/// Drops the lease, flushing the cache, as soon as our heartbeat is overdue: it sleeps until the
/// lease's end (moved on by each returning heartbeat), so hits stop within a timer tick of it;
/// on its own timer, so a slow connect or send cannot delay it.
pub(super) async fn watch_lease(coherence: &Coherence, cache: &ItemCache) {
    let idle = coherence.bound() / 10;
    loop {
        if coherence.lease_overdue() {
            tracing::warn!("heartbeat overdue: cache lease dropped and cache flushed");
            cache.flush(Flush::Lease);
        }
        let wait = match coherence.lease_left() {
            // Not held: nothing can run out; look again soon.
            None => idle,
            Some(left) => left.max(Duration::from_millis(1)),
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notices() {
        assert_eq!(
            Notice::parse("U:42:3:1764265600.123456"),
            Some(Notice::Change {
                id: 42,
                change: Change::Written(3),
                at_unix: 1764265600.123456
            })
        );
        assert!(matches!(
            Notice::parse("D:42:3:1764265600"),
            Some(Notice::Change {
                change: Change::Deleted,
                ..
            })
        ));
        assert_eq!(
            Notice::parse("H:ff:1200"),
            Some(Notice::Heartbeat {
                replica: 255,
                sent_ms: 1200,
                lsn: None
            })
        );
        assert_eq!(
            Notice::parse("H:ff:1200:0/16B3748"),
            Some(Notice::Heartbeat {
                replica: 255,
                sent_ms: 1200,
                lsn: Some(0x16B_3748)
            })
        );
        assert_eq!(Notice::parse("T:1764265600.5"), Some(Notice::Truncated));
        for bad in ["", "X:1:1:1", "U:one:1:1", "H:zz:1", "U:1:1", "H:ff:1:0-1"] {
            assert_eq!(Notice::parse(bad), None, "{bad}");
        }
    }
}
