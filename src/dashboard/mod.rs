//! `/dashboard`: the service's own live dashboard. A sampler on the `--metrics-interval` tick
//! renders the registry (as a scrape would), keeps cumulative frames of what the page shows in a
//! bounded history, and `/dashboard/data` computes the panels' series from it — rates and
//! `histogram_quantile` the way Prometheus computes them — so the request path records nothing
//! more than it already did.
//!
//! The panels are computed once per tick and range, on a blocking thread (never on a runtime
//! worker, where it would stall the tasks that serve requests and keep the cache lease), and
//! every poll in that tick reads the result: a poll costs about what a cache hit costs, however
//! many tabs are open.

mod exposition;
mod frames;
mod panels;
mod promql;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use self::frames::{Frame, History, Ring};
use self::panels::{PANELS, Panel, Row, TILES, Unit};
use crate::config::MetricsSettings;
use crate::metrics::Metrics;

/// Rates and quantiles of the fine series are taken over this many ticks (10 s at the default
/// 1 s), as Grafana takes them over `$__rate_interval`.
const RATE_TICKS: u32 = 10;
/// The coarse series: one frame per 15 s (or per tick, if ticks are slower) for an hour, rates
/// over four steps.
const COARSE_STEP: Duration = Duration::from_secs(15);
const COARSE_SPAN: Duration = Duration::from_secs(3600);
const COARSE_RATE_STEPS: u32 = 4;
/// The most fine frames kept, whatever the window and tick.
const MAX_FRAMES: usize = 20_000;
/// Answers kept by `since`, for one computed range.
type Polls = Arc<Mutex<Vec<(u64, bytes::Bytes)>>>;

/// Ranges whose panels are kept computed for the current tick (the page offers five).
const RANGES_KEPT: usize = 8;

/// The panels of one range, computed at one tick.
struct Computed {
    tick: u64,
    range: Duration,
    data: Arc<Data>,
    /// `data` as JSON, for the polls that ask for every point.
    json: bytes::Bytes,
    /// The newest points after a `since`, as JSON: open tabs poll with the same `since` (the
    /// last point they have), so one serialization answers them all.
    newer: Polls,
}

/// `since` values whose answers are kept per computed range.
const SINCE_KEPT: usize = 4;

/// The sampled history and what the page needs to know about this process.
pub struct Dashboard {
    history: Mutex<History>,
    /// Frames taken so far: what the computed panels are for.
    ticks: AtomicU64,
    /// Panels computed at the current tick, by range; one poll computes, the others wait for it.
    computed: tokio::sync::Mutex<Vec<Computed>>,
    metrics: Arc<Metrics>,
    started: SystemTime,
    interval: Duration,
    coarse_step: Duration,
    rows: OptionalRows,
}

/// The rows shown only where they apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalRows {
    /// Replicas share the database: the cache-coherence row.
    pub replicas: bool,
    /// Reads may go to standbys (`--database-read-url`).
    pub standbys: bool,
    /// The cache has a second level in Redis (`--redis-url`).
    pub redis: bool,
    /// An edge cache in front is purged (`--edge-max-age`).
    pub edge: bool,
}

/// What the page asks for: points newer than `since` (unix ms), over the last `range`.
#[derive(Debug, Clone, Copy)]
pub struct DataQuery {
    pub since_ms: Option<u64>,
    pub range: Duration,
}

impl Dashboard {
    /// An empty history sized for `settings` (window and tick).
    pub fn new(metrics: Arc<Metrics>, settings: &MetricsSettings, rows: OptionalRows) -> Self {
        let interval = settings.interval.max(Duration::from_millis(10));
        let fine = (settings.dashboard_window.as_secs_f64() / interval.as_secs_f64()).ceil();
        let coarse_step = COARSE_STEP.max(interval);
        let coarse = (COARSE_SPAN.as_secs_f64() / coarse_step.as_secs_f64()).ceil() as usize + 1;
        Self {
            history: Mutex::new(History::new(
                panels::FAMILIES,
                (fine as usize + 1).min(MAX_FRAMES),
                coarse,
                coarse_step.as_secs_f64(),
            )),
            ticks: AtomicU64::new(0),
            computed: tokio::sync::Mutex::new(Vec::new()),
            metrics,
            started: SystemTime::now(),
            interval,
            coarse_step,
            rows,
        }
    }

    /// Takes one frame: renders the registry (outside the lock) and folds it into the history.
    pub fn sample(&self) {
        if !self.metrics.enabled() {
            return;
        }
        let text = self.metrics.render();
        let t = unix_seconds(SystemTime::now());
        if let Ok(mut h) = self.history.lock() {
            h.ingest(t, &text);
        }
        self.ticks.fetch_add(1, Ordering::AcqRel);
    }

    /// The page's data for `q`, as JSON: the panels of its range as computed at this tick (once,
    /// on a blocking thread), with only the points newer than `q.since_ms`.
    pub async fn data_json(self: &Arc<Self>, q: DataQuery) -> bytes::Bytes {
        let (full, json, newer) = self.computed_for(q.range).await;
        let Some(since) = q.since_ms else {
            return json;
        };
        let mut kept = newer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, body)) = kept.iter().find(|(s, _)| *s == since) {
            return body.clone();
        }
        // Numbers, strings and options always serialize.
        let body =
            bytes::Bytes::from(serde_json::to_vec(&full.newer_than(since)).unwrap_or_default());
        if kept.len() >= SINCE_KEPT {
            kept.remove(0);
        }
        kept.push((since, body.clone()));
        body
    }

    /// The panels over `range` at the current tick, computed if no poll has yet.
    async fn computed_for(self: &Arc<Self>, range: Duration) -> (Arc<Data>, bytes::Bytes, Polls) {
        let tick = self.ticks.load(Ordering::Acquire);
        let mut kept = self.computed.lock().await;
        if let Some(c) = kept.iter().find(|c| c.tick == tick && c.range == range) {
            return (c.data.clone(), c.json.clone(), c.newer.clone());
        }
        let this = self.clone();
        let q = DataQuery {
            since_ms: None,
            range,
        };
        let computed = tokio::task::spawn_blocking(move || {
            let data = this.data(q);
            let json = serde_json::to_vec(&data).unwrap_or_default();
            (Arc::new(data), bytes::Bytes::from(json))
        });
        let (data, json) = match computed.await {
            Ok(both) => both,
            // The computation panicked: answer what it would without history.
            Err(_) => {
                let empty = self.empty(q);
                let json = serde_json::to_vec(&empty).unwrap_or_default();
                (Arc::new(empty), bytes::Bytes::from(json))
            }
        };
        kept.retain(|c| c.tick == tick);
        if kept.len() >= RANGES_KEPT {
            kept.remove(0);
        }
        let newer = Polls::default();
        kept.push(Computed {
            tick,
            range,
            data: data.clone(),
            json: json.clone(),
            newer: newer.clone(),
        });
        (data, json, newer)
    }

    /// The page's data for `q` with no history.
    fn empty(&self, q: DataQuery) -> Data {
        Data {
            metrics: self.metrics.enabled(),
            replicated: self.rows.replicas,
            standbys: self.rows.standbys,
            started_ms: millis(unix_seconds(self.started)),
            now_ms: millis(unix_seconds(SystemTime::now())),
            interval_ms: self.interval.as_millis() as u64,
            step_ms: 0,
            rate_window_s: 0.0,
            window_s: 0.0,
            range_s: q.range.as_secs_f64(),
            history_bytes: 0,
            tiles: Vec::new(),
            panels: Vec::new(),
        }
    }

    /// The page's data for `q`, computed now.
    pub fn data(&self, q: DataQuery) -> Data {
        let mut data = self.empty(q);
        let Ok(h) = self.history.lock() else {
            return data;
        };
        let Some(now) = h.fine.last() else {
            return data;
        };
        data.now_ms = millis(now.t);
        data.history_bytes = h.bytes();
        let fine_span = h.fine.frames().front().map_or(0.0, |f| now.t - f.t);
        data.window_s = fine_span;
        let range = q.range.as_secs_f64();
        // The fine ring while it covers the range (or the hour ring has nothing more).
        let coarse_span = h.coarse.frames().front().map_or(0.0, |f| now.t - f.t);
        let (ring, step, rate_window) = if range <= fine_span + 1e-9 || coarse_span <= fine_span {
            (&h.fine, self.interval, self.interval * RATE_TICKS)
        } else {
            (
                &h.coarse,
                self.coarse_step,
                self.coarse_step * COARSE_RATE_STEPS,
            )
        };
        data.step_ms = step.as_millis() as u64;
        data.rate_window_s = rate_window.as_secs_f64();
        data.tiles = tiles(&h, ring, range);
        let start = now.t - range;
        let points: Vec<&Frame> = ring
            .frames()
            .iter()
            .filter(|f| f.t >= start && q.since_ms.is_none_or(|since| millis(f.t) > since))
            .collect();
        data.panels = PANELS
            .iter()
            .filter(|p| match p.row {
                Row::Replicas => self.rows.replicas,
                Row::Standbys => self.rows.standbys,
                Row::Redis => self.rows.redis,
                Row::Edge => self.rows.edge,
                _ => true,
            })
            .map(|p| panel(p, &h, ring, &points, rate_window.as_secs_f64()))
            .collect();
        data
    }
}

/// The tiles: over `range` in `ring` (rates) or now (gauges); the SLO tiles over the hour.
fn tiles(h: &History, ring: &Ring, range: f64) -> Vec<TileData> {
    let Some(now) = h.fine.last() else {
        return Vec::new();
    };
    TILES
        .iter()
        .map(|t| {
            let (span, from_ring) = if t.hour {
                (COARSE_SPAN.as_secs_f64(), older(&h.coarse, &h.fine))
            } else {
                (range, ring)
            };
            let value = from_ring
                .at_or_before(now.t - span)
                .filter(|from| from.t < now.t)
                .and_then(|from| t.expr.eval(&h.columns, from, now).remove(""));
            TileData {
                title: t.title,
                unit: t.unit,
                value,
            }
        })
        .collect()
}

/// Panel `p`'s series at each of `points`, each value over `rate_window` before it in `ring`.
fn panel(p: &Panel, h: &History, ring: &Ring, points: &[&Frame], rate_window: f64) -> PanelData {
    let mut series: Vec<SeriesData> = Vec::new();
    for s in p.series {
        let plan = s.expr.plan(&h.columns);
        for to in points {
            let Some(from) = ring.at_or_before(to.t - rate_window).filter(|f| f.t < to.t) else {
                continue;
            };
            for (group, v) in plan.eval(from, to) {
                let name = panels::legend(s, &group);
                let at = match series.iter().position(|x| x.name == name) {
                    Some(at) => at,
                    None => {
                        series.push(SeriesData {
                            name,
                            points: Vec::new(),
                        });
                        series.len() - 1
                    }
                };
                series[at].points.push((millis(to.t), finite(v)));
            }
        }
    }
    PanelData {
        row: p.row,
        title: p.title,
        unit: p.unit,
        series,
    }
}

/// Of two rings, the one reaching further back.
fn older<'a>(a: &'a Ring, b: &'a Ring) -> &'a Ring {
    match (a.frames().front(), b.frames().front()) {
        (Some(x), Some(y)) if y.t < x.t => b,
        _ => a,
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

/// NaN and infinities (no traffic, an empty window) are gaps, written `null`.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `GET /dashboard/data`.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    /// False when the service runs with `--metrics false`: nothing is recorded.
    pub metrics: bool,
    /// Whether the replicas' cache-coherence row applies.
    pub replicated: bool,
    /// Whether the standbys' row applies.
    pub standbys: bool,
    pub started_ms: u64,
    /// The newest sample's time.
    pub now_ms: u64,
    pub interval_ms: u64,
    /// Spacing of the points returned.
    pub step_ms: u64,
    /// Each point's rates and quantiles are over this many seconds before it.
    pub rate_window_s: f64,
    /// How far back the fine history reaches now.
    pub window_s: f64,
    pub range_s: f64,
    /// Memory held by the sampled history (both rings), for sizing `--dashboard-window`.
    pub history_bytes: usize,
    pub tiles: Vec<TileData>,
    pub panels: Vec<PanelData>,
}

impl Data {
    /// The same, with only the points after `since_ms` (points are oldest first).
    fn newer_than(&self, since_ms: u64) -> Self {
        let panels = self
            .panels
            .iter()
            .map(|p| PanelData {
                row: p.row,
                title: p.title,
                unit: p.unit,
                series: p
                    .series
                    .iter()
                    .filter_map(|s| {
                        let first = s.points.partition_point(|(t, _)| *t <= since_ms);
                        (first < s.points.len()).then(|| SeriesData {
                            name: s.name.clone(),
                            points: s.points[first..].to_vec(),
                        })
                    })
                    .collect(),
            })
            .collect();
        Self {
            tiles: self.tiles.clone(),
            panels,
            ..*self
        }
    }
}

/// A headline number; `null` without traffic in the range.
#[derive(Debug, Clone, Serialize)]
pub struct TileData {
    pub title: &'static str,
    pub unit: Unit,
    pub value: Option<f64>,
}

/// A chart's series.
#[derive(Debug, Clone, Serialize)]
pub struct PanelData {
    pub row: Row,
    pub title: &'static str,
    pub unit: Unit,
    pub series: Vec<SeriesData>,
}

/// One line: `[unix ms, value or null]` points, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesData {
    pub name: String,
    pub points: Vec<(u64, Option<f64>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard() -> Arc<Dashboard> {
        let metrics = Arc::new(Metrics::new(true));
        let settings: MetricsSettings = crate::config::defaults();
        Arc::new(Dashboard::new(metrics, &settings, OptionalRows::default()))
    }

    fn query(range: u64, since_ms: Option<u64>) -> DataQuery {
        DataQuery {
            since_ms,
            range: Duration::from_secs(range),
        }
    }

    /// However many polls arrive in one tick, the panels of a range are computed once; the next
    /// tick computes them again.
    #[tokio::test]
    async fn panels_are_computed_once_per_tick_and_range() {
        let d = dashboard();
        d.sample();
        d.sample();
        let (first, _, _) = d.computed_for(query(300, None).range).await;
        for _ in 0..50 {
            let (again, _, _) = d.computed_for(query(300, None).range).await;
            assert!(
                Arc::ptr_eq(&first, &again),
                "computed again within the tick"
            );
        }
        let (other, _, _) = d.computed_for(query(60, None).range).await;
        assert!(!Arc::ptr_eq(&first, &other), "each range its own");
        d.sample();
        let (next, _, _) = d.computed_for(query(300, None).range).await;
        assert!(!Arc::ptr_eq(&first, &next), "a new tick, new panels");
    }

    /// A poll with `since` answers what a computation with `since` would: the same points.
    #[tokio::test]
    async fn since_reads_the_newer_points_of_the_computed_panels() {
        let d = dashboard();
        for _ in 0..30 {
            d.sample();
            std::thread::sleep(Duration::from_millis(2));
        }
        let (full, _, _) = d.computed_for(Duration::from_secs(300)).await;
        let times: Vec<u64> = full
            .panels
            .iter()
            .flat_map(|p| {
                p.series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|(t, _)| *t))
            })
            .collect();
        let Some(&since) = times.iter().min() else {
            panic!("no points after 30 samples");
        };
        let polled: serde_json::Value =
            serde_json::from_slice(&d.data_json(query(300, Some(since))).await).unwrap();
        let direct = serde_json::to_value(d.data(query(300, Some(since)))).unwrap();
        assert_eq!(polled["panels"], direct["panels"]);
        assert_eq!(polled["tiles"], direct["tiles"]);
    }
}
