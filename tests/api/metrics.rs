//! `/metrics`: every family from start-up, live values, fixed cardinality, the Prometheus
//! linter, and the single database read behind concurrent misses.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, skip, which};

/// Every family the README documents.
const FAMILIES: &[&str] = &[
    "http_server_request_duration_seconds",
    "http_server_active_requests",
    "http_server_open_connections",
    "http_server_connection_limit",
    "cache_gets_total",
    "cache_load_coalesced_total",
    "cache_evictions_total",
    "cache_entries",
    "cache_size_bytes",
    "cache_capacity_entries",
    "db_client_operation_duration_seconds",
    "db_client_operation_errors_total",
    "db_client_connection_usage",
    "db_client_connection_max",
    "db_client_connection_idle_min",
    "db_client_connection_pending_requests",
    "db_client_connection_wait_time_seconds",
    "db_client_connection_timeouts_total",
    "build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

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

/// The value of the series `name{labels}` whose label text contains every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn every_family_exists_from_start(app: &TestApp) {
    let text = scrape(app).await;
    for family in FAMILIES {
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
        value(&text, "db_client_connection_timeouts_total", &[]),
        0.0
    );
    assert_eq!(
        value(&text, "cache_evictions_total", &["cause=\"size\""]),
        0.0
    );
    assert_eq!(value(&text, "build_info", &["version=\""]), 1.0);
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
        value(&text, "http_server_request_duration_seconds_count", &get_ok),
        5.0
    );
    let created = [
        "http_request_method=\"POST\"",
        "http_route=\"/data\"",
        "http_response_status_code=\"201\"",
    ];
    assert_eq!(
        value(
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
        value(
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
    assert_eq!(value(&text, "cache_gets_total", &["result=\"hit\""]), 4.0);
    assert_eq!(value(&text, "cache_gets_total", &["result=\"miss\""]), 2.0);
    assert_eq!(
        value(
            &text,
            "db_client_operation_duration_seconds_count",
            &["db_operation_name=\"insert\""]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "db_client_operation_duration_seconds_count",
            &["db_operation_name=\"select\""]
        ),
        2.0
    );
    assert!(value(&text, "db_client_connection_max", &[]) >= 1.0);
    // The active-requests gauge counts the scrape itself.
    assert_eq!(value(&text, "http_server_active_requests", &[]), 1.0);
    // ... over at least its own connection, under the default cap.
    assert!(value(&text, "http_server_open_connections", &[]) >= 1.0);
    assert_eq!(value(&text, "http_server_connection_limit", &[]), 4096.0);
    assert!(value(&text, "process_resident_memory_bytes", &[]) > 0.0);
    // Gauges are sampled on an interval.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let text = scrape(app).await;
    assert_eq!(
        value(&text, "cache_entries", &[]),
        2.0,
        "the item and the cached not-found"
    );
    assert!(value(&text, "cache_size_bytes", &[]) > 50.0);
    assert!(value(&text, "db_client_connection_usage", &["state=\"idle\""]) >= 1.0);
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
    let reads = value(
        &after,
        "db_client_operation_duration_seconds_count",
        &select,
    ) - value(
        &before,
        "db_client_operation_duration_seconds_count",
        &select,
    );
    assert_eq!(
        reads, 1.0,
        "40 concurrent GETs of an uncached item read the database once"
    );
    let gets = value(&after, "cache_gets_total", &[]) - value(&before, "cache_gets_total", &[]);
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
    let Some(promtool) = which("promtool") else {
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
    let app =
        TestApp::sqlite(|s| s.metrics.metrics_bind = Some("127.0.0.1:0".parse().unwrap())).await;
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
    let app = TestApp::sqlite(|s| s.metrics.metrics = false).await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    assert_eq!(
        app.create(json!({"name": "still works"})).await["version"],
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let app = TestApp::sqlite(|s| s.metrics.metrics_token = Some("scrape-secret".into())).await;
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
