//! nginx in front of several replicas (round robin, keep-alive upstreams, as
//! `nginx-local.conf` says), on a port of its own, for multi-replica tests and load runs.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{STATE_WAIT, tools};

/// The nginx executable, if installed (Debian's `nginx-light` puts it in `/usr/sbin`).
pub fn nginx() -> Option<PathBuf> {
    tools::which("nginx", &["/usr/sbin/nginx"])
}

/// A running nginx balancing over some replicas; stopped when dropped.
pub struct Balancer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// Starts nginx over `replicas` on a free port and waits until it accepts connections.
    pub fn start(replicas: &[SocketAddr]) -> anyhow::Result<Self> {
        let exe = nginx().context("no nginx (Debian package nginx-light)")?;
        let dir = tempfile::Builder::new()
            .prefix("dataapi-nginx-")
            .tempdir()?;
        let port = tools::free_port()?;
        let servers: String = replicas.iter().map(|a| format!("server {a}; ")).collect();
        let conf = include_str!("../nginx-local.conf")
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{servers}", &servers)
            .replace("{port}", &port.to_string());
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(exe)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let balancer = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(balancer.addr).is_err() {
            anyhow::ensure!(started.elapsed() < STATE_WAIT, "nginx did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(balancer)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        tools::terminate(&mut self.child);
    }
}
