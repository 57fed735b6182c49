//! Every knob of the service: command-line flags with environment fallbacks and documented defaults.
//!
//! Environment names are prefixed `DATA_API_`, except the standard `DATABASE_URL`, `RUST_LOG` and
//! `OTEL_*`. Settings are passed down explicitly; nothing reads them from globals.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Fast, observable HTTP data service.
#[derive(Debug, Clone, Parser)]
#[command(name = "data-api", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending migrations, then list every migration with its status.
    Migrate {
        /// Only list applied and pending migrations; apply nothing.
        #[arg(long)]
        status: bool,
    },
    /// Bulk-insert synthetic items (batched, in transactions) for load tests.
    Seed {
        /// How many items to insert.
        #[arg(long, default_value_t = 10_000)]
        items: u64,
        /// Rows per INSERT statement; every batch is its own transaction.
        #[arg(long, default_value_t = 1_000)]
        batch: u64,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// Settings shared by every sub-command.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Database URL (`sqlite://…` or `postgres://…`). Env: DATABASE_URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data-api.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// Address to listen on. Env: DATA_API_BIND.
    #[arg(
        long,
        env = "DATA_API_BIND",
        default_value = "0.0.0.0:8000",
        global = true
    )]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub db: DbSettings,

    #[command(flatten)]
    pub cache: CacheSettings,

    #[command(flatten)]
    pub http: HttpSettings,

    #[command(flatten)]
    pub log: LogSettings,

    #[command(flatten)]
    pub trace: TraceSettings,

    #[command(flatten)]
    pub metrics: MetricsSettings,
}

/// Connection pool settings.
#[derive(Debug, Clone, Args)]
pub struct DbSettings {
    /// Maximum pooled connections [default: 60 on PostgreSQL; 8 readers on SQLite, plus one writer].
    /// Env: DATA_API_DB_MAX_CONNECTIONS.
    #[arg(long, env = "DATA_API_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,

    /// Connections kept open when idle [default: 20 on PostgreSQL, 1 on SQLite].
    /// Env: DATA_API_DB_MIN_CONNECTIONS.
    #[arg(long, env = "DATA_API_DB_MIN_CONNECTIONS", global = true)]
    pub db_min_connections: Option<u32>,

    /// How long a request waits for a free connection before it gets 503 + Retry-After.
    /// On SQLite it is also the busy timeout for locks. Env: DATA_API_DB_ACQUIRE_TIMEOUT.
    #[arg(long, env = "DATA_API_DB_ACQUIRE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub db_acquire_timeout: Duration,

    /// Connections are recycled after this long. Env: DATA_API_DB_MAX_LIFETIME.
    #[arg(long, env = "DATA_API_DB_MAX_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration, global = true)]
    pub db_max_lifetime: Duration,

    /// Idle connections above the minimum are closed after this long. Env: DATA_API_DB_IDLE_TIMEOUT.
    #[arg(long, env = "DATA_API_DB_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    pub db_idle_timeout: Duration,

    /// Only ping pooled connections idle at least this long before handing them out, instead of
    /// pinging on every acquire (the default, "pre-ping"). Env: DATA_API_DB_PING_IDLE_AFTER.
    #[arg(long, env = "DATA_API_DB_PING_IDLE_AFTER", value_parser = humantime::parse_duration, global = true)]
    pub db_ping_idle_after: Option<Duration>,

    /// Log every SQL statement (at info level). Env: DATA_API_DB_LOG_STATEMENTS.
    #[arg(
        long,
        env = "DATA_API_DB_LOG_STATEMENTS",
        default_value_t = false,
        global = true
    )]
    pub db_log_statements: bool,

    /// Apply pending migrations when the server starts. Env: DATA_API_MIGRATE_ON_START.
    #[arg(long, env = "DATA_API_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub migrate_on_start: bool,
}

/// In-memory item cache settings.
#[derive(Debug, Clone, Args)]
pub struct CacheSettings {
    /// Most items kept in the cache; 0 disables it. Env: DATA_API_CACHE_CAPACITY.
    #[arg(
        long,
        env = "DATA_API_CACHE_CAPACITY",
        default_value_t = 1_000,
        global = true
    )]
    pub cache_capacity: u64,

    /// How long a cached item lives. Env: DATA_API_CACHE_TTL.
    #[arg(long, env = "DATA_API_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    pub cache_ttl: Duration,

    /// How long a "not found" answer is cached (a create makes the item visible at once regardless).
    /// Env: DATA_API_CACHE_NEGATIVE_TTL.
    #[arg(long, env = "DATA_API_CACHE_NEGATIVE_TTL", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub cache_negative_ttl: Duration,

    /// How long a POST's `Idempotency-Key` is remembered: a retry with the same key within it
    /// gets the first answer instead of creating a second item. Env: DATA_API_IDEMPOTENCY_TTL.
    #[arg(long, env = "DATA_API_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration, global = true)]
    pub idempotency_ttl: Duration,
}

/// HTTP behaviour.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Largest accepted request body in bytes (chunked bodies included); larger gets 413.
    /// Env: DATA_API_BODY_LIMIT.
    #[arg(
        long,
        env = "DATA_API_BODY_LIMIT",
        default_value_t = 1_048_576,
        global = true
    )]
    pub body_limit: usize,

    /// Longest accepted request target (path and query) in bytes; longer gets 414.
    /// Env: DATA_API_MAX_URI_LENGTH.
    #[arg(
        long,
        env = "DATA_API_MAX_URI_LENGTH",
        default_value_t = 8_192,
        global = true
    )]
    pub max_uri_length: usize,

    /// Most bytes of request headers (names and values); more gets 431.
    /// Env: DATA_API_MAX_HEADER_BYTES.
    #[arg(
        long,
        env = "DATA_API_MAX_HEADER_BYTES",
        default_value_t = 16_384,
        global = true
    )]
    pub max_header_bytes: usize,

    /// `Cache-Control` sent with `GET /data/{id}`. Env: DATA_API_CACHE_CONTROL.
    #[arg(
        long,
        env = "DATA_API_CACHE_CONTROL",
        default_value = "no-cache",
        global = true
    )]
    pub cache_control: String,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT. Env: DATA_API_DRAIN_TIMEOUT.
    #[arg(long, env = "DATA_API_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub drain_timeout: Duration,

    /// Most connections open at once; at the cap new ones wait in the kernel's backlog until
    /// one closes. Keep it below the file descriptor limit (`ulimit -n`). 0: no cap.
    /// Env: DATA_API_MAX_CONNECTIONS.
    #[arg(
        long,
        env = "DATA_API_MAX_CONNECTIONS",
        default_value_t = 4_096,
        global = true
    )]
    pub max_connections: usize,

    /// Closes a connection that has sent and received nothing for this long (idle keep-alive
    /// connections, and clients that connect and send nothing); a request being handled is not
    /// cut short. 0s: never. Env: DATA_API_IDLE_TIMEOUT.
    #[arg(long, env = "DATA_API_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub idle_timeout: Duration,

    /// How long `/health/ready` waits for the database before answering 503.
    /// Env: DATA_API_READY_TIMEOUT.
    #[arg(long, env = "DATA_API_READY_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub ready_timeout: Duration,

    /// Most requests handled at once; beyond it a request gets 503 + Retry-After at once instead
    /// of queueing (health probes and /metrics are exempt). 0: no cap.
    /// Env: DATA_API_MAX_IN_FLIGHT.
    #[arg(
        long,
        env = "DATA_API_MAX_IN_FLIGHT",
        default_value_t = 1024,
        global = true
    )]
    pub max_in_flight: usize,

    /// Longest a request may take; past it the client gets 503 problem+json (a write that was
    /// already under way still completes). 0s: no limit. Env: DATA_API_REQUEST_TIMEOUT.
    #[arg(long, env = "DATA_API_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub request_timeout: Duration,

    /// API keys for writes, comma-separated: POST/PUT/PATCH/DELETE then need
    /// `Authorization: Bearer <key>` (401 without, 403 with a wrong one). Several keys allow
    /// rotation. Unset: writes are open. Env: DATA_API_KEYS.
    #[arg(long, env = "DATA_API_KEYS", hide_env_values = true, global = true)]
    pub api_keys: Option<String>,

    /// File with one API key per line (`#` comments allowed), added to `--api-keys`.
    /// Env: DATA_API_KEY_FILE.
    #[arg(long, env = "DATA_API_KEY_FILE", global = true)]
    pub api_key_file: Option<std::path::PathBuf>,

    /// Origins allowed to call the API from a browser (CORS), comma-separated, or `*` for any.
    /// Unset: no CORS headers. Env: DATA_API_CORS_ORIGINS.
    #[arg(long, env = "DATA_API_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,

    /// Compress responses (gzip, deflate, brotli, zstd) when the client's `Accept-Encoding` asks
    /// for it. Env: DATA_API_COMPRESSION.
    #[arg(long, env = "DATA_API_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub compression: bool,
}

/// Log output.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log line format. Env: DATA_API_LOG_FORMAT. The filter comes from RUST_LOG (default `info,poem::server=warn`).
    #[arg(long, env = "DATA_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// Tracing: request spans, the access log, and OTLP export.
#[derive(Debug, Clone, Args)]
pub struct TraceSettings {
    /// Export spans over OTLP/HTTP to this collector (e.g. `http://127.0.0.1:4318`; `/v1/traces`
    /// is appended). Unset: nothing is exported. Env: OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of exported spans [default: data-api]. Env: OTEL_SERVICE_NAME.
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true)]
    pub otel_service_name: Option<String>,

    /// Turn OpenTelemetry export off even when an endpoint is set. Env: OTEL_SDK_DISABLED.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub otel_sdk_disabled: bool,

    /// Which spans are exported (an `EnvFilter`, separate from RUST_LOG).
    /// Env: DATA_API_OTEL_FILTER.
    #[arg(
        long,
        env = "DATA_API_OTEL_FILTER",
        default_value = "info,data_api=debug",
        global = true
    )]
    pub otel_filter: String,

    /// Trace every request: continue the caller's W3C `traceparent` or start a trace, answer
    /// with `traceparent`, put `trace_id`/`span_id` on its log lines, and (with an OTLP endpoint)
    /// export its spans. Env: DATA_API_TRACING.
    #[arg(long, env = "DATA_API_TRACING", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub tracing: bool,

    /// Write one log line per request. Env: DATA_API_ACCESS_LOG.
    #[arg(long, env = "DATA_API_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub access_log: bool,
}

impl TraceSettings {
    /// Whether spans are exported over OTLP.
    pub fn exports(&self) -> bool {
        !self.otel_sdk_disabled && self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Args)]
pub struct MetricsSettings {
    /// Record metrics and serve them at `/metrics`. Env: DATA_API_METRICS.
    #[arg(long, env = "DATA_API_METRICS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub metrics: bool,

    /// Serve `/metrics` on this address instead of the API's, so it need not be public.
    /// Env: DATA_API_METRICS_BIND.
    #[arg(long, env = "DATA_API_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,

    /// How often pool and cache gauges are sampled. Env: DATA_API_METRICS_INTERVAL.
    #[arg(long, env = "DATA_API_METRICS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub metrics_interval: Duration,

    /// Require `Authorization: Bearer <token>` on `/metrics`. Env: DATA_API_METRICS_TOKEN.
    #[arg(
        long,
        env = "DATA_API_METRICS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub metrics_token: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Human,
    /// One JSON object per line.
    Json,
}

impl Settings {
    /// Settings with every default, for the given database; used by tests and tools.
    pub fn defaults_for(database_url: &str) -> Self {
        let mut cli = Cli::parse_from(["data-api"]);
        cli.settings.database_url = database_url.to_owned();
        cli.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let cli = Cli::try_parse_from(["data-api"]).unwrap();
        let s = cli.settings;
        assert_eq!(s.http.body_limit, 1_048_576);
        assert_eq!(s.http.max_uri_length, 8_192);
        assert_eq!(s.http.max_header_bytes, 16_384);
        assert_eq!(s.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.http.max_connections, 4_096);
        assert_eq!(s.db.db_acquire_timeout, Duration::from_secs(1));
        assert_eq!(s.cache.cache_capacity, 1_000);
        assert_eq!(s.cache.cache_ttl, Duration::from_secs(300));
        assert!(s.db.migrate_on_start);
    }

    #[test]
    fn parses_durations_and_subcommands() {
        let cli = Cli::try_parse_from([
            "data-api",
            "seed",
            "--items",
            "5",
            "--db-acquire-timeout",
            "250ms",
            "--migrate-on-start",
            "false",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Seed { items: 5, .. })));
        assert_eq!(
            cli.settings.db.db_acquire_timeout,
            Duration::from_millis(250)
        );
        assert!(!cli.settings.db.migrate_on_start);
    }

    #[test]
    fn rejects_bad_durations() {
        assert!(Cli::try_parse_from(["data-api", "--cache-ttl", "soon"]).is_err());
    }
}
