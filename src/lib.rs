//! data-api: items at `/data/{id}` over sea-orm, with a coherent moka cache in front.
//!
//! A module is `pub` only where the black-box tests, the examples or the benches reach it (the
//! app's builder, its settings, the route table, the metric catalog, what the hot-path counter
//! assembles); every other room is `pub(crate)` or private, so its own file says whether
//! anything outside the crate may depend on it. Which room may use which: `cargo test --lib
//! layout`, and the README's map.

/// HTTP operations, OpenAPI document and middleware.
pub mod api;
/// The coherent item cache, its version marks, lease and epoch.
pub(crate) mod cache;
/// Command-line flags and environment settings.
pub mod config;
/// The cap on open connections.
pub(crate) mod connections;
/// `/dashboard`: live charts computed in-process from the metrics.
pub mod dashboard;
/// The database: connecting, every statement, pools, batching, what an error means.
pub(crate) mod db;
/// Checks that no two top-level modules use each other (`cargo test --lib layout`).
#[cfg(test)]
mod layout;
/// Prometheus metrics: the catalog of families, the registry, HTTP label values.
pub mod metrics;
/// Cross-replica invalidation and reads on streaming standbys.
pub(crate) mod replication;
/// The route table: every path served, its template and methods (imports nothing of ours).
pub mod route;
/// `data-api seed`: synthetic items for load tests.
pub mod seed;
/// Building and running the server, and stopping it gracefully.
pub mod startup;
/// Items, read through the cache and written through to the database: the rooms below, combined.
pub mod store;
/// Logging, OpenTelemetry tracing and W3C trace context.
pub mod telemetry;
