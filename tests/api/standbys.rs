//! Reads from a streaming standby: a throwaway primary, a hot standby of it made with
//! `pg_basebackup -R -X stream`, and three replicas of the real binary reading from the standby.
//! The checker (see `checker`) writes through random replicas and reads through each, and
//! listers page through `GET /data` on every replica. Phases: steady; the standby's replay
//! paused under writes (no stale read; lists move to the primary and come back after resume;
//! fills meet their version floors); the standby stopped and started (every read still
//! answered); recovery conflicts provoked (retried on the primary, no 5xx).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::Client;
use sea_orm::{ConnectionTrait, Database};

use crate::checker::{self, Log, analyse, longest_window, phase, scrape, wait_metric};
use crate::helpers::{Binary, STATE_WAIT, metric, skip};
use testkit::cluster::primary_and_standby_with;

const ITEMS: usize = 20;
const REPLICAS: usize = 3;
const LEASE: Duration = Duration::from_secs(1);
/// `max_standby_streaming_delay=0`: a query in the way of replay is canceled at once, so a
/// conflict can be provoked in a bounded time.
const STANDBY_SETTINGS: &str = "-c hot_standby=on -c max_standby_streaming_delay=0";

/// Pages through `GET /data` on `base` until `stop`, counting answers and failures.
async fn lister(
    base: String,
    listed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let client = Client::new();
    while !stop.load(Ordering::Relaxed) {
        let resp = client
            .get(format!("{base}/data?limit=100"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 200 => listed.fetch_add(1, Ordering::Relaxed),
            other => {
                eprintln!("standbys: a list failed: {:?}", other.map(|r| r.status()));
                failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Reads of `op` run by `pool`, in scraped `text`.
fn reads(text: &str, pool: &str, op: &str) -> f64 {
    let pool = format!("pool=\"{pool}\"");
    let op = format!("db_operation_name=\"{op}\"");
    metric(text, "db_client_reads_total", &[&pool, &op])
}

/// `name` summed over every replica.
async fn total(replicas: &[Binary], name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        sum += metric(&scrape(r).await, name, labels);
    }
    sum
}

async fn wait_state(replicas: &[Binary], state: &str) {
    let label = format!("state=\"{state}\"");
    for r in replicas {
        wait_metric(r, "db_replica_state", &[&label], |v| v == 1.0).await;
    }
}

/// Runs `sql` on the standby, again if a recovery conflict cancels it (with
/// `max_standby_streaming_delay=0` any query there may be).
async fn on_standby(url: &str, sql: &str) {
    let db = Database::connect(url).await.expect("standby connection");
    let started = Instant::now();
    while let Err(e) = db.execute_unprepared(sql).await {
        assert!(started.elapsed() < STATE_WAIT, "{sql}: {e}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.close().await.expect("closing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_reads_never_answer_older_through_faults() {
    scenario("", "trigger").await;
}

/// The same run with the replicas on the commit-log feed (issue 21): the standby rules take
/// their positions from the feed's heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_reads_on_the_commit_log_never_answer_older_through_faults() {
    // The default slots and senders (10 each) hold three replicas and the standby; a standby
    // needs at least the primary's max_wal_senders, so they stay as they are.
    scenario("-c wal_level=logical", "auto").await;
}

/// The run, on a primary with `server` settings and replicas with `--invalidation invalidation`.
async fn scenario(server: &'static str, invalidation: &str) {
    let (primary, standby) = match primary_and_standby_with(server, STANDBY_SETTINGS).await {
        Ok(pair) => pair,
        Err(why) => return skip(&format!("no throwaway PostgreSQL cluster: {why}")),
    };
    let (url, standby_url) = (primary.url(), standby.url());
    let lease = format!("{}ms", LEASE.as_millis());
    let args = [
        "--invalidation",
        invalidation,
        "--database-url",
        url.as_str(),
        "--database-read-url",
        standby_url.as_str(),
        "--db-max-connections",
        "4",
        "--db-acquire-timeout",
        "500ms",
        "--cache-lease",
        lease.as_str(),
        "--access-log",
        "false",
    ];
    let mut replicas: Vec<Binary> = (0..REPLICAS).map(|_| Binary::start(&args, &[])).collect();
    let feed = match invalidation {
        "auto" => "feed=\"stream\"",
        _ => "feed=\"trigger\"",
    };
    for r in &replicas {
        wait_metric(r, "cache_invalidation_feed", &[feed], |v| v == 1.0).await;
    }
    wait_state(&replicas, "serving").await;
    let text = scrape(&replicas[0]).await;
    for family in crate::metrics::STANDBY_FAMILIES {
        let series = text
            .lines()
            .any(|l| l.starts_with(family) && l.contains("pool=\"standby-0\""));
        assert!(series, "{family} is exported for the standby");
    }
    let bases: Vec<String> = replicas.iter().map(|b| b.url("")).collect();
    let ids = checker::create_items(&bases, ITEMS).await;
    let log = Arc::new(Mutex::new(Log::default()));
    let (listed, list_failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop_lists = Arc::new(AtomicBool::new(false));
    let listers: Vec<_> = bases
        .iter()
        .map(|b| {
            let (l, f, s) = (listed.clone(), list_failed.clone(), stop_lists.clone());
            tokio::spawn(lister(b.clone(), l, f, s))
        })
        .collect();

    // 1. Steady: lists and fills go to the standby.
    phase(
        "steady",
        bases.clone(),
        &bases,
        &ids,
        &log,
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;
    for r in &replicas {
        let text = scrape(r).await;
        assert!(
            reads(&text, "standby-0", "list") > 0.0,
            "lists on the standby"
        );
        assert!(
            reads(&text, "standby-0", "select") > 0.0,
            "fills on the standby"
        );
    }

    // 2. Replay paused under writes: fills meet their floors until the breaker opens, then
    // lists and fills move to the primary; after resume they come back.
    let paused = async {
        on_standby(&standby_url, "SELECT pg_wal_replay_pause()").await;
        wait_state(&replicas, "lagging").await;
        let before: Vec<String> = futures_util::future::join_all(replicas.iter().map(scrape)).await;
        // Long enough for every lister to list several times more.
        let target = listed.load(Ordering::Relaxed) + 30 * REPLICAS;
        while listed.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (r, before) in replicas.iter().zip(&before) {
            let after = scrape(r).await;
            assert!(
                reads(&after, "main", "list") > reads(before, "main", "list"),
                "lists moved to the primary while the standby lagged"
            );
            assert_eq!(
                reads(&after, "standby-0", "list"),
                reads(before, "standby-0", "list"),
                "no list went to the lagging standby"
            );
        }
        on_standby(&standby_url, "SELECT pg_wal_replay_resume()").await;
        wait_state(&replicas, "serving").await;
    };
    phase("replay paused", bases.clone(), &bases, &ids, &log, paused).await;
    for r in &replicas {
        let resumed = reads(&scrape(r).await, "standby-0", "list");
        wait_metric(
            r,
            "db_client_reads_total",
            &["pool=\"standby-0\"", "db_operation_name=\"list\""],
            |v| v > resumed,
        )
        .await;
    }

    // 3. The standby stopped and started: every read is still answered, by the primary.
    let restart = async {
        let s = standby.clone();
        tokio::task::spawn_blocking(move || s.stop())
            .await
            .expect("task");
        wait_state(&replicas, "down").await;
        for base in &bases {
            let ready = Client::new()
                .get(format!("{base}/health/ready"))
                .send()
                .await;
            let status = ready.expect("readiness answers").status();
            assert_eq!(status, 200, "readiness follows the primary only");
        }
        let target = listed.load(Ordering::Relaxed) + 10 * REPLICAS;
        while listed.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = standby.clone();
        tokio::task::spawn_blocking(move || s.start())
            .await
            .expect("task");
        wait_state(&replicas, "serving").await;
    };
    phase(
        "standby restart",
        bases.clone(),
        &bases,
        &ids,
        &log,
        restart,
    )
    .await;

    // 4. Recovery conflicts: an exclusive lock replayed on the standby cancels the standby's
    // queries in its way; each is retried on the primary.
    let admin = Database::connect(url.as_str())
        .await
        .expect("admin connection");
    let conflicts = async {
        let started = Instant::now();
        let conflict = ["reason=\"conflict\""];
        while total(&replicas, "db_replica_fallbacks_total", &conflict).await < 1.0 {
            assert!(
                started.elapsed() < STATE_WAIT * 3,
                "no recovery conflict provoked"
            );
            for _ in 0..20 {
                admin
                    .execute_unprepared(
                        "BEGIN; LOCK TABLE data_items IN ACCESS EXCLUSIVE MODE; COMMIT",
                    )
                    .await
                    .expect("lock on the primary");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    phase(
        "recovery conflict",
        bases.clone(),
        &bases,
        &ids,
        &log,
        conflicts,
    )
    .await;

    stop_lists.store(true, Ordering::Relaxed);
    for l in listers {
        l.await.expect("lister");
    }
    let mut moved = (0.0, 0.0);
    for r in &replicas {
        let text = scrape(r).await;
        for op in ["select", "list"] {
            moved.0 += reads(&text, "standby-0", op);
            moved.1 += reads(&text, "main", op);
        }
        for why in ["floor", "conflict", "unavailable", "error"] {
            let label = format!("reason=\"{why}\"");
            let n = metric(&text, "db_replica_fallbacks_total", &[&label]);
            eprintln!("standbys: {} fallbacks {why}: {n}", r.addr);
        }
    }
    eprintln!(
        "standbys: reads on the standby {}, on the primary {} ({:.0} % moved); {} lists, {} failed",
        moved.0,
        moved.1,
        moved.0 / (moved.0 + moved.1).max(1.0) * 100.0,
        listed.load(Ordering::Relaxed),
        list_failed.load(Ordering::Relaxed)
    );
    let (f, acks, refused) = {
        let log = log.lock().expect("log");
        (analyse(&log), log.acks.len(), log.refused)
    };
    eprintln!(
        "standbys: {} reads, {} acks, {} refused; own-replica stale {}, backwards {}",
        f.reads, acks, refused, f.own_stale, f.backwards
    );
    let max = longest_window(
        "standbys",
        &f,
        &[
            "steady",
            "replay paused",
            "standby restart",
            "recovery conflict",
        ],
    );
    checker::assert_coherent(&f);
    assert_eq!(
        refused, 0,
        "every read and write was answered while the primary was up"
    );
    assert_eq!(
        list_failed.load(Ordering::Relaxed),
        0,
        "every list was answered"
    );
    let floors = total(
        &replicas,
        "db_replica_fallbacks_total",
        &["reason=\"floor\""],
    )
    .await;
    assert!(
        floors >= 1.0,
        "fills from the lagging standby met their version floors"
    );
    assert!(
        max < LEASE * 2,
        "a cross-replica stale read {max:?} after the ack"
    );
    let mut logs = Vec::new();
    for r in replicas.drain(..) {
        logs.extend(r.stop().await);
    }
    for said in ["standby reads go to the primary", "standby serves reads"] {
        assert!(
            logs.iter().any(|l| l.contains(said)),
            "the logs say {said:?}"
        );
    }
}
