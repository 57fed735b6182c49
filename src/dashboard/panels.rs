//! What the dashboard shows: the same panels as `grafana/dashboards/data-api.json` (same titles,
//! same meaning; a test checks the titles), each series a small PromQL-like expression over the
//! sampled columns, evaluated between two frames the way the Grafana panel's query is.

use std::collections::BTreeMap;

use serde::Serialize;

use super::frames::{Column, Frame};
use super::promql::{Bucket, histogram_quantile, rate};
use crate::metrics::catalog as c;

const REQ_COUNT: &str = "http_server_request_duration_seconds_count";
const REQ_BUCKET: &str = "http_server_request_duration_seconds_bucket";
const OP_COUNT: &str = "db_client_operation_duration_seconds_count";
const OP_BUCKET: &str = "db_client_operation_duration_seconds_bucket";
const WAIT_BUCKET: &str = "db_client_connection_wait_time_seconds_bucket";
const LAG_BUCKET: &str = "cache_notification_lag_seconds_bucket";
const PROCESS_CPU: &str = "process_cpu_seconds_total";
const PROCESS_RSS: &str = "process_resident_memory_bytes";
const PROCESS_FDS: &str = "process_open_fds";
const PROCESS_MAX_FDS: &str = "process_max_fds";

/// The families the dashboard reads, and the labels it keeps of each.
pub const FAMILIES: super::frames::Families = &[
    (REQ_COUNT, &["http_route", "http_response_status_code"]),
    (REQ_BUCKET, &["http_route", "le"]),
    (c::HTTP_SERVER_ACTIVE_REQUESTS.name, &[]),
    (c::HTTP_SERVER_OPEN_CONNECTIONS.name, &[]),
    (c::CACHE_GETS.name, &["result"]),
    (c::CACHE_LOAD_COALESCED.name, &[]),
    (c::CACHE_EVICTIONS.name, &["cause"]),
    (c::CACHE_ENTRIES.name, &[]),
    (c::CACHE_VERSION_MARKS.name, &[]),
    (c::CACHE_CAPACITY.name, &[]),
    (c::CACHE_SIZE_BYTES.name, &[]),
    (c::CACHE_CAPACITY_BYTES.name, &[]),
    (c::CACHE_LEASE_HELD.name, &[]),
    (c::CACHE_INVALIDATIONS.name, &["result"]),
    (c::CACHE_FLUSHES.name, &["reason"]),
    (c::CACHE_LISTENER_RECONNECTS.name, &[]),
    (LAG_BUCKET, &["kind", "le"]),
    (c::DB_CONNECTION_COUNT.name, &["pool", "state"]),
    (c::DB_CONNECTION_MAX.name, &["pool"]),
    (c::DB_CONNECTION_PENDING.name, &["pool"]),
    (WAIT_BUCKET, &["pool", "le"]),
    (c::DB_CONNECTION_TIMEOUTS.name, &["pool"]),
    (OP_COUNT, &["db_operation_name"]),
    (OP_BUCKET, &["db_operation_name", "le"]),
    (
        c::DB_OPERATION_ERRORS.name,
        &["db_operation_name", "error_type"],
    ),
    (c::DB_READS.name, &["pool"]),
    (c::DB_REPLICA_LAG.name, &["pool"]),
    (c::DB_REPLICA_STATE.name, &["state"]),
    (c::DB_REPLICA_FALLBACKS.name, &["reason"]),
    (PROCESS_CPU, &[]),
    (PROCESS_RSS, &[]),
    (PROCESS_FDS, &[]),
    (PROCESS_MAX_FDS, &[]),
];

/// How a label must look for a column to be selected.
#[derive(Debug, Clone, Copy)]
pub enum Matcher {
    Eq(&'static str),
    /// `=~"5.."`: a status class.
    Prefix(&'static str),
    NotPrefix(&'static str),
    /// The bucket whose `le` is this bound.
    Bound(f64),
}

impl Matcher {
    fn matches(self, v: &str) -> bool {
        match self {
            Self::Eq(x) => v == x,
            Self::Prefix(p) => v.starts_with(p),
            Self::NotPrefix(p) => !v.starts_with(p),
            Self::Bound(b) => super::exposition::number(v) == Some(b),
        }
    }
}

/// Columns of one family, filtered, summed by some labels.
#[derive(Debug, Clone, Copy)]
pub struct Sel {
    pub family: &'static str,
    pub filter: &'static [(&'static str, Matcher)],
    pub by: &'static [&'static str],
}

/// Every column of `family`, unfiltered and summed into one.
const fn select(family: &'static str) -> Sel {
    Sel {
        family,
        filter: &[],
        by: &[],
    }
}

impl Sel {
    const fn by(self, by: &'static [&'static str]) -> Self {
        Sel { by, ..self }
    }
    const fn only(self, filter: &'static [(&'static str, Matcher)]) -> Self {
        Sel { filter, ..self }
    }

    /// Every selected column, with its group (the `by` label values, joined) and `le`.
    fn select(&self, columns: &[Column]) -> Vec<Picked> {
        columns
            .iter()
            .enumerate()
            .filter(|(_, col)| col.family == self.family)
            .filter(|(_, col)| self.filter.iter().all(|(k, m)| m.matches(col.label(k))))
            .map(|(col_index, col)| {
                let group: Vec<&str> = self.by.iter().map(|k| col.label(k)).collect();
                Picked {
                    col: col_index,
                    group: group.join(" "),
                    le: super::exposition::number(col.label("le")).unwrap_or(f64::NAN),
                }
            })
            .collect()
    }
}

/// A selected column.
#[derive(Debug)]
struct Picked {
    col: usize,
    group: String,
    /// The bucket bound, for `_bucket` columns.
    le: f64,
}

/// Per group, the per-second rate between the frames (a column absent at `from` counts from
/// zero, as a series created inside the window does).
fn rates(picked: &[Picked], from: &Frame, to: &Frame) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for p in picked {
        let (a, b) = (from.get(p.col), to.get(p.col));
        if b.is_nan() {
            continue;
        }
        let a = if a.is_nan() { 0.0 } else { a };
        if let Some(r) = rate((from.t, a), (to.t, b)) {
            *out.entry(p.group.clone()).or_insert(0.0) += r;
        }
    }
    out
}

/// One series expression.
#[derive(Debug, Clone, Copy)]
pub enum Expr {
    /// `sum by (…) (rate(x[w]))`.
    Rate(Sel),
    /// `sum by (…) (increase(x[w]))`.
    Increase(Sel),
    /// `sum by (…) (x)`: a gauge now.
    Latest(Sel),
    /// `histogram_quantile(q, sum by (le, …) (rate(x_bucket[w])))`.
    Quantile(f64, Sel),
    /// `(sum by (…) (rate(a[w])) or 0) / sum by (…) (rate(b[w]))`.
    Ratio(Sel, Sel),
}

impl Expr {
    /// The expression with its columns selected, to be evaluated at many points.
    pub fn plan(&self, columns: &[Column]) -> Plan<'_> {
        let (a, b) = match self {
            Self::Rate(s) | Self::Increase(s) | Self::Latest(s) | Self::Quantile(_, s) => {
                (s.select(columns), Vec::new())
            }
            Self::Ratio(n, d) => (n.select(columns), d.select(columns)),
        };
        Plan { expr: self, a, b }
    }

    /// Value per group between `from` and `to`.
    pub fn eval(&self, columns: &[Column], from: &Frame, to: &Frame) -> BTreeMap<String, f64> {
        self.plan(columns).eval(from, to)
    }
}

/// An expression with its columns selected.
#[derive(Debug)]
pub struct Plan<'e> {
    expr: &'e Expr,
    a: Vec<Picked>,
    b: Vec<Picked>,
}

impl Plan<'_> {
    /// Value per group between `from` and `to`.
    pub fn eval(&self, from: &Frame, to: &Frame) -> BTreeMap<String, f64> {
        match self.expr {
            Expr::Rate(_) => rates(&self.a, from, to),
            Expr::Increase(_) => {
                let dt = to.t - from.t;
                let mut r = rates(&self.a, from, to);
                r.values_mut().for_each(|v| *v *= dt);
                r
            }
            Expr::Latest(_) => {
                let mut out = BTreeMap::new();
                for p in &self.a {
                    let v = to.get(p.col);
                    if !v.is_nan() {
                        *out.entry(p.group.clone()).or_insert(0.0) += v;
                    }
                }
                out
            }
            Expr::Quantile(q, _) => {
                let mut groups: BTreeMap<&str, Vec<Bucket>> = BTreeMap::new();
                for p in self.a.iter().filter(|p| !p.le.is_nan()) {
                    let (a, b) = (from.get(p.col), to.get(p.col));
                    if b.is_nan() {
                        continue;
                    }
                    let count = b - if a.is_nan() { 0.0 } else { a };
                    // Equal bounds (from summed-away labels) are merged by the quantile.
                    groups
                        .entry(&p.group)
                        .or_default()
                        .push(Bucket { le: p.le, count });
                }
                groups
                    .into_iter()
                    .map(|(g, b)| (g.to_owned(), histogram_quantile(*q, &b)))
                    .collect()
            }
            Expr::Ratio(..) => {
                let n = rates(&self.a, from, to);
                rates(&self.b, from, to)
                    .into_iter()
                    .map(|(g, d)| {
                        let v = n.get(&g).copied().unwrap_or(0.0) / d;
                        (g, v)
                    })
                    .collect()
            }
        }
    }
}

/// How a value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    PerSecond,
    /// 0–1, shown as a percentage.
    Ratio,
    Seconds,
    Bytes,
    Count,
    /// CPU seconds per second.
    Cores,
}

/// One line of a chart; `{}` in the legend stands for the group's label values.
#[derive(Debug)]
pub struct Series {
    pub legend: &'static str,
    pub expr: Expr,
}

/// Where a panel sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Row {
    Overview,
    #[serde(rename = "Per route")]
    PerRoute,
    Cache,
    #[serde(rename = "Connection pool")]
    Pool,
    Database,
    Process,
    /// Shown only when replicas share the database.
    #[serde(rename = "Replicas: cache coherence")]
    Replicas,
    /// Shown only with `--database-read-url`.
    #[serde(rename = "Standbys: reads off the primary")]
    Standbys,
    /// Shown only with `--redis-url`.
    #[serde(rename = "Redis: the replicas' shared second level")]
    Redis,
    /// Shown only with `--edge-max-age`.
    #[serde(rename = "Edge cache: purges")]
    Edge,
}

/// One chart.
#[derive(Debug)]
pub struct Panel {
    pub row: Row,
    pub title: &'static str,
    pub unit: Unit,
    pub series: &'static [Series],
}

/// One line of a panel: its legend and what it plots.
const fn line(legend: &'static str, expr: Expr) -> Series {
    Series { legend, expr }
}

const REQS: Sel = select(REQ_COUNT);
const ROUTE: &[&str] = &["http_route"];
const POOL: &[&str] = &["pool"];
const OP: &[&str] = &["db_operation_name"];
const S5XX: &[(&str, Matcher)] = &[("http_response_status_code", Matcher::Prefix("5"))];
const S4XX: &[(&str, Matcher)] = &[("http_response_status_code", Matcher::Prefix("4"))];
/// Shown both as a chart and as a tile.
const SHARE_5XX: Expr = Expr::Ratio(REQS.only(S5XX), REQS);
const SHARE_4XX: Expr = Expr::Ratio(REQS.only(S4XX), REQS);
const P99: Expr = Expr::Quantile(0.99, select(REQ_BUCKET));
const HIT_RATIO: Expr = Expr::Ratio(
    select(c::CACHE_GETS.name).only(&[("result", Matcher::Eq("hit"))]),
    select(c::CACHE_GETS.name),
);

/// Every chart, in page order.
pub const PANELS: &[Panel] = &[
    Panel {
        row: Row::Overview,
        title: "Request rate",
        unit: Unit::PerSecond,
        series: &[line("requests/s", Expr::Rate(REQS))],
    },
    Panel {
        row: Row::Overview,
        title: "Error ratio (5xx, 4xx)",
        unit: Unit::Ratio,
        series: &[line("5xx share", SHARE_5XX), line("4xx share", SHARE_4XX)],
    },
    Panel {
        row: Row::Overview,
        title: "Latency p50 / p95 / p99",
        unit: Unit::Seconds,
        series: &[
            line("p50", Expr::Quantile(0.5, select(REQ_BUCKET))),
            line("p95", Expr::Quantile(0.95, select(REQ_BUCKET))),
            line("p99", P99),
        ],
    },
    Panel {
        row: Row::Overview,
        title: "In flight / connections",
        unit: Unit::Count,
        series: &[
            line(
                "in flight",
                Expr::Latest(select(c::HTTP_SERVER_ACTIVE_REQUESTS.name)),
            ),
            line(
                "connections",
                Expr::Latest(select(c::HTTP_SERVER_OPEN_CONNECTIONS.name)),
            ),
        ],
    },
    Panel {
        row: Row::PerRoute,
        title: "Requests by route",
        unit: Unit::PerSecond,
        series: &[line("{}", Expr::Rate(REQS.by(ROUTE)))],
    },
    Panel {
        row: Row::PerRoute,
        title: "p99 latency by route",
        unit: Unit::Seconds,
        series: &[line(
            "{}",
            Expr::Quantile(0.99, select(REQ_BUCKET).by(ROUTE)),
        )],
    },
    Panel {
        row: Row::PerRoute,
        title: "Error ratio by route",
        unit: Unit::Ratio,
        series: &[line(
            "{}",
            Expr::Ratio(REQS.only(S5XX).by(ROUTE), REQS.by(ROUTE)),
        )],
    },
    Panel {
        row: Row::PerRoute,
        title: "Responses by status",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(REQS.by(&["http_response_status_code"])),
        )],
    },
    Panel {
        row: Row::Cache,
        title: "Hit ratio",
        unit: Unit::Ratio,
        series: &[line("hit ratio", HIT_RATIO)],
    },
    Panel {
        row: Row::Cache,
        title: "Hits vs misses",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::CACHE_GETS.name).by(&["result"])),
        )],
    },
    Panel {
        row: Row::Cache,
        title: "Entries and size",
        unit: Unit::Count,
        series: &[
            line("entries", Expr::Latest(select(c::CACHE_ENTRIES.name))),
            line("capacity", Expr::Latest(select(c::CACHE_CAPACITY.name))),
            line(
                "version marks",
                Expr::Latest(select(c::CACHE_VERSION_MARKS.name)),
            ),
        ],
    },
    Panel {
        row: Row::Cache,
        title: "Evictions by cause",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::CACHE_EVICTIONS.name).by(&["cause"])),
        )],
    },
    Panel {
        row: Row::Cache,
        title: "Coalesced loads",
        unit: Unit::PerSecond,
        series: &[line(
            "coalesced/s",
            Expr::Rate(select(c::CACHE_LOAD_COALESCED.name)),
        )],
    },
    Panel {
        row: Row::Cache,
        title: "Cached bytes",
        unit: Unit::Bytes,
        series: &[
            line("bytes", Expr::Latest(select(c::CACHE_SIZE_BYTES.name))),
            line("budget", Expr::Latest(select(c::CACHE_CAPACITY_BYTES.name))),
        ],
    },
    Panel {
        row: Row::Pool,
        title: "Connections used / idle / max",
        unit: Unit::Count,
        series: &[
            line(
                "{}",
                Expr::Latest(select(c::DB_CONNECTION_COUNT.name).by(&["pool", "state"])),
            ),
            line(
                "{} max",
                Expr::Latest(select(c::DB_CONNECTION_MAX.name).by(POOL)),
            ),
        ],
    },
    Panel {
        row: Row::Pool,
        title: "Requests waiting for a connection",
        unit: Unit::Count,
        series: &[line(
            "{}",
            Expr::Latest(select(c::DB_CONNECTION_PENDING.name).by(POOL)),
        )],
    },
    Panel {
        row: Row::Pool,
        title: "Acquire wait p99",
        unit: Unit::Seconds,
        series: &[line(
            "{}",
            Expr::Quantile(0.99, select(WAIT_BUCKET).by(POOL)),
        )],
    },
    Panel {
        row: Row::Pool,
        title: "Acquire timeouts",
        unit: Unit::Count,
        series: &[line(
            "{}",
            Expr::Increase(select(c::DB_CONNECTION_TIMEOUTS.name).by(POOL)),
        )],
    },
    Panel {
        row: Row::Database,
        title: "Operation latency p99",
        unit: Unit::Seconds,
        series: &[line("{}", Expr::Quantile(0.99, select(OP_BUCKET).by(OP)))],
    },
    Panel {
        row: Row::Database,
        title: "Operations per second",
        unit: Unit::PerSecond,
        series: &[line("{}", Expr::Rate(select(OP_COUNT).by(OP)))],
    },
    Panel {
        row: Row::Database,
        title: "Operation errors",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(
                select(c::DB_OPERATION_ERRORS.name).by(&["db_operation_name", "error_type"]),
            ),
        )],
    },
    Panel {
        row: Row::Process,
        title: "CPU",
        unit: Unit::Cores,
        series: &[line("cpu", Expr::Rate(select(PROCESS_CPU)))],
    },
    Panel {
        row: Row::Process,
        title: "Resident memory",
        unit: Unit::Bytes,
        series: &[line("resident", Expr::Latest(select(PROCESS_RSS)))],
    },
    Panel {
        row: Row::Process,
        title: "Open file descriptors",
        unit: Unit::Count,
        series: &[
            line("open", Expr::Latest(select(PROCESS_FDS))),
            line("max", Expr::Latest(select(PROCESS_MAX_FDS))),
        ],
    },
    Panel {
        row: Row::Replicas,
        title: "Cache lease held",
        unit: Unit::Count,
        series: &[line(
            "lease",
            Expr::Latest(select(c::CACHE_LEASE_HELD.name)),
        )],
    },
    Panel {
        row: Row::Replicas,
        title: "Invalidations applied / ignored",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::CACHE_INVALIDATIONS.name).by(&["result"])),
        )],
    },
    Panel {
        row: Row::Replicas,
        title: "Notification lag p50 / p99",
        unit: Unit::Seconds,
        series: &[
            line(
                "p50 {}",
                Expr::Quantile(0.5, select(LAG_BUCKET).by(&["kind"])),
            ),
            line(
                "p99 {}",
                Expr::Quantile(0.99, select(LAG_BUCKET).by(&["kind"])),
            ),
        ],
    },
    Panel {
        row: Row::Replicas,
        title: "Flushes and listener reconnects",
        unit: Unit::Count,
        series: &[
            line(
                "flush: {}",
                Expr::Increase(select(c::CACHE_FLUSHES.name).by(&["reason"])),
            ),
            line(
                "reconnects",
                Expr::Increase(select(c::CACHE_LISTENER_RECONNECTS.name)),
            ),
        ],
    },
    Panel {
        row: Row::Standbys,
        title: "Standby replay lag",
        unit: Unit::Seconds,
        series: &[line(
            "{}",
            Expr::Latest(select(c::DB_REPLICA_LAG.name).by(POOL)),
        )],
    },
    Panel {
        row: Row::Standbys,
        title: "Reads by pool",
        unit: Unit::PerSecond,
        series: &[line("{}", Expr::Rate(select(c::DB_READS.name).by(POOL)))],
    },
    Panel {
        row: Row::Standbys,
        title: "Standbys by state (breaker)",
        unit: Unit::Count,
        series: &[line(
            "{}",
            Expr::Latest(select(c::DB_REPLICA_STATE.name).by(&["state"])),
        )],
    },
    Panel {
        row: Row::Standbys,
        title: "Reads retried on the primary",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::DB_REPLICA_FALLBACKS.name).by(&["reason"])),
        )],
    },
    Panel {
        row: Row::Redis,
        title: "Misses here, answered by Redis or not",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::CACHE_REDIS_LOOKUPS.name).by(&["result"])),
        )],
    },
    Panel {
        row: Row::Redis,
        title: "Redis p99 latency",
        unit: Unit::Seconds,
        series: &[line(
            "{}",
            Expr::Quantile(
                0.99,
                select(c::CACHE_REDIS_DURATION.name).by(&["operation"]),
            ),
        )],
    },
    Panel {
        row: Row::Redis,
        title: "Redis errors and timeouts",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::CACHE_REDIS_ERRORS.name).by(&["operation"])),
        )],
    },
    Panel {
        row: Row::Redis,
        title: "Redis in use (0: breaker open or an epoch owed)",
        unit: Unit::Count,
        series: &[line(
            "in use",
            Expr::Latest(select(c::CACHE_REDIS_USABLE.name)),
        )],
    },
    Panel {
        row: Row::Edge,
        title: "Edge purges by result",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::EDGE_PURGES.name).by(&["result"])),
        )],
    },
    Panel {
        row: Row::Edge,
        title: "Edge purge p99 latency",
        unit: Unit::Seconds,
        series: &[line(
            "p99",
            Expr::Quantile(0.99, select(c::EDGE_PURGE_DURATION.name)),
        )],
    },
    Panel {
        row: Row::Edge,
        title: "Writes acknowledged without their purge",
        unit: Unit::PerSecond,
        series: &[line(
            "{}",
            Expr::Rate(select(c::EDGE_PURGE_WAITS.name).by(&["result"])),
        )],
    },
    Panel {
        row: Row::Edge,
        title: "Edge may keep answers (0: purges failing or lease lost)",
        unit: Unit::Count,
        series: &[line(
            "cacheable",
            Expr::Latest(select(c::EDGE_CACHEABLE.name)),
        )],
    },
];

/// A headline number over the chosen range (rates) or now (gauges).
#[derive(Debug)]
pub struct Tile {
    pub title: &'static str,
    pub unit: Unit,
    pub expr: Expr,
    /// Computed over the last hour rather than the chosen range.
    pub hour: bool,
}

const fn tile(title: &'static str, unit: Unit, expr: Expr) -> Tile {
    Tile {
        title,
        unit,
        expr,
        hour: false,
    }
}

/// The tiles above the charts.
pub const TILES: &[Tile] = &[
    tile("Request rate", Unit::PerSecond, Expr::Rate(REQS)),
    tile("5xx share", Unit::Ratio, SHARE_5XX),
    tile("4xx share", Unit::Ratio, SHARE_4XX),
    tile("Latency p99", Unit::Seconds, P99),
    tile("Cache hit ratio", Unit::Ratio, HIT_RATIO),
    tile(
        "In flight",
        Unit::Count,
        Expr::Latest(select(c::HTTP_SERVER_ACTIVE_REQUESTS.name)),
    ),
    Tile {
        title: "SLO: availability (1h)",
        unit: Unit::Ratio,
        expr: Expr::Ratio(
            REQS.only(&[("http_response_status_code", Matcher::NotPrefix("5"))]),
            REQS,
        ),
        hour: true,
    },
    Tile {
        title: "SLO: latency (1h)",
        unit: Unit::Ratio,
        expr: Expr::Ratio(
            select(REQ_BUCKET).only(&[("le", Matcher::Bound(c::SLO_LATENCY_THRESHOLD))]),
            REQS,
        ),
        hour: true,
    },
];

/// The legend of `series` for `group`.
pub fn legend(series: &Series, group: &str) -> String {
    series.legend.replace("{}", group)
}

#[cfg(test)]
mod tests {
    use super::super::frames::History;
    use super::*;

    fn bucket_lines(route: &str, counts: &[(&str, u32)]) -> String {
        counts
            .iter()
            .map(|(le, n)| format!("{REQ_BUCKET}{{http_route=\"{route}\",le=\"{le}\"}} {n}\n"))
            .collect()
    }

    fn eval(expr: &Expr, texts: [&str; 2], dt: f64) -> BTreeMap<String, f64> {
        let mut h = History::new(FAMILIES, 10, 10, 1.0);
        h.ingest(100.0, texts[0]);
        h.ingest(100.0 + dt, texts[1]);
        let f = h.fine.frames();
        expr.eval(&h.columns, &f[0], &f[1])
    }

    #[test]
    fn rates_and_ratios_by_group() {
        let t0 =
            format!("{REQ_COUNT}{{http_route=\"/data\",http_response_status_code=\"200\"}} 10\n");
        let t1 = format!(
            "{REQ_COUNT}{{http_route=\"/data\",http_response_status_code=\"200\"}} 30\n\
             {REQ_COUNT}{{http_route=\"/data\",http_response_status_code=\"503\"}} 20\n\
             {REQ_COUNT}{{http_route=\"/x\",http_response_status_code=\"200\"}} 20\n"
        );
        let r = eval(&Expr::Rate(REQS), [&t0, &t1], 2.0);
        assert_eq!(r[""], 30.0, "(20 + 20 new + 20 new) / 2 s");
        let by = eval(&Expr::Rate(REQS.by(ROUTE)), [&t0, &t1], 2.0);
        assert_eq!((by["/data"], by["/x"]), (20.0, 10.0));
        let errors = eval(
            &Expr::Ratio(REQS.only(S5XX).by(ROUTE), REQS.by(ROUTE)),
            [&t0, &t1],
            2.0,
        );
        assert_eq!(
            (errors["/data"], errors["/x"]),
            (0.5, 0.0),
            "no 5xx reads 0"
        );
        let inc = eval(&Expr::Increase(REQS), [&t0, &t1], 2.0);
        assert_eq!(inc[""], 60.0);
    }

    #[test]
    fn quantiles_sum_buckets_across_routes_first() {
        let t0 = bucket_lines("/a", &[("0.1", 0), ("0.2", 0), ("+Inf", 0)]);
        let t1 = bucket_lines("/a", &[("0.1", 10), ("0.2", 10), ("+Inf", 10)])
            + &bucket_lines("/b", &[("0.1", 0), ("0.2", 10), ("+Inf", 10)]);
        let q = eval(&Expr::Quantile(0.5, select(REQ_BUCKET)), [&t0, &t1], 1.0);
        assert!((q[""] - 0.1).abs() < 1e-12, "{q:?}");
        let by = eval(
            &Expr::Quantile(0.5, select(REQ_BUCKET).by(ROUTE)),
            [&t0, &t1],
            1.0,
        );
        assert!((by["/a"] - 0.05).abs() < 1e-12 && (by["/b"] - 0.15).abs() < 1e-12);
    }

    #[test]
    fn the_latency_slo_reads_its_threshold_bucket() {
        let t0 = bucket_lines("/a", &[("0.25", 0), ("+Inf", 0)])
            + &format!("{REQ_COUNT}{{http_route=\"/a\",http_response_status_code=\"200\"}} 0\n");
        let t1 = bucket_lines("/a", &[("0.25", 9), ("+Inf", 10)])
            + &format!("{REQ_COUNT}{{http_route=\"/a\",http_response_status_code=\"200\"}} 10\n");
        let slo = TILES
            .iter()
            .find(|t| t.title == "SLO: latency (1h)")
            .unwrap();
        assert!((slo.expr.eval_one([&t0, &t1]) - 0.9).abs() < 1e-12);
    }

    #[test]
    fn panel_titles_are_the_grafana_dashboards() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/grafana/dashboards/data-api.json"
        );
        let grafana: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let titles: Vec<&str> = grafana["panels"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["title"].as_str())
            .collect();
        for p in PANELS {
            assert!(
                titles.contains(&p.title),
                "{:?} is not a Grafana panel",
                p.title
            );
        }
        for t in TILES.iter().filter(|t| t.hour) {
            assert!(
                titles.contains(&t.title),
                "{:?} is not a Grafana panel",
                t.title
            );
        }
    }

    impl Expr {
        fn eval_one(&self, texts: [&str; 2]) -> f64 {
            eval(self, texts, 1.0)[""]
        }
    }
}
