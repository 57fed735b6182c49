//! The coherent item cache in front of the database: its rules are written at the top of
//! `items`; `marks` keeps the versions known committed outside it; `coherence` is the lease and
//! epoch that say whether it may serve at all; `shared` the fleet's second level in Redis and
//! `edge` the purger of an HTTP cache in front (each with its rules at its top); `metrics` its
//! measures; `sim` checks its rules in random schedules (tests only).
//!
//! Uses `db` (the row it keeps), `metrics` and `config`; never `replication` or `store`.

pub(crate) mod coherence;
pub(crate) mod edge;
pub(crate) mod items;
pub(crate) mod marks;
pub(crate) mod metrics;
pub(crate) mod shared;
#[cfg(test)]
mod sim;

pub use coherence::Coherence;
pub use items::{CachedItem, ItemCache};
