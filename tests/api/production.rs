//! The promises under production conditions: a cache smaller than the working set and full of
//! often-read entries, a standby that stops replaying (reproduction 1 of issue 25, as written),
//! a pool too busy to ask the primary where its WAL is (item 8).

use reqwest::Method;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::helpers::{TestApp, metric};

/// A hot standby, `--max-replica-lag 5s`, `--cache-capacity 100`; 300 items; ids 1-150 read ten
/// times each (the cache is full of often-read entries); the standby's replay paused; then each
/// of ids 200-240 (never read here) is replaced, and read three times 0.3 s later. Every read
/// must answer at least the version this replica acknowledged: the write's version mark must
/// not depend on the cache admitting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_never_read_older_from_a_standby_with_a_full_cache() {
    let Some((app, _primary, standby)) = TestApp::with_a_standby(|s| {
        s.db.max_replica_lag = std::time::Duration::from_secs(5);
        s.cache.capacity = 100;
    })
    .await
    else {
        return;
    };
    let ids = app.create_many(300, "full").await;
    assert_eq!(ids.len(), 300);
    for _ in 0..10 {
        for id in &ids[..150] {
            assert_eq!(app.get(&format!("/data/{id}")).await.status(), 200);
        }
    }
    let on_standby = Database::connect(standby.url()).await.expect("standby");
    on_standby
        .execute_unprepared("SELECT pg_wal_replay_pause()")
        .await
        .expect("pausing replay");

    let (mut reads, mut stale) = (0, Vec::new());
    for id in &ids[199..240] {
        let path = format!("/data/{id}");
        let body = json!({"name": format!("replaced {id}")});
        let put = app.send_json(Method::PUT, &path, &body).await;
        assert_eq!(put.status(), 200, "PUT {path}");
        let written: Value = put.json().await.expect("json");
        // Part of the scenario (the cache's housekeeping runs meanwhile), not a wait on state.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for _ in 0..3 {
            let got: Value = app.get(&path).await.json().await.expect("json");
            reads += 1;
            if got["version"] != written["version"] {
                stale.push((*id, written["version"].clone(), got["version"].clone()));
            }
        }
    }
    let text = app.scrape().await;
    let _ = on_standby
        .execute_unprepared("SELECT pg_wal_replay_resume()")
        .await;
    let _ = on_standby.close().await;
    assert_eq!(reads, 123);
    assert!(
        stale.is_empty(),
        "stale reads (id, acknowledged, answered): {stale:?}"
    );
    // The scenario reached the standby: its older answers were caught by the marks.
    let caught = metric(
        &text,
        "db_replica_fallbacks_total",
        &["pool=\"standby-0\"", "reason=\"floor\""],
    );
    assert!(caught > 0.0, "no fill went to the standby and met a mark");
    app.stop_shared().await;
}

/// The lag breaker fails closed (issue 25, item 8): when the primary's WAL position cannot be
/// had (here every connection of a two-connection pool is stuck behind a row lock), no standby
/// keeps serving on its last state; once the pool frees, it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_stop_serving_when_the_primary_position_is_unknown() {
    use sea_orm::TransactionTrait;
    let Some((app, primary, _standby)) = TestApp::with_a_standby(|s| {
        s.db.max_connections = Some(2);
        s.db.min_connections = Some(0);
        s.db.acquire_timeout = std::time::Duration::from_millis(200);
        s.db.statement_timeout = std::time::Duration::from_secs(20);
    })
    .await
    else {
        return;
    };
    let serving = ["state=\"serving\"", "pool=\"standby-0\""];
    let item = app.create(json!({"name": "locked"})).await;
    let path = format!("/data/{}", item["id"]);
    let db = Database::connect(primary.url()).await.expect("connect");
    let lock = db.begin().await.expect("begin");
    lock.execute_unprepared(&format!(
        "SELECT 1 FROM data_items WHERE id = {} FOR UPDATE",
        item["id"]
    ))
    .await
    .expect("row lock");
    // Two writes wait on the lock, each holding one of the pool's two connections.
    let stuck: Vec<_> = (0..2)
        .map(|k| {
            let (client, url) = (reqwest::Client::new(), app.url(&path));
            tokio::spawn(async move {
                client
                    .put(url)
                    .json(&json!({"name": format!("w{k}")}))
                    .send()
                    .await
            })
        })
        .collect();
    app.wait_for_metric("db_replica_state", &serving, |v| v == 0.0)
        .await;
    let lagging = ["state=\"lagging\"", "pool=\"standby-0\""];
    app.wait_for_metric("db_replica_state", &lagging, |v| v == 1.0)
        .await;
    lock.commit().await.expect("release");
    for s in stuck {
        let _ = s.await;
    }
    app.wait_for_metric("db_replica_state", &serving, |v| v == 1.0)
        .await;
    let _ = db.close().await;
    app.stop_shared().await;
}
