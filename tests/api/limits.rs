//! Limits on the request head, and inputs that are malformed below the JSON level: each gets a
//! clear 4xx (problem+json wherever the request reaches the app) and changes nothing.

use std::io::{Read, Write};

use reqwest::{Method, header::HeaderValue};
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::helpers::{TestApp, problem};

#[tokio::test]
async fn long_targets_get_414_and_big_headers_431() {
    let app = TestApp::sqlite(|s| {
        s.limits.max_uri_length = 200;
        s.limits.max_header_bytes = 2_000;
    })
    .await;
    assert_eq!(
        app.get(&format!("/data?x={}", "a".repeat(150)))
            .await
            .status(),
        200
    );
    let p = problem(app.get(&format!("/data?x={}", "a".repeat(250))).await, 414).await;
    assert_eq!(p["type"], "urn:problem:data-api:uri-too-long");
    let big = app
        .request(Method::GET, "/data")
        .header("x-filler", "b".repeat(2_100))
        .send()
        .await
        .unwrap();
    let p = problem(big, 431).await;
    assert_eq!(p["type"], "urn:problem:data-api:headers-too-large");
    // Many small headers count together.
    let mut many = app.request(Method::GET, "/data");
    for i in 0..40 {
        many = many.header(format!("x-h{i}"), "c".repeat(60));
    }
    problem(many.send().await.unwrap(), 431).await;
    app.stop().await;
}

#[tokio::test]
async fn default_limits_are_below_hypers() {
    let app = TestApp::sqlite(|_| {}).await;
    // hyper itself would take these; the app's defaults (8 KiB, 16 KiB) answer first.
    problem(
        app.get(&format!("/data?x={}", "a".repeat(9_000))).await,
        414,
    )
    .await;
    let big = app
        .request(Method::GET, "/data")
        .header("x-filler", "b".repeat(17_000))
        .send()
        .await
        .unwrap();
    problem(big, 431).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unreadable_if_match_is_400_and_writes_nothing() {
    let app = TestApp::sqlite(|_| {}).await;
    let item = app.create(json!({"name": "kept"})).await;
    let path = format!("/data/{}", item["id"]);
    // Not ASCII: poem would read it as no header at all, turning a conditional write into an
    // unconditional one.
    let garbled = HeaderValue::from_bytes(b"\xc2\x84").unwrap();
    let put = app
        .request(Method::PUT, &path)
        .header("if-match", garbled.clone())
        .json(&json!({"name": "overwritten"}))
        .send()
        .await
        .unwrap();
    let p = problem(put, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("if-match"), "{p}");
    let delete = app
        .request(Method::DELETE, &path)
        .header("if-match", garbled)
        .send()
        .await
        .unwrap();
    problem(delete, 400).await;
    // Not an entity-tag list.
    let put = app
        .request(Method::PUT, &path)
        .header("if-match", "1")
        .json(&json!({"name": "overwritten"}))
        .send()
        .await
        .unwrap();
    problem(put, 400).await;
    let now: serde_json::Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(now["name"], "kept");
    assert_eq!(now["version"], 1);
    app.stop().await;
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let app = TestApp::sqlite(|_| {}).await;
    let nested = |depth: usize| {
        format!(
            r#"{{"name": "deep", "payload": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let post = |body: String| {
        app.request(Method::POST, "/data")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post(nested(100)).await.unwrap().status(), 201);
    let p = problem(post(nested(100_000)).await.unwrap(), 400).await;
    assert_eq!(p["type"], "urn:problem:data-api:invalid-body");
    app.stop().await;
}

#[tokio::test]
async fn bad_percent_encoding_is_400() {
    let app = TestApp::sqlite(|_| {}).await;
    for path in [
        "/data/%FF",
        "/data/1%FF",
        "/data/%ZZ",
        "/data?limit=%FF",
        "/data?after=%G1",
    ] {
        problem(app.get(path).await, 400).await;
    }
    app.stop().await;
}

/// Sends `raw` on a fresh connection and returns everything the server answers.
async fn raw_exchange(app: &TestApp, raw: Vec<u8>) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        conn.write_all(&raw).unwrap();
        let mut buf = Vec::new();
        let _ = conn.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// What never reaches the app: raw bytes that are not valid in a request target, and more
/// than 100 header fields. hyper answers itself (400, 431; no problem body) and closes the
/// connection; the service goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_refuses_what_it_cannot_parse() {
    let app = TestApp::sqlite(|_| {}).await;
    let text = raw_exchange(
        &app,
        b"GET /data/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "answered: {text}");
    let mut many = b"GET /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let text = raw_exchange(&app, many).await;
    assert!(text.starts_with("HTTP/1.1 431"), "answered: {text}");
    assert_eq!(app.get("/health/live").await.status(), 200);
    app.stop().await;
}

/// Compressed request bodies are inflated as they are read, and the body limit counts the
/// inflated bytes: a small gzip bomb gets 413 at once, a normal gzip body is accepted.
#[tokio::test]
async fn gzip_bodies_are_limited_after_inflating() {
    use flate2::{Compression, write::GzEncoder};
    let gzip = |raw: &[u8]| {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(raw).unwrap();
        enc.finish().unwrap()
    };
    let app = TestApp::sqlite(|_| {}).await;
    let post = |body: Vec<u8>| {
        app.request(Method::POST, "/data")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
    };
    let ok = post(gzip(br#"{"name": "zipped"}"#)).await.unwrap();
    assert_eq!(ok.status(), 201);
    let mut big = br#"{"name": ""#.to_vec();
    big.resize(big.len() + 50_000_000, b'a');
    big.extend_from_slice(br#""}"#);
    let bomb = gzip(&big);
    assert!(bomb.len() < 100_000, "the bomb is small: {}", bomb.len());
    let p = problem(post(bomb).await.unwrap(), 413).await;
    assert_eq!(p["type"], "urn:problem:data-api:payload-too-large");
    let p = problem(post(b"not gzip".to_vec()).await.unwrap(), 400).await;
    assert!(p["detail"].as_str().unwrap().contains("gzip"), "{p}");
    app.stop().await;
}

/// A connection that sends nothing (or stops after a request) is closed after the idle
/// timeout; one request taking longer than that is not cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let app = TestApp::sqlite(|s| {
        s.server.idle_timeout = std::time::Duration::from_millis(300);
        s.limits.request_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let closed_after = closed_after_sending(&app, b"").await;
    assert_eq!(
        closed_after.0,
        Some(0),
        "the idle connection was not closed"
    );
    assert!(closed_after.1 < std::time::Duration::from_secs(3));

    // A client that stops halfway through a request head is closed too, once it has been quiet
    // for longer than any request may take (idle timeout + request timeout: 300 ms + 1 s here).
    let half_head =
        closed_after_sending(&app, b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-partial: ").await;
    assert_eq!(
        half_head.0,
        Some(0),
        "the half-sent head's connection was not closed"
    );
    assert!(
        half_head.1 >= std::time::Duration::from_millis(1_300),
        "{:?}",
        half_head.1
    );

    // A write stuck behind another process's SQLite lock for the 1 s acquire timeout is quiet
    // for longer than the idle timeout, and still gets its answer.
    let id = app.create_many(1, "idle").await[0];
    let locker = app.outside_connection().await;
    locker.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    let resp = app
        .send_json(
            Method::PUT,
            &format!("/data/{id}"),
            &json!({"name": "late"}),
        )
        .await;
    assert_eq!(resp.status(), 503);
    locker.execute_unprepared("ROLLBACK").await.unwrap();
    app.stop().await;
}

/// Connects, sends `bytes`, and reads: 0 bytes (EOF) once the server closes the connection, or
/// `None` if it is still open after 10 s (a no-hang guard); and how long that took.
async fn closed_after_sending(
    app: &TestApp,
    bytes: &'static [u8],
) -> (Option<usize>, std::time::Duration) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    closed_after_sending_to(addr, bytes).await
}

/// `closed_after_sending` to `addr`.
async fn closed_after_sending_to(
    addr: String,
    bytes: &'static [u8],
) -> (Option<usize>, std::time::Duration) {
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        conn.write_all(bytes).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        (conn.read(&mut buf).ok(), started.elapsed())
    })
    .await
    .unwrap()
}

/// At `--max-connections` the server stops accepting: a further client waits (in the kernel's
/// backlog) and is served as soon as an open connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_place() {
    // `/metrics` on its own (uncapped) address, to watch the cap fill.
    let app = TestApp::sqlite(|s| {
        s.server.max_connections = 2;
        s.metrics.bind = Some("127.0.0.1:0".parse().expect("literal address"));
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let first = std::net::TcpStream::connect(&addr).unwrap();
    let _second = std::net::TcpStream::connect(&addr).unwrap();
    app.wait_for_metric("http_server_open_connections", &[], |n| n == 2.0)
        .await;
    let third = tokio::spawn(reqwest::get(app.url("/health/live")));
    // Proving a negative takes a window of time: given half a second, it was not served.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served at a cap of 2"
    );
    drop(first);
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), third)
        .await
        .expect("served once a place was free")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), 200);
    app.stop().await;
}

/// A client still sending an oversized body when the server refuses it reads the 413: the server
/// reads and discards the rest of a refused body (up to 1 MiB, for up to 1 s) instead of closing
/// the connection under it, where the client's next write meets a reset and most clients then
/// report that instead of the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_are_read_so_the_413_arrives() {
    let app = TestApp::sqlite(|s| s.limits.body_limit = 1024).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    for chunked in [false, true] {
        let addr = addr.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let body = vec![b' '; 30_000];
            let head = if chunked {
                "POST /data HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!("POST /data HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
            };
            let mut sent = conn.write_all(head.as_bytes());
            for (i, part) in body.chunks(3_000).enumerate() {
                if sent.is_err() {
                    break;
                }
                // The client's pace, not a wait for the server: past the limit after the first
                // part, it pauses as an upload over a slow link would.
                if i == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                sent = if chunked {
                    let framed = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                    conn.write_all(&framed)
                } else {
                    conn.write_all(part)
                };
            }
            if chunked && sent.is_ok() {
                sent = conn.write_all(b"0\r\n\r\n");
            }
            let mut answer = vec![0u8; 64];
            let read = conn.read(&mut answer);
            (sent.map_err(|e| e.kind()), read.map(|n| String::from_utf8_lossy(&answer[..n]).into_owned()).map_err(|e| e.kind()))
        })
        .await
        .unwrap();
        assert!(
            answer.0.is_ok(),
            "chunked {chunked}: sending failed: {answer:?}"
        );
        let head = answer
            .1
            .unwrap_or_else(|e| panic!("chunked {chunked}: reading failed: {e:?}"));
        assert!(
            head.starts_with("HTTP/1.1 413"),
            "chunked {chunked}: {head:?}"
        );
    }
    app.stop().await;
}

/// The metrics address (`--metrics-bind`) closes idle connections too (issue 25, item 10): a
/// scraper or tab that stops sending holds no socket for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_metrics_address_are_closed() {
    let app = TestApp::sqlite(|s| {
        s.server.idle_timeout = std::time::Duration::from_millis(300);
        s.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let port = app.metrics_port.expect("a metrics address");
    let closed = closed_after_sending_to(format!("127.0.0.1:{port}"), b"").await;
    assert_eq!(
        closed.0,
        Some(0),
        "the idle metrics connection was not closed"
    );
    app.stop().await;
}
