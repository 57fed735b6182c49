//! Three replicas of the real binary sharing a throwaway Redis (`--redis-url`) on a throwaway
//! PostgreSQL cluster, each with a cache smaller than the working set, so most reads are
//! answered by Redis or the database. The checker of `replicas.rs` writes through nginx or
//! random replicas and reads through all of them while Redis fails in each way the issue
//! names: one replica cut off from it while the others write, stopped (SIGSTOP) past the
//! timeout, `FLUSHALL` under load, restarted empty. Promises: 0 own-replica stale reads, no
//! replica going backwards, the cross-replica window as without Redis (the lease bound), and
//! afterwards every replica and a cold one answer what the database holds.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::Client;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::Value;

use crate::checker::{self, Log, analyse, longest_window, phase, scrape, wait_metric};
use crate::helpers::{Binary, metric, skip};
use crate::redis::Throwaway;
use testkit::{balancer::Balancer, cluster::Cluster, proxy::pausing_proxy};

/// More items than a replica's cache holds (`CAPACITY`): the working set lives in Redis.
const ITEMS: usize = 120;
const CAPACITY: &str = "32";
const REPLICAS: usize = 3;
const LEASE: Duration = Duration::from_secs(1);
const PREFIX: &str = "fleet:";
const SERVER: &str = "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_stay_coherent_through_its_faults() {
    if testkit::balancer::nginx().is_none() {
        return skip("nginx is not installed (Debian package `nginx`)");
    }
    let Some(redis) = Throwaway::start(None) else {
        return;
    };
    let mut redis_admin = redis.conn().await;
    let cluster = match tokio::task::spawn_blocking(|| Cluster::create_with(SERVER))
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
    let db_url = cluster.url();
    // Replica 0 reaches Redis through a proxy that can hold its bytes (a partition).
    let flowing = Arc::new(AtomicBool::new(true));
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis.port));
    let proxied = format!(
        "redis://{}/",
        pausing_proxy(redis_addr, flowing.clone()).await
    );
    let redis_url = redis.url();
    let start = |redis_url: &str| {
        Binary::start(
            &[
                "--database-url",
                db_url.as_str(),
                "--db-max-connections",
                "4",
                "--db-acquire-timeout",
                "500ms",
                "--cache-lease",
                &format!("{}ms", LEASE.as_millis()),
                "--cache-capacity",
                CAPACITY,
                "--invalidation",
                "auto",
                "--redis-url",
                redis_url,
                "--redis-prefix",
                PREFIX,
                "--access-log",
                "false",
            ],
            &[],
        )
    };
    let mut replicas = vec![start(&proxied)];
    for _ in 1..REPLICAS {
        replicas.push(start(&redis_url));
    }
    for r in &replicas {
        wait_metric(r, "cache_invalidation_feed", &["feed=\"stream\""], |v| {
            v == 1.0
        })
        .await;
        wait_metric(r, "cache_redis_usable", &[], |v| v == 1.0).await;
    }
    let bases: Vec<String> = replicas.iter().map(|b| b.url("")).collect();
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

    // 2. Replica 0 cut off from Redis while every replica writes: its write-throughs time out,
    // and it owes the fleet an epoch bump before it uses Redis again.
    let cut_off = async {
        flowing.store(false, Ordering::Relaxed);
        wait_metric(&replicas[0], "cache_redis_usable", &[], |v| v == 0.0).await;
        tokio::time::sleep(steady).await;
        flowing.store(true, Ordering::Relaxed);
        wait_metric(&replicas[0], "cache_redis_usable", &[], |v| v == 1.0).await;
    };
    phase(
        "replica 0 cut off from Redis",
        bases.clone(),
        &bases,
        &ids,
        &log,
        cut_off,
    )
    .await;

    // 3. Redis stopped past the timeout: reads go to the database; nobody waits on Redis.
    let stopped = async {
        redis.signal(libc::SIGSTOP);
        wait_metric(&replicas[1], "cache_redis_usable", &[], |v| v == 0.0).await;
        tokio::time::sleep(steady).await;
        redis.signal(libc::SIGCONT);
        for r in &replicas {
            wait_metric(r, "cache_redis_usable", &[], |v| v == 1.0).await;
        }
    };
    phase("Redis stopped", bases.clone(), &bases, &ids, &log, stopped).await;

    // 4. FLUSHALL under load, three times: the epoch key goes with the entries.
    let flushes = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut redis_admin)
                .await
                .expect("flushall");
        }
    };
    phase(
        "FLUSHALL under load",
        bases.clone(),
        &bases,
        &ids,
        &log,
        flushes,
    )
    .await;

    // 5. Redis killed and restarted empty on the same port, under load.
    let port = redis.port;
    let restarted = Arc::new(Mutex::new(None));
    let restart = async {
        drop(redis);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let again = Throwaway::start(Some(port)).expect("redis restarts");
        let _ = again.conn().await;
        for r in &replicas {
            wait_metric(r, "cache_redis_usable", &[], |v| v == 1.0).await;
        }
        tokio::time::sleep(steady).await;
        *restarted.lock().expect("slot") = Some(again);
    };
    phase(
        "Redis restarted empty",
        bases.clone(),
        &bases,
        &ids,
        &log,
        restart,
    )
    .await;

    // Redis was in play: the replicas' misses were answered by it.
    let mut hits = 0.0;
    let mut errors = 0.0;
    for r in &replicas {
        let text = scrape(r).await;
        hits += metric(&text, "cache_redis_lookups_total", &["result=\"hit\""]);
        errors += metric(&text, "cache_redis_errors_total", &[]);
    }
    eprintln!("replicas_redis: Redis hits {hits}, Redis errors {errors}");
    assert!(hits > 500.0, "misses were answered by Redis: {hits}");
    assert!(errors > 0.0, "the faults were felt: {errors}");

    let findings = {
        let log = log.lock().expect("log");
        let f = analyse(&log);
        eprintln!(
            "replicas_redis: {} reads, {} acks, {} refused; own-replica stale {}, backwards {}",
            f.reads,
            log.acks.len(),
            log.refused,
            f.own_stale,
            f.backwards
        );
        f
    };
    let max = longest_window(
        "replicas_redis",
        &findings,
        &[
            "through nginx",
            "replica 0 cut off from Redis",
            "Redis stopped",
            "FLUSHALL under load",
            "Redis restarted empty",
        ],
    );
    checker::assert_coherent(&findings);
    assert!(
        max < LEASE * 2,
        "a cross-replica stale read {max:?} after the ack"
    );

    // At rest, every replica and a cold one answer what the database holds.
    replicas.push(start(&redis_url));
    let cold = replicas.last().expect("cold replica");
    wait_metric(cold, "cache_redis_usable", &[], |v| v == 1.0).await;
    let bases: Vec<String> = replicas.iter().map(|b| b.url("")).collect();
    assert_all_current(&db_url, &bases, &ids).await;
    for r in replicas.iter_mut() {
        r.kill();
    }
}

/// Every replica in `bases` answers every item of `ids` at the version the database holds
/// (waiting for feeds in flight to land; a stale Redis entry never would).
async fn assert_all_current(db_url: &str, bases: &[String], ids: &[i64]) {
    let db = Database::connect(db_url).await.expect("db");
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id, version FROM data_items",
        ))
        .await
        .expect("select");
    let stored: std::collections::HashMap<i64, i64> = rows
        .iter()
        .map(|r| {
            let id: i64 = r.try_get("", "id").expect("id");
            let version: i64 = r.try_get("", "version").expect("version");
            (id, version)
        })
        .collect();
    let _ = db.close().await;
    let client = Client::new();
    for base in bases {
        testkit::eventually(
            &format!("{base} answers what the database holds"),
            || async {
                for id in ids {
                    let body: Value = client
                        .get(format!("{base}/data/{id}"))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    let want = stored.get(id).copied();
                    if body["version"].as_i64() != want {
                        return Err(format!("item {id}: {} vs {want:?}", body["version"]));
                    }
                }
                Ok(())
            },
        )
        .await;
    }
}
