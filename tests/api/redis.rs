//! The shared second level (`--redis-url`, `cache::shared`) on PostgreSQL with replicas on one
//! database and one Redis (a key prefix of their own): an item read from the database once is
//! answered from Redis to every other replica; writes through any replica, and from psql, are
//! never answered older from Redis; a stale value planted by hand is replaced by the next write;
//! a Redis that does not answer fails no request. Needs Redis (`TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`); skipped without it.

use redis::AsyncCommands;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually_body, metric, skip};

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
    let planted = format!("{epoch}:1:F:{{\"id\":{x},\"name\":\"planted\",\"version\":1}}");
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
