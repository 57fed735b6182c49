//! Trace context and OTLP export: incoming `traceparent` is continued, the response names the
//! server span, and the real binary exports its spans (with their parent/child links) to an OTLP
//! receiver, flushing them when it stops on SIGTERM.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::Span,
};
use poem::{
    EndpointExt, Route, handler,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use prost::Message;
use serde_json::{Value, json};

use crate::helpers::{Binary, TestApp};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent_parts(resp: &reqwest::Response) -> Vec<String> {
    let tp = resp.headers()["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<String> = tp.split('-').map(str::to_owned).collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    parts
}

#[tokio::test]
async fn incoming_traceparent_is_continued() {
    let app = TestApp::sqlite(|_| {}).await;
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    let parts = traceparent_parts(&resp);
    assert_eq!(parts[1], TRACE_ID, "same trace");
    assert_ne!(parts[2], PARENT_ID, "our own span id");
    assert_eq!(parts[3], "01", "sampling decision carried over");

    let fresh = traceparent_parts(&app.get("/health/live").await);
    assert_ne!(fresh[1], TRACE_ID);
    assert_ne!(fresh[1], "0".repeat(32));
    let bad = app
        .client
        .get(app.url("/health/live"))
        .header("traceparent", "00-zz-yy-01")
        .send()
        .await
        .unwrap();
    assert_ne!(
        traceparent_parts(&bad)[1],
        "zz",
        "a malformed traceparent starts a new trace"
    );
    app.stop().await;
}

#[handler]
async fn receive(
    body: Vec<u8>,
    store: Data<&Arc<Mutex<Vec<ExportTraceServiceRequest>>>>,
) -> Vec<u8> {
    if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
        store.lock().unwrap().push(req);
    }
    Vec::new()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a minimal OTLP/HTTP receiver got.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A minimal OTLP/HTTP receiver on a free port: its base URL, what it receives, its task.
async fn otlp_receiver() -> (
    String,
    Received,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let received: Received = Arc::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let receiver = Route::new()
        .at("/v1/traces", poem::post(receive))
        .data(received.clone());
    let server = tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(receiver));
    (format!("http://127.0.0.1:{port}"), received, server)
}

/// A binary with its own SQLite file in `dir`.
fn start(dir: &tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Binary {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bin.db").display());
    let mut all = vec!["--database-url", url.as_str()];
    all.extend_from_slice(args);
    Binary::start(&all, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_flushed_on_sigterm() {
    let (otlp, received, server) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_SERVICE_NAME", "data-api-under-test"),
    ];
    let bin = start(&dir, &[], &env);
    let addr = bin.addr;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let created: Value = client
        .post(format!("{base}/data"))
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("{base}/data/{}", created["id"]);
    let resp = client
        .get(&path)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answered = traceparent_parts(&resp);
    assert_eq!(client.get(&path).send().await.unwrap().status(), 200);

    let logs = bin.stop().await;
    server.abort();

    let requests = received.lock().unwrap();
    let resource_ok = requests.iter().flat_map(|r| &r.resource_spans).any(|rs| {
        rs.resource.as_ref().is_some_and(|r| {
            matches!(attr(&r.attributes, "service.name"), Some(Any::StringValue(s)) if s == "data-api-under-test")
        })
    });
    assert!(resource_ok, "service.name comes from OTEL_SERVICE_NAME");
    let spans: Vec<&Span> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let server_span = spans
        .iter()
        .find(|s| s.name == "GET /data/{id}" && hex(&s.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("server span continuing the incoming trace; got {names:?}"));
    assert_eq!(
        hex(&server_span.parent_span_id),
        PARENT_ID,
        "parent is the caller's span"
    );
    assert_eq!(server_span.kind, 2, "SERVER");
    assert_eq!(
        hex(&server_span.span_id),
        answered[2],
        "the response names the server span"
    );
    assert!(
        matches!(attr(&server_span.attributes, "http.route"), Some(Any::StringValue(s)) if s == "/data/{id}")
    );
    assert!(
        matches!(attr(&server_span.attributes, "http.request.method"), Some(Any::StringValue(s)) if s == "GET")
    );
    let status = attr(&server_span.attributes, "http.response.status_code");
    assert!(
        matches!(status, Some(Any::IntValue(200))),
        "status attribute: {status:?} in {:?}",
        server_span.attributes
    );
    assert!(attr(&server_span.attributes, "client.address").is_some());

    let cache_span = spans
        .iter()
        .find(|s| s.name == "cache.get" && s.parent_span_id == server_span.span_id)
        .unwrap_or_else(|| panic!("cache span under the server span; got {names:?}"));
    assert!(
        matches!(attr(&cache_span.attributes, "cache.result"), Some(Any::StringValue(s)) if s == "miss")
    );
    let db_span = spans
        .iter()
        .find(|s| s.name == "select data_items" && s.parent_span_id == cache_span.span_id)
        .unwrap_or_else(|| panic!("query span under the cache span; got {names:?}"));
    assert_eq!(db_span.trace_id, server_span.trace_id);
    assert!(
        matches!(attr(&db_span.attributes, "db.system.name"), Some(Any::StringValue(s)) if s == "sqlite")
    );
    // The fill was read in a batch (of one, here): the span says how many reads it held.
    assert!(
        matches!(
            attr(&db_span.attributes, "db.operation.batch.size"),
            Some(Any::IntValue(1))
        ),
        "batch size on the query span: {:?}",
        db_span.attributes
    );
    let hit = spans.iter().any(|s| {
        s.name == "cache.get" && matches!(attr(&s.attributes, "cache.result"), Some(Any::StringValue(v)) if v == "hit")
    });
    assert!(hit, "the second GET is a recorded hit");

    // Log lines inside a request carry its trace id.
    let access = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "data_api::access" && v.to_string().contains(TRACE_ID));
    assert!(access.is_some(), "an access log line carries the trace id");
}

/// Without OTLP export, log lines written inside a request still carry its trace and span ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_trace_ids_without_export() {
    let dir = tempfile::tempdir().unwrap();
    let bin = start(&dir, &[], &[]);
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{}/data/12345", bin.addr))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let answered = traceparent_parts(&resp);
    let logs = bin.stop().await;
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "data_api::access")
        .expect("an access log line");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["span_id"], answered[2].as_str(), "{line}");
    assert_eq!(line["fields"]["status"], 404);
    let outside = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "listening");
    assert!(
        outside.is_some_and(|v| v.get("trace_id").is_none()),
        "lines outside requests have no trace id"
    );
}

/// API keys, right or wrong, never reach the logs (nor `/metrics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_appear_in_logs_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let bin = start(
        &dir,
        &[],
        &[("DATA_API_KEYS", "s3cr3t-key-value"), ("RUST_LOG", "debug")],
    );
    let client = reqwest::Client::new();
    let url = format!("http://{}/data", bin.addr);
    for key in ["s3cr3t-key-value", "wr0ng-key-value"] {
        let _ = client
            .post(&url)
            .bearer_auth(key)
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap();
    }
    let metrics = client
        .get(format!("http://{}/metrics", bin.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = bin.stop().await;
    assert!(logs.len() > 3, "debug logs were written");
    for secret in ["s3cr3t", "wr0ng"] {
        assert!(
            !logs.iter().any(|l| l.contains(secret)),
            "{secret} leaked into the logs"
        );
        assert!(!metrics.contains(secret), "{secret} leaked into /metrics");
    }
}

/// `--otel-service-name` given as a flag (no `OTEL_SERVICE_NAME`) names the exported spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_name_flag_names_exported_spans() {
    let (otlp, received, server) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = start(
        &dir,
        &[
            "--otlp-endpoint",
            &otlp,
            "--otel-service-name",
            "named-by-flag",
        ],
        &[],
    );
    let resp = reqwest::get(bin.url("/health/live")).await.unwrap();
    assert_eq!(resp.status(), 200);
    bin.stop().await;
    server.abort();
    let requests = received.lock().unwrap();
    let names: Vec<String> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .filter_map(|r| match attr(&r.attributes, "service.name") {
            Some(Any::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(!names.is_empty(), "spans were exported");
    assert!(
        names.iter().all(|n| n == "named-by-flag"),
        "service.name from the flag: {names:?}"
    );
}
