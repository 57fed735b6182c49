//! Slow and idle clients against the real binary: slow request bodies, slow heads, slow readers
//! of large responses, thousands of idle keep-alive connections. Each may cost a connection,
//! never an in-flight permit: requests that are ready keep being answered (reproduction 2 of
//! issue 25, and the suite it asks for).

use std::time::Duration;

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::checker::{scrape, wait_metric};
use crate::helpers::{Binary, STATE_WAIT, metric};

/// The real binary on a fresh SQLite file, with `args`; the directory lives as long as it.
fn start(args: &[&str]) -> (Binary, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut all = vec!["--database-url", url.as_str(), "--access-log", "false"];
    all.extend_from_slice(args);
    (Binary::start(&all, &[]), dir)
}

/// `n` plain reads that must all be answered 200 while the slow clients hold on.
async fn probes_answered(bin: &Binary, n: usize) {
    let client = reqwest::Client::new();
    for k in 0..n {
        let resp = client
            .get(bin.url("/data?limit=1"))
            .timeout(STATE_WAIT)
            .send()
            .await
            .expect("a probe is answered");
        assert_eq!(resp.status(), 200, "probe {k} of {n}");
    }
}

async fn connect(bin: &Binary) -> TcpStream {
    TcpStream::connect(bin.addr).await.expect("connect")
}

/// Reproduction 2: with `--max-in-flight 64`, 70 connections send a `POST /data` head with
/// `Content-Length: 100` and then a byte of body at a time. Every probe gets 200 meanwhile
/// (the bodies hold no permit), and each slow sender gets 408 problem+json once the body
/// timeout is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_connections_never_permits() {
    const SLOW: usize = 70;
    let (bin, _dir) = start(&["--max-in-flight", "64", "--body-timeout", "3s"]);
    let head = "POST /data HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n{";
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut conn = connect(&bin).await;
        conn.write_all(head.as_bytes()).await.expect("head");
        slow.push(conn);
    }
    wait_metric(&bin, "http_server_active_requests", &[], |v| {
        v >= SLOW as f64
    })
    .await;
    // The senders' pace (a byte every half second, under any idle timer), kept up while probed.
    let trickle = tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut open: Vec<Option<TcpStream>> = slow.into_iter().map(Some).collect();
        let started = std::time::Instant::now();
        while open.iter().any(Option::is_some) && started.elapsed() < STATE_WAIT {
            for slot in open.iter_mut() {
                let Some(conn) = slot.as_mut() else { continue };
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        *slot = None;
                    }
                    Ok(_) => *slot = None,
                    Err(_) => {
                        let _ = conn.write_all(b" ").await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        answers
    });
    probes_answered(&bin, 45).await;
    let answers = trickle.await.expect("the slow senders");
    assert_eq!(answers.len(), SLOW, "every slow sender got an answer");
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 408"), "{a}");
        assert!(a.contains("application/problem+json"), "{a}");
        assert!(a.contains("urn:problem:data-api:body-timeout"), "{a}");
    }
    let text = scrape(&bin).await;
    assert_eq!(
        metric(&text, "http_server_active_requests", &[]),
        1.0,
        "only the scrape itself is in flight"
    );
    bin.stop().await;
}

/// Slow heads (a byte of the request line at a time) hold connections, not permits: with
/// `--max-in-flight 4`, 50 of them leave every probe answered. They are bounded by
/// `--max-connections` and `--idle-timeout` plus the request timeout (docs/OPERATIONS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_hold_no_permits() {
    let (bin, _dir) = start(&["--max-in-flight", "4"]);
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut conn = connect(&bin).await;
        conn.write_all(b"GET /data?li")
            .await
            .expect("part of a head");
        slow.push(conn);
    }
    wait_metric(&bin, "http_server_open_connections", &[], |v| v >= 50.0).await;
    probes_answered(&bin, 20).await;
    // Finished one at a time (all at once, most would meet the cap of 4 and get 503).
    for conn in &mut slow {
        conn.write_all(b"mit=1 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("rest of the head");
        let mut buf = [0u8; 16];
        let n = conn.read(&mut buf).await.expect("an answer");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "slow heads are served too"
        );
    }
    bin.stop().await;
}

/// Readers that never read a large answer hold no permit once it is handed over: with
/// `--max-in-flight 2`, four stalled readers of a 6 MB page leave every probe answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_answers_hold_no_permits() {
    let (bin, _dir) = start(&["--max-in-flight", "2", "--compression", "false"]);
    let client = reqwest::Client::new();
    let payload = json!({"blob": "x".repeat(60_000)});
    for k in 0..100 {
        let resp = client
            .post(bin.url("/data"))
            .json(&json!({"name": format!("big {k}"), "payload": payload}))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201);
    }
    let listed: serde_json::Value = client
        .get(bin.url("/data?limit=100"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let n = listed["items"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 100, "6 MB, more than socket buffers hold");
    let list_count = |text: &str| {
        metric(
            text,
            "http_server_request_duration_seconds_count",
            &["http_route=\"/data\"", "http_request_method=\"GET\""],
        )
    };
    let before = list_count(&scrape(&bin).await);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut conn = connect(&bin).await;
        conn.write_all(b"GET /data?limit=100 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("request");
        stalled.push(conn);
    }
    testkit::eventually("the stalled lists handled", || async {
        let n = list_count(&scrape(&bin).await);
        if n >= before + 4.0 { Ok(()) } else { Err(n) }
    })
    .await;
    probes_answered(&bin, 20).await;
    drop(stalled);
    bin.stop().await;
}

/// Two thousand idle keep-alive connections (each has made one request) leave every probe
/// answered, and the gauge counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_keep_alive_connections() {
    const IDLE: usize = 2_000;
    let (bin, _dir) = start(&["--max-in-flight", "8"]);
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut conn = connect(&bin).await;
        conn.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(conn);
    }
    wait_metric(&bin, "http_server_open_connections", &[], |v| {
        v >= IDLE as f64
    })
    .await;
    probes_answered(&bin, 45).await;
    drop(idle);
    bin.stop().await;
}
