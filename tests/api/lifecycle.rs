//! Health probes, shutdown and start-up behaviour.

use std::time::Duration;

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(health_probes_answer, shutdown_stops_accepting);

async fn health_probes_answer(app: &TestApp) {
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

async fn shutdown_stops_accepting(app: &TestApp) {
    let mut other = TestApp::start_like(app, |_| {}).await;
    assert_eq!(other.get("/health/ready").await.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), other.shutdown())
        .await
        .expect("stops within the drain timeout")
        .expect("stops cleanly");
    let refused = other.client.get(other.url("/health/live")).send().await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

/// PostgreSQL only: when its database disappears, readiness turns 503 (problem+json), reads
/// that need the database answer 503 with Retry-After, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_gives_503_not_500() {
    let Some(app) = TestApp::postgres(|s| {
        s.db.acquire_timeout = Duration::from_millis(300);
        s.server.ready_timeout = Duration::from_millis(500);
        s.cache.capacity = 0;
    })
    .await
    else {
        return;
    };
    assert_eq!(app.get("/health/ready").await.status(), 200);
    let url = app.database_url().to_owned();
    let (server, name) = url.rsplit_once('/').unwrap();
    let admin = sea_orm::Database::connect(format!("{server}/postgres"))
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(5), app.get("/health/ready"))
        .await
        .expect("no hang");
    problem(ready, 503).await;
    let read = tokio::time::timeout(Duration::from_secs(5), app.get("/data/1"))
        .await
        .expect("no hang");
    assert!(read.headers().contains_key("retry-after"));
    problem(read, 503).await;
    let _ = admin.close().await;
    app.stop().await;
}

/// Standbys need a PostgreSQL primary: with SQLite the service refuses to start, and says why.
#[test]
fn read_urls_without_postgres_refuse_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_data-api"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "sqlite::memory:",
            "--database-read-url",
            "postgres://postgres@127.0.0.1:1/postgres",
        ])
        .output()
        .expect("running data-api");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--database-read-url needs PostgreSQL as the primary"),
        "{said}"
    );
}

/// SQLite: the write-ahead log is copied into the database file while the service runs. SQLite
/// does that by itself only for statements stepped to their end, which sqlx does not do for our
/// `… RETURNING` writes: without the service's own checkpoint the file stayed at its first
/// pages and the log grew with every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_ahead_log_is_checkpointed() {
    let app = TestApp::sqlite(|_| {}).await;
    let path = app
        .settings
        .db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .map(std::path::PathBuf::from)
        .expect("a file path");
    let blob = "x".repeat(20_000);
    for k in 0..100 {
        app.create(serde_json::json!({"name": format!("w {k}"), "payload": {"blob": blob}}))
            .await;
    }
    let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    // No-hang guard: the checkpoint runs every second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while size() < 2_000_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "2 MB written, the database file still {} bytes: the log is not checkpointed",
            size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
