//! Reads from PostgreSQL streaming standbys (`--database-read-url`), without answering older
//! than what this replica already knows.
//!
//! A standby takes reads only while it is *serving*, decided by `watch` on a short tick:
//! - it answers (else *down*);
//! - its replay lag, measured against the primary's WAL position over time, is within
//!   `--max-replica-lag` (else *lagging*: a breaker with hysteresis, closed again only after the
//!   lag has stayed under half the bound for a while);
//! - it has replayed past the primary's WAL position taken when this replica's invalidation
//!   feed was last known complete (else *catching up*). Every gap in the feed starts a new cache
//!   epoch; a heartbeat sent after the gap carries the primary's position, and until the
//!   standby has replayed past it, changes whose notices were lost may be missing there.
//!
//! The read path checks one atomic word per standby: the epoch it serves in. A fill also needs
//! the standby to have replayed past every version mark this replica has dropped (see `marks`),
//! carries the id's mark, and is re-read on the primary when the standby's answer is older; any error from a standby (down, a query canceled by a recovery conflict) is retried
//! on the primary, so a standby never fails a read the primary could answer. Fills are batched
//! on each standby as on the primary (`batch`); the mark is checked per read, on its own row.
//!
//! Positions are sampled with the time the question was asked, not answered, so lag never reads
//! low; when the primary's position cannot be had, nothing can be judged and no standby serves.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{Counter, Gauge};
use sea_orm::{DatabaseConnection, DbErr};

use crate::cache::{
    coherence::Coherence,
    marks::{self, Stamp},
};
use crate::db::{
    self, DbFailure, Model, PoolStats,
    batch::ReadBatcher,
    pool::Pool,
    sql::positions::{self, Position},
};
use crate::{
    config::DbSettings,
    metrics::{Metrics, catalog::*},
};

/// The `pool` label of each standby, in `--database-read-url` order.
pub const POOL_NAMES: [&str; 8] = [
    "standby-0",
    "standby-1",
    "standby-2",
    "standby-3",
    "standby-4",
    "standby-5",
    "standby-6",
    "standby-7",
];

/// No epoch: the standby serves no reads.
const NONE: u64 = u64::MAX;

/// Primary WAL positions kept to measure lag against: at the shortest tick, over a minute.
const HISTORY: usize = 1200;

/// What a standby is doing (the `state` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Serving,
    /// Replay lag over `--max-replica-lag`: the breaker is open.
    Lagging,
    /// Not yet past the primary's position taken after the last gap in the invalidation feed.
    CatchingUp,
    Down,
}

impl State {
    pub const ALL: [Self; 4] = [Self::Serving, Self::Lagging, Self::CatchingUp, Self::Down];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Lagging => "lagging",
            Self::CatchingUp => "catching_up",
            Self::Down => "down",
        }
    }
}

/// Why a read was run again on the primary (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The standby's answer was older than what this replica knows was committed (its mark).
    Floor,
    /// The standby canceled the query for a conflict with recovery.
    Conflict,
    /// The standby could not be reached or could not serve.
    Unavailable,
    /// Any other error from the standby.
    Error,
}

impl Fallback {
    pub const ALL: [Self; 4] = [Self::Floor, Self::Conflict, Self::Unavailable, Self::Error];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }

    /// Classifies an error from a standby.
    pub fn of(err: &DbErr) -> Self {
        // PostgreSQL cancels a standby's query for a recovery conflict with serialization
        // failure (40001), or deadlock detected (40P01) for buffer-pin deadlocks.
        let code = match err {
            DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
            | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned()),
            _ => None,
        };
        if matches!(code.as_deref(), Some("40001" | "40P01")) {
            Self::Conflict
        } else if DbFailure::of(err).is_unavailable() {
            Self::Unavailable
        } else {
            Self::Error
        }
    }
}

/// One standby: its pool, and whether it serves now.
pub struct Standby {
    pub db: DatabaseConnection,
    pub pool: Arc<Pool>,
    /// Item reads, batched as on the primary.
    item_reads: ReadBatcher,
    /// The cache epoch it serves reads in (`NONE`: it does not).
    serving_in: AtomicU64,
    /// It has replayed every change committed before this moment (a `marks::Stamp`; 0: none
    /// known).
    replayed_through: AtomicU64,
    fallbacks: [Counter; Fallback::ALL.len()],
    lag: Gauge,
    states: [Gauge; State::ALL.len()],
    breaker: Mutex<Breaker>,
}

impl Standby {
    /// Reads item `id` here, in a batch unless batching is off.
    pub async fn read(&self, id: i64) -> Result<Option<Model>, DbErr> {
        self.item_reads.get(id).await
    }

    /// Counts a read that goes to the primary instead.
    pub fn fell_back(&self, why: Fallback) {
        self.fallbacks[why as usize].increment(1);
    }
}

/// The lag breaker of one standby: open above the bound, closed again once the lag has stayed
/// at or under half of it for `calm`.
#[derive(Debug)]
struct Breaker {
    open: bool,
    calm_since: Option<Instant>,
    state: State,
}

impl Breaker {
    /// Feeds one measurement (`None`: the standby did not answer); returns whether it is open.
    fn observe(&mut self, lag: Option<Duration>, bound: Duration, calm: Duration) -> bool {
        let now = Instant::now();
        match lag {
            None => {
                self.open = true;
                self.calm_since = None;
            }
            Some(lag) if lag > bound => {
                self.open = true;
                self.calm_since = None;
            }
            Some(lag) if self.open && lag <= bound / 2 => {
                let since = *self.calm_since.get_or_insert(now);
                if now.duration_since(since) >= calm {
                    self.open = false;
                    self.calm_since = None;
                }
            }
            Some(_) => self.calm_since = None,
        }
        self.open
    }
}

/// The standbys of this replica.
pub struct Standbys {
    list: Vec<Standby>,
    next: AtomicUsize,
    coherence: Arc<Coherence>,
    max_lag: Duration,
    /// Whether an invalidation listener runs (its heartbeats carry the positions to catch up
    /// to); without one, the primary's position at start is the only one needed.
    listener: bool,
    /// The primary position a standby must have replayed to serve in an epoch: (epoch, LSN).
    resync: Mutex<Option<(u64, u64)>>,
}

impl Standbys {
    /// Opens a lazy pool per `--database-read-url` (a standby that is down does not stop the
    /// start); `None` without any.
    pub async fn connect(
        settings: &DbSettings,
        metrics: &Metrics,
        coherence: Arc<Coherence>,
        listener: bool,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let urls = &settings.read_urls;
        if urls.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            settings.url.starts_with("postgres"),
            "--database-read-url needs PostgreSQL as the primary (--database-url)"
        );
        anyhow::ensure!(
            urls.len() <= POOL_NAMES.len(),
            "--database-read-url takes at most {} standbys",
            POOL_NAMES.len()
        );
        let mut list = Vec::new();
        for (url, name) in urls.iter().zip(POOL_NAMES) {
            anyhow::ensure!(
                url.starts_with("postgres"),
                "--database-read-url must name PostgreSQL standbys: {}",
                db::describe(url)
            );
            let (conn, size) = db::connect_lazy(url, settings).await?;
            let pool = Pool::new(metrics, name, "postgresql", size, settings.acquire_timeout);
            let pool = Arc::new(pool);
            let item_reads = ReadBatcher::start(conn.clone(), pool.clone(), settings.read_batches);
            let label = [("pool", name)];
            list.push(Standby {
                db: conn,
                pool,
                item_reads,
                serving_in: AtomicU64::new(NONE),
                replayed_through: AtomicU64::new(0),
                fallbacks: Fallback::ALL.map(|f| {
                    metrics.counter(
                        &DB_REPLICA_FALLBACKS,
                        &[("pool", name), ("reason", f.as_str())],
                    )
                }),
                lag: metrics.gauge(&DB_REPLICA_LAG, &label),
                states: State::ALL.map(|s| {
                    metrics.gauge(&DB_REPLICA_STATE, &[("pool", name), ("state", s.as_str())])
                }),
                // Not yet measured: closed, and catching up until it is.
                breaker: Mutex::new(Breaker {
                    open: false,
                    calm_since: None,
                    state: State::CatchingUp,
                }),
            });
            tracing::info!(pool = name, database = %db::describe(url), "reads may go to a standby");
        }
        let standbys = Self {
            list,
            next: AtomicUsize::new(0),
            coherence,
            max_lag: settings.max_replica_lag,
            listener,
            resync: Mutex::new(None),
        };
        for s in &standbys.list {
            standbys.show(s, State::CatchingUp);
        }
        Ok(Some(Arc::new(standbys)))
    }

    /// A standby that may answer a read now, taking turns; `None` sends the read to the primary.
    pub fn pick(&self) -> Option<&Standby> {
        let epoch = self.coherence.now().epoch();
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &self.list[(start + k) % n])
            .find(|s| s.serving_in.load(Ordering::Acquire) == epoch)
    }

    /// A standby that may take a cache fill now: one that serves and has replayed past
    /// `marks_dropped` (every version mark this replica no longer holds).
    pub fn pick_for_fill(&self, marks_dropped: Stamp) -> Option<&Standby> {
        let epoch = self.coherence.now().epoch();
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| &self.list[(start + k) % n]).find(|s| {
            s.serving_in.load(Ordering::Acquire) == epoch
                && s.replayed_through.load(Ordering::Acquire) >= marks_dropped
        })
    }

    /// The moment every standby that answers has replayed past (`None`: none answers); marks
    /// older than it are needed by no standby that serves.
    pub fn replayed_by_all(&self) -> Option<Stamp> {
        self.list
            .iter()
            .filter(|s| s.serving_in.load(Ordering::Acquire) != NONE)
            .map(|s| s.replayed_through.load(Ordering::Acquire))
            .min()
    }

    /// Our heartbeat sent at `sent_ms`, when the primary's WAL was at `lsn`, came back: every
    /// change committed before it was sent has been notified. If it left after the gap that
    /// began this epoch, a standby past `lsn` misses nothing the feed lost.
    pub fn heartbeat_returned(&self, sent_ms: u64, lsn: u64) {
        let epoch = self.coherence.now().epoch();
        if !self.coherence.sent_in_epoch(epoch, sent_ms) {
            return;
        }
        let mut resync = self.resync.lock().unwrap_or_else(|p| p.into_inner());
        if resync.is_none_or(|(e, _)| e != epoch) {
            *resync = Some((epoch, lsn));
        }
    }

    /// Closes every standby's pool.
    pub async fn close(&self) {
        for s in &self.list {
            let _ = s.db.close_by_ref().await;
        }
    }

    /// Publishes each standby's pool gauges.
    pub fn sample(&self) {
        for s in &self.list {
            s.pool.sample(pool_stats(&s.db));
        }
    }

    /// Measures every standby's lag on a tick of a quarter of `--max-replica-lag` (50 ms to
    /// 1 s) and decides which serve, until aborted.
    pub async fn watch(self: Arc<Self>, primary: DatabaseConnection) {
        let every = (self.max_lag / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let calm = self.max_lag.max(every * 4);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history: VecDeque<(Instant, Stamp, u64)> = VecDeque::new();
        loop {
            tick.tick().await;
            let epoch = self.coherence.now().epoch();
            // Taken before asking: the position is at least what was committed by then.
            let (now, asked) = (Instant::now(), marks::now());
            let Ok(Some(now_lsn)) =
                positions::ask(&primary, Position::PrimaryWrite, every.max(ASK)).await
            else {
                // Without the primary's position lag cannot be judged: fail closed.
                self.stop_serving(State::Lagging);
                continue;
            };
            history.push_back((now, asked, now_lsn));
            if history.len() > HISTORY {
                history.pop_front();
            }
            if !self.listener {
                let mut resync = self.resync.lock().unwrap_or_else(|p| p.into_inner());
                resync.get_or_insert((epoch, now_lsn));
            }
            let resync = *self.resync.lock().unwrap_or_else(|p| p.into_inner());
            let replays = futures_util::future::join_all(
                self.list
                    .iter()
                    .map(|s| positions::ask(&s.db, Position::StandbyReplay, ASK)),
            )
            .await;
            for (s, replay) in self.list.iter().zip(replays) {
                // NULL: not in recovery, so a primary itself; nothing to replay.
                let replay = replay.ok().map(|r| r.unwrap_or(u64::MAX));
                let lag = replay.map(|r| lag_behind(&history, r, now));
                if let Some(through) = replay.and_then(|r| replayed_through(&history, r)) {
                    s.replayed_through.fetch_max(through, Ordering::AcqRel);
                }
                if let Some(lag) = lag {
                    s.lag.set(lag.as_secs_f64());
                }
                let mut breaker = s.breaker.lock().unwrap_or_else(|p| p.into_inner());
                let open = breaker.observe(lag, self.max_lag, calm);
                let caught_up = resync.is_some_and(|(e, lsn)| e == epoch && replay >= Some(lsn));
                let state = match (replay, open, caught_up) {
                    (None, ..) => State::Down,
                    (_, true, _) => State::Lagging,
                    (_, false, false) => State::CatchingUp,
                    (_, false, true) => State::Serving,
                };
                let serving_in = if state == State::Serving { epoch } else { NONE };
                s.serving_in.store(serving_in, Ordering::Release);
                if state != breaker.state {
                    log_change(s.pool.name(), breaker.state, state, lag, self.max_lag);
                    breaker.state = state;
                    self.show(s, state);
                }
            }
        }
    }

    /// Takes every standby out of service (`state` says why) until the next measurement.
    fn stop_serving(&self, state: State) {
        for s in &self.list {
            s.serving_in.store(NONE, Ordering::Release);
            let mut breaker = s.breaker.lock().unwrap_or_else(|p| p.into_inner());
            if breaker.state != state {
                log_change(s.pool.name(), breaker.state, state, None, self.max_lag);
                breaker.state = state;
                self.show(s, state);
            }
        }
    }

    fn show(&self, s: &Standby, state: State) {
        for (g, st) in s.states.iter().zip(State::ALL) {
            g.set(if st == state { 1.0 } else { 0.0 });
        }
    }
}

fn log_change(pool: &str, from: State, to: State, lag: Option<Duration>, bound: Duration) {
    let lag_ms = lag.map(|l| l.as_millis());
    let (from, to) = (from.as_str(), to.as_str());
    if to == State::Serving.as_str() {
        tracing::info!(pool, from, to, ?lag_ms, "standby serves reads");
    } else {
        let bound_ms = bound.as_millis();
        tracing::warn!(
            pool,
            from,
            to,
            ?lag_ms,
            bound_ms,
            "standby reads go to the primary"
        );
    }
}

/// How long a position query may take before the database counts as not answering.
const ASK: Duration = Duration::from_secs(1);

/// How long ago the primary first wrote WAL the standby has not replayed: the age of the
/// oldest sample past `replay` (zero if it has replayed everything sampled).
fn lag_behind(history: &VecDeque<(Instant, Stamp, u64)>, replay: u64, now: Instant) -> Duration {
    history
        .iter()
        .find(|(_, _, lsn)| *lsn > replay)
        .map_or(Duration::ZERO, |(at, _, _)| now.duration_since(*at))
}

/// The latest moment whose sampled primary position `replay` has reached: everything committed
/// before it has been replayed.
fn replayed_through(history: &VecDeque<(Instant, Stamp, u64)>, replay: u64) -> Option<Stamp> {
    history
        .iter()
        .rev()
        .find(|(_, _, lsn)| *lsn <= replay)
        .map(|(_, asked, _)| *asked)
}

fn pool_stats(db: &DatabaseConnection) -> PoolStats {
    let p = db.get_postgres_connection_pool();
    PoolStats {
        open: p.size(),
        idle: p.num_idle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_unreplayed_sample() {
        let now = Instant::now();
        let history: VecDeque<_> = [(3, 100), (2, 200), (1, 300)]
            .into_iter()
            .map(|(ago, lsn)| (now - Duration::from_secs(ago), 10 - ago, lsn))
            .collect();
        assert_eq!(replayed_through(&history, 250), Some(8));
        assert_eq!(replayed_through(&history, 300), Some(9));
        assert_eq!(replayed_through(&history, 50), None);
        assert_eq!(lag_behind(&history, 300, now), Duration::ZERO);
        assert_eq!(lag_behind(&history, 250, now), Duration::from_secs(1));
        assert_eq!(lag_behind(&history, 150, now), Duration::from_secs(2));
        assert_eq!(lag_behind(&history, 0, now), Duration::from_secs(3));
    }

    #[test]
    fn the_breaker_opens_at_once_and_closes_after_a_calm_spell() {
        let bound = Duration::from_millis(100);
        let mut b = Breaker {
            open: false,
            calm_since: None,
            state: State::Serving,
        };
        let ms = Duration::from_millis;
        assert!(!b.observe(Some(ms(90)), bound, Duration::ZERO));
        assert!(b.observe(Some(ms(101)), bound, Duration::ZERO), "over");
        assert!(
            b.observe(Some(ms(60)), bound, Duration::ZERO),
            "under the bound but over half: stays open"
        );
        assert!(
            b.observe(Some(ms(10)), bound, Duration::from_secs(60)),
            "calm, not long"
        );
        assert!(
            !b.observe(Some(ms(10)), bound, Duration::ZERO),
            "calm long enough"
        );
        assert!(b.observe(None, bound, Duration::ZERO), "down opens it");
    }
}
