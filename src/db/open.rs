//! Connecting to the database: pool sizing, SQLite pragmas, and the split between the pool that
//! reads and the connection that writes.

use std::time::Duration;

use anyhow::Context;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use super::sql::positions::{RELEASE_LOCK, SQLITE_CHECKPOINT, TAKE_LOCK};
use crate::config::DbSettings;

/// Default pool bounds on PostgreSQL (the seed's pool_size 20 + max_overflow 40).
const PG_MAX: u32 = 60;
const PG_MIN: u32 = 20;
/// SQLite readers: WAL lets them run beside the writer; more than a few only adds contention on 2 cores.
const SQLITE_READERS_MAX: u32 = 8;
const SQLITE_READERS_MIN: u32 = 1;
/// SQLite page cache per connection, in KiB (negative `cache_size` means KiB): 32 MiB.
const SQLITE_CACHE_KIB: i64 = 32 * 1024;

/// Configured size of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub max: u32,
    pub min: u32,
}

/// The service's database handles.
///
/// On PostgreSQL `read` and `write` are the same pool. On SQLite writes go through a pool of exactly
/// one connection: SQLite allows one writer at a time anyway, and queueing for that connection in the
/// pool (bounded by the acquire timeout) replaces waiting on the file lock (which sqlx would let run
/// for its 5 s busy timeout), so a write never stalls a request longer than the acquire timeout.
#[derive(Clone, Debug)]
pub struct Db {
    /// Pool for queries.
    pub read: DatabaseConnection,
    /// Pool for statements that change data.
    pub write: DatabaseConnection,
    /// Sizes of the read and the write pool.
    pub sizes: (PoolSize, PoolSize),
    /// Whether `read` and `write` are one pool.
    pub shared: bool,
}

impl Db {
    /// A SQLite database in a file (with a write-ahead log), not in memory.
    pub fn is_sqlite_file(&self) -> bool {
        self.write.get_database_backend() == DbBackend::Sqlite && !self.shared
    }

    fn one(pool: DatabaseConnection, size: PoolSize) -> Self {
        Self {
            read: pool.clone(),
            write: pool,
            sizes: (size, size),
            shared: true,
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> DbBackend {
        self.write.get_database_backend()
    }

    /// Connections of the read and the write pool now.
    pub fn pool_stats(&self) -> (PoolStats, PoolStats) {
        (stats(&self.read), stats(&self.write))
    }

    /// Closes every pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        let _ = self.read.close_by_ref().await;
        let _ = self.write.close_by_ref().await;
    }
}

/// Connections of one pool at a moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Connections open, idle or in use.
    pub open: u32,
    /// Of those, idle.
    pub idle: usize,
}

fn stats(pool: &DatabaseConnection) -> PoolStats {
    let (open, idle) = match pool.get_database_backend() {
        DbBackend::Postgres => {
            let p = pool.get_postgres_connection_pool();
            (p.size(), p.num_idle())
        }
        DbBackend::Sqlite => {
            let p = pool.get_sqlite_connection_pool();
            (p.size(), p.num_idle())
        }
        _ => (0, 0),
    };
    PoolStats { open, idle }
}

/// The database `url` names, for logs: backend and location, without credentials or options.
pub fn describe(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("database", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    format!("{scheme} {rest}")
}

/// Applies pending migrations. On PostgreSQL under an advisory lock, so replicas starting at
/// once take turns instead of racing (sea-orm-migration takes no lock of its own).
pub async fn migrate(db: &Db, url: &str) -> anyhow::Result<()> {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::sqlx::{Connection, postgres::PgConnection};
    if db.backend() != DbBackend::Postgres {
        return Migrator::up(&db.write, None)
            .await
            .context("applying migrations");
    }
    let mut lock = PgConnection::connect(url)
        .await
        .context("connecting for the migration lock")?;
    sea_orm::sqlx::query(TAKE_LOCK)
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await
        .context("taking the migration lock")?;
    // On a connection of its own, without the service's statement timeout: building an index
    // on a large table may take longer than any request should.
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1).sqlx_logging(false);
    let conn = Database::connect(opts)
        .await
        .context("connecting for migrations")?;
    let applied = Migrator::up(&conn, None)
        .await
        .context("applying migrations");
    let _ = conn.close().await;
    // Closing the session releases the lock too; unlock first to say so plainly.
    let _ = sea_orm::sqlx::query(RELEASE_LOCK)
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await;
    let _ = lock.close().await;
    applied
}

/// The advisory lock key that serializes migrations (any fixed 64-bit number of ours).
const MIGRATION_LOCK: i64 = 0x6461_7461_2d61_7069; // "data-api"

/// Opens the pools `settings` describe.
pub async fn connect(settings: &DbSettings) -> anyhow::Result<Db> {
    let url = settings.url.as_str();
    if url.starts_with("sqlite:") {
        return connect_sqlite(url, settings).await;
    }
    // Lazy, then one ping: sqlx's eager connect opens all `min` connections one after another
    // within a single acquire timeout, which 20 connections do not fit in.
    let (pool, size) = connect_lazy(url, settings)
        .await
        .context("connecting to the database")?;
    super::start_wait::ping_within(&pool, settings.start_wait)
        .await
        .context("connecting to the database")?;
    warm_up(&pool, size.min);
    Ok(Db::one(pool, size))
}

/// A PostgreSQL pool of the configured size that connects on first use (a standby may be down
/// when the service starts): this only parses the URL and builds the pool.
pub async fn connect_lazy(
    url: &str,
    settings: &DbSettings,
) -> anyhow::Result<(DatabaseConnection, PoolSize)> {
    let max = settings.max_connections.unwrap_or(PG_MAX).max(1);
    let min = settings.min_connections.unwrap_or(PG_MIN).min(max);
    let mut opts = options(url, settings, max, min);
    opts.connect_lazy(true);
    let pool = Database::connect(opts)
        .await
        .with_context(|| format!("opening a pool for {}", describe(url)))?;
    Ok((pool, PoolSize { max, min }))
}

/// Opens `min` connections in the background so the pool starts at its minimum size.
fn warm_up(pool: &DatabaseConnection, min: u32) {
    if pool.get_database_backend() != DbBackend::Postgres || min == 0 {
        return;
    }
    let pool = pool.get_postgres_connection_pool().clone();
    tokio::spawn(async move {
        let conns = futures_util::future::join_all((0..min).map(|_| pool.acquire())).await;
        let opened = conns.iter().filter(|c| c.is_ok()).count();
        drop(conns);
        tracing::debug!(opened, "pool warmed up");
    });
}

async fn connect_sqlite(url: &str, settings: &DbSettings) -> anyhow::Result<Db> {
    let single = PoolSize { max: 1, min: 1 };
    // An in-memory database lives in one connection; two pools would see two databases.
    if url.contains(":memory:") || url.contains("mode=memory") {
        let pool = Database::connect(sqlite_options(url, settings, single))
            .await
            .context("opening the in-memory SQLite database")?;
        return Ok(Db::one(pool, single));
    }
    // The writer first: it creates the file (mode=rwc) and switches it to WAL.
    let write = Database::connect(sqlite_options(url, settings, single))
        .await
        .with_context(|| format!("opening SQLite database {url}"))?;
    let max = settings
        .max_connections
        .unwrap_or(SQLITE_READERS_MAX)
        .max(1);
    let readers = PoolSize {
        max,
        min: settings
            .min_connections
            .unwrap_or(SQLITE_READERS_MIN)
            .min(max),
    };
    let read = Database::connect(sqlite_options(url, settings, readers))
        .await
        .with_context(|| format!("opening SQLite database {url} for reading"))?;
    Ok(Db {
        read,
        write,
        sizes: (readers, single),
        shared: false,
    })
}

/// Bytes a reset SQLite write-ahead log keeps (64 MiB).
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// How often the SQLite write-ahead log is copied into the database file.
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// SQLite: copies the write-ahead log into the database file every `WAL_CHECKPOINT_EVERY`, for
/// as long as it runs.
///
/// SQLite checkpoints by itself only when a statement is stepped to its end, and sqlx stops
/// stepping an `INSERT … RETURNING` or `UPDATE … RETURNING` once it has its row: every write of
/// ours is one of those, so without this the log grew with every write, for the life of the
/// process (seen: a 5 GB log beside a 4 KB database file; every read searches the log).
/// It runs on the writer connection, between writes, as SQLite's own checkpoint would: a
/// passive checkpoint beside a stream of writes from another connection was seen to make no
/// progress for seconds.
pub async fn checkpoint_wal(db: DatabaseConnection) {
    let mut tick = tokio::time::interval(WAL_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = db.execute_unprepared(SQLITE_CHECKPOINT).await {
            tracing::warn!(error = %e, "checkpointing the SQLite write-ahead log failed");
        }
    }
}

fn sqlite_options(url: &str, settings: &DbSettings, size: PoolSize) -> ConnectOptions {
    let busy = settings.acquire_timeout;
    let mut opts = options(url, settings, size.max, size.min);
    // A connection to a local file has nothing to lose between uses: no pre-ping (a round trip
    // inside each write's hold on the writer). sea-orm's SQLite driver has no idle threshold.
    opts.test_before_acquire(false);
    opts.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy)
            .pragma("cache_size", (-SQLITE_CACHE_KIB).to_string())
            .pragma("temp_store", "MEMORY")
            // A log reset after a checkpoint is cut back to this size.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
    });
    opts
}

fn options(url: &str, settings: &DbSettings, max: u32, min: u32) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max)
        .min_connections(min)
        .acquire_timeout(settings.acquire_timeout)
        .max_lifetime(settings.max_lifetime)
        .idle_timeout(settings.idle_timeout)
        .sqlx_logging(settings.log_statements);
    opts.test_before_acquire_if_idle_for(settings.ping_idle_after);
    if url.starts_with("postgres") {
        let ms = settings.statement_timeout.as_millis().max(1).to_string();
        opts.map_sqlx_postgres_opts(move |o| o.options([("statement_timeout", ms.as_str())]));
    }
    opts
}

#[cfg(test)]
mod tests {
    #[test]
    fn describes_without_credentials() {
        assert_eq!(
            super::describe("postgres://app:secret@db.internal:5432/items?sslmode=require"),
            "postgres db.internal:5432/items"
        );
        assert_eq!(
            super::describe("sqlite://data-api.db?mode=rwc"),
            "sqlite data-api.db"
        );
    }
}
