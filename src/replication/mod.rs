//! What keeps several replicas and the standbys honest: `listener` hears every committed change
//! (and this replica's heartbeats, which hold the cache's lease) and applies it to the cache;
//! `standby` reads from streaming standbys, watching their lag behind a breaker.
//!
//! Uses `cache`, `db`, `metrics` and `config`; never `store`.

pub(crate) mod listener;
pub(crate) mod standby;
