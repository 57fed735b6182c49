//! Database faults: PostgreSQL stopped and started again under load (on a throwaway cluster),
//! and SQLite opened read-only. The service never crashes, hangs or answers 500: what needs the
//! database gets 503 problem+json with `Retry-After`, cache hits keep being served, and it
//! recovers by itself once the database is back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, problem, skip};
use testkit::cluster::Cluster;

/// Every answer the load got, and the slowest.
#[derive(Default)]
struct Seen {
    statuses: Vec<StatusCode>,
    failures: Vec<String>,
    slowest: Duration,
}

/// Reads and replaces `ids` (all cached) in a loop until `stop`.
async fn load(base: String, ids: Vec<i64>, stop: Arc<AtomicBool>) -> Seen {
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut seen = Seen::default();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{base}/data/{}", ids[turn % ids.len()]);
        turn += 1;
        let started = Instant::now();
        let sent = if turn.is_multiple_of(4) {
            client.put(&url).json(&json!({"name": "load"})).send().await
        } else {
            client.get(&url).send().await
        };
        seen.slowest = seen.slowest.max(started.elapsed());
        match sent {
            Ok(resp) => seen.statuses.push(resp.status()),
            Err(e) => seen.failures.push(format!("{e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

/// Polls `path` until it answers `want`, for at most `within`; returns how long it took.
async fn wait_for(app: &TestApp, path: &str, want: u16, within: Duration) -> Option<Duration> {
    let every = Duration::from_millis(100);
    testkit::within(within, every, || async {
        app.get(path).await.status() == want
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load() {
    let cluster = match tokio::task::spawn_blocking(Cluster::create).await.unwrap() {
        Ok(c) => c,
        Err(why) => return skip(&format!("no throwaway PostgreSQL cluster: {why}")),
    };
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap();
    // Single-instance mode keeps serving cached items while the database is down; the coherent
    // replica beside it (the default on PostgreSQL) stops once its lease lapses.
    let app = TestApp::on_url(&cluster.url(), |s| {
        s.db.acquire_timeout = Duration::from_secs(1);
        s.cache.single_instance = true;
    })
    .await;
    let coherent = TestApp::start_like(&app, |s| s.cache.single_instance = false).await;
    let ids = app.create_many(10, "fault").await;
    let (cached, uncached) = ids.split_at(5);
    for id in cached {
        assert_eq!(app.get(&format!("/data/{id}")).await.status(), 200);
        assert_eq!(coherent.get(&format!("/data/{id}")).await.status(), 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load(app.url(""), cached.to_vec(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The database goes away.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    let ready = wait_for(&app, "/health/ready", 503, Duration::from_secs(5)).await;
    assert!(
        ready.is_some(),
        "readiness still 200 with the database down"
    );
    // Cache hits are still served in single-instance mode.
    for id in cached {
        assert_eq!(app.get(&format!("/data/{id}")).await.status(), 200);
    }
    // The coherent replica cannot know what changed meanwhile: once its lease lapses it serves
    // no hit, and reads need the database (503).
    coherent
        .wait_for_metric("cache_lease_held", &[], |v| v == 0.0)
        .await;
    let read = coherent.get(&format!("/data/{}", cached[0])).await;
    assert_eq!(read.headers()["retry-after"], "1");
    problem(read, 503).await;
    // What needs the database is a quick 503 with Retry-After.
    let started = Instant::now();
    let miss = app.get(&format!("/data/{}", uncached[0])).await;
    assert_eq!(miss.headers()["retry-after"], "1");
    let p = problem(miss, 503).await;
    assert_eq!(p["type"], "urn:problem:data-api:unavailable");
    let create = app
        .send_json(Method::POST, "/data", &json!({"name": "while down"}))
        .await;
    problem(create, 503).await;
    problem(app.get("/data").await, 503).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answers took {:?} with the database down",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // It comes back; the service recovers without a restart.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap();
    let recovered = wait_for(&app, "/health/ready", 200, Duration::from_secs(10)).await;
    assert!(
        recovered.is_some(),
        "not ready 10 s after the database returned"
    );
    assert_eq!(
        app.get(&format!("/data/{}", uncached[0])).await.status(),
        200
    );
    let create = app
        .send_json(Method::POST, "/data", &json!({"name": "after"}))
        .await;
    assert_eq!(create.status(), 201);
    // The coherent replica reconnects its listener, regains the lease and serves fresh data.
    coherent
        .wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    let path = format!("/data/{}", cached[0]);
    assert_eq!(coherent.get(&path).await.status(), 200, "cached again");
    let renamed = app
        .send_json(Method::PUT, &path, &json!({"name": "renamed"}))
        .await;
    assert_eq!(renamed.status(), 200);
    let version = renamed.json::<serde_json::Value>().await.unwrap()["version"]
        .as_i64()
        .unwrap();
    // The load keeps writing this item through the other app too: the coherent replica must
    // reach at least the version we were told. Waits on that state, with a no-hang guard.
    let what = format!("version {version}, made through the other, at the coherent replica");
    testkit::eventually(&what, || async {
        let seen: serde_json::Value = coherent.get(&path).await.json().await.unwrap();
        if seen["version"].as_i64() >= Some(version) {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut seen = Seen::default();
    for w in workers {
        let s = w.await.unwrap();
        seen.statuses.extend(s.statuses);
        seen.failures.extend(s.failures);
        seen.slowest = seen.slowest.max(s.slowest);
    }
    assert!(
        seen.failures.is_empty(),
        "transport failures: {:?}",
        seen.failures
    );
    let unexpected: Vec<_> = seen
        .statuses
        .iter()
        .filter(|s| !matches!(s.as_u16(), 200 | 503))
        .collect();
    assert!(unexpected.is_empty(), "load got {unexpected:?}");
    assert!(
        seen.statuses.iter().any(|s| s.as_u16() == 503),
        "no write was refused while the database was down"
    );
    let last_ok = seen.statuses.iter().rposition(|s| s.as_u16() == 200);
    let last_503 = seen.statuses.iter().rposition(|s| s.as_u16() == 503);
    assert!(last_ok > last_503, "the load did not recover");
    assert!(
        seen.slowest < Duration::from_secs(8),
        "a request hung {:?}",
        seen.slowest
    );
    eprintln!(
        "database fault: readiness 503 after {:?}, ready again {:?} after restart; load: {} answers",
        ready.unwrap_or_default(),
        recovered.unwrap_or_default(),
        seen.statuses.len()
    );
    coherent.stop_shared().await;
    app.stop_shared().await;
}

#[tokio::test]
async fn read_only_sqlite_refuses_writes_with_503() {
    let app = TestApp::sqlite(|_| {}).await;
    let id = app.create_many(1, "ro").await[0];
    let ro_url = app.database_url().replace("mode=rwc", "mode=ro");
    let ro = TestApp::start_like(&app, |s| {
        s.db.url = ro_url;
        s.server.migrate_on_start = false;
    })
    .await;
    let path = format!("/data/{id}");
    assert_eq!(ro.get(&path).await.status(), 200);
    assert_eq!(ro.get("/health/ready").await.status(), 200);
    let attempts = [
        ro.send_json(Method::POST, "/data", &json!({"name": "no"}))
            .await,
        ro.send_json(Method::PUT, &path, &json!({"name": "no"}))
            .await,
        ro.send_json(Method::PATCH, &path, &json!({"name": "no"}))
            .await,
        ro.request(Method::DELETE, &path).send().await.unwrap(),
    ];
    for resp in attempts {
        assert_eq!(resp.headers()["retry-after"], "1");
        let p = problem(resp, 503).await;
        assert_eq!(p["type"], "urn:problem:data-api:unavailable");
    }
    ro.stop_shared().await;
    // Nothing changed (read through the other app, which has not cached it), and the
    // read-write app still writes.
    let item: serde_json::Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(item["version"], 1);
    let put = app
        .send_json(Method::PUT, &path, &json!({"name": "yes"}))
        .await;
    assert_eq!(put.status(), 200);
    app.stop().await;
}
