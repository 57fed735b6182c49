//! Start-up's wait for the database (`--db-start-wait`): it outlasts a database that is not
//! there yet, gives up when the wait is over and says so, and does not wait out what waiting
//! cannot mend.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use data_api::{config::Settings, startup::App};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::helpers::{STATE_WAIT, TestApp, skip};

/// A port on 127.0.0.1 that nothing listens on, held (bound, never listening) for as long as the
/// socket lives: connections to it are refused, and no other test's server can be given it (a
/// port freed again could be, and the service's tries would land on that server).
fn closed_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("literal address"))
        .expect("bind a free port");
    let port = socket.local_addr().expect("local address").port();
    (socket, port)
}

/// The real binary, pointed at a port where no database listens, exits once its start wait is
/// over, having tried more than once, and says what it waited for.
#[tokio::test]
async fn start_gives_up_after_the_start_wait_and_says_so() {
    let (_held, port) = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_data-api"))
        .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url])
        .args(["--db-start-wait", "1s", "--db-acquire-timeout", "200ms"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STATE_WAIT, run)
        .await
        .expect("it gives up instead of waiting on")
        .expect("running data-api");
    assert!(!out.status.success(), "no database, no start");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no answer within --db-start-wait (1s,"),
        "{said}"
    );
    let tries: u32 = said
        .split("1s, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(tries >= 2, "it tried again before giving up: {said}");
}

/// A stand-in for a database that is still starting: the first `refuse` connections get what
/// PostgreSQL answers while it starts (SQLSTATE 57P03), every later one is forwarded to
/// `upstream`. Returns its port and how many connections it turned away. Must be called within
/// the tests' runtime.
fn late_database(upstream: String, refuse: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("address").port();
    let listener = TcpListener::from_std(listener).expect("a listener in the runtime");
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if counter.load(Ordering::SeqCst) < refuse {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = still_starting(&mut client).await;
                });
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, refused)
}

/// PostgreSQL's answer while it starts up: no TLS, then a FATAL 57P03 to the startup message.
async fn still_starting(client: &mut TcpStream) -> std::io::Result<()> {
    /// The code of an `SSLRequest` in place of a startup message's protocol version.
    const SSL_REQUEST: u32 = 80_877_103;
    let mut head = [0u8; 8];
    client.read_exact(&mut head).await?;
    let mut len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if u32::from_be_bytes([head[4], head[5], head[6], head[7]]) == SSL_REQUEST {
        client.write_all(b"N").await?;
        client.read_exact(&mut head[..4]).await?;
        len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        len = len.saturating_sub(4);
    } else {
        len = len.saturating_sub(8);
    }
    let mut rest = vec![0u8; len];
    client.read_exact(&mut rest).await?;
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P03"),
        (b'M', "the database system is starting up"),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut error = vec![b'E'];
    error.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    error.extend_from_slice(&fields);
    client.write_all(&error).await
}

/// `postgres://user@host:port/db` with its `host:port` replaced by 127.0.0.1:`port`; returns
/// the new URL and the old `host:port`.
fn through(url: &str, port: u16) -> (String, String) {
    let (scheme_user, rest) = url.split_once('@').expect("URL with a user");
    let (host_port, path) = rest.split_once('/').expect("URL with a database");
    (
        format!("{scheme_user}@127.0.0.1:{port}/{path}"),
        host_port.to_owned(),
    )
}

/// PostgreSQL that answers "starting up" to the service's first 20 connections, more than one
/// acquire timeout's worth (the pool's own retries give up within it): start-up tries again and
/// starts, and then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_outlasts_a_database_that_is_not_there_yet() {
    const REFUSE: usize = 20;
    let mut proxy = None;
    let Some(app) = TestApp::postgres(|s: &mut Settings| {
        let (_, upstream) = through(&s.db.url, 0);
        let (port, refused) = late_database(upstream, REFUSE);
        proxy = Some(refused);
        s.db.url = through(&s.db.url, port).0;
        s.db.start_wait = STATE_WAIT;
        s.db.acquire_timeout = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let refused = proxy.expect("proxy started");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        REFUSE,
        "every refusal was met"
    );
    let created = app.create(json!({"name": "after the wait"})).await;
    let id = created["id"].as_i64().expect("id");
    assert_eq!(app.get(&format!("/data/{id}")).await.status(), 200);
    app.stop().await;
}

/// A database that does not exist will not appear by waiting: with an hour's start wait, the
/// start still fails at once, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_does_not_wait_out_a_missing_database() {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        skip("TEST_DATABASE_URL is not set (PostgreSQL tests need it)");
        return;
    };
    let (server, _) = admin.rsplit_once('/').expect("URL with a database");
    let url = format!("{server}/dataapi_missing_{}", rand::random::<u64>());
    let mut settings = Settings::defaults_for(&url);
    settings.server.bind = "127.0.0.1:0".parse().expect("literal address");
    settings.db.start_wait = Duration::from_secs(3_600);
    let built = tokio::time::timeout(STATE_WAIT, App::build(settings))
        .await
        .expect("the start ends without waiting out the hour");
    let err = format!("{:#}", built.err().expect("no database, no start"));
    assert!(err.contains("does not exist"), "{err}");
}
