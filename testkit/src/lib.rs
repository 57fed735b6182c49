//! The harness the black-box tests (`tests/`) and the load tests (`loadtests/`) share, so each
//! piece exists once. Dev-only: nothing in the service depends on it.
//!
//! - `wait`: the one way to wait for a state (`eventually`, `within`), bounded by `STATE_WAIT`;
//! - `cluster`: throwaway PostgreSQL clusters and streaming standbys on free ports;
//! - `proxy`: a TCP proxy that can silently stop forwarding (a dead network path);
//! - `balancer`: nginx in front of replicas, on a port of its own;
//! - `prom`: reading one value out of Prometheus text;
//! - `varnish`: Varnish with the repository's VCL in front of replicas;
//! - `tools`: finding outside programs and free ports.

pub mod balancer;
pub mod cluster;
pub mod prom;
pub mod proxy;
pub mod tools;
pub mod varnish;
pub mod wait;

pub use wait::{STATE_WAIT, eventually, within};
