//! Several replicas of the real binary on one throwaway PostgreSQL cluster, with nginx in front
//! for one phase. A checker writes through random replicas and reads through all of them,
//! recording acknowledgement and read times, and reports own-replica stale reads (must be 0),
//! versions going backwards on a replica (must be 0) and the cross-replica window (ack to a
//! read that still saw the older version). Fault phases: the listeners' backends terminated
//! every second, one listener's connection silently black-holed (its lease must trip), the
//! database stopped and started, and a replica killed right after a commit.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::Client;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::checker::{self, Log, analyse, longest_window, phase, scrape, wait_metric};
use crate::helpers::{Binary, metric, notify_trigger_state, skip};
use testkit::{balancer::Balancer, cluster::Cluster, proxy::silent_proxy};

const ITEMS: usize = 20;
const REPLICAS: usize = 3;
const LEASE: Duration = Duration::from_secs(1);

async fn get_json(client: &Client, url: &str) -> Value {
    let resp = client.get(url).send().await.expect("read");
    resp.json().await.expect("json body")
}

/// How the replicas hear of each other's changes in a run.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Feed {
    /// The table's trigger and `LISTEN` (`--invalidation trigger`).
    Trigger,
    /// The commit log (`--invalidation auto` on a server with `wal_level = logical`); the
    /// trigger stays disabled, as the migrations leave it.
    Stream,
}

impl Feed {
    /// The server's extra settings.
    fn server(self) -> &'static str {
        match self {
            Self::Trigger => "",
            Self::Stream => {
                "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
            }
        }
    }

    /// The sessions that carry each replica's feed.
    fn backends(self) -> &'static str {
        match self {
            Self::Trigger => "query ILIKE 'LISTEN%'",
            Self::Stream => "application_name = 'data-api feed'",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_stay_coherent_through_faults() {
    scenario(Feed::Trigger).await;
}

/// The same run on the commit-log feed (issue 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_commit_log_stay_coherent_through_faults() {
    scenario(Feed::Stream).await;
}

async fn scenario(feed: Feed) {
    if testkit::balancer::nginx().is_none() {
        return skip("nginx is not installed (Debian package `nginx`)");
    }
    let settings = feed.server();
    let cluster = match tokio::task::spawn_blocking(move || Cluster::create_with(settings))
        .await
        .expect("task")
    {
        Ok(c) => Arc::new(c),
        Err(why) => return skip(&format!("no throwaway PostgreSQL cluster: {why}")),
    };
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .expect("task");
    let url = cluster.url();
    let db_addr: SocketAddr = url
        .trim_start_matches("postgres://postgres@")
        .trim_end_matches("/postgres")
        .parse()
        .expect("cluster address");
    // Replica 0 listens through a proxy that can go silent.
    let forwarding = Arc::new(AtomicBool::new(true));
    let proxy = silent_proxy(db_addr, forwarding.clone()).await;
    let listen_url = format!("postgres://postgres@{proxy}/postgres");
    let lease = format!("{}ms", LEASE.as_millis());
    let start = |listen: Option<&str>| {
        let mut args = vec![
            "--database-url",
            url.as_str(),
            "--db-max-connections",
            "4",
            "--db-acquire-timeout",
            "500ms",
            "--cache-lease",
            lease.as_str(),
            "--access-log",
            "false",
        ];
        if feed == Feed::Stream {
            args.extend(["--invalidation", "auto"]);
        }
        if let Some(l) = listen {
            args.extend(["--listen-url", l]);
        }
        Binary::start(&args, &[])
    };
    let mut replicas = vec![start(Some(&listen_url))];
    for _ in 1..REPLICAS {
        replicas.push(start(None));
    }
    let on_feed = match feed {
        Feed::Trigger => "feed=\"trigger\"",
        Feed::Stream => "feed=\"stream\"",
    };
    for r in &replicas {
        wait_metric(r, "cache_invalidation_feed", &[on_feed], |v| v == 1.0).await;
    }
    // Every replica streams: no writer notifies (the migrations left the trigger disabled). On
    // the trigger feed, the replicas enabled it.
    let expected = match feed {
        Feed::Trigger => "O",
        Feed::Stream => "D",
    };
    assert_eq!(notify_trigger_state(&url).await, expected, "{feed:?}");
    let bases: Vec<String> = replicas.iter().map(|b| b.url("")).collect();
    let client = Client::new();
    let ids = checker::create_items(&bases, ITEMS).await;
    let log = Arc::new(Mutex::new(Log::default()));
    let steady = Duration::from_secs(2);

    // 1. Writes through nginx, reads through every replica.
    let addrs: Vec<SocketAddr> = replicas.iter().map(|b| b.addr).collect();
    let nginx = Balancer::start(&addrs).expect("nginx starts");
    let lb = format!("http://{}", nginx.addr());
    phase(
        "through nginx",
        vec![lb],
        &bases,
        &ids,
        &log,
        tokio::time::sleep(steady),
    )
    .await;
    drop(nginx);

    // 2. The listeners' backends terminated every second.
    let admin = Database::connect(url.as_str())
        .await
        .expect("admin connection");
    let terminate = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sql = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE {} AND pid <> pg_backend_pid()",
                feed.backends()
            );
            let _ = admin.execute_unprepared(&sql).await;
        }
    };
    phase(
        "listeners terminated",
        bases.clone(),
        &bases,
        &ids,
        &log,
        terminate,
    )
    .await;
    for r in &replicas {
        wait_metric(r, "cache_lease_held", &[], |v| v == 1.0).await;
        assert!(
            metric(&scrape(r).await, "cache_listener_reconnects_total", &[]) >= 1.0,
            "replica {} reconnected its listener",
            r.addr
        );
    }

    // 3. Replica 0's listener connection goes silent: its lease must trip.
    let blackhole = async {
        forwarding.store(false, Ordering::Relaxed);
        wait_metric(&replicas[0], "cache_lease_held", &[], |v| v == 0.0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        forwarding.store(true, Ordering::Relaxed);
        wait_metric(&replicas[0], "cache_lease_held", &[], |v| v == 1.0).await;
    };
    phase(
        "silent listener",
        bases.clone(),
        &bases,
        &ids,
        &log,
        blackhole,
    )
    .await;
    let flushes = scrape(&replicas[0]).await;
    assert!(
        metric(&flushes, "cache_flushes_total", &["reason=\"lease\""])
            + metric(&flushes, "cache_flushes_total", &["reason=\"silence\""])
            >= 1.0,
        "the silent path was noticed"
    );

    // 4. The database stopped, then started: 503s while down, recovery after.
    let outage = async {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.stop())
            .await
            .expect("task");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start())
            .await
            .expect("task");
        for r in &replicas {
            wait_metric(r, "cache_lease_held", &[], |v| v == 1.0).await;
        }
    };
    let refused_before = log.lock().expect("log").refused;
    phase(
        "database restart",
        bases.clone(),
        &bases,
        &ids,
        &log,
        outage,
    )
    .await;
    assert!(
        log.lock().expect("log").refused > refused_before,
        "requests were refused while the database was down"
    );

    // 5. A replica killed right after a commit: the change still reaches the others.
    let last = REPLICAS - 1;
    let id = ids[0];
    let cached = get_json(&client, &format!("{}/data/{id}", bases[0])).await;
    let resp = client
        .put(format!("{}/data/{id}", bases[last]))
        .json(&json!({"name": "last words"}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
    let version = resp.json::<Value>().await.expect("body")["version"].clone();
    replicas[last].kill();
    assert!(version.as_i64() > cached["version"].as_i64());
    testkit::eventually("the change at the other replica", || async {
        let seen = get_json(&client, &format!("{}/data/{id}", bases[0])).await;
        if seen["version"].as_i64() >= version.as_i64() {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;

    for r in &replicas[..last] {
        let text = scrape(r).await;
        for kind in ["change", "heartbeat"] {
            let k = format!("kind=\"{kind}\"");
            let sum = metric(&text, "cache_notification_lag_seconds_sum", &[&k]);
            let count = metric(&text, "cache_notification_lag_seconds_count", &[&k]);
            eprintln!(
                "replicas: {} {kind} lag mean {:.2} ms over {count}",
                r.addr,
                sum / count.max(1.0) * 1000.0
            );
        }
    }
    let log = log.lock().expect("log");
    let f = analyse(&log);
    eprintln!(
        "replicas: {} reads, {} acks, {} refused; own-replica stale {}, backwards {}",
        f.reads,
        log.acks.len(),
        log.refused,
        f.own_stale,
        f.backwards
    );
    let max = longest_window(
        "replicas",
        &f,
        &[
            "through nginx",
            "listeners terminated",
            "silent listener",
            "database restart",
        ],
    );
    checker::assert_coherent(&f);
    // The design bound: the lease plus one heartbeat tick; twice the lease leaves room for a
    // loaded machine's scheduling without losing the point (unbounded staleness fails).
    assert!(
        max < LEASE * 2,
        "a cross-replica stale read {max:?} after the ack"
    );
    for r in replicas.iter_mut() {
        r.kill();
    }
}
