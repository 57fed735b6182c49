//! Cache coherence seen from outside: no read after an acknowledged write answers older data.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(
    no_stale_read_after_acknowledged_write,
    create_is_visible_despite_cached_404
);

struct Ack {
    id: i64,
    version: i64,
    name: String,
    at: Instant,
}

struct Read {
    id: i64,
    version: i64,
    name: String,
    started: Instant,
}

/// Writers PUT and readers GET the same few ids concurrently; every read must show at least the
/// newest version whose write was acknowledged before the read began, with that version's content.
async fn no_stale_read_after_acknowledged_write(app: &TestApp) {
    let ids = app.create_many(3, "v1").await;
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base, ids, acks) = (
            app.client.clone(),
            app.base.clone(),
            ids.clone(),
            acks.clone(),
        );
        writers.push(tokio::spawn(async move {
            for n in 0..40 {
                let id = ids[rand::rng().random_range(0..ids.len())];
                let name = format!("w{w}-{n}");
                let resp = client
                    .put(format!("{base}/data/{id}"))
                    .json(&json!({"name": name}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                let at = Instant::now();
                acks.lock().unwrap().push(Ack {
                    id,
                    version: body["version"].as_i64().unwrap(),
                    name,
                    at,
                });
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..6 {
        let (client, base, ids, reads, done) = (
            app.client.clone(),
            app.base.clone(),
            ids.clone(),
            reads.clone(),
            done.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let id = ids[rand::rng().random_range(0..ids.len())];
                let started = Instant::now();
                let body: Value = client
                    .get(format!("{base}/data/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let version = body["version"].as_i64().unwrap();
                let name = body["name"].as_str().unwrap().to_owned();
                reads.lock().unwrap().push(Read {
                    id,
                    version,
                    name,
                    started,
                });
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let reads = std::mem::take(&mut *reads.lock().unwrap());
    let names: HashMap<(i64, i64), &str> = acks
        .iter()
        .map(|a| ((a.id, a.version), a.name.as_str()))
        .collect();
    assert!(
        reads.len() > 100,
        "enough reads to mean something: {}",
        reads.len()
    );
    for r in reads.iter() {
        let floor = acks
            .iter()
            .filter(|a| a.id == r.id && a.at < r.started)
            .map(|a| a.version)
            .max()
            .unwrap_or(1);
        assert!(
            r.version >= floor,
            "stale read of item {}: v{} after v{floor} was acknowledged",
            r.id,
            r.version
        );
        if let Some(name) = names.get(&(r.id, r.version)) {
            assert_eq!(
                *name, r.name,
                "item {} v{} has the content written as v{}",
                r.id, r.version, r.version
            );
        }
    }
    // Deletes too: once acknowledged, reads answer 404.
    for id in &ids {
        assert_eq!(
            app.request(Method::DELETE, &format!("/data/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        problem(app.get(&format!("/data/{id}")).await, 404).await;
    }
}

/// A 404 is cached briefly, but a create of that id shows at once.
async fn create_is_visible_despite_cached_404(app: &TestApp) {
    let last = app.create(json!({"name": "probe"})).await["id"]
        .as_i64()
        .unwrap();
    let next = last + 1;
    problem(app.get(&format!("/data/{next}")).await, 404).await;
    problem(app.get(&format!("/data/{next}")).await, 404).await;
    let created = app.create(json!({"name": "new"})).await;
    assert_eq!(
        created["id"].as_i64(),
        Some(next),
        "ids are sequential here"
    );
    let resp = app.get(&format!("/data/{next}")).await;
    assert_eq!(
        resp.status(),
        200,
        "no stale 404 after the create was acknowledged"
    );
}

/// `--cache-max-bytes`: large items are evicted to stay within the byte budget, while every
/// read still answers the item; the budget is exported beside the entry capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_bounds_what_the_cache_holds() {
    const BODY: usize = 8_000;
    let budget = 5 * (BODY as u64 + 1_024 + 200);
    let app = TestApp::sqlite(|s| {
        s.cache.capacity = 1_000;
        s.cache.max_bytes = Some(budget);
    })
    .await;
    let blob = "x".repeat(BODY);
    let mut ids = Vec::new();
    for i in 0..30 {
        let item = app
            .create(json!({"name": format!("big {i}"), "payload": {"blob": blob}}))
            .await;
        ids.push(item["id"].as_i64().unwrap());
    }
    for _ in 0..2 {
        for id in &ids {
            let resp = app.get(&format!("/data/{id}")).await;
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["payload"]["blob"].as_str().map(str::len), Some(BODY));
        }
    }
    let text = app.scrape().await;
    let m = |name: &str, labels: &[&str]| crate::helpers::metric(&text, name, labels);
    assert_eq!(m("cache_capacity_bytes", &[]), budget as f64);
    app.wait_for_metric("cache_evictions_total", &["cause=\"size\""], |v| v > 0.0)
        .await;
    // Evictions are applied on the sampling tick, and a tick taken while the reads still ran
    // may count a fill that the cache had taken in but not yet weighed (moka admits after the
    // insert): wait for a tick after the last read, which must show the budget kept.
    let held = app
        .wait_for_metric("cache_size_bytes", &[], |v| v <= budget as f64)
        .await;
    let text = app.scrape().await;
    let entries = crate::helpers::metric(&text, "cache_entries", &[]);
    assert!(
        entries >= 1.0 && held > 0.0,
        "the cache still holds what fits"
    );
    assert!(
        entries <= 5.0,
        "{entries} entries of ~8 KB within {budget} bytes"
    );
    app.stop().await;
}

/// Polls `GET path` until `ok` holds for its status and body (the change notice arrives in
/// milliseconds; this bounds the wait, it asserts no time).
async fn until_read(app: &TestApp, path: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    testkit::eventually(path, || async {
        let resp = app.get(path).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if ok(status, &body) {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

/// Changes made in psql reach the cache even when they do not touch `version` (it is raised
/// for them, so the ETag changes too), and a `TRUNCATE` empties it (issue 25, item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_updates_without_a_version_and_truncate_reach_the_cache() {
    use sea_orm::ConnectionTrait;
    let Some(app) = TestApp::postgres(|_| {}).await else {
        return crate::helpers::skip("TEST_DATABASE_URL is not set");
    };
    let item = app.create(json!({"name": "before"})).await;
    let path = format!("/data/{}", item["id"]);
    for _ in 0..2 {
        assert_eq!(app.get(&path).await.status(), 200, "cached");
    }
    let psql = app.outside_connection().await;
    psql.execute_unprepared(&format!(
        "UPDATE data_items SET name = 'by hand' WHERE id = {}",
        item["id"]
    ))
    .await
    .expect("update by hand");
    let fixed = until_read(&app, &path, |_, b| b["name"] == "by hand").await;
    assert_eq!(
        fixed["version"], 2,
        "the hand-made change has the next version"
    );
    assert!(fixed["updated_at"].as_str() > item["updated_at"].as_str());
    psql.execute_unprepared("TRUNCATE data_items")
        .await
        .expect("truncate");
    until_read(&app, &path, |status, _| status == 404).await;
    let _ = psql.close().await;
    app.stop().await;
}
