//! The database: connecting and migrating (`open`), every statement the service runs (`sql`),
//! the way each one runs (`pool`: admission to a connection, its span, its measures), item reads
//! batched into one query (`batch`), writes committed together (`write_batch`), what an error means for the caller (`failure`), and
//! start-up's wait for PostgreSQL (`start_wait`).
//!
//! Uses `config`, `metrics` and `telemetry`; nothing here knows of the cache or of replicas.

pub(crate) mod batch;
pub(crate) mod failure;
mod open;
pub(crate) mod pool;
mod queue;
pub(crate) mod sql;
pub(crate) mod start_wait;
pub(crate) mod write_batch;

pub use failure::DbFailure;
pub use open::{Db, PoolSize, PoolStats, checkpoint_wal, connect, connect_lazy, describe, migrate};
pub use sql::entity::Model;
