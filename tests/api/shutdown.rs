//! Graceful shutdown under load, against the real binary: on SIGTERM readiness turns 503 at
//! once, the listener closes (new connections are refused), every request whose head the
//! server had read completes, no acknowledged write is lost, and the process exits 0 within
//! the drain timeout.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Body, Client, Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The service binary on port 0 with its own SQLite file; `addr` parsed from its log.
struct Service {
    child: Child,
    addr: SocketAddr,
    _logs: std::thread::JoinHandle<()>,
}

impl Service {
    fn start(db_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_data-api"))
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url", db_url])
            .args(["--drain-timeout", "10s", "--access-log", "false"])
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the data-api binary");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let at = line.find("listening addr=")?;
                let rest = &line[at + "listening addr=".len()..];
                rest.split_whitespace().next()?.parse().ok()
            })
            .expect("the service logs its address");
        // Keep draining the log so the service never blocks on a full pipe.
        let logs = std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self {
            child,
            addr,
            _logs: logs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }
}

/// What the load saw: statuses of answered requests and transport errors.
#[derive(Default)]
struct Seen {
    statuses: Vec<StatusCode>,
    errors: Vec<String>,
    /// The highest version each item was acknowledged at.
    acked: Vec<(i64, i64)>,
}

/// Reads and replaces `ids` in a loop until `stop`, on one keep-alive client.
async fn load(base: String, ids: Vec<i64>, stop: Arc<AtomicBool>) -> Seen {
    let client = Client::new();
    let mut seen = Seen::default();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let id = ids[turn % ids.len()];
        turn += 1;
        let url = format!("{base}/data/{id}");
        let sent = if turn.is_multiple_of(3) {
            client
                .put(&url)
                .json(&json!({"name": format!("load {turn}")}))
                .send()
                .await
        } else {
            client.get(&url).send().await
        };
        match sent {
            Ok(resp) => {
                let status = resp.status();
                seen.statuses.push(status);
                if let Ok(body) = resp.json::<Value>().await
                    && let Some(v) = body["version"].as_i64()
                {
                    seen.acked.push((id, v));
                }
            }
            Err(e) => {
                seen.errors.push(format!("{e:?}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    seen
}

/// A raw connection that has sent part of a request head to `/health/ready`.
fn half_sent_ready_probe(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).expect("connecting");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"GET /health/ready HTTP/1.1\r\nHost: probe\r\n")
        .expect("writing");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("drain.db").display()
    );
    let mut svc = Service::start(&db_url);
    let client = Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = client
            .post(svc.url("/data"))
            .json(&json!({"name": format!("item {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        ids.push(resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }

    // Load from 8 keep-alive clients.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let mine = ids.iter().copied().skip(w).step_by(8).collect();
            tokio::spawn(load(svc.url(""), mine, stop.clone()))
        })
        .collect();
    // A create whose head and first half of body are sent before SIGTERM, the rest after.
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = Body::wrap_stream(tokio_stream_from(rx));
    tx.send(Ok(br#"{"name": "sent across "#.to_vec()))
        .await
        .unwrap();
    let slow = tokio::spawn(
        client
            .request(Method::POST, svc.url("/data"))
            .header("content-type", "application/json")
            .body(body)
            .send(),
    );
    let mut probe = half_sent_ready_probe(svc.addr);
    tokio::time::sleep(Duration::from_millis(300)).await;

    svc.sigterm();
    let signalled = Instant::now();

    // New connections are refused while the slow request is still in flight.
    let refused = loop {
        if TcpStream::connect_timeout(&svc.addr, Duration::from_millis(200)).is_err() {
            break true;
        }
        if signalled.elapsed() > Duration::from_secs(3) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused, "the listener still accepts after SIGTERM");

    // Readiness: the probe whose head was under way is answered 503 (readiness turns before
    // the listener closes).
    probe.write_all(b"\r\n").unwrap();
    let mut answer = String::new();
    let _ = probe.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "ready after SIGTERM: {answer}"
    );
    assert!(answer.contains("not-ready"), "{answer}");

    // The slow create completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(br#"the shutdown"}"#.to_vec())).await.unwrap();
    drop(tx);
    let created = slow
        .await
        .unwrap()
        .expect("the in-flight create was answered");
    assert_eq!(created.status(), 201, "in-flight create after SIGTERM");
    let created: Value = created.json().await.unwrap();

    stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for w in workers {
        let s = w.await.unwrap();
        seen.statuses.extend(s.statuses);
        seen.errors.extend(s.errors);
        seen.acked.extend(s.acked);
    }

    // Exit 0 within the drain timeout.
    let status = loop {
        if let Some(status) = svc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(12),
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");

    // Every answered request succeeded. The only failures allowed are connections the server
    // had not read from: refused ones, and idle keep-alive connections it closed just as the
    // client sent on them (hyper's IncompleteMessage; HTTP/1.1 clients retry those).
    assert!(
        seen.statuses.len() > 50,
        "the load ran: {}",
        seen.statuses.len()
    );
    let bad: Vec<_> = seen.statuses.iter().filter(|s| !s.is_success()).collect();
    assert!(
        bad.is_empty(),
        "answered with errors during the drain: {bad:?}"
    );
    for e in &seen.errors {
        assert!(
            e.contains("ConnectError") || e.contains("IncompleteMessage"),
            "unexpected transport error: {e}"
        );
    }

    // Nothing acknowledged was lost.
    let db = Database::connect(&db_url).await.unwrap();
    let version_of = |id: i64| {
        let db = &db;
        async move {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT version, name FROM data_items WHERE id = {id}"),
                ))
                .await
                .unwrap()
                .expect("row exists");
            row.try_get::<i64>("", "version").unwrap()
        }
    };
    for (id, v) in &seen.acked {
        assert!(version_of(*id).await >= *v, "item {id} lost version {v}");
    }
    let slow_id = created["id"].as_i64().unwrap();
    assert_eq!(version_of(slow_id).await, 1);
    db.close().await.unwrap();
}

/// A stream over a channel's receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
