//! `/metrics`: every family from start-up, live values, fixed cardinality, the Prometheus
//! linter, and the single database read behind concurrent misses.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use data_api::metrics::catalog;

use crate::helpers::{TestApp, metric, skip};
use testkit::tools::which;

/// Families that come from `metrics-process` rather than our catalog.
const PROCESS_FAMILIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// Families exported only with `--database-read-url`, one series set per standby
/// (`tests/api/standbys.rs` checks them).
pub const STANDBY_FAMILIES: [&str; 3] = [
    "db_replica_lag_seconds",
    "db_replica_state",
    "db_replica_fallbacks_total",
];

/// Families exported only with `--redis-url` (`tests/api/redis.rs` checks them).
pub const REDIS_FAMILIES: [&str; 4] = [
    "cache_redis_lookups_total",
    "cache_redis_operation_duration_seconds",
    "cache_redis_errors_total",
    "cache_redis_usable",
];

/// Families exported only with `--edge-max-age` (`tests/api/edge.rs` checks them).
pub const EDGE_FAMILIES: [&str; 5] = [
    "edge_purges_total",
    "edge_purged_keys_total",
    "edge_purge_duration_seconds",
    "edge_purge_waits_total",
    "edge_cacheable",
];

/// Every family: our catalog and the process metrics.
fn families() -> impl Iterator<Item = &'static str> {
    catalog::ALL
        .iter()
        .map(|m| m.name)
        .chain(PROCESS_FAMILIES.iter().copied())
}

/// The documentation lists every metric the service exports.
#[test]
fn docs_list_every_metric() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/OBSERVABILITY.md"
    ))
    .expect("docs/OBSERVABILITY.md");
    for family in families() {
        assert!(
            doc.contains(&format!("`{family}`")),
            "docs/OBSERVABILITY.md does not list {family}"
        );
    }
}

crate::on_both_backends!(
    every_family_exists_from_start,
    values_follow_traffic,
    concurrent_misses_make_one_database_read,
    cardinality_stays_fixed,
    output_passes_promtool,
);

async fn scrape(app: &TestApp) -> String {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    resp.text().await.unwrap()
}

async fn every_family_exists_from_start(app: &TestApp) {
    let text = scrape(app).await;
    let optional = |f: &&str| {
        STANDBY_FAMILIES.contains(f) || REDIS_FAMILIES.contains(f) || EDGE_FAMILIES.contains(f)
    };
    for family in families().filter(|f| !optional(f)) {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is declared:\n{text}"
        );
        let has_series = text
            .lines()
            .any(|l| l.starts_with(family) && !l.starts_with('#'));
        assert!(has_series, "{family} has a series before any traffic");
    }
    assert_eq!(
        metric(&text, "db_client_connection_timeouts_total", &[]),
        0.0
    );
    assert_eq!(
        metric(&text, "cache_evictions_total", &["cause=\"size\""]),
        0.0
    );
    assert_eq!(metric(&text, "build_info", &["version=\""]), 1.0);
}

async fn values_follow_traffic(app: &TestApp) {
    let item = app.create(json!({"name": "m"})).await;
    let path = format!("/data/{}", item["id"]);
    for _ in 0..5 {
        assert_eq!(app.get(&path).await.status(), 200);
    }
    assert_eq!(app.get("/data/99999999").await.status(), 404);
    assert_eq!(app.get("/nowhere").await.status(), 404);
    let text = scrape(app).await;
    let get_ok = [
        "http_request_method=\"GET\"",
        "http_route=\"/data/{id}\"",
        "http_response_status_code=\"200\"",
    ];
    assert_eq!(
        metric(&text, "http_server_request_duration_seconds_count", &get_ok),
        5.0
    );
    let created = [
        "http_request_method=\"POST\"",
        "http_route=\"/data\"",
        "http_response_status_code=\"201\"",
    ];
    assert_eq!(
        metric(
            &text,
            "http_server_request_duration_seconds_count",
            &created
        ),
        1.0
    );
    let unmatched = [
        "http_route=\"unmatched\"",
        "http_response_status_code=\"404\"",
    ];
    assert_eq!(
        metric(
            &text,
            "http_server_request_duration_seconds_count",
            &unmatched
        ),
        1.0
    );
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| Some(l.split_once('{')?.1.split_once('}')?.0))
        .collect();
    assert!(
        labels
            .iter()
            .all(|l| !l.contains("nowhere") && !l.contains("99999999")),
        "raw paths and ids never become label values"
    );
    // The first GET missed (after a create the cache is filled by the next read), the rest hit.
    assert_eq!(metric(&text, "cache_gets_total", &["result=\"hit\""]), 4.0);
    assert_eq!(metric(&text, "cache_gets_total", &["result=\"miss\""]), 2.0);
    assert_eq!(
        metric(
            &text,
            "db_client_operation_duration_seconds_count",
            &["db_operation_name=\"insert\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "db_client_operation_duration_seconds_count",
            &["db_operation_name=\"select\""]
        ),
        2.0
    );
    assert!(metric(&text, "db_client_connection_max", &[]) >= 1.0);
    // The active-requests gauge counts the scrape itself.
    assert_eq!(metric(&text, "http_server_active_requests", &[]), 1.0);
    // ... over at least its own connection, under the default cap.
    assert!(metric(&text, "http_server_open_connections", &[]) >= 1.0);
    assert_eq!(metric(&text, "http_server_connection_limit", &[]), 4096.0);
    assert!(metric(&text, "process_resident_memory_bytes", &[]) > 0.0);
    // Gauges are sampled on an interval: wait for a sample that has both entries.
    app.wait_for_metric("cache_entries", &[], |n| n == 2.0)
        .await;
    let text = scrape(app).await;
    assert!(metric(&text, "cache_size_bytes", &[]) > 50.0);
    assert!(metric(&text, "db_client_connection_usage", &["state=\"idle\""]) >= 1.0);
}

async fn concurrent_misses_make_one_database_read(app: &TestApp) {
    let item = app.create(json!({"name": "popular"})).await;
    let path = format!("/data/{}", item["id"]);
    let before = scrape(app).await;
    let select = ["db_operation_name=\"select\""];
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url(&path));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let after = scrape(app).await;
    let reads = metric(
        &after,
        "db_client_operation_duration_seconds_count",
        &select,
    ) - metric(
        &before,
        "db_client_operation_duration_seconds_count",
        &select,
    );
    assert_eq!(
        reads, 1.0,
        "40 concurrent GETs of an uncached item read the database once"
    );
    let gets = metric(&after, "cache_gets_total", &[]) - metric(&before, "cache_gets_total", &[]);
    assert_eq!(gets, 40.0);
}

/// The set of series (name and labels, without values).
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

async fn cardinality_stays_fixed(app: &TestApp) {
    let id = app.create(json!({"name": "c"})).await["id"]
        .as_i64()
        .unwrap();
    let round = |n: i64| async move {
        for k in 0..n {
            let _ = app.get(&format!("/data/{id}")).await;
            let _ = app.get(&format!("/data/{}", 1_000_000 + k)).await;
            let _ = app.get(&format!("/no/such/path/{k}")).await;
            let _ = app.get(&format!("/data/not-a-number-{k}")).await;
            let _ = app
                .request(
                    Method::from_bytes(format!("X{}", k % 7).as_bytes()).unwrap(),
                    "/data",
                )
                .send()
                .await;
        }
    };
    let _ = scrape(app).await; // the scrape itself is a request with a series of its own
    round(3).await;
    let first = series(&scrape(app).await);
    round(400).await;
    let second = series(&scrape(app).await);
    let added: Vec<_> = second.difference(&first).collect();
    assert!(
        added.is_empty(),
        "new series after thousands of distinct ids and paths: {added:?}"
    );
}

async fn output_passes_promtool(app: &TestApp) {
    let Some(promtool) = which("promtool", &[]) else {
        skip("promtool is not installed (Debian package `prometheus`)");
        return;
    };
    let item = app.create(json!({"name": "p"})).await;
    let _ = app.get(&format!("/data/{}", item["id"])).await;
    let text = scrape(app).await;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_can_have_their_own_address() {
    let app = TestApp::sqlite(|s| s.metrics.bind = Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(
        app.get("/metrics").await.status(),
        404,
        "not on the public address"
    );
    let port = app.metrics_port.expect("metrics port");
    let text = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 200);
    assert!(
        text.text()
            .await
            .unwrap()
            .contains("http_server_request_duration_seconds")
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = TestApp::sqlite(|s| s.metrics.enabled = false).await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    assert_eq!(
        app.create(json!({"name": "still works"})).await["version"],
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let app = TestApp::sqlite(|s| s.metrics.token = Some("scrape-secret".into())).await;
    let without = app.get("/metrics").await;
    assert_eq!(without.headers()["www-authenticate"], "Bearer");
    crate::helpers::problem(without, 401).await;
    let wrong = app
        .request(Method::GET, "/metrics")
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    crate::helpers::problem(wrong, 401).await;
    let right = app
        .request(Method::GET, "/metrics")
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("build_info"));
    assert_eq!(
        app.get("/health/live").await.status(),
        200,
        "only /metrics is guarded"
    );
    app.stop().await;
}
