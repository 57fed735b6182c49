//! The database connection pool and the in-memory caches.

use std::time::Duration;

use clap::Args;

/// Where the data lives and how connections to it are pooled.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DbSettings {
    /// Database URL (`sqlite://…` or `postgres://…`). Env: DATABASE_URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "sqlite://data-api.db?mode=rwc"
    )]
    pub url: String,

    /// PostgreSQL streaming standbys that take lists and cache fills off the primary, comma
    /// separated (at most 8), each with its own pool sized as the primary's. Reads never answer
    /// older than what this replica knows (see docs/STANDBYS.md). Env: DATABASE_READ_URL.
    #[arg(
        long = "database-read-url",
        value_name = "URLS",
        env = "DATABASE_READ_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_urls: Vec<String>,

    /// Reads go to the primary while a standby's replay lag is over this, and return once it
    /// has stayed under half of it for as long. Env: DATA_API_MAX_REPLICA_LAG.
    #[arg(long = "max-replica-lag", env = "DATA_API_MAX_REPLICA_LAG", default_value = "1s", value_parser = humantime::parse_duration)]
    pub max_replica_lag: Duration,

    /// Maximum pooled connections [default: 60 on PostgreSQL; 8 readers on SQLite, plus one writer].
    /// Env: DATA_API_DB_MAX_CONNECTIONS.
    #[arg(
        id = "db_max_connections",
        value_name = "DB_MAX_CONNECTIONS",
        long = "db-max-connections",
        env = "DATA_API_DB_MAX_CONNECTIONS"
    )]
    pub max_connections: Option<u32>,

    /// Connections kept open when idle [default: 20 on PostgreSQL, 1 on SQLite].
    /// Env: DATA_API_DB_MIN_CONNECTIONS.
    #[arg(long = "db-min-connections", env = "DATA_API_DB_MIN_CONNECTIONS")]
    pub min_connections: Option<u32>,

    /// How long a request waits for a free connection before it gets 503 + Retry-After.
    /// On SQLite it is also the busy timeout for locks. Env: DATA_API_DB_ACQUIRE_TIMEOUT.
    #[arg(long = "db-acquire-timeout", env = "DATA_API_DB_ACQUIRE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,

    /// PostgreSQL: longest any statement of the service may run (`statement_timeout`) before the
    /// server cancels it and the request gets 503; cache fills are bounded by this plus
    /// `--db-acquire-timeout` on both backends. Migrations are exempt. At least 1ms.
    /// Env: DATA_API_DB_STATEMENT_TIMEOUT.
    #[arg(long = "db-statement-timeout", env = "DATA_API_DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = super::positive)]
    pub statement_timeout: Duration,

    /// How long start-up waits for PostgreSQL to take connections, trying again with growing
    /// pauses, before it gives up (0s: one try). Only what waiting can mend is waited out: a
    /// refused or lost connection, a server starting up or full, a timeout; a wrong password or
    /// a missing database ends the start at once. Env: DATA_API_DB_START_WAIT.
    #[arg(long = "db-start-wait", env = "DATA_API_DB_START_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub start_wait: Duration,

    /// Connections are recycled after this long. Env: DATA_API_DB_MAX_LIFETIME.
    #[arg(long = "db-max-lifetime", env = "DATA_API_DB_MAX_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,

    /// Idle connections above the minimum are closed after this long. Env: DATA_API_DB_IDLE_TIMEOUT.
    #[arg(id = "db_idle_timeout", value_name = "DB_IDLE_TIMEOUT", long = "db-idle-timeout", env = "DATA_API_DB_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// PostgreSQL: ping a pooled connection before handing it out if it has been idle at least
    /// this long ("pre-ping"; 0s: before every use). A connection used within the last moment is
    /// known to be alive, so the default skips that round trip for busy connections (as
    /// HikariCP's 500 ms bypass window does). SQLite never pings: a local file has no connection
    /// to lose. Env: DATA_API_DB_PING_IDLE_AFTER.
    #[arg(long = "db-ping-idle-after", env = "DATA_API_DB_PING_IDLE_AFTER", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub ping_idle_after: Duration,

    /// Most batches of item reads in flight at once on the primary, and on each standby. Item
    /// reads (cache fills, and `GET /data/{id}` without a cache) that arrive while every batch
    /// is busy wait and go together, as one `WHERE id IN (…)` query of at most 64 items; a read
    /// that finds a batch free goes at once. 0: one query per read. Env: DATA_API_DB_READ_BATCHES.
    #[arg(
        long = "db-read-batches",
        env = "DATA_API_DB_READ_BATCHES",
        default_value_t = 2
    )]
    pub read_batches: u32,

    /// Most batches of item writes (creates, updates, deletes) in flight at once; on SQLite at
    /// most 1, its one writer connection. Writes that arrive while every batch is busy wait and
    /// commit together, as the statements of one transaction of at most 64 writes, each keeping
    /// its own outcome; a write that finds a batch free goes at once. 0: one transaction per
    /// write. Env: DATA_API_DB_WRITE_BATCHES.
    #[arg(
        long = "db-write-batches",
        env = "DATA_API_DB_WRITE_BATCHES",
        default_value_t = 2
    )]
    pub write_batches: u32,

    /// Log every SQL statement (at info level). Env: DATA_API_DB_LOG_STATEMENTS.
    #[arg(
        long = "db-log-statements",
        env = "DATA_API_DB_LOG_STATEMENTS",
        default_value_t = false
    )]
    pub log_statements: bool,
}

/// The item cache in front of `GET /data/{id}`, and how long `Idempotency-Key`s are kept.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cache")]
pub struct CacheSettings {
    /// Most items kept in the cache; 0 disables it. Env: DATA_API_CACHE_CAPACITY.
    #[arg(
        long = "cache-capacity",
        env = "DATA_API_CACHE_CAPACITY",
        default_value_t = 1_000
    )]
    pub capacity: u64,

    /// Most bytes the cache may hold (response bodies plus a fixed per-entry overhead), beside
    /// `--cache-capacity`: whichever bound is reached first evicts. Unset: only the entry count
    /// bounds it. Env: DATA_API_CACHE_MAX_BYTES.
    #[arg(long = "cache-max-bytes", env = "DATA_API_CACHE_MAX_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,

    /// How long a cached item lives. Env: DATA_API_CACHE_TTL.
    #[arg(long = "cache-ttl", env = "DATA_API_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// How long a "not found" answer is cached (a create makes the item visible at once regardless).
    /// Env: DATA_API_CACHE_NEGATIVE_TTL.
    #[arg(long = "cache-negative-ttl", env = "DATA_API_CACHE_NEGATIVE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub negative_ttl: Duration,

    /// How long a POST's `Idempotency-Key` is remembered: a retry with the same key within it
    /// gets the first answer instead of creating a second item. Env: DATA_API_IDEMPOTENCY_TTL.
    #[arg(long = "idempotency-ttl", env = "DATA_API_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: Duration,

    /// Keep the cache coherent with this process's own writes only, as a single instance: no
    /// invalidation listener, and cached items are served even while the database is down. The
    /// default on PostgreSQL is coherence across replicas; SQLite is always single-instance.
    /// Env: DATA_API_SINGLE_INSTANCE.
    #[arg(long, env = "DATA_API_SINGLE_INSTANCE", default_value_t = false, action = clap::ArgAction::Set)]
    pub single_instance: bool,

    /// How this replica hears of changes other replicas (and psql, and `seed`) commit, on
    /// PostgreSQL with several replicas: `auto`, PostgreSQL's commit log through a temporary
    /// logical replication slot where the server allows it (`wal_level = logical` and the
    /// replication privilege), else the trigger, said once at start-up; `trigger`, always the
    /// table's trigger notifying a channel (`LISTEN`; every write pays a cluster-wide commit
    /// lock). Env: DATA_API_INVALIDATION.
    #[arg(long, env = "DATA_API_INVALIDATION", value_enum, default_value_t = Invalidation::Auto)]
    pub invalidation: Invalidation,

    /// Where the invalidation listener connects (`LISTEN` needs the primary, directly or through
    /// a session-mode pooler) [default: the database URL]. Env: DATA_API_LISTEN_URL.
    #[arg(long, env = "DATA_API_LISTEN_URL", hide_env_values = true)]
    pub listen_url: Option<String>,

    /// With several replicas: the cache serves hits only while this replica's own heartbeat
    /// (sent every fifth of this) came back through the invalidation channel within it; it
    /// bounds how stale a read from another replica's cache can be when notifications are lost.
    /// At least 10ms. Env: DATA_API_CACHE_LEASE.
    #[arg(long = "cache-lease", env = "DATA_API_CACHE_LEASE", default_value = "1s", value_parser = super::lease)]
    pub lease: Duration,

    /// A Redis shared by the replicas as a second cache level (`redis://host:port/db`): a miss
    /// here asks it before the database, and fills and writes go through it. Off when unset.
    /// Needs the cache (`--cache-capacity` above 0). Env: DATA_API_REDIS_URL.
    #[arg(long, env = "DATA_API_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Longest wait for any one Redis call; past it the read goes to the database (and three in
    /// a row open the breaker for a second). Env: DATA_API_REDIS_TIMEOUT.
    #[arg(long, env = "DATA_API_REDIS_TIMEOUT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// What every key this service keeps in Redis starts with (several deployments, or tests,
    /// can share one Redis). Env: DATA_API_REDIS_PREFIX.
    #[arg(long, env = "DATA_API_REDIS_PREFIX", default_value = "data-api:")]
    pub redis_prefix: String,

    #[command(flatten)]
    pub edge: super::edge::EdgeSettings,
}

/// How a replica hears of changes committed elsewhere (`--invalidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Invalidation {
    /// The table's trigger notifies a channel the replica listens to.
    Trigger,
    /// The commit log (logical decoding) where the server allows it, else the trigger.
    Auto,
}
