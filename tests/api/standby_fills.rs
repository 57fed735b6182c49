//! Cache fills on a streaming standby are batched as on the primary: concurrent misses each get
//! their own item from the standby, in fewer queries than fills.

use futures_util::{StreamExt, stream};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

use crate::helpers::{TestApp, metric};

const ITEMS: i64 = 600;
const STANDBY: &str = "pool=\"standby-0\"";
const SELECT: &str = "db_operation_name=\"select\"";

/// Rows in `data_items` on the database at `url`.
async fn rows(url: &str) -> i64 {
    let db = Database::connect(url).await.expect("connect");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) FROM data_items",
        ))
        .await
        .expect("count")
        .expect("a row");
    let _ = db.close().await;
    row.try_get_by_index(0).expect("a count")
}

/// 600 items written on the primary behind the service's back (so no fill has a version floor
/// above what the standby holds), then read once each, 64 at a time, with one batch at a time:
/// every answer is its own item; every fill was read on the standby, none on the primary; the
/// standby ran fewer than half as many queries as fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_fills_are_batched_and_each_gets_its_own_item() {
    let Some((app, primary, standby)) = TestApp::with_a_standby(|s| {
        s.db.read_batches = 1;
        s.cache.capacity = 10 * ITEMS as u64;
    })
    .await
    else {
        return;
    };
    let db = Database::connect(primary.url()).await.expect("connect");
    db.execute_unprepared(&format!(
        "INSERT INTO data_items (name, version, created_at, updated_at) \
         SELECT 'fill ' || g, 1, now(), now() FROM generate_series(1, {ITEMS}) g"
    ))
    .await
    .expect("insert on the primary");
    let _ = db.close().await;
    let serving = ["state=\"serving\"", STANDBY];
    app.wait_for_metric("db_replica_state", &serving, |v| v == 1.0)
        .await;
    testkit::eventually("the standby's replay of the rows", || async {
        let n = rows(&standby.url()).await;
        if n >= ITEMS { Ok(()) } else { Err(n) }
    })
    .await;
    let before = app.scrape().await;
    let count = "db_client_operation_duration_seconds_count";
    // Queries are counted per operation, over every pool; no fill goes to the primary (below),
    // so these are the standby's.
    let queries_before = metric(&before, count, &[SELECT]);
    let fills_before = metric(&before, "db_client_reads_total", &[STANDBY, SELECT]);

    let reader = &app;
    let answers: Vec<(i64, u16, Value)> = stream::iter(1..=ITEMS)
        .map(|id| async move {
            let resp = reader.get(&format!("/data/{id}")).await;
            let status = resp.status().as_u16();
            (id, status, resp.json().await.unwrap_or(Value::Null))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for (id, status, body) in answers {
        assert_eq!(status, 200, "item {id}: {body}");
        assert_eq!(body["id"], id, "item {id} answered another: {body}");
        assert_eq!(body["name"], format!("fill {id}"));
    }

    let after = app.scrape().await;
    let fills = metric(&after, "db_client_reads_total", &[STANDBY, SELECT]) - fills_before;
    let on_primary = metric(&after, "db_client_reads_total", &["pool=\"read\"", SELECT])
        + metric(&after, "db_client_reads_total", &["pool=\"main\"", SELECT]);
    let queries = metric(&after, count, &[SELECT]) - queries_before;
    assert_eq!(fills, ITEMS as f64, "every fill read the standby, once");
    assert_eq!(on_primary, 0.0, "no fill went to the primary");
    assert!(
        queries < fills / 2.0,
        "{queries} select queries on the standby for {fills} fills: fills were not batched"
    );
    app.stop_shared().await;
}
