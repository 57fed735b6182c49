//! `/dashboard`: the page and its assets under a strict CSP, the data it polls growing with
//! traffic, `since` returning only newer points, bad queries answered 400, metrics off said
//! plainly, the metrics token (Bearer or Basic), and `--metrics-bind` moving it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

/// Polls `/dashboard/data` (as `path` asks) until `ok` holds; a no-hang guard bounds the wait.
async fn wait_for_data(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    testkit::eventually("the dashboard data", || async {
        let data: Value = app.get(path).await.json().await.expect("json");
        if ok(&data) { Ok(data) } else { Err(data) }
    })
    .await
}

fn tile(data: &Value, title: &str) -> Option<f64> {
    data["tiles"]
        .as_array()?
        .iter()
        .find(|t| t["title"] == title)?["value"]
        .as_f64()
}

fn panel<'a>(data: &'a Value, title: &str) -> &'a Value {
    data["panels"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["title"] == title))
        .unwrap_or_else(|| panic!("no panel {title:?} in {data}"))
}

/// The points of series `name` of panel `title` (none if it has no such series yet).
fn series(data: &Value, title: &str, name: &str) -> Vec<Value> {
    panel(data, title)["series"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .and_then(|s| s["points"].as_array())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn page_and_assets_are_served_under_a_strict_csp() {
    let app = TestApp::sqlite(|_| {}).await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
        // Named by the page, so the browser asks for no `/favicon.ico` (a 404 in its console).
        ("/dashboard/favicon.png", "image/png"),
        ("/dashboard/data", "application/json"),
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        if path == "/dashboard/data" {
            assert_eq!(
                h["connection"], "close",
                "a tab holds no connection between polls"
            );
        }
    }
    let page = app.get("/dashboard").await.text().await.unwrap();
    assert!(page.contains("/dashboard/dashboard.js") && page.contains("/dashboard/dashboard.css"));
    assert!(page.contains("rel=\"icon\" type=\"image/png\" href=\"/dashboard/favicon.png\""));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_follows_traffic_with_prometheus_style_rates_and_quantiles() {
    let app = TestApp::sqlite(|_| {}).await;
    let id = app.create(json!({"name": "watched"})).await["id"]
        .as_i64()
        .unwrap();
    // Hits, misses and 404s, and keep going until the dashboard has seen them.
    let data = loop {
        for _ in 0..20 {
            assert_eq!(app.get(&format!("/data/{id}")).await.status(), 200);
        }
        assert_eq!(app.get("/data/999999999").await.status(), 404);
        let data: Value = app
            .get("/dashboard/data?range=60")
            .await
            .json()
            .await
            .unwrap();
        let hits = series(&data, "Hits vs misses", "hit").len();
        let seen = |t| tile(&data, t).is_some_and(|r| r > 0.0);
        if seen("Request rate") && seen("4xx share") && hits > 0 {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(data["metrics"], true);
    assert_eq!(data["replicated"], false);
    let four = tile(&data, "4xx share").unwrap();
    assert!(four < 0.2, "one 404 in 21 requests: {four}");
    assert!(tile(&data, "Cache hit ratio").is_some_and(|r| r > 0.5 && r <= 1.0));
    let p99 = tile(&data, "Latency p99").expect("a p99 with traffic");
    assert!(p99 > 0.0 && p99 < 10.0, "{p99}");
    assert!(!series(&data, "Latency p50 / p95 / p99", "p99").is_empty());
    assert!(!series(&data, "Requests by route", "/data/{id}").is_empty());
    assert!(!series(&data, "Resident memory", "resident").is_empty());
    // No replicas: no coherence row.
    assert!(
        data["panels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["row"] != "Replicas: cache coherence")
    );

    // `since`: only points newer than what the page has.
    let since = data["now_ms"].as_u64().unwrap();
    let newer = wait_for_data(
        &app,
        &format!("/dashboard/data?range=60&since={since}"),
        |d| d["now_ms"].as_u64() > Some(since),
    )
    .await;
    for p in newer["panels"].as_array().unwrap() {
        for s in p["series"].as_array().unwrap() {
            for point in s["points"].as_array().unwrap() {
                assert!(
                    point[0].as_u64().unwrap() > since,
                    "{point} in {}",
                    p["title"]
                );
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_queries_get_problem_json() {
    let app = TestApp::sqlite(|_| {}).await;
    for q in ["range=0", "range=99999", "since=yesterday", "colour=blue"] {
        let body = problem(app.get(&format!("/dashboard/data?{q}")).await, 400).await;
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{q}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_off_is_said_plainly() {
    let app = TestApp::sqlite(|s| s.metrics.enabled = false).await;
    assert_eq!(app.get("/dashboard").await.status(), 200);
    let data: Value = app.get("/dashboard/data").await.json().await.unwrap();
    assert_eq!(data["metrics"], false);
    assert_eq!(data["panels"], json!([]));
    let script = app
        .get("/dashboard/dashboard.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(script.contains("Metrics are off"));
    app.stop().await;
}

#[tokio::test]
async fn the_metrics_token_protects_it_as_bearer_or_basic() {
    let app = TestApp::sqlite(|s| s.metrics.token = Some("s3cret".into())).await;
    for path in ["/dashboard", "/dashboard/data", "/dashboard/dashboard.js"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 401, "{path}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Basic "),
            "a browser asks: {challenge}"
        );
        problem(resp, 401).await;
        let basic = app
            .request(Method::GET, path)
            .basic_auth("anyone", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 200, "{path} with Basic");
        let wrong = app
            .request(Method::GET, path)
            .basic_auth("anyone", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
    }
    let bearer = app
        .request(Method::GET, "/dashboard/data")
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // /metrics takes the same two forms.
    let scrape = app
        .request(Method::GET, "/metrics")
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_bind_serves_it_beside_metrics_only() {
    let app = TestApp::sqlite(|s| s.metrics.bind = Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(app.get("/dashboard").await.status(), 404);
    let port = app.metrics_port.expect("metrics port");
    let resp = app
        .client
        .get(format!("http://127.0.0.1:{port}/dashboard/data"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data: Value = resp.json().await.unwrap();
    assert_eq!(data["metrics"], true);
    app.stop().await;
}
