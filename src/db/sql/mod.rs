//! Every statement the service runs, in one place: the item queries (`items`), the
//! `Idempotency-Key` table (`idempotency`), and the position and heartbeat queries that
//! replication asks of the primary and the standbys (`positions`). Nothing outside this module
//! writes SQL; `catalog` names every statement on the tables, for the plan test.

pub mod catalog;
pub(crate) mod entity;
pub(crate) mod idempotency;
pub(crate) mod items;
pub(crate) mod positions;
