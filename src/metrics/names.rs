//! Every metric name, in one place. OpenTelemetry semantic-convention names rendered the
//! Prometheus way (dots to underscores, base units, `_total` on counters).

/// Histogram, seconds: server-side duration of each HTTP request.
/// Labels: `http_request_method`, `http_route` (template), `http_response_status_code`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Gauge: requests being handled right now.
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// Gauge: client connections open now (each holds a place under `--max-connections`).
pub const HTTP_SERVER_OPEN_CONNECTIONS: &str = "http_server_open_connections";
/// Gauge: the configured `--max-connections` (0: no cap).
pub const HTTP_SERVER_CONNECTION_LIMIT: &str = "http_server_connection_limit";

/// Counter: item cache lookups by `result` (`hit`, `miss`); a coalesced request counts as a miss.
pub const CACHE_GETS: &str = "cache_gets_total";
/// Counter: misses that waited for another request's database load instead of making their own.
pub const CACHE_LOAD_COALESCED: &str = "cache_load_coalesced_total";
/// Counter: entries removed by `cause` (`size`, `expired`, `explicit`, `replaced`).
pub const CACHE_EVICTIONS: &str = "cache_evictions_total";
/// Gauge: entries in the cache (items, cached not-founds and tombstones).
pub const CACHE_ENTRIES: &str = "cache_entries";
/// Gauge: bytes of cached response bodies.
pub const CACHE_SIZE_BYTES: &str = "cache_size_bytes";
/// Gauge: the configured maximum number of entries.
pub const CACHE_CAPACITY: &str = "cache_capacity_entries";

/// Histogram, seconds: duration of each database operation by `db_operation_name`
/// (`select`, `insert`, `update`, `delete`, `list`) and `db_system_name`.
pub const DB_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Counter: failed database operations by `db_operation_name` and `error_type`
/// (`pool_timeout`, `unavailable`, `query`).
pub const DB_OPERATION_ERRORS: &str = "db_client_operation_errors_total";

/// Gauge: pooled connections by `pool` and `state` (`idle`, `used`). OpenTelemetry calls it
/// `db.client.connection.count`; a Prometheus gauge must not end in `_count`, so it keeps the
/// earlier convention name `db.client.connections.usage`.
pub const DB_CONNECTION_COUNT: &str = "db_client_connection_usage";
/// Gauge: the pool's configured maximum connections.
pub const DB_CONNECTION_MAX: &str = "db_client_connection_max";
/// Gauge: the pool's configured minimum (idle) connections.
pub const DB_CONNECTION_IDLE_MIN: &str = "db_client_connection_idle_min";
/// Gauge: requests waiting for a connection.
pub const DB_CONNECTION_PENDING: &str = "db_client_connection_pending_requests";
/// Histogram, seconds: time spent waiting for a connection.
pub const DB_CONNECTION_WAIT_TIME: &str = "db_client_connection_wait_time_seconds";
/// Counter: waits for a connection that hit the acquire timeout (each answered 503).
pub const DB_CONNECTION_TIMEOUTS: &str = "db_client_connection_timeouts_total";

/// Gauge, always 1: `version` and `revision` of the running build.
pub const BUILD_INFO: &str = "build_info";

/// Buckets for every latency histogram, 100 µs to 10 s: fine enough for sub-millisecond hits.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
