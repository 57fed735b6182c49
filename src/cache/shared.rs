//! The fleet's shared second level (`--redis-url`): a replica's miss asks Redis before the
//! database, and what it reads from the database it leaves in Redis for the other replicas.
//!
//! The rules (what keeps "once a write is acknowledged, no replica answers the older version"
//! true with Redis in the path):
//! 1. **Versions only move forward.** Every change to an entry is one script (`PUT`) that
//!    compares versions inside Redis: a found row (`F`) never replaces a newer version, a delete
//!    (`D`) is final, and a floor (`L`, "this version or newer exists", no body) makes every
//!    older fill land on nothing. So a slow fill that read the row before a write cannot put the
//!    old row back after it.
//! 2. **Writes go through before they are acknowledged.** The writing replica puts its new row
//!    (or the delete) into Redis before answering, within `--redis-timeout`.
//! 3. **Every committed change floors Redis.** Each replica applies each change its feed
//!    delivers (its own, other replicas', psql's, `seed`'s) as a floor, so Redis hears of a
//!    change as soon as any replica does, whoever made it. Floors and deletes live at least as
//!    long as the longest fill ([`TOMBSTONE_TTL`]).
//! 4. **Anything this replica may have failed to tell Redis is a gap, paid with an epoch.** A
//!    write-through, floor or delete that failed or timed out, and a gap of the replica's own
//!    feed (its cache flush), leave it owing Redis an epoch bump: until it has `INCR`ed the
//!    fleet's Redis epoch it neither reads from nor fills Redis. Entries carry the epoch they
//!    were stored in and only entries of the current epoch are answered, so the bump retires
//!    everything stored before the gap, for every replica. A fill stores only in the epoch it
//!    saw at its miss (a read of the database from before the bump never lands after it).
//! 5. **Redis answers are held to this replica's marks** (`Store::load`): an entry older than
//!    what this replica knows was committed is not taken, as with a standby.
//! 6. **Only while the lease is held.** Without it the replica does not know what it missed,
//!    so it reads the database (see `ItemCache::load`).
//! 7. **Redis never fails a request.** Every call has `--redis-timeout`; after
//!    [`BREAKER_FAILURES`] failures in a row the breaker opens for [`BREAKER_PAUSE`] and reads go
//!    to the database while the replica's own cache works on.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::items::{CachedItem, Change, Slot, etag};
use crate::metrics::{Metrics, catalog::*};

/// How long floors and deletes stay in Redis: longer than any fill can take (a fill is bounded
/// by the pool wait, the statement timeout and a margin, far below this).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(120);
/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker keeps requests away from Redis before one tries again.
pub const BREAKER_PAUSE: Duration = Duration::from_secs(1);

/// Reads the fleet's epoch and one entry: `{epoch, entry or false}`.
const GET: &str =
    r"return {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or false}";

/// Stores `ARGV[3]` (kind) of item `ARGV[6]` at version `ARGV[2]` with body `ARGV[4]` for
/// `ARGV[5]` ms, if the fleet's epoch is still `ARGV[1]` and versions only move forward (rule
/// 1). 1: stored. An entry reads `epoch:id:version:kind:body`: the id is checked on the way out,
/// so an answer can never be taken for another item's.
const PUT: &str = r"
local e = redis.call('GET', KEYS[1]) or '0'
if e ~= ARGV[1] then return 0 end
local cur = redis.call('GET', KEYS[2])
if cur then
  local ce, cv, ck = string.match(cur, '^(%d+):%-?%d+:(%-?%d+):(%a):')
  if ce == e then
    if ck == 'D' then return 0 end
    local v, old = tonumber(ARGV[2]), tonumber(cv)
    if ARGV[3] ~= 'D' and (old > v or (old == v and ck == 'F')) then return 0 end
  end
end
redis.call('SET', KEYS[2], e .. ':' .. ARGV[6] .. ':' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4], 'PX', ARGV[5])
return 1";

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The row at this version.
    Found,
    /// This version or a newer one exists; no body.
    Floor,
    /// Deleted (final).
    Deleted,
}

impl Kind {
    const fn code(self) -> &'static str {
        match self {
            Self::Found => "F",
            Self::Floor => "L",
            Self::Deleted => "D",
        }
    }
}

/// What a look-up in Redis found.
#[derive(Debug)]
pub enum Lookup {
    /// An answer of the current epoch.
    Hit(Slot),
    /// Nothing usable; a fill may store what it reads in this epoch.
    Miss { epoch: u64 },
    /// Redis was not asked or did not answer (breaker, debt, error, timeout).
    Unavailable,
}

/// The `result` label of look-ups.
#[derive(Debug, Clone, Copy)]
enum Looked {
    Hit,
    Miss,
    Error,
    Skipped,
}

impl Looked {
    const ALL: [Self; 4] = [Self::Hit, Self::Miss, Self::Error, Self::Skipped];
    const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }
}

/// The `operation` label of calls to Redis.
#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Put,
    Bump,
}

impl Op {
    const ALL: [Self; 3] = [Self::Get, Self::Put, Self::Bump];
    const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Bump => "epoch_bump",
        }
    }
}

struct Measures {
    lookups: [Counter; Looked::ALL.len()],
    duration: [Histogram; Op::ALL.len()],
    errors: [Counter; Op::ALL.len()],
    usable: Gauge,
}

impl Measures {
    fn new(metrics: &Metrics) -> Self {
        Self {
            lookups: Looked::ALL
                .map(|r| metrics.counter(&CACHE_REDIS_LOOKUPS, &[("result", r.as_str())])),
            duration: Op::ALL
                .map(|o| metrics.histogram(&CACHE_REDIS_DURATION, &[("operation", o.as_str())])),
            errors: Op::ALL
                .map(|o| metrics.counter(&CACHE_REDIS_ERRORS, &[("operation", o.as_str())])),
            usable: metrics.gauge(&CACHE_REDIS_USABLE, &[]),
        }
    }
}

/// Registers the shared level's metrics (so they show before the first use).
pub fn register(metrics: &Metrics) {
    let _ = Measures::new(metrics);
}

/// The shared second level; cheap to clone.
#[derive(Clone)]
pub struct SharedCache {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    epoch_key: String,
    /// Set, with an expiry, by every replica whose feed is healthy and who owes nothing.
    alive_key: String,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
    /// The fleet's epoch as last read (write-throughs store in it).
    epoch: AtomicU64,
    /// Rule 4: an epoch bump is owed before Redis is used again.
    owes: AtomicBool,
    /// Until the first debt is settled: it is waived if another replica is `alive`.
    starting: AtomicBool,
    failures: AtomicU32,
    /// While the breaker is open: until when, in ms since `start`.
    open_until_ms: AtomicU64,
    start: Instant,
    m: Measures,
}

impl SharedCache {
    /// A client for `url` (not connected until first used, so the service starts without
    /// Redis); keys start with `prefix`; found rows live `ttl`.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        ttl: Duration,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(BREAKER_PAUSE);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("--redis-url: {e}"))?;
        let m = Measures::new(metrics);
        m.usable.set(1.0);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                epoch_key: format!("{prefix}epoch"),
                alive_key: format!("{prefix}alive"),
                prefix: prefix.to_owned(),
                timeout,
                ttl,
                epoch: AtomicU64::new(0),
                // A replica that starts owes a bump unless another replica is hearing the feed
                // and flooring Redis (`alive`): then the changes committed before this one heard
                // them are floored already.
                owes: AtomicBool::new(true),
                starting: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                start: Instant::now(),
                m,
            }),
        })
    }

    fn key(&self, id: i64) -> String {
        format!("{}item:{id}", self.inner.prefix)
    }

    /// Looks `id` up (rule 6 is the caller's: only with the lease).
    pub async fn get(&self, id: i64) -> Lookup {
        let i = &self.inner;
        if !self.ready().await {
            i.m.lookups[Looked::Skipped as usize].increment(1);
            return Lookup::Unavailable;
        }
        let mut conn = i.conn.clone();
        let script = redis::Script::new(GET);
        let mut call = script.key(&i.epoch_key);
        call.key(self.key(id));
        let answer: Option<(String, Option<Vec<u8>>)> =
            self.call(Op::Get, call.invoke_async(&mut conn)).await;
        let Some((epoch, entry)) = answer else {
            i.m.lookups[Looked::Error as usize].increment(1);
            return Lookup::Unavailable;
        };
        let epoch = epoch.parse().unwrap_or(0);
        i.epoch.store(epoch, Ordering::Relaxed);
        match entry.and_then(|e| decode(id, epoch, e)) {
            Some(slot) => {
                i.m.lookups[Looked::Hit as usize].increment(1);
                Lookup::Hit(slot)
            }
            None => {
                i.m.lookups[Looked::Miss as usize].increment(1);
                Lookup::Miss { epoch }
            }
        }
    }

    /// Leaves what a fill read from the database for the other replicas, in the epoch its miss
    /// saw; in the background (a fill does not wait for it).
    pub fn fill(&self, id: i64, slot: &Slot, epoch: u64) {
        if let Slot::Found(item) = slot {
            let (this, item) = (self.clone(), item.clone());
            tokio::spawn(async move {
                let ttl = this.inner.ttl;
                this.put(id, epoch, item.version, Kind::Found, &item.body, ttl)
                    .await;
            });
        }
    }

    /// Rule 2: a write this replica committed, before it is acknowledged.
    pub async fn written(&self, item: &CachedItem) {
        let (epoch, ttl) = (self.inner.epoch.load(Ordering::Relaxed), self.inner.ttl);
        let id = item.id;
        if !self
            .put(id, epoch, item.version, Kind::Found, &item.body, ttl)
            .await
        {
            // Rule 3 still floors it through the feed; a failure is a gap either way.
            self.owe();
        }
    }

    /// Rule 2 for a delete this replica committed, and rule 3 for every delete heard.
    pub async fn deleted(&self, id: i64) {
        let epoch = self.inner.epoch.load(Ordering::Relaxed);
        if !self
            .put(id, epoch, 0, Kind::Deleted, &[], TOMBSTONE_TTL)
            .await
        {
            self.owe();
        }
    }

    /// Rule 3: a committed change to `id` heard from the feed; in the background.
    pub fn heard(&self, id: i64, change: Change) {
        let this = self.clone();
        tokio::spawn(async move {
            let epoch = this.inner.epoch.load(Ordering::Relaxed);
            let (version, kind) = match change {
                Change::Written(v) => (v, Kind::Floor),
                Change::Deleted => (0, Kind::Deleted),
            };
            if !this.put(id, epoch, version, kind, &[], TOMBSTONE_TTL).await {
                this.owe();
            }
        });
    }

    /// Says, for `for_how_long`, that this replica hears the feed and floors Redis (called
    /// while its lease is held), once it owes nothing (paying what it owes first).
    pub async fn alive(&self, for_how_long: Duration) {
        let i = &self.inner;
        if !self.ready().await {
            return;
        }
        let mut conn = i.conn.clone();
        let ms = u64::try_from(for_how_long.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(&i.alive_key).arg(1).arg("PX").arg(ms);
        let _ = self.call(Op::Put, set.query_async::<()>(&mut conn)).await;
    }

    /// Rule 4: this replica's feed had a gap (its cache was flushed).
    pub fn flushed(&self) {
        self.owe();
    }

    /// One `PUT`; whether it ran (stored or rightly refused). A refusal for a stale epoch is
    /// not a failure: the entry it would have replaced is retired anyway.
    async fn put(
        &self,
        id: i64,
        epoch: u64,
        version: i64,
        kind: Kind,
        body: &[u8],
        ttl: Duration,
    ) -> bool {
        let i = &self.inner;
        if !self.ready().await {
            return false;
        }
        let mut conn = i.conn.clone();
        let script = redis::Script::new(PUT);
        let mut call = script.key(&i.epoch_key);
        call.key(self.key(id))
            .arg(epoch)
            .arg(version)
            .arg(kind.code())
            .arg(body)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(id);
        let stored: Option<i64> = self.call(Op::Put, call.invoke_async(&mut conn)).await;
        stored.is_some()
    }

    /// Whether Redis may be used now: the breaker closed, and no epoch owed (paid here if
    /// owed).
    async fn ready(&self) -> bool {
        let i = &self.inner;
        let now_ms = i.start.elapsed().as_millis() as u64;
        if now_ms < i.open_until_ms.load(Ordering::Relaxed) {
            return false;
        }
        if !i.owes.load(Ordering::Acquire) {
            return true;
        }
        // Pay the debt: clear it first, so a failure noted while paying owes again.
        i.owes.store(false, Ordering::Release);
        let mut conn = i.conn.clone();
        if i.starting.load(Ordering::Acquire) {
            let alive: Option<Option<String>> = self
                .call(
                    Op::Get,
                    redis::cmd("GET").arg(&i.alive_key).query_async(&mut conn),
                )
                .await;
            match alive {
                Some(Some(_)) if !i.owes.load(Ordering::Acquire) => {
                    i.starting.store(false, Ordering::Release);
                    i.m.usable.set(1.0);
                    return true;
                }
                Some(_) => {}
                None => {
                    i.owes.store(true, Ordering::Release);
                    return false;
                }
            }
        }
        let epoch: Option<u64> = self
            .call(
                Op::Bump,
                redis::cmd("INCR").arg(&i.epoch_key).query_async(&mut conn),
            )
            .await;
        match epoch {
            Some(e) => {
                i.starting.store(false, Ordering::Release);
                i.epoch.store(e, Ordering::Relaxed);
                i.m.usable.set(1.0);
                true
            }
            None => {
                i.owes.store(true, Ordering::Release);
                false
            }
        }
    }

    fn owe(&self) {
        self.inner.owes.store(true, Ordering::Release);
        self.inner.m.usable.set(0.0);
    }

    /// Runs one call within the timeout, measured; `None` on error or timeout (counted, and
    /// counted towards the breaker).
    async fn call<T>(&self, op: Op, fut: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        let i = &self.inner;
        let started = Instant::now();
        let result = tokio::time::timeout(i.timeout, fut).await;
        i.m.duration[op as usize].record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => {
                i.failures.store(0, Ordering::Relaxed);
                Some(value)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, operation = op.as_str(), "redis call failed");
                self.failed(op);
                None
            }
            Err(_elapsed) => {
                self.failed(op);
                None
            }
        }
    }

    fn failed(&self, op: Op) {
        let i = &self.inner;
        i.m.errors[op as usize].increment(1);
        if i.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            let until = i.start.elapsed() + BREAKER_PAUSE;
            i.open_until_ms
                .store(until.as_millis() as u64, Ordering::Relaxed);
            i.failures.store(0, Ordering::Relaxed);
            tracing::warn!("redis: breaker open; reads go to the database");
        }
        // Whatever this call was to tell Redis may not have arrived (rule 4).
        self.owe();
    }
}

/// The slot an entry `raw` of item `id` answers, if it is of `epoch` and answers anything.
fn decode(id: i64, epoch: u64, raw: Vec<u8>) -> Option<Slot> {
    let raw = Bytes::from(raw);
    let mut parts = raw.splitn(5, |b| *b == b':');
    let stored_epoch: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stored_id: i64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let version: i64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let kind = parts.next()?;
    let header = raw.len() - parts.next()?.len();
    if stored_epoch != epoch || stored_id != id {
        return None;
    }
    match kind {
        b"F" => Some(Slot::Found(Arc::new(CachedItem {
            id,
            version,
            etag: etag(version),
            body: raw.slice(header..),
        }))),
        b"D" => Some(Slot::Deleted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entries_of_the_current_epoch_only() {
        let found = decode(7, 3, b"3:7:5:F:{\"id\":7}".to_vec());
        assert!(
            matches!(found, Some(Slot::Found(ref i)) if i.version == 5 && &i.body[..] == b"{\"id\":7}")
        );
        assert!(decode(7, 4, b"3:7:5:F:{}".to_vec()).is_none());
        assert!(matches!(
            decode(7, 3, b"3:7:0:D:".to_vec()),
            Some(Slot::Deleted)
        ));
        assert!(decode(7, 3, b"3:7:9:L:".to_vec()).is_none());
        assert!(decode(7, 3, b"garbage".to_vec()).is_none());
        assert!(
            decode(8, 3, b"3:7:5:F:{}".to_vec()).is_none(),
            "another item's entry"
        );
    }
}
