//! `loadtests compare --replicas N`: N data-api processes on one PostgreSQL database behind
//! nginx, and a probe of cross-replica staleness: how long after one replica acknowledges a
//! change another one (which had the item cached) answers it.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

/// Pooled connections per replica so that N replicas (plus their listener and heartbeat
/// connections) stay under a server that allows 100 connections, with room for others.
pub fn pool_per_replica(replicas: usize) -> usize {
    (80 / replicas.max(1)).saturating_sub(2).max(4)
}

/// The probe's findings.
pub struct Staleness {
    pub probes: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// `probes` times: read an item through one replica (so it is cached there), change it through
/// the next, then read it through the first until it answers the new version; the time from the
/// acknowledgement to that answer is the cross-replica window.
pub async fn probe(replicas: &[String], items: u64, probes: usize) -> anyhow::Result<Staleness> {
    let client = reqwest::Client::new();
    let mut windows = Vec::with_capacity(probes);
    for k in 0..probes {
        let id = 1 + (k as u64 * 7919) % items.max(1);
        let reader = &replicas[k % replicas.len()];
        let writer = &replicas[(k + 1) % replicas.len()];
        let _ = client.get(format!("{reader}/data/{id}")).send().await?;
        let resp = client
            .put(format!("{writer}/data/{id}"))
            .json(&json!({"name": format!("probe {k}")}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("probe write answered {}", resp.status());
        }
        let version = resp.json::<Value>().await?["version"].as_i64();
        let acked = Instant::now();
        loop {
            let seen: Value = client
                .get(format!("{reader}/data/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if seen["version"].as_i64() >= version {
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("replica {reader} still answers an old version of {id} after 10 s");
            }
        }
        windows.push(acked.elapsed());
    }
    windows.sort();
    if windows.is_empty() {
        bail!("no probes were run");
    }
    let at = |q: f64| windows[((windows.len() - 1) as f64 * q).round() as usize];
    Ok(Staleness {
        probes,
        p50: at(0.5),
        p99: at(0.99),
        max: windows[windows.len() - 1],
    })
}
