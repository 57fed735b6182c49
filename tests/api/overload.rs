//! When the database cannot take a request in time, the answer is a quick 503 with
//! `Retry-After` — not a hang, not a 500 — and service resumes by itself afterwards.

use std::time::{Duration, Instant};

use reqwest::Method;
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::helpers::{STATE_WAIT, TestApp, metric, problem};

/// Admissions to a pool (one per query that got a connection, waiting or not).
const WAITS: &str = "db_client_connection_wait_time_seconds_count";

/// SQLite: another process holding the write lock makes writes 503 within about the acquire
/// timeout (the busy timeout equals it); reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_lock_held_elsewhere_gives_quick_503() {
    let app = TestApp::sqlite(|s| s.db.acquire_timeout = Duration::from_millis(300)).await;
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);

    let other = app.outside_connection().await;
    other.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();

    let started = Instant::now();
    let resp = app
        .send_json(Method::PUT, &path, &json!({"name": "blocked"}))
        .await;
    let waited = started.elapsed();
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, 503).await;
    assert!(
        waited < Duration::from_secs(3),
        "answered without hanging: {waited:?}"
    );
    assert_eq!(
        app.get(&path).await.status(),
        200,
        "reads still work while the write lock is held"
    );

    other.execute_unprepared("COMMIT").await.unwrap();
    let resp = app
        .send_json(Method::PUT, &path, &json!({"name": "free"}))
        .await;
    assert_eq!(
        resp.status(),
        200,
        "writes resume once the lock is released"
    );
    let _ = other.close().await;
    app.stop().await;
}

/// PostgreSQL: with every pooled connection stuck behind a table lock, the next request waits
/// the acquire timeout and gets 503 + Retry-After; the stuck ones finish once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_exhaustion_gives_quick_503() {
    let Some(app) = TestApp::postgres(|s| {
        s.db.max_connections = Some(1);
        s.db.acquire_timeout = Duration::from_millis(300);
        s.cache.capacity = 0;
    })
    .await
    else {
        return;
    };
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);

    let locker = app.outside_connection().await;
    locker.execute_unprepared("BEGIN").await.unwrap();
    locker
        .execute_unprepared("LOCK TABLE data_items IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let admitted = app.scrape().await;
    let admitted = metric(&admitted, WAITS, &[]);
    let stuck = {
        let (client, url) = (app.client.clone(), app.url(&path));
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    // The stuck request holds the one connection once the pool has admitted it.
    app.wait_for_metric(WAITS, &[], |n| n > admitted).await;
    let started = Instant::now();
    let resp = app.get(&path).await;
    let waited = started.elapsed();
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, 503).await;
    assert!(
        waited < Duration::from_secs(3),
        "answered without hanging: {waited:?}"
    );

    locker.execute_unprepared("COMMIT").await.unwrap();
    assert_eq!(
        stuck.await.unwrap().unwrap(),
        200,
        "the stuck request completes"
    );
    assert_eq!(app.get(&path).await.status(), 200, "service resumes");
    let _ = locker.close().await;
    app.stop().await;
}

/// A `PUT` to `path` that holds the one in-flight place, stuck behind the write lock: admitted
/// by the write pool and still in flight (beside the scrape that reads so). SQLite now and then
/// answers such a write `SQLITE_BUSY` at once instead of waiting out its busy timeout (a 503, no
/// longer in flight): then it is sent again.
async fn slow_write_in_flight(
    app: &TestApp,
    path: &str,
) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
    let write_pool = ["pool=\"write\""];
    for _ in 0..5 {
        let admitted = metric(&app.scrape().await, WAITS, &write_pool);
        let (client, url) = (app.client.clone(), app.url(path));
        let slow = tokio::spawn(async move {
            client
                .put(url)
                .json(&json!({"name": "slow"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        let started = Instant::now();
        while !slow.is_finished() {
            let text = app.scrape().await;
            if metric(&text, WAITS, &write_pool) > admitted
                && metric(&text, "http_server_active_requests", &[]) >= 2.0
            {
                return slow;
            }
            // A no-hang guard, not a timing assertion.
            assert!(started.elapsed() < STATE_WAIT, "the PUT never got in");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("five PUTs in a row were answered at once instead of waiting for the lock");
}

/// Holds SQLite's write lock from another connection so that a PUT to `app` hangs in the
/// database (up to its busy timeout); returns the connection, to `COMMIT` on.
async fn hold_write_lock(app: &TestApp) -> sea_orm::DatabaseConnection {
    let other = app.outside_connection().await;
    other.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    other
}

/// Past `--max-in-flight`, a request is answered 503 + Retry-After at once; probes are exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_cap_answers_503_at_once() {
    let app = TestApp::sqlite(|s| {
        s.limits.max_in_flight = 1;
        s.db.acquire_timeout = Duration::from_millis(1500);
    })
    .await;
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let lock = hold_write_lock(&app).await;
    let slow = slow_write_in_flight(&app, &path).await;
    let started = Instant::now();
    let resp = app.get(&path).await;
    // A no-hang guard, not a timing assertion: "at once" means well before the slow write's
    // 1.5 s acquire timeout could have freed a place.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once: {:?}",
        started.elapsed()
    );
    assert_eq!(resp.status().as_u16(), 503, "{:?}", resp.headers());
    assert_eq!(resp.headers()["retry-after"], "1");
    let p = problem(resp, 503).await;
    assert_eq!(p["type"], "urn:problem:data-api:overloaded");
    assert_eq!(
        app.get("/health/live").await.status(),
        200,
        "probes are not capped"
    );
    lock.execute_unprepared("COMMIT").await.unwrap();
    let _ = slow.await.unwrap().unwrap();
    assert_eq!(
        app.get(&path).await.status(),
        200,
        "served again once the slot is free"
    );
    let _ = lock.close().await;
    app.stop().await;
}

/// A request that takes longer than `--request-timeout` is answered 503 problem+json in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_503() {
    let app = TestApp::sqlite(|s| {
        s.limits.request_timeout = Duration::from_millis(300);
        s.db.acquire_timeout = Duration::from_secs(3);
    })
    .await;
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let lock = hold_write_lock(&app).await;
    let started = Instant::now();
    let resp = app
        .send_json(Method::PUT, &path, &json!({"name": "late"}))
        .await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "answered at the timeout, not the busy timeout: {waited:?}"
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    let p = problem(resp, 503).await;
    assert_eq!(p["type"], "urn:problem:data-api:timeout");
    lock.execute_unprepared("COMMIT").await.unwrap();
    let _ = lock.close().await;
    app.stop().await;
}
