//! `loadtests compare`: one command that starts the release service on 127.0.0.1 (SQLite or
//! PostgreSQL, cache on and/or off), seeds it, runs the scenarios, scrapes `/metrics` before and
//! after each, and prints one table. `--save-baseline` writes the results as JSON; `--baseline`
//! compares against such a file and exits non-zero when throughput drops or p99 rises beyond
//! `--tolerance`, or when any request failed.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use goose::{config::GooseConfiguration, metrics::GooseMetrics, prelude::*};
use serde::{Deserialize, Serialize};

use testkit::balancer::Balancer;

use crate::{fleet, scenarios};

/// Start the service, seed it, run the scenarios, print one table.
#[derive(Debug, Parser)]
#[command(name = "loadtests compare")]
struct Args {
    /// Database: `sqlite` (a temporary file) or `postgres` (a temporary database).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    db: Backend,
    /// PostgreSQL server to create the temporary database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Cache setting(s) to run with: `on`, `off` or `both`.
    #[arg(long, value_enum, default_value_t = CacheRuns::Both)]
    cache: CacheRuns,
    /// Scenarios to run, comma-separated.
    #[arg(long, default_value = "read_hot,read_cold,mixed,write,lifecycle")]
    scenarios: String,
    /// Items seeded before measuring (ids 1..=N).
    #[arg(long, default_value_t = 20_000)]
    items: u64,
    /// Size of the hot id set (fits the cache).
    #[arg(long, default_value_t = 100)]
    hot: u64,
    /// Concurrent goose users.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Seconds each scenario runs after ramp-up.
    #[arg(long, default_value_t = 10)]
    run_time: usize,
    /// Total requests per second across users (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    throttle: usize,
    /// The data-api binary (built with `cargo build --release` if missing).
    #[arg(long, default_value = "target/release/data-api")]
    bin: String,
    /// Write the results to this JSON file.
    #[arg(long)]
    save_baseline: Option<String>,
    /// Compare with this JSON file; exit 1 on a regression.
    #[arg(long)]
    baseline: Option<String>,
    /// Allowed relative drop in requests/s and rise in p99 (0.25 = 25 %).
    #[arg(long, default_value_t = 0.25)]
    tolerance: f64,
    /// Replicas of the service (PostgreSQL only), behind nginx; with the cache on, the run ends
    /// with a probe of cross-replica staleness.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    replicas: u16,
    /// Changes the staleness probe makes (with `--replicas` above 1).
    #[arg(long, default_value_t = 200)]
    probes: usize,
}

/// Which database the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A temporary database on `--postgres-url`'s server.
    Postgres,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Which cache settings to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CacheRuns {
    On,
    Off,
    Both,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub db: String,
    pub cache: String,
    pub scenario: String,
    pub requests: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
    /// Server-side hit ratio from `/metrics` during the run; `None` when no lookups happened.
    pub hit_ratio: Option<f64>,
}

/// Runs the comparison; `argv` starts with `compare`.
pub async fn run(argv: Vec<String>) -> anyhow::Result<()> {
    let args = Args::parse_from(argv);
    if args.replicas > 1 && args.db != Backend::Postgres {
        bail!("--replicas needs --db postgres: SQLite serves one process");
    }
    ensure_binary(&args.bin)?;
    let caches: &[&str] = match args.cache {
        CacheRuns::Both => &["on", "off"],
        CacheRuns::On => &["on"],
        CacheRuns::Off => &["off"],
    };
    let wanted: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    scenarios::configure(scenarios::Params {
        max_id: i64::try_from(args.items).context("--items is too large")?,
        hot_ids: i64::try_from(args.hot).context("--hot is too large")?,
        ..scenarios::Params::from_env()
    });
    let mut rows = Vec::new();
    for &cache in caches {
        let server = Server::start(&args, cache == "on")?;
        server.wait_ready().await?;
        for name in &wanted {
            let before = server.scrape().await?;
            let metrics = attack(&server.base, name, &args).await?;
            let after = server.scrape().await?;
            let row = row(
                args.db.as_str(),
                cache,
                name,
                &metrics,
                hit_ratio(&before, &after),
            );
            print_row(&row, rows.is_empty());
            rows.push(row);
        }
        if args.replicas > 1 && cache == "on" {
            let s = fleet::probe(&server.replicas, args.items, args.probes).await?;
            println!(
                "cross-replica staleness ({} replicas, cache on): a change acknowledged by one \
                 replica was answered by another after p50 {:?}, p99 {:?}, max {:?} ({} probes)",
                args.replicas, s.p50, s.p99, s.max, s.probes
            );
        }
        server.stop();
    }
    if let Some(path) = &args.save_baseline {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {path}"))?;
        println!("baseline saved to {path}");
    }
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let base: Vec<Row> =
            serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
        let failures = gate(&base, &rows, args.tolerance);
        if !failures.is_empty() {
            for f in &failures {
                eprintln!("REGRESSION {f}");
            }
            bail!("{} regression(s) against {path}", failures.len());
        }
        println!(
            "no regression against {path} (tolerance {:.0} %)",
            args.tolerance * 100.0
        );
    }
    if rows.iter().any(|r| r.errors > 0) {
        bail!("some requests failed; see the errors column");
    }
    Ok(())
}

/// Regressions of `now` against `base`, matched by db, cache and scenario.
pub fn gate(base: &[Row], now: &[Row], tolerance: f64) -> Vec<String> {
    let mut failures = Vec::new();
    for n in now {
        let Some(b) = base
            .iter()
            .find(|b| b.db == n.db && b.cache == n.cache && b.scenario == n.scenario)
        else {
            continue;
        };
        if n.rps < b.rps * (1.0 - tolerance) {
            failures.push(format!(
                "{} {} cache {}: {:.0} req/s, baseline {:.0}",
                n.db, n.scenario, n.cache, n.rps, b.rps
            ));
        }
        if n.p99_ms > b.p99_ms * (1.0 + tolerance) {
            failures.push(format!(
                "{} {} cache {}: p99 {:.2} ms, baseline {:.2}",
                n.db, n.scenario, n.cache, n.p99_ms, b.p99_ms
            ));
        }
    }
    failures
}

async fn attack(host: &str, scenario: &str, args: &Args) -> anyhow::Result<GooseMetrics> {
    let Some(s) = scenarios::all()?.into_iter().find(|s| &*s.name == scenario) else {
        bail!("no scenario named {scenario}");
    };
    let mut attack = GooseAttack::initialize_with_config(GooseConfiguration::default())?
        .register_scenario(s)
        .set_default(GooseDefault::Host, host)?
        .set_default(GooseDefault::Users, args.users)?
        .set_default(GooseDefault::IncreaseRate, args.users.to_string().as_str())?
        .set_default(GooseDefault::RunTime, args.run_time)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::Quiet, 1)?
        .set_default(GooseDefault::NoTelnet, true)?;
    if args.throttle > 0 {
        attack = attack.set_default(GooseDefault::ThrottleRequests, args.throttle)?;
    }
    Ok(attack.execute().await?)
}

fn row(db: &str, cache: &str, scenario: &str, m: &GooseMetrics, hit_ratio: Option<f64>) -> Row {
    let mut times: Vec<(u64, usize)> = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for r in m.requests.values() {
        ok += r.success_count;
        failed += r.fail_count;
        times.extend(r.raw_data.times_us.iter().map(|(us, n)| (*us, *n)));
    }
    times.sort_unstable();
    let total: usize = times.iter().map(|(_, n)| n).sum();
    let pct = |p: f64| {
        let rank = ((p * total as f64).ceil() as usize).max(1);
        let mut seen = 0;
        for (us, n) in &times {
            seen += n;
            if seen >= rank {
                return *us as f64 / 1000.0;
            }
        }
        0.0
    };
    Row {
        db: db.to_owned(),
        cache: cache.to_owned(),
        scenario: scenario.to_owned(),
        requests: ok + failed,
        rps: (ok + failed) as f64 / (m.duration.max(1) as f64),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        errors: failed,
        hit_ratio,
    }
}

fn print_row(r: &Row, header: bool) {
    if header {
        println!(
            "{:<9} {:<5} {:<10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}",
            "db",
            "cache",
            "scenario",
            "requests",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "hit ratio"
        );
    }
    let hit = r
        .hit_ratio
        .map_or("-".to_owned(), |h| format!("{:.1} %", h * 100.0));
    println!(
        "{:<9} {:<5} {:<10} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9}",
        r.db, r.cache, r.scenario, r.requests, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.errors, hit
    );
}

/// Hit ratio between two scrapes of `cache_gets_total`.
fn hit_ratio(before: &str, after: &str) -> Option<f64> {
    let get = |text: &str, result: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("cache_gets_total{") && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let hits = get(after, "hit") - get(before, "hit");
    let misses = get(after, "miss") - get(before, "miss");
    (hits + misses > 0.0).then(|| hits / (hits + misses))
}

fn ensure_binary(bin: &str) -> anyhow::Result<()> {
    if std::path::Path::new(bin).exists() {
        return Ok(());
    }
    println!("building {bin} (cargo build --release)");
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "data-api"])
        .status()?;
    if !status.success() || !std::path::Path::new(bin).exists() {
        bail!("could not build {bin}");
    }
    Ok(())
}

/// The service under test (one process, or several behind nginx), stopped when dropped.
struct Server {
    children: Vec<Child>,
    /// Where the load goes: the one replica, or the balancer.
    base: String,
    /// Each replica's own address.
    replicas: Vec<String>,
    balancer: Option<Balancer>,
    _dir: tempfile::TempDir,
    drop_db: Option<(String, String)>,
}

impl Server {
    fn start(args: &Args, cache: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (url, drop_db) = match args.db {
            Backend::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.path().join("load.db").display()),
                None,
            ),
            Backend::Postgres => {
                let name = format!("dataapi_lt_{}", std::process::id());
                psql(
                    &args.postgres_url,
                    &format!("drop database if exists {name} with (force)"),
                )?;
                psql(&args.postgres_url, &format!("create database {name}"))?;
                let (server, _) = args
                    .postgres_url
                    .rsplit_once('/')
                    .context("--postgres-url needs a database")?;
                (
                    format!("{server}/{name}"),
                    Some((args.postgres_url.clone(), name)),
                )
            }
        };
        println!(
            "seeding {} items ({} database, cache {})",
            args.items,
            args.db.as_str(),
            if cache { "on" } else { "off" }
        );
        let seeded = Command::new(&args.bin)
            .args([
                "seed",
                "--database-url",
                &url,
                "--items",
                &args.items.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .status()?;
        if !seeded.success() {
            bail!("seeding failed");
        }
        let n = usize::from(args.replicas);
        let pool = fleet::pool_per_replica(n).to_string();
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..n {
            let port = testkit::tools::free_port()?;
            let mut cmd = Command::new(&args.bin);
            cmd.args([
                "--database-url",
                &url,
                "--bind",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--access-log", "false"])
            .args(["--cache-capacity", if cache { "1000" } else { "0" }]);
            if n > 1 {
                cmd.args(["--db-max-connections", &pool]);
            }
            children.push(cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).spawn()?);
            ports.push(port);
        }
        let replicas: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let (base, balancer) = if n > 1 {
            let addrs: Vec<SocketAddr> =
                ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
            let lb = Balancer::start(&addrs).context("--replicas needs nginx")?;
            (format!("http://{}", lb.addr()), Some(lb))
        } else {
            (replicas[0].clone(), None)
        };
        Ok(Self {
            children,
            base,
            replicas,
            balancer,
            _dir: dir,
            drop_db,
        })
    }

    /// Waits until every replica, and the balancer in front of them, answers ready.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        for base in self.replicas.iter().chain([&self.base]) {
            let url = format!("{base}/health/ready");
            loop {
                if reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("the service did not become ready at {url}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Every replica's `/metrics`, one after the other (the counters add up).
    async fn scrape(&self) -> anyhow::Result<String> {
        let mut text = String::new();
        for base in &self.replicas {
            text += &reqwest::get(format!("{base}/metrics"))
                .await?
                .text()
                .await?;
        }
        Ok(text)
    }

    fn stop(mut self) {
        self.balancer = None;
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        if let Some((admin, name)) = self.drop_db.take() {
            let _ = psql(
                &admin,
                &format!("drop database if exists {name} with (force)"),
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
    }
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let status = Command::new("psql")
        .args([url, "-qc", sql])
        .stdout(Stdio::null())
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(scenario: &str, rps: f64, p99_ms: f64) -> Row {
        Row {
            db: "sqlite".into(),
            cache: "on".into(),
            scenario: scenario.into(),
            requests: 100,
            rps,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms,
            errors: 0,
            hit_ratio: None,
        }
    }

    #[test]
    fn gate_flags_drops_and_rises_beyond_tolerance() {
        let base = vec![r("read_hot", 1000.0, 2.0), r("write", 500.0, 10.0)];
        assert!(
            gate(
                &base,
                &[r("read_hot", 800.0, 2.4), r("write", 500.0, 10.0)],
                0.25
            )
            .is_empty()
        );
        let bad = gate(
            &base,
            &[r("read_hot", 700.0, 2.0), r("write", 500.0, 13.0)],
            0.25,
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            gate(&base, &[r("lifecycle", 1.0, 99.0)], 0.25).is_empty(),
            "unknown rows are not judged"
        );
    }

    /// Says on the real stderr (past the harness's capture) that a test was skipped, and why.
    fn skip(test: &str, why: &str) {
        let line = format!("SKIPPED {test}: {why}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }

    /// The debug `data-api` built beside this test binary, if it is.
    fn service_binary() -> Option<std::path::PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let bin = exe.parent()?.parent()?.join("data-api");
        if bin.exists() {
            return Some(bin);
        }
        skip("loadtests", &format!("{} is not built", bin.display()));
        None
    }

    /// The smoke run: every scenario for a second against the real (debug) service, tiny key
    /// space; any failed request (a wrong status or body) fails the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke_run_of_every_scenario() {
        let Some(bin) = service_binary() else { return };
        let dir = tempfile::tempdir().unwrap();
        let baseline = dir.path().join("baseline.json");
        let argv = |extra: &[&str]| {
            let mut v: Vec<String> = [
                "compare", "--cache", "on", "--items", "60", "--hot", "10", "--users", "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend([
                "--run-time".into(),
                "1".into(),
                "--bin".into(),
                bin.display().to_string(),
            ]);
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        run(argv(&["--save-baseline", baseline.to_str().unwrap()]))
            .await
            .unwrap();
        let rows: Vec<Row> =
            serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(
            names,
            ["read_hot", "read_cold", "mixed", "write", "lifecycle"]
        );
        assert!(
            rows.iter().all(|r| r.requests > 0 && r.errors == 0),
            "{rows:?}"
        );
        assert!(
            rows[0].hit_ratio.is_some_and(|h| h > 0.5),
            "hot reads hit the cache: {:?}",
            rows[0]
        );
    }

    /// Three replicas behind nginx on PostgreSQL: the mixed scenario through the balancer, then
    /// the staleness probe (every change reached the other replica, or the run fails).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_behind_nginx() {
        let Ok(pg) = std::env::var("TEST_DATABASE_URL") else {
            return skip("replicas run", "TEST_DATABASE_URL is not set");
        };
        let Some(bin) = service_binary() else { return };
        if testkit::balancer::nginx().is_none() {
            return skip(
                "replicas run",
                "nginx is not installed (Debian package nginx-light)",
            );
        }
        let argv: Vec<String> = [
            "compare",
            "--db",
            "postgres",
            "--postgres-url",
            &pg,
            "--replicas",
            "3",
            "--cache",
            "on",
            "--scenarios",
            "mixed",
            "--items",
            "60",
            "--hot",
            "10",
            "--users",
            "2",
            "--run-time",
            "1",
            "--probes",
            "20",
            "--bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([bin.display().to_string()])
        .collect();
        run(argv).await.unwrap();
    }
}
