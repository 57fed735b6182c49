//! A throwaway PostgreSQL cluster for fault tests: `initdb` under a temp dir, on a free port,
//! started and stopped at will, so the shared server is never touched; or a streaming standby
//! of one (`pg_basebackup -R -X stream`). As root (CI) the server runs as the `postgres` user,
//! since initdb refuses root.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
};

/// A throwaway cluster: its data directory and port; stopped (immediately) when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// Extra `-c name=value` settings for the server.
    settings: String,
}

impl Cluster {
    /// A cluster (not started) whose server runs with the extra `-c` options `settings`
    /// (e.g. `-c wal_level=logical`).
    pub fn create_with(settings: &str) -> Result<Self, String> {
        let mut cluster = Self::create()?;
        cluster.settings = settings.to_owned();
        Ok(cluster)
    }

    /// Creates the cluster (not started), or says why it cannot be done here.
    pub fn create() -> Result<Self, String> {
        let cluster = Self::empty()?;
        let data = cluster.data();
        cluster.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        Ok(cluster)
    }

    /// A streaming hot standby of `primary` (which must be running), not started; `settings`
    /// are extra `-c` options for it.
    pub fn standby_of(primary: &Cluster, settings: &str) -> Result<Self, String> {
        let mut standby = Self::empty()?;
        standby.settings = settings.to_owned();
        let port = primary.port.to_string();
        let data = standby.data();
        standby.tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                // Not a spread checkpoint: that can take minutes.
                "--checkpoint=fast",
                "--no-sync",
            ],
        )?;
        Ok(standby)
    }

    /// A temp dir and a free port, owned by the user the server runs as.
    fn empty() -> Result<Self, String> {
        let bin = server_bin_dir().ok_or("no PostgreSQL server binaries (initdb) found")?;
        let as_postgres = is_root();
        if as_postgres && !Path::new("/usr/sbin/runuser").exists() {
            return Err("running as root without runuser".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("dataapi-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = crate::tools::free_port().map_err(|e| e.to_string())?;
        let cluster = Self {
            bin,
            dir,
            port,
            as_postgres,
            settings: String::new(),
        };
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path()))?;
        }
        Ok(cluster)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.tool(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "start"],
        )
        .expect("starting the throwaway PostgreSQL");
    }

    /// Stops the server the way `systemctl stop` does (fast: sessions are terminated).
    pub fn stop(&self) {
        self.tool("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .expect("stopping the throwaway PostgreSQL");
    }

    /// A URL to its `postgres` database as the `postgres` user.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("/usr/sbin/runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        run(cmd.args(args))
    }
}

/// A running throwaway primary and a running streaming standby of it (`settings`: the
/// standby's extra `-c` options), or why no cluster can be made here (a test then skips).
pub async fn primary_and_standby(
    settings: &'static str,
) -> Result<(Arc<Cluster>, Arc<Cluster>), String> {
    primary_and_standby_with("", settings).await
}

/// As `primary_and_standby`, the primary's server with the extra `-c` options `primary`.
pub async fn primary_and_standby_with(
    primary: &'static str,
    settings: &'static str,
) -> Result<(Arc<Cluster>, Arc<Cluster>), String> {
    let primary = Arc::new(blocking(move || Cluster::create_with(primary)).await?);
    let p = primary.clone();
    blocking(move || p.start()).await;
    let p = primary.clone();
    let standby = blocking(move || Cluster::standby_of(&p, settings))
        .await
        .map(Arc::new)
        .expect("a standby made with pg_basebackup");
    let s = standby.clone();
    blocking(move || s.start()).await;
    Ok((primary, standby))
}

/// Runs the blocking `f` (a server tool) off the tests' runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("task")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.tool("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `$PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` with an initdb.
fn server_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(dir.into());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
