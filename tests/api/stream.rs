//! The commit-log feed (`--invalidation auto`, `replication::stream`) on a throwaway cluster
//! with `wal_level = logical`: writes made outside the service (psql) reach the cache, a delete
//! and a transaction of 10,000 rows too; the feed's walsender terminated is a gap (flushed,
//! streamed again); the notifying trigger stays disabled while only the stream runs, a replica
//! on the trigger feed enables it (again, if an operator disables it under it, after a gap).
//! Where logical decoding is not available, `auto` falls back to the trigger.

use std::sync::Arc;

use reqwest::Method;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use testkit::cluster::Cluster;

use crate::helpers::{TestApp, eventually_body, metric, notify_trigger_state, skip};
use data_api::config::Invalidation;

const STREAM: &str = "feed=\"stream\"";
const TRIGGER: &str = "feed=\"trigger\"";

/// A running throwaway cluster that can decode its commit log, or `None` (skipped).
async fn logical_cluster() -> Option<Arc<Cluster>> {
    let settings = "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20";
    let cluster = match tokio::task::spawn_blocking(move || Cluster::create_with(settings))
        .await
        .expect("task")
    {
        Ok(c) => Arc::new(c),
        Err(why) => {
            skip(&format!("no throwaway PostgreSQL cluster: {why}"));
            return None;
        }
    };
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .expect("task");
    Some(cluster)
}

/// The commit-log feed, and entries that never expire: only the feed can change what is served.
fn streaming(s: &mut data_api::config::Settings) {
    s.cache.invalidation = Invalidation::Auto;
    s.cache.ttl = std::time::Duration::from_secs(3600);
}

/// What an operator runs once no replica uses the trigger feed (docs/OPERATIONS.md).
const DISABLE_TRIGGER: &str = "ALTER TABLE data_items DISABLE TRIGGER data_items_notify, \
     DISABLE TRIGGER data_items_notify_truncate";

async fn psql(url: &str, sql: &str) {
    let db: DatabaseConnection = Database::connect(url).await.expect("psql connection");
    db.execute_unprepared(sql).await.expect(sql);
    db.close().await.expect("closed");
}

/// Creates an item, caches it, renames it from psql and waits until the app answers the new
/// name (entries never expire here: only the feed can change them); the item and its path.
async fn psql_write_reaches_the_cache(app: &TestApp, url: &str) -> (Value, String) {
    let item = app.create(json!({"name": "before"})).await;
    let path = format!("/data/{}", item["id"]);
    assert_eq!(app.get(&path).await.status(), 200);
    let id = &item["id"];
    psql(
        url,
        &format!("UPDATE data_items SET name = 'psql' WHERE id = {id}"),
    )
    .await;
    eventually_body(app, &path, |b| b["name"] == "psql").await;
    (item, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_log_feed_hears_every_change() {
    let Some(cluster) = logical_cluster().await else {
        return;
    };
    let url = cluster.url();
    let app = TestApp::on_url(&url, streaming).await;
    app.wait_for_metric("cache_invalidation_feed", &[STREAM], |v| v == 1.0)
        .await;
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;

    // A write from psql reaches the cached item.
    let (item, path) = psql_write_reaches_the_cache(&app, &url).await;
    let applied = ["result=\"applied\""];
    assert!(metric(&app.scrape().await, "cache_invalidations_total", &applied) >= 1.0);

    // A transaction of 10,000 rows: every cached one hears of it.
    psql(
        &url,
        "INSERT INTO data_items (name, version, created_at, updated_at) \
         SELECT 'bulk ' || n, 1, now(), now() FROM generate_series(1, 10000) n",
    )
    .await;
    let cached: Vec<String> = (0..20).map(|k| format!("/data/{}", 2 + k * 500)).collect();
    for p in &cached {
        assert_eq!(app.get(p).await.status(), 200, "{p}");
    }
    psql(&url, "UPDATE data_items SET name = 'all of them'").await;
    for p in &cached {
        eventually_body(&app, p, |b| b["name"] == "all of them").await;
    }

    // A delete from psql.
    psql(
        &url,
        &format!("DELETE FROM data_items WHERE id = {}", item["id"]),
    )
    .await;
    eventually_body(&app, &path, |b| b.is_null()).await;

    // The walsender terminated: a gap, flushed; a new session streams again.
    let flushes = metric(&app.scrape().await, "cache_flushes_total", &[]);
    psql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication \
         WHERE application_name = 'data-api feed'",
    )
    .await;
    app.wait_for_metric("cache_flushes_total", &[], |v| v > flushes)
        .await;
    app.wait_for_metric("cache_listener_reconnects_total", &[], |v| v >= 1.0)
        .await;
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    let other = app.create(json!({"name": "after the gap"})).await;
    let other_path = format!("/data/{}", other["id"]);
    assert_eq!(app.get(&other_path).await.status(), 200);
    psql(
        &url,
        &format!(
            "UPDATE data_items SET name = 'heard' WHERE id = {}",
            other["id"]
        ),
    )
    .await;
    eventually_body(&app, &other_path, |b| b["name"] == "heard").await;

    // Only the stream runs: the migrations left the notifying trigger disabled.
    assert_eq!(notify_trigger_state(&url).await, "D");
    // A replica on the trigger feed enables it, and hears psql through it.
    let trigger = TestApp::on_url(&url, |s| s.cache.invalidation = Invalidation::Trigger).await;
    trigger
        .wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    assert_eq!(notify_trigger_state(&url).await, "O");
    psql_write_reaches_the_cache(&trigger, &url).await;
    // Disabled under it: its heartbeats stop, its channel goes silent (a gap: flushed), and it
    // enables the trigger again as it reconnects, before it serves hits again.
    let flushes = metric(&trigger.scrape().await, "cache_flushes_total", &[]);
    psql(&url, DISABLE_TRIGGER).await;
    trigger
        .wait_for_metric("cache_flushes_total", &[], |v| v > flushes)
        .await;
    trigger
        .wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    assert_eq!(notify_trigger_state(&url).await, "O");
    let resp = trigger
        .send_json(Method::PUT, &other_path, &json!({"name": "quiet"}))
        .await;
    assert_eq!(resp.status(), 200);
    eventually_body(&app, &other_path, |b| b["name"] == "quiet").await;
    trigger.stop_shared().await;
    app.stop_shared().await;
}

/// A role without the `REPLICATION` privilege cannot create the slot: `auto` starts on the
/// trigger, and stays coherent through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_the_replication_privilege_falls_back_to_the_trigger() {
    let Some(cluster) = logical_cluster().await else {
        return;
    };
    psql(
        &cluster.url(),
        "CREATE ROLE plain LOGIN PASSWORD 'plain' NOREPLICATION",
    )
    .await;
    psql(&cluster.url(), "GRANT ALL ON SCHEMA public TO plain").await;
    psql(&cluster.url(), "GRANT CREATE ON DATABASE postgres TO plain").await;
    let url = cluster
        .url()
        .replace("postgres://postgres@", "postgres://plain:plain@");
    let app = TestApp::on_url(&url, streaming).await;
    let text = app.scrape().await;
    assert_eq!(metric(&text, "cache_invalidation_feed", &[TRIGGER]), 1.0);
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    psql_write_reaches_the_cache(&app, &url).await;
    app.stop_shared().await;
}

/// Where the server cannot decode its commit log (`wal_level = replica`), `auto` starts anyway,
/// on the trigger, and says so in the gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_the_trigger() {
    let Some(cluster) = tokio::task::spawn_blocking(Cluster::create)
        .await
        .expect("task")
        .map_err(|why| skip(&format!("no throwaway PostgreSQL cluster: {why}")))
        .ok()
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .expect("task");
    let app = TestApp::on_url(&cluster.url(), |s| {
        s.cache.invalidation = Invalidation::Auto
    })
    .await;
    let text = app.scrape().await;
    assert_eq!(metric(&text, "cache_invalidation_feed", &[TRIGGER]), 1.0);
    assert_eq!(metric(&text, "cache_invalidation_feed", &[STREAM]), 0.0);
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    app.stop_shared().await;
}
