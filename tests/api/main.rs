//! Black-box tests: the real service on port 0, talked to over HTTP. `helpers` starts it
//! (`TestApp` in process, `Binary` as a process); the harness shared with the load tests
//! (waiting on state, clusters, proxies, nginx) is the `testkit` crate.

mod helpers;

mod auth;
mod batching;
mod browser;
mod cache;
mod checker;
mod concurrency;
mod crud;
mod dashboard;
mod db_faults;
mod edge;
mod errors;
mod fuzz;
mod idempotency;
mod lifecycle;
mod limits;
mod list;
mod metrics;
mod openapi;
mod overload;
mod plans;
mod production;
mod redis;
mod replicas;
mod replicas_redis;
mod shutdown;
mod slow_clients;
mod standby_fills;
mod standbys;
mod start_wait;
mod stream;
mod tracing;
mod write_batching;
