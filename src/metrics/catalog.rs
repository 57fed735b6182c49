//! Every metric the service exports, in one table: name, kind, unit and help. Registration,
//! descriptions and histogram buckets are derived from it, and a test checks that the
//! documentation lists each one. Names follow the OpenTelemetry semantic conventions rendered the
//! Prometheus way (dots to underscores, base units, `_total` on counters).

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Latency histograms, all with `LATENCY_BUCKETS`.
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn def(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};
const SECONDS: Option<Unit> = Some(Unit::Seconds);

/// Labels: `http_request_method`, `http_route` (template), `http_response_status_code`.
pub const HTTP_SERVER_REQUEST_DURATION: MetricDef = def(
    "http_server_request_duration_seconds",
    Histogram,
    SECONDS,
    "Duration of HTTP requests, by method, route template and status.",
);
pub const HTTP_SERVER_ACTIVE_REQUESTS: MetricDef = def(
    "http_server_active_requests",
    Gauge,
    None,
    "HTTP requests being handled now.",
);
/// Each open connection holds a place under `--max-connections`.
pub const HTTP_SERVER_OPEN_CONNECTIONS: MetricDef = def(
    "http_server_open_connections",
    Gauge,
    None,
    "Client connections open now.",
);
pub const HTTP_SERVER_CONNECTION_LIMIT: MetricDef = def(
    "http_server_connection_limit",
    Gauge,
    None,
    "Configured maximum of open client connections (0: no cap).",
);
pub const HTTP_SERVER_PANICS: MetricDef = def(
    "http_server_panics_total",
    Counter,
    None,
    "Requests whose handler panicked (answered 500).",
);

/// A coalesced request counts as a miss.
pub const CACHE_GETS: MetricDef = def(
    "cache_gets_total",
    Counter,
    None,
    "Item cache lookups by result (hit, miss).",
);
pub const CACHE_LOAD_COALESCED: MetricDef = def(
    "cache_load_coalesced_total",
    Counter,
    None,
    "Cache misses served by another request's database load.",
);
pub const CACHE_EVICTIONS: MetricDef = def(
    "cache_evictions_total",
    Counter,
    None,
    "Cache entries removed, by cause (size, expired, explicit, replaced).",
);
/// Items, cached not-founds and tombstones.
pub const CACHE_ENTRIES: MetricDef =
    def("cache_entries", Gauge, None, "Entries in the item cache.");
/// Versions this replica knows were committed, held outside the cache until no read needs them
/// (see `cache::marks`).
pub const CACHE_VERSION_MARKS: MetricDef = def(
    "cache_version_marks",
    Gauge,
    None,
    "Version marks held for the item cache (writes and notices that fills must not answer older than).",
);
pub const CACHE_SIZE_BYTES: MetricDef = def(
    "cache_size_bytes",
    Gauge,
    Some(Unit::Bytes),
    "Bytes of response bodies held in the item cache.",
);
pub const CACHE_CAPACITY: MetricDef = def(
    "cache_capacity_entries",
    Gauge,
    None,
    "Configured maximum entries of the item cache.",
);
pub const CACHE_CAPACITY_BYTES: MetricDef = def(
    "cache_capacity_bytes",
    Gauge,
    Some(Unit::Bytes),
    "Configured byte budget of the item cache (0: none, only the entry count bounds it).",
);
/// Labels: `result` = `applied` (an entry was dropped or replaced), `ignored` (nothing cached was
/// older).
pub const CACHE_INVALIDATIONS: MetricDef = def(
    "cache_invalidations_total",
    Counter,
    None,
    "Change notifications from other replicas (or this one) applied to the cache, by result.",
);
/// Labels: `reason` = `reconnect`, `error`, `silence`, `lease`, `truncate`.
pub const CACHE_FLUSHES: MetricDef = def(
    "cache_flushes_total",
    Counter,
    None,
    "Whole-cache flushes after a gap in the invalidation channel, by reason.",
);
pub const CACHE_LISTENER_RECONNECTS: MetricDef = def(
    "cache_listener_reconnects_total",
    Counter,
    None,
    "Times the invalidation listener connected again after losing its connection.",
);
/// Labels: `feed` = `stream` (PostgreSQL's commit log) or `trigger` (the trigger's channel).
pub const CACHE_INVALIDATION_FEED: MetricDef = def(
    "cache_invalidation_feed",
    Gauge,
    None,
    "1 for the feed this replica hears other replicas' changes through, 0 for the other.",
);
pub const CACHE_LEASE_HELD: MetricDef = def(
    "cache_lease_held",
    Gauge,
    None,
    "1 while the cache may serve hits (always, in single-instance mode); 0 while its heartbeat is overdue.",
);
/// Labels: `result` = `hit`, `miss`, `error`, `skipped` (breaker open or an epoch owed).
pub const CACHE_REDIS_LOOKUPS: MetricDef = def(
    "cache_redis_lookups_total",
    Counter,
    None,
    "Look-ups in the shared Redis level after a miss here (--redis-url), by result.",
);
/// Labels: `operation` = `get`, `put`, `epoch_bump`.
pub const CACHE_REDIS_DURATION: MetricDef = def(
    "cache_redis_operation_duration_seconds",
    Histogram,
    SECONDS,
    "Duration of calls to the shared Redis level, by operation (timeouts included).",
);
/// Labels: `operation` = `get`, `put`, `epoch_bump`.
pub const CACHE_REDIS_ERRORS: MetricDef = def(
    "cache_redis_errors_total",
    Counter,
    None,
    "Calls to the shared Redis level that failed or timed out, by operation.",
);
pub const CACHE_REDIS_USABLE: MetricDef = def(
    "cache_redis_usable",
    Gauge,
    None,
    "1 while this replica reads and fills the shared Redis level; 0 while its breaker is open or it owes Redis an epoch bump.",
);
/// Labels: `result` = `ok`, `failed` (refused, unreachable or timed out).
pub const EDGE_PURGES: MetricDef = def(
    "edge_purges_total",
    Counter,
    None,
    "Purge calls to the edge cache (--edge-purge-url), each a batch of surrogate keys, by result.",
);
pub const EDGE_PURGED_KEYS: MetricDef = def(
    "edge_purged_keys_total",
    Counter,
    None,
    "Surrogate keys the edge cache accepted purges for.",
);
pub const EDGE_PURGE_DURATION: MetricDef = def(
    "edge_purge_duration_seconds",
    Histogram,
    SECONDS,
    "Duration of purge calls to the edge cache (timeouts included).",
);
/// Labels: `result` = `purged`, `gave_up` (acknowledged after --edge-purge-timeout without it).
pub const EDGE_PURGE_WAITS: MetricDef = def(
    "edge_purge_waits_total",
    Counter,
    None,
    "Writes that waited for their purge before the acknowledgement, by result.",
);
pub const EDGE_CACHEABLE: MetricDef = def(
    "edge_cacheable",
    Gauge,
    None,
    "1 while answers tell the edge cache it may keep them (--edge-max-age); 0 while purges fail or the feed's lease is lost.",
);
/// Labels: `kind` = `change` (from the row change to its application here), `heartbeat` (this
/// replica's own heartbeat, sent to received: the channel's delay on one clock).
pub const CACHE_NOTIFICATION_LAG: MetricDef = def(
    "cache_notification_lag_seconds",
    Histogram,
    SECONDS,
    "Delay of invalidation notifications, by kind.",
);

/// Labels: `db_operation_name` (`select`, `insert`, `update`, `delete`, `list`), `db_system_name`.
pub const DB_OPERATION_DURATION: MetricDef = def(
    "db_client_operation_duration_seconds",
    Histogram,
    SECONDS,
    "Duration of database operations, by operation.",
);
/// Labels: `db_operation_name`, `error_type` (`pool_timeout`, `unavailable`, `query`).
pub const DB_OPERATION_ERRORS: MetricDef = def(
    "db_client_operation_errors_total",
    Counter,
    None,
    "Failed database operations, by operation and error type.",
);
/// OpenTelemetry calls it `db.client.connection.count`; a Prometheus gauge must not end in
/// `_count`, so it keeps the earlier convention name `db.client.connections.usage`.
pub const DB_CONNECTION_COUNT: MetricDef = def(
    "db_client_connection_usage",
    Gauge,
    None,
    "Pooled database connections, by state (idle, used).",
);
pub const DB_CONNECTION_MAX: MetricDef = def(
    "db_client_connection_max",
    Gauge,
    None,
    "Configured maximum connections of the pool.",
);
pub const DB_CONNECTION_IDLE_MIN: MetricDef = def(
    "db_client_connection_idle_min",
    Gauge,
    None,
    "Configured minimum connections of the pool.",
);
pub const DB_CONNECTION_PENDING: MetricDef = def(
    "db_client_connection_pending_requests",
    Gauge,
    None,
    "Requests waiting for a database connection.",
);
pub const DB_CONNECTION_WAIT_TIME: MetricDef = def(
    "db_client_connection_wait_time_seconds",
    Histogram,
    SECONDS,
    "Time spent waiting for a database connection.",
);
pub const DB_CONNECTION_TIMEOUTS: MetricDef = def(
    "db_client_connection_timeouts_total",
    Counter,
    None,
    "Waits for a connection that timed out (answered 503).",
);

/// Labels: `pool` (`main`, `read`, `standby-N`), `db_operation_name` (`select`, `list`).
pub const DB_READS: MetricDef = def(
    "db_client_reads_total",
    Counter,
    None,
    "Reads run, by the pool that ran them: the primary's or a standby's.",
);
/// Labels: `pool` (`standby-N`).
pub const DB_REPLICA_LAG: MetricDef = def(
    "db_replica_lag_seconds",
    Gauge,
    SECONDS,
    "How far a standby's replay is behind the primary, as last measured.",
);
/// Labels: `pool`, `state` = `serving`, `lagging` (the breaker is open: lag over
/// `--max-replica-lag`), `catching_up` (after a gap in the invalidation channel), `down`.
pub const DB_REPLICA_STATE: MetricDef = def(
    "db_replica_state",
    Gauge,
    None,
    "1 for the state a standby is in; reads go to it only while serving.",
);
/// Labels: `pool`, `reason` = `floor` (its answer was older than a version this replica knows),
/// `conflict` (canceled by a recovery conflict), `unavailable`, `error`.
pub const DB_REPLICA_FALLBACKS: MetricDef = def(
    "db_replica_fallbacks_total",
    Counter,
    None,
    "Reads a standby answered or failed that were run again on the primary, by reason.",
);

/// Labels: `version`, `revision`.
pub const BUILD_INFO: MetricDef = def(
    "build_info",
    Gauge,
    None,
    "Always 1; labels carry the version and git revision.",
);

/// Every family the service itself defines (process metrics come from `metrics-process`).
pub const ALL: [&MetricDef; 41] = [
    &HTTP_SERVER_REQUEST_DURATION,
    &HTTP_SERVER_ACTIVE_REQUESTS,
    &HTTP_SERVER_OPEN_CONNECTIONS,
    &HTTP_SERVER_CONNECTION_LIMIT,
    &HTTP_SERVER_PANICS,
    &CACHE_GETS,
    &CACHE_LOAD_COALESCED,
    &CACHE_EVICTIONS,
    &CACHE_ENTRIES,
    &CACHE_VERSION_MARKS,
    &CACHE_SIZE_BYTES,
    &CACHE_CAPACITY,
    &CACHE_CAPACITY_BYTES,
    &CACHE_INVALIDATIONS,
    &CACHE_FLUSHES,
    &CACHE_LISTENER_RECONNECTS,
    &CACHE_INVALIDATION_FEED,
    &CACHE_LEASE_HELD,
    &CACHE_NOTIFICATION_LAG,
    &CACHE_REDIS_LOOKUPS,
    &CACHE_REDIS_DURATION,
    &CACHE_REDIS_ERRORS,
    &CACHE_REDIS_USABLE,
    &EDGE_PURGES,
    &EDGE_PURGED_KEYS,
    &EDGE_PURGE_DURATION,
    &EDGE_PURGE_WAITS,
    &EDGE_CACHEABLE,
    &DB_OPERATION_DURATION,
    &DB_OPERATION_ERRORS,
    &DB_CONNECTION_COUNT,
    &DB_CONNECTION_MAX,
    &DB_CONNECTION_IDLE_MIN,
    &DB_CONNECTION_PENDING,
    &DB_CONNECTION_WAIT_TIME,
    &DB_CONNECTION_TIMEOUTS,
    &DB_READS,
    &DB_REPLICA_LAG,
    &DB_REPLICA_STATE,
    &DB_REPLICA_FALLBACKS,
    &BUILD_INFO,
];

/// The latency SLO's threshold, seconds: a bound of `LATENCY_BUCKETS`, so the share of requests
/// under it is read off one bucket (`prometheus.rules.yml` uses `le="0.25"`).
pub const SLO_LATENCY_THRESHOLD: f64 = 0.25;

/// Buckets for every latency histogram, 5 µs to 10 s. A cache hit takes tens of microseconds
/// server-side, so bounds below 100 µs are what let its quantiles be measured rather than
/// interpolated inside the first bucket. 0.25 must stay a bound: it is the latency SLO's threshold
/// (`prometheus.rules.yml`).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::{LATENCY_BUCKETS, SLO_LATENCY_THRESHOLD};

    #[test]
    fn buckets_rise_and_keep_the_slo_threshold() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(LATENCY_BUCKETS.contains(&SLO_LATENCY_THRESHOLD));
        assert!(LATENCY_BUCKETS[0] <= 0.00001, "resolves a cache hit");
    }
}
