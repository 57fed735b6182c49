//! Item reads batched into one query (`--db-read-batches`, `db::batch`): concurrent reads each
//! get their own item (or 404) while the database sees fewer queries than reads, and a read that
//! cannot get into a batch waits no longer than the acquire timeout.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use sea_orm::ConnectionTrait;
use serde_json::Value;

use crate::helpers::{TestApp, metric, problem};

const SELECT: &str = "db_operation_name=\"select\"";

/// One batch at a time, the cache off so that every GET reads the database.
fn batched(s: &mut data_api::config::Settings) {
    s.cache.capacity = 0;
    s.db.read_batches = 1;
}

crate::on_both_backends!(with batched: concurrent_reads_share_queries_and_each_gets_its_own_item);

/// 600 GETs, 64 at a time, over 30 items, a deleted one and one that never existed (many reads
/// of the same id land in one batch): each answer is its own item, exactly as stored, or a 404;
/// the database ran fewer select queries than there were reads.
async fn concurrent_reads_share_queries_and_each_gets_its_own_item(app: &TestApp) {
    let ids = app.create_many(31, "batched").await;
    let gone = ids[30];
    let resp = app
        .request(reqwest::Method::DELETE, &format!("/data/{gone}"))
        .send()
        .await
        .expect("delete sent");
    assert_eq!(resp.status(), 204);
    let never = ids[29] + 1_000;
    let before = app.scrape().await;
    let reads_before = metric(&before, "db_client_reads_total", &[SELECT]);
    let queries_before = metric(
        &before,
        "db_client_operation_duration_seconds_count",
        &[SELECT],
    );

    const READS: usize = 600;
    let ids = &ids;
    let answers: Vec<(usize, u16, Value)> = stream::iter(0..READS)
        .map(|n| async move {
            let id = match n % 32 {
                30 => gone,
                31 => never,
                k => ids[k],
            };
            let resp = app.get(&format!("/data/{id}")).await;
            let status = resp.status().as_u16();
            (n, status, resp.json().await.unwrap_or(Value::Null))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for (n, status, body) in answers {
        match n % 32 {
            30 | 31 => assert_eq!(status, 404, "read {n}: {body}"),
            k => {
                assert_eq!(status, 200, "read {n}: {body}");
                assert_eq!(body["id"], ids[k], "read {n} answered another item: {body}");
                assert_eq!(body["name"], format!("batched {k}"));
                assert_eq!(body["version"], 1);
            }
        }
    }

    let after = app.scrape().await;
    let reads = metric(&after, "db_client_reads_total", &[SELECT]) - reads_before;
    let queries = metric(
        &after,
        "db_client_operation_duration_seconds_count",
        &[SELECT],
    ) - queries_before;
    assert_eq!(reads, READS as f64, "every read is counted once");
    assert!(
        queries < reads / 2.0,
        "{queries} select queries for {reads} reads: reads were not batched"
    );
}

/// PostgreSQL: with the one batch stuck behind a table lock, the next read waits in the queue
/// no longer than the acquire timeout and gets 503 + Retry-After; the stuck read completes once
/// the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_waiting_for_a_batch_gives_up_at_the_acquire_timeout() {
    let Some(app) = TestApp::postgres(|s| {
        batched(s);
        s.db.acquire_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    let item = app.create(serde_json::json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);

    let locker = app.outside_connection().await;
    locker.execute_unprepared("BEGIN").await.expect("begin");
    locker
        .execute_unprepared("LOCK TABLE data_items IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    const WAITS: &str = "db_client_connection_wait_time_seconds_count";
    let admitted = metric(&app.scrape().await, WAITS, &[]);
    let stuck = {
        let (client, url) = (app.client.clone(), app.url(&path));
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    // The stuck read's batch has been admitted to a connection (its wait is recorded).
    app.wait_for_metric(WAITS, &[], |n| n > admitted).await;
    let timeouts = metric(
        &app.scrape().await,
        "db_client_connection_timeouts_total",
        &[],
    );
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), app.get(&path))
        .await
        .expect("the queued read gave up instead of waiting for the lock");
    let waited = started.elapsed();
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, 503).await;
    assert!(waited < Duration::from_secs(3), "answered at {waited:?}");
    let text = app.scrape().await;
    assert_eq!(
        metric(&text, "db_client_connection_timeouts_total", &[]),
        timeouts + 1.0,
        "the give-up is counted as a wait that timed out"
    );

    locker.execute_unprepared("COMMIT").await.expect("commit");
    assert_eq!(
        stuck.await.expect("task").expect("answer"),
        200,
        "the stuck read completes"
    );
    assert_eq!(app.get(&path).await.status(), 200, "reads resume");
    let _ = locker.close().await;
    app.stop().await;
}
