//! `TestApp`: the real service on port 0 against a database of its own (a fresh SQLite file, or a
//! fresh PostgreSQL database when `TEST_DATABASE_URL` is set), plus a small HTTP client.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use data_api::{config::Settings, startup::App};
use reqwest::{Client, Method, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use testkit::cluster::{Cluster, primary_and_standby};
use testkit::eventually;
pub use testkit::{STATE_WAIT, prom::metric};
use tokio::{sync::oneshot, task::JoinHandle};

/// Runs `$name(app)` once per backend: `sqlite` always, `postgres` when `TEST_DATABASE_URL` is set
/// (otherwise it reports that it was skipped). `on_both_backends!(with tweak: a, b)` starts each
/// app with the settings changed by `tweak`, a function of the calling module.
#[macro_export]
macro_rules! on_both_backends {
    (with $tweak:ident: $($name:ident),* $(,)?) => {
        $crate::on_both_backends!(@ super::$tweak; $($name),*);
    };
    (@ $tweak:path; $($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::sqlite($tweak).await;
                super::$name(&app).await;
                app.stop().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = $crate::helpers::TestApp::postgres($tweak).await else { return };
                super::$name(&app).await;
                app.stop().await;
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        $crate::on_both_backends!(@ $crate::helpers::as_configured; $($name),*);
    };
}

/// The settings as the tests configure them, unchanged (`on_both_backends!` without a tweak).
pub fn as_configured(_: &mut Settings) {}

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

/// Why tests were skipped, for the summary printed when the test binary exits.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Says on the real stderr (not captured by the test harness) that a test was skipped, and
/// counts it for the one-line summary at the end of the run.
pub fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {why}",
        std::thread::current().name().unwrap_or("?")
    );
    static SUMMARY: std::sync::Once = std::sync::Once::new();
    // After the harness's own result line, when the binary exits.
    // SAFETY: registers a plain `extern "C" fn` that takes no arguments.
    SUMMARY.call_once(|| unsafe {
        libc::atexit(print_skipped);
    });
    if let Ok(mut skipped) = SKIPPED.lock() {
        skipped.push(why.to_owned());
    }
}

/// `api tests: N skipped (reason: count; …)`.
extern "C" fn print_skipped() {
    let Ok(skipped) = SKIPPED.lock() else { return };
    let mut by_reason = std::collections::BTreeMap::<&str, usize>::new();
    for why in skipped.iter() {
        *by_reason.entry(why).or_default() += 1;
    }
    let reasons: Vec<String> = by_reason
        .iter()
        .map(|(why, n)| format!("{why}: {n}"))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "api tests: {} skipped ({})",
        skipped.len(),
        reasons.join("; ")
    );
}

/// Settings for tests: the documented defaults (never the environment's), port 0, small
/// pools, and gauges sampled often so tests can wait on them.
fn test_settings(url: &str) -> Settings {
    let mut s = Settings::defaults_for(url);
    s.server.bind = "127.0.0.1:0".parse().expect("literal address");
    s.db.max_connections = Some(4);
    s.db.min_connections = Some(0);
    s.server.drain_timeout = Duration::from_secs(5);
    s.metrics.interval = Duration::from_millis(50);
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
        &self.settings.db.url
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

    /// The Prometheus text from `/metrics` (on its own port if it has one).
    pub async fn scrape(&self) -> String {
        let url = match self.metrics_port {
            Some(port) => format!("http://127.0.0.1:{port}/metrics"),
            None => self.url("/metrics"),
        };
        let resp = self.client.get(url).send().await.expect("scrape sent");
        assert_eq!(resp.status(), 200, "scrape");
        resp.text().await.expect("metrics text")
    }

    /// Polls `/metrics` until `name{labels}` satisfies `ok`; returns the value. Tests wait on
    /// the service's own state this way instead of sleeping and hoping.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[&str],
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let what = format!("{name}{labels:?}");
        eventually(&what, || async {
            let v = metric(&self.scrape().await, name, labels);
            if ok(v) { Ok(v) } else { Err(v) }
        })
        .await
    }

    /// The app on a throwaway primary, reading from a hot standby of it (`tweak` adjusts the
    /// settings further), once the standby serves; `None` (reported as skipped) where no
    /// cluster can be made here. The clusters are returned so they live as long as the test.
    pub async fn with_a_standby(
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<(Self, Arc<Cluster>, Arc<Cluster>)> {
        let (primary, standby) = match primary_and_standby("-c hot_standby=on").await {
            Ok(pair) => pair,
            Err(why) => {
                skip(&format!("no throwaway PostgreSQL cluster: {why}"));
                return None;
            }
        };
        let app = Self::on_url(&primary.url(), |s| {
            s.db.read_urls = vec![standby.url()];
            tweak(s);
        })
        .await;
        let serving = ["state=\"serving\"", "pool=\"standby-0\""];
        app.wait_for_metric("db_replica_state", &serving, |v| v == 1.0)
            .await;
        Some((app, primary, standby))
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

/// The real `data-api` binary, serving on a free port with JSON logs on stdout, every line
/// kept. Killed when dropped, so a failing test leaves no process behind.
pub struct Binary {
    child: Option<Child>,
    pub addr: SocketAddr,
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Binary {
    /// Starts `data-api serve` with `args` (after `--bind 127.0.0.1:0 --log-format json`) and
    /// `env` (after `RUST_LOG=info`; the OpenTelemetry variables of the test's own environment
    /// are removed); waits until it logs its address.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_data-api"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the data-api binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        // Reads every line (so the service never blocks on a full pipe) and reports the address.
        let logs = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "listening"
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = addr_tx.send(addr.to_owned());
                }
                lines.push(line);
            }
            lines
        });
        let mut bin = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs: Some(logs),
        };
        bin.addr = addr_rx
            .recv_timeout(STATE_WAIT)
            .ok()
            .and_then(|a| a.parse().ok())
            .expect("the service logs its address");
        bin
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().map_or(0, Child::id);
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()?
            .try_wait()
            .expect("waiting on the child")
    }

    /// SIGTERM, then the exit status must be 0; returns every log line.
    pub async fn stop(mut self) -> Vec<String> {
        self.sigterm();
        let mut child = self.child.take().expect("running");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("wait task")
            .expect("exit status");
        assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
        self.logs
            .take()
            .map(|l| l.join().expect("log reader"))
            .unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `pg_trigger.tgenabled` of the notifying trigger on the database at `url`: `O` enabled, `D`
/// disabled.
pub async fn notify_trigger_state(url: &str) -> String {
    let db = sea_orm::Database::connect(url).await.expect("connect");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT tgenabled::text AS state FROM pg_trigger WHERE tgname = 'data_items_notify'",
        ))
        .await
        .expect("pg_trigger")
        .expect("the trigger exists");
    let _ = db.close().await;
    row.try_get("", "state").expect("state")
}

/// `GET path` until its body satisfies `ok` (a 404 reads as null).
pub async fn eventually_body(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) {
    testkit::eventually(path, || async {
        let resp = app.get(path).await;
        let body = match resp.status().as_u16() {
            404 => Value::Null,
            _ => resp.json().await.unwrap_or(Value::Null),
        };
        if ok(&body) { Ok(()) } else { Err(body) }
    })
    .await;
}
