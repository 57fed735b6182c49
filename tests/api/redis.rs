//! The shared second level (`--redis-url`, `cache::shared`) on PostgreSQL with replicas on one
//! database and one Redis (a key prefix of their own): an item read from the database once is
//! answered from Redis to every other replica; writes through any replica, and from psql, are
//! never answered older from Redis; a stale value planted by hand is replaced by the next write;
//! a Redis that does not answer fails no request. Needs Redis (`TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`); skipped without it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use redis::AsyncCommands;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually_body, metric, skip};
use testkit::proxy::pausing_proxy;

const ITEMS: usize = 60;
const SELECTS: &str = "db_operation_name=\"select\"";
const REDIS_HIT: &str = "result=\"hit\"";

/// A reachable Redis and a key prefix of this test's own, or `None` (skipped).
async fn redis() -> Option<(String, String, redis::aio::MultiplexedConnection)> {
    let url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let connecting = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
        Some(conn)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), connecting).await {
        Ok(Some(conn)) => {
            let prefix = format!("data-api-test-{:x}:", rand::random::<u64>());
            Some((url, prefix, conn))
        }
        _ => {
            skip(&format!("no Redis at {url} (set TEST_REDIS_URL)"));
            None
        }
    }
}

/// Deletes every key under `prefix`.
async fn clean(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = conn.del(keys).await;
    }
}

fn with_redis(url: &str, prefix: &str) -> impl FnOnce(&mut data_api::config::Settings) {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    move |s| {
        s.cache.redis_url = Some(url);
        s.cache.redis_prefix = prefix;
        s.cache.redis_timeout = std::time::Duration::from_millis(200);
        s.cache.ttl = std::time::Duration::from_secs(3600);
    }
}

/// Another replica on the database at `db_url` with the Redis at `url`, holding its lease.
async fn replica(db_url: &str, url: &str, prefix: &str) -> TestApp {
    let app = TestApp::on_url(db_url, with_redis(url, prefix)).await;
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    app
}

async fn body(app: &TestApp, path: &str) -> Value {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_database_read_per_item_for_the_fleet_and_never_an_older_version() {
    let Some((url, prefix, mut conn)) = redis().await else {
        return;
    };
    let Some(a) = TestApp::postgres(with_redis(&url, &prefix)).await else {
        return;
    };
    let text = a.scrape().await;
    for family in crate::metrics::REDIS_FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} declared"
        );
    }
    let page = a
        .get("/dashboard/data")
        .await
        .text()
        .await
        .expect("dashboard data");
    assert!(
        page.contains("Redis: the replicas' shared second level"),
        "the Redis row"
    );
    let db_url = a.settings.db.url.clone();
    a.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    let b = replica(&db_url, &url, &prefix).await;
    let ids = a.create_many(ITEMS, "shared").await;
    let paths: Vec<String> = ids.iter().map(|id| format!("/data/{id}")).collect();
    // B reads every item once: from Redis (the creates went through) or, at worst, the database.
    for p in &paths {
        body(&b, p).await;
    }
    // A third replica, cold, reads them all from Redis: not one database read.
    let c = replica(&db_url, &url, &prefix).await;
    let before = metric(
        &c.scrape().await,
        "db_client_operation_duration_seconds_count",
        &[SELECTS],
    );
    for p in &paths {
        body(&c, p).await;
    }
    let text = c.scrape().await;
    assert_eq!(
        metric(
            &text,
            "db_client_operation_duration_seconds_count",
            &[SELECTS]
        ) - before,
        0.0,
        "the cold replica read the database"
    );
    assert_eq!(
        metric(&text, "cache_redis_lookups_total", &[REDIS_HIT]),
        ITEMS as f64
    );

    // A write through A: B and C, whose own caches and Redis held the old version, answer the
    // new one (their own caches hear the feed; Redis got it before A answered).
    let (x, x_path) = (ids[0], &paths[0]);
    let resp = a
        .send_json(Method::PUT, x_path, &json!({"name": "second"}))
        .await;
    assert_eq!(resp.status(), 200);
    let d = replica(&db_url, &url, &prefix).await;
    assert_eq!(body(&d, x_path).await["name"], "second", "cold replica");
    for app in [&b, &c] {
        eventually_body(app, x_path, |v| v["name"] == "second").await;
    }

    // A stale value planted by hand (the first version, in the current epoch): the next
    // acknowledged write replaces it, and no replica answers it after that.
    let key = format!("{prefix}item:{x}");
    let current: Vec<u8> = conn.get(&key).await.expect("the entry");
    let epoch = String::from_utf8_lossy(&current)
        .split(':')
        .next()
        .unwrap_or("0")
        .to_owned();
    let planted = format!("{epoch}:{x}:1:F:{{\"id\":{x},\"name\":\"planted\",\"version\":1}}");
    let _: () = conn.set(&key, planted).await.expect("planted");
    let resp = b
        .send_json(Method::PUT, x_path, &json!({"name": "third"}))
        .await;
    assert_eq!(resp.status(), 200);
    let e = replica(&db_url, &url, &prefix).await;
    assert_eq!(body(&e, x_path).await["name"], "third", "after the plant");

    // A write from psql: every replica's feed floors Redis; a cold replica reads the new row.
    let y_path = &paths[1];
    let admin = Database::connect(db_url.as_str()).await.expect("psql");
    admin
        .execute_unprepared(&format!(
            "UPDATE data_items SET name = 'from psql' WHERE id = {}",
            ids[1]
        ))
        .await
        .expect("update");
    let _ = admin.close().await;
    for app in [&a, &b, &c, &d, &e] {
        eventually_body(app, y_path, |v| v["name"] == "from psql").await;
    }
    let f = replica(&db_url, &url, &prefix).await;
    assert_eq!(
        body(&f, y_path).await["name"],
        "from psql",
        "cold, after psql"
    );

    // A delete: final everywhere, from Redis too.
    let z_path = &paths[2];
    assert_eq!(
        a.request(Method::DELETE, z_path)
            .send()
            .await
            .expect("sent")
            .status(),
        204
    );
    let g = replica(&db_url, &url, &prefix).await;
    assert_eq!(g.get(z_path).await.status(), 404);

    for app in [g, f, e, d, c, b] {
        app.stop_shared().await;
    }
    a.stop().await;
    clean(&mut conn, &prefix).await;
}

/// Redis that never answers (a listening socket that reads nothing): every read is answered
/// from the database within the timeouts, the errors are counted and the breaker opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_fails_no_request() {
    let (addr, _forwarding) = silent().await;
    let url = format!("redis://{addr}/");
    let Some(app) = TestApp::postgres(with_redis(&url, "silent:")).await else {
        return;
    };
    app.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    let ids = app.create_many(20, "silent").await;
    // A cold replica: its every miss asks Redis first.
    let cold = TestApp::on_url(&app.settings.db.url.clone(), with_redis(&url, "silent:")).await;
    cold.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    for id in &ids {
        assert_eq!(body(&cold, &format!("/data/{id}")).await["id"], *id);
    }
    let text = cold.scrape().await;
    assert!(metric(&text, "cache_redis_errors_total", &["operation=\"get\""]) >= 1.0);
    assert!(metric(&text, "cache_redis_lookups_total", &["result=\"skipped\""]) >= 1.0);
    assert_eq!(metric(&text, "cache_redis_usable", &[]), 0.0);
    cold.stop_shared().await;
    app.stop().await;
}

/// A TCP listener that accepts and never answers.
async fn silent() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A throwaway `redis-server` on a free port (never the shared one: this one is stopped,
/// flushed and restarted), or `None` (skipped) where `redis-server` is not installed.
pub(crate) struct Throwaway {
    pub(crate) port: u16,
    child: std::process::Child,
}

impl Throwaway {
    pub(crate) fn start(port: Option<u16>) -> Option<Self> {
        let Some(bin) = testkit::tools::which("redis-server", &[]) else {
            skip("redis-server is not installed (Debian package `redis-server`)");
            return None;
        };
        let port = port.unwrap_or_else(|| testkit::tools::free_port().expect("a free port"));
        let child = std::process::Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        Some(Self { port, child })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("url");
        testkit::eventually("throwaway redis answers", || async {
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every item in `ids`, read through a replica started cold on Redis at `url`, has the version
/// the database has: nothing older came out of Redis.
async fn fresh_through_redis(db_url: &str, url: &str, ids: &[i64], phase: &str) {
    let cold = replica(db_url, url, "faults:").await;
    let db = Database::connect(db_url).await.expect("db");
    for id in ids {
        let answer = cold.get(&format!("/data/{id}")).await;
        let status = answer.status().as_u16();
        let answered = if status == 200 {
            answer.json::<Value>().await.expect("json")["version"].as_i64()
        } else {
            None
        };
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT version FROM data_items WHERE id = {id}"),
            ))
            .await
            .expect("select");
        let stored: Option<i64> = row.map(|r| r.try_get("", "version").expect("version"));
        assert_eq!(answered, stored, "{phase}: item {id} (status {status})");
    }
    let _ = db.close().await;
    cold.stop_shared().await;
}

/// Writes every item of `ids` through `apps` in turn; each write answers 200.
async fn write_all(apps: &[&TestApp], ids: &[i64], name: &str) {
    for (k, id) in ids.iter().enumerate() {
        let app = apps[k % apps.len()];
        let resp = app
            .send_json(Method::PUT, &format!("/data/{id}"), &json!({"name": name}))
            .await;
        assert_eq!(resp.status(), 200, "{name}: item {id}");
    }
}

/// The fault phases of the issue, each followed by a cold replica's reads through Redis that
/// must match the database: a replica cut off from Redis while the others write; Redis stopped
/// (SIGSTOP) past the timeout; `FLUSHALL` between writes; Redis restarted empty. Requests never
/// fail because of Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_never_serve_an_older_version() {
    let Some(server) = Throwaway::start(None) else {
        return;
    };
    let mut admin = server.conn().await;
    let flowing = Arc::new(AtomicBool::new(true));
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let proxied = format!(
        "redis://{}/",
        pausing_proxy(upstream, flowing.clone()).await
    );
    let url = server.url();
    let Some(a) = TestApp::postgres(with_redis(&proxied, "faults:")).await else {
        return;
    };
    a.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
        .await;
    let db_url = a.settings.db.url.clone();
    let b = replica(&db_url, &url, "faults:").await;
    let ids = a.create_many(30, "faults").await;
    for id in &ids {
        body(&b, &format!("/data/{id}")).await;
    }
    fresh_through_redis(&db_url, &url, &ids, "warm").await;

    // A cut off from Redis while both write: A's write-throughs time out; B floors them.
    flowing.store(false, Ordering::Relaxed);
    write_all(&[&a, &b], &ids, "cut off").await;
    a.wait_for_metric("cache_redis_usable", &[], |v| v == 0.0)
        .await;
    fresh_through_redis(&db_url, &url, &ids, "A cut off").await;
    flowing.store(true, Ordering::Relaxed);
    // A pays its debt (an epoch bump) before it uses Redis again.
    testkit::eventually("A uses Redis again", || async {
        let resp = a.get(&format!("/data/{}", ids[0])).await;
        let text = a.scrape().await;
        match (
            resp.status().as_u16(),
            metric(&text, "cache_redis_usable", &[]),
        ) {
            (200, 1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Redis stopped past the timeout: every request still answers.
    server.signal(libc::SIGSTOP);
    write_all(&[&a, &b], &ids, "stopped").await;
    for id in &ids {
        body(&a, &format!("/data/{id}")).await;
    }
    server.signal(libc::SIGCONT);
    fresh_through_redis(&db_url, &url, &ids, "after SIGSTOP").await;

    // FLUSHALL between writes: the epoch key goes too; nothing older comes back.
    write_all(&[&a, &b], &ids[..10], "before flush").await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .expect("flushall");
    write_all(&[&b, &a], &ids, "after flush").await;
    fresh_through_redis(&db_url, &url, &ids, "after FLUSHALL").await;

    // Restarted empty, on the same port, with writes while it was down.
    let port = server.port;
    drop(server);
    write_all(&[&a, &b], &ids, "while down").await;
    let server = Throwaway::start(Some(port)).expect("restarts");
    let _ = server.conn().await;
    write_all(&[&b, &a], &ids[..10], "after restart").await;
    fresh_through_redis(&db_url, &url, &ids, "after restart").await;

    b.stop_shared().await;
    a.stop().await;
}
