//! The coherence checker shared by the multi-process tests: writers through random replicas,
//! one sequential reader per replica, and the analysis of what they saw (own-replica stale
//! reads, versions going backwards on a replica, the cross-replica window).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::{Binary, metric};

/// What the checker saw.
#[derive(Default)]
pub struct Log {
    /// (replica, id, version, acknowledged at)
    pub acks: Vec<(usize, i64, i64, Instant)>,
    /// (replica, id, version, read started at, phase)
    pub reads: Vec<(usize, i64, i64, Instant, usize)>,
    /// The phase running now (reads are tagged with it).
    pub phase: usize,
    /// Answers other than 200 (503s while the database is down).
    pub refused: usize,
}

pub struct Findings {
    pub own_stale: usize,
    pub backwards: usize,
    /// Windows of cross-replica stale reads by phase: read start minus the ack of the first
    /// newer version.
    pub windows: HashMap<usize, Vec<Duration>>,
    pub reads: usize,
}

pub fn analyse(log: &Log) -> Findings {
    let mut acks_by_id: HashMap<i64, Vec<(usize, i64, Instant)>> = HashMap::new();
    for &(r, id, v, at) in &log.acks {
        acks_by_id.entry(id).or_default().push((r, v, at));
    }
    let mut f = Findings {
        own_stale: 0,
        backwards: 0,
        windows: HashMap::new(),
        reads: log.reads.len(),
    };
    let mut last_seen: HashMap<(usize, i64), i64> = HashMap::new();
    let mut reads = log.reads.clone();
    reads.sort_by_key(|r| r.3);
    for (r, id, v, at, phase) in reads {
        // One reader per replica reads in sequence: what it sees may never go backwards.
        let last = last_seen.entry((r, id)).or_insert(v);
        if v < *last {
            f.backwards += 1;
        }
        *last = (*last).max(v);
        let acked_before = acks_by_id
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|a| a.2 < at);
        let own_max = acked_before.clone().filter(|a| a.0 == r).map(|a| a.1).max();
        if own_max.is_some_and(|m| v < m) {
            f.own_stale += 1;
        }
        if let Some(first_newer) = acked_before.filter(|a| a.1 > v).map(|a| a.2).min() {
            f.windows.entry(phase).or_default().push(at - first_newer);
        }
    }
    f
}

pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Acknowledgements through the load balancer: the replica that answered is unknown.
pub const THROUGH_LB: usize = usize::MAX;

/// Writes through random replicas (`targets`; a single target is the load balancer) until
/// `stop`, logging each acknowledgement.
pub async fn writer(
    targets: Vec<String>,
    ids: Vec<i64>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    pause: Duration,
) {
    let client = Client::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = rand::random_range(0..targets.len());
        let id = ids[rand::random_range(0..ids.len())];
        let sent = client
            .put(format!("{}/data/{id}", targets[r]))
            .json(&json!({"name": format!("w{n}")}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let ok = match sent {
            Ok(resp) if resp.status() == 200 => resp.json::<Value>().await.ok(),
            _ => None,
        };
        {
            let mut log = log.lock().expect("log");
            match ok.and_then(|b| b["version"].as_i64()) {
                Some(v) => {
                    let replica = if targets.len() == 1 { THROUGH_LB } else { r };
                    log.acks.push((replica, id, v, Instant::now()));
                }
                None => log.refused += 1,
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Reads every item through replica `r` in turn until `stop`.
pub async fn reader(
    r: usize,
    base: String,
    ids: Vec<i64>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) {
    let client = Client::new();
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = ids[k % ids.len()];
        k += 1;
        let started = Instant::now();
        let resp = client
            .get(format!("{base}/data/{id}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let version = match resp {
            Ok(resp) if resp.status() == 200 => resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| b["version"].as_i64()),
            _ => None,
        };
        let mut log = log.lock().expect("log");
        match version {
            Some(v) => {
                let phase = log.phase;
                log.reads.push((r, id, v, started, phase));
            }
            None => log.refused += 1,
        }
    }
}

pub async fn scrape(bin: &Binary) -> String {
    match reqwest::get(bin.url("/metrics")).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls replica `bin` until its `name` (summed over the series with `labels`) satisfies `ok`.
pub async fn wait_metric(bin: &Binary, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
    let what = format!("{name} {labels:?} on {}", bin.addr);
    testkit::eventually(&what, || async {
        let v = metric(&scrape(bin).await, name, labels);
        if ok(v) { Ok(()) } else { Err(v) }
    })
    .await;
}

/// The writer's pause between writes in `phase`.
pub const WRITE_PAUSE: Duration = Duration::from_millis(3);

/// Runs writers and readers for `phase`, calling `during` once they run.
pub async fn phase<F: Future<Output = ()>>(
    name: &str,
    write_to: Vec<String>,
    read_from: &[String],
    ids: &[i64],
    log: &Arc<Mutex<Log>>,
    during: F,
) {
    phase_paced(name, write_to, read_from, ids, log, WRITE_PAUSE, during).await;
}

/// `phase` with `pause` between writes (a read-mostly mix).
pub async fn phase_paced<F: Future<Output = ()>>(
    name: &str,
    write_to: Vec<String>,
    read_from: &[String],
    ids: &[i64],
    log: &Arc<Mutex<Log>>,
    pause: Duration,
    during: F,
) {
    log.lock().expect("log").phase += 1;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![tokio::spawn(writer(
        write_to,
        ids.to_vec(),
        log.clone(),
        stop.clone(),
        pause,
    ))];
    for (r, base) in read_from.iter().enumerate() {
        // Readers are numbered as the replicas they read from.
        tasks.push(tokio::spawn(reader(
            r,
            base.clone(),
            ids.to_vec(),
            log.clone(),
            stop.clone(),
        )));
    }
    during.await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("checker task");
    }
    eprintln!("replicas: phase {name} done");
}

/// Prints each phase's cross-replica stale reads (phase 1 is `phases[0]`, as `phase` numbers
/// them) under `test`, and returns the longest window of any.
pub fn longest_window(test: &str, f: &Findings, phases: &[&str]) -> Duration {
    let mut max = Duration::ZERO;
    for (i, name) in phases.iter().enumerate() {
        let mut w = f.windows.get(&(i + 1)).cloned().unwrap_or_default();
        w.sort();
        let longest = w.last().copied().unwrap_or_default();
        eprintln!(
            "{test}: {name}: cross-replica stale reads {} (window p50 {:?}, p99 {:?}, max {longest:?})",
            w.len(),
            quantile(&w, 0.5),
            quantile(&w, 0.99),
        );
        max = max.max(longest);
    }
    max
}

/// The promises every multi-process scenario keeps, whatever its faults: the checker read
/// enough to mean something, no replica answered older than its own acknowledged write, and no
/// replica's answers went backwards.
pub fn assert_coherent(f: &Findings) {
    assert!(f.reads > 500, "the checker read enough: {}", f.reads);
    assert_eq!(
        f.own_stale, 0,
        "a replica answered older than its own acknowledged write"
    );
    assert_eq!(f.backwards, 0, "a replica's answers went backwards");
}

/// Creates `n` items, through each of `bases` in turn; their ids.
pub async fn create_items(bases: &[String], n: usize) -> Vec<i64> {
    let client = reqwest::Client::new();
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let resp = client
            .post(format!("{}/data", bases[k % bases.len()]))
            .json(&serde_json::json!({"name": format!("item {k}")}))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201);
        let id = resp.json::<serde_json::Value>().await.expect("body")["id"].as_i64();
        ids.push(id.expect("id"));
    }
    ids
}
