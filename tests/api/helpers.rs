//! `TestApp`: the real service on port 0 against a database of its own (a fresh SQLite file, or a
//! fresh PostgreSQL database when `TEST_DATABASE_URL` is set), plus a small HTTP client.

use std::io::Write;

use data_api::{config::Settings, startup::App};
use reqwest::{Client, Method, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

/// Runs `$name(app)` once per backend: `sqlite` always, `postgres` when `TEST_DATABASE_URL` is set
/// (otherwise it reports that it was skipped).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::sqlite(|_| {}).await;
                super::$name(&app).await;
                app.stop().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = $crate::helpers::TestApp::postgres(|_| {}).await else { return };
                super::$name(&app).await;
                app.stop().await;
            }
        }
    )*};
}

/// A running service and what it needs to be cleaned up.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub settings: Settings,
    /// The port of `/metrics` when it has an address of its own.
    pub metrics_port: Option<u16>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    pg_drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// Says on the real stderr (not captured by the test harness) that a test was skipped.
pub fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {why}",
        std::thread::current().name().unwrap_or("?")
    );
}

/// `tool` on the `PATH`, for tests that drive an outside program.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Settings for tests: port 0, quiet, small pools.
fn test_settings(url: &str) -> Settings {
    let mut s = Settings::defaults_for(url);
    s.bind = "127.0.0.1:0".parse().expect("literal address");
    s.db.db_max_connections = Some(4);
    s.db.db_min_connections = Some(0);
    s.http.drain_timeout = std::time::Duration::from_secs(5);
    // Hermetic: no export even if the environment names a collector.
    s.trace.otlp_endpoint = None;
    s
}

impl TestApp {
    /// The app on a fresh SQLite file, after `tweak` adjusts the settings.
    pub async fn sqlite(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let mut settings = test_settings(&url);
        tweak(&mut settings);
        let mut app = Self::start(settings).await;
        app._dir = Some(dir);
        app
    }

    /// The app on a fresh PostgreSQL database, or `None` (reported as skipped) without
    /// `TEST_DATABASE_URL`.
    pub async fn postgres(tweak: impl FnOnce(&mut Settings)) -> Option<Self> {
        let (admin, url, name) = fresh_pg_database().await?;
        let mut settings = test_settings(&url);
        tweak(&mut settings);
        let mut app = Self::start(settings).await;
        app.pg_drop = Some((admin, name));
        Some(app)
    }

    /// The app on a database the test provides itself (it is not dropped afterwards).
    pub async fn on_url(url: &str, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings(url);
        tweak(&mut settings);
        Self::start(settings).await
    }

    async fn start(settings: Settings) -> Self {
        let app = App::build(settings.clone()).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let metrics_port = app.metrics_port();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        Self {
            base,
            client: Client::builder().build().expect("client"),
            settings,
            metrics_port,
            shutdown: Some(tx),
            server: Some(server),
            pg_drop: None,
            _dir: None,
        }
    }

    /// Signals shutdown and waits for the server to drain and stop.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }

    /// Another app on the same database as `other`, with tweaked settings.
    pub async fn start_like(other: &TestApp, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = other.settings.clone();
        tweak(&mut settings);
        Self::start(settings).await
    }

    /// Stops the server, leaving its database to the app it shares it with.
    pub async fn stop_shared(mut self) {
        self.shutdown().await.expect("server stops cleanly");
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        self.shutdown().await.expect("server stops cleanly");
        if let Some((admin, name)) = self.pg_drop.take()
            && let Ok(db) = Database::connect(admin.as_str()).await
        {
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            let _ = db.close().await;
        }
    }

    /// The database URL the app uses.
    pub fn database_url(&self) -> &str {
        &self.settings.database_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates `n` items named `{prefix} {k}`; returns their ids in creation order.
    pub async fn create_many(&self, n: usize, prefix: &str) -> Vec<i64> {
        let mut ids = Vec::with_capacity(n);
        for k in 0..n {
            let item = self
                .create(serde_json::json!({"name": format!("{prefix} {k}")}))
                .await;
            ids.push(item["id"].as_i64().expect("an id"));
        }
        ids
    }

    /// A separate single-connection handle on the app's database (to hold locks from outside).
    pub async fn outside_connection(&self) -> sea_orm::DatabaseConnection {
        let mut opts = sea_orm::ConnectOptions::new(self.database_url().to_owned());
        opts.max_connections(1)
            .min_connections(1)
            .sqlx_logging(false);
        Database::connect(opts).await.expect("outside connection")
    }

    /// Creates an item and returns its body.
    pub async fn create(&self, body: Value) -> Value {
        let resp = self.send_json(Method::POST, "/data", &body).await;
        assert_eq!(resp.status(), 201, "create {body}");
        resp.json().await.expect("json body")
    }
}

/// Creates a uniquely named database on the `TEST_DATABASE_URL` server; returns the admin URL,
/// the new database's URL and its name.
async fn fresh_pg_database() -> Option<(String, String, String)> {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        skip("TEST_DATABASE_URL is not set (PostgreSQL tests need it)");
        return None;
    };
    let name = format!("dataapi_t_{}", rand::random::<u64>());
    let db = Database::connect(admin.as_str())
        .await
        .expect("connect to TEST_DATABASE_URL");
    db.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    let _ = db.close().await;
    let (server, _) = admin
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL has a database path");
    Some((admin.clone(), format!("{server}/{name}"), name))
}

/// Reads a problem+json body, checking the media type and the status inside.
pub async fn problem(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ct, "application/problem+json", "content type");
    let body: Value = resp.json().await.expect("problem body");
    assert_eq!(body["status"], status, "status in body: {body}");
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "type: {body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title: {body}"
    );
    body
}
