//! A throwaway Varnish (Debian's `varnish` with `varnish-modules`) running the repository's VCL
//! (`varnish/data-api.vcl`) in front of some replicas, on a port of its own; stopped when
//! dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{STATE_WAIT, tools};

/// The varnishd executable, if installed, and whether the xkey vmod is there too.
pub fn varnishd() -> Option<PathBuf> {
    let exe = tools::which("varnishd", &["/usr/sbin/varnishd"])?;
    let xkey = Path::new("/usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_xkey.so");
    let any_xkey = xkey.exists()
        || std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join("varnish/vmods/libvmod_xkey.so").exists());
    any_xkey.then_some(exe)
}

/// Where purges may come from: this machine.
const PURGERS: &str = "\"127.0.0.1\"; \"::1\";";
/// Where they may not: a documentation address nobody here has.
const NOBODY_HERE: &str = "\"192.0.2.1\";";

fn purgers(allowed: &str) -> String {
    format!("acl purgers {{ {allowed} }}\n")
}

/// A running varnishd.
pub struct Varnish {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    vcl_dir: PathBuf,
}

impl Varnish {
    /// A free port for a Varnish to be started on later (the replicas need its address first).
    pub fn reserve() -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], tools::free_port()?)))
    }

    /// Starts varnishd on `addr` with `vcl_dir/data-api.vcl`, round robin over `replicas`
    /// and purges from this machine (written as the `site.vcl` it includes), and waits until it
    /// answers.
    pub fn start(
        addr: SocketAddr,
        vcl_dir: &Path,
        replicas: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let exe = varnishd().context("no varnishd with xkey (Debian varnish, varnish-modules)")?;
        let dir = tempfile::Builder::new()
            .prefix("dataapi-varnish-")
            .tempdir()?;
        let mut backends = String::from("import directors;\n");
        backends += &purgers(PURGERS);
        for (k, r) in replicas.iter().enumerate() {
            backends += &format!(
                "backend r{k} {{ .host = \"{}\"; .port = \"{}\"; }}\n",
                r.ip(),
                r.port()
            );
        }
        backends += "sub vcl_init {\n    new replicas = directors.round_robin();\n";
        for k in 0..replicas.len() {
            backends += &format!("    replicas.add_backend(r{k});\n");
        }
        backends +=
            "}\nsub data_api_backend {\n    set req.backend_hint = replicas.backend();\n}\n";
        // varnishd compiles VCL as its unprivileged user: the directory must be readable to it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        std::fs::write(dir.path().join("site.vcl"), &backends)?;
        // The same site, refusing purges from here, for `load_refusing_vcl`.
        let refusing = backends.replace(&purgers(PURGERS), &purgers(NOBODY_HERE));
        std::fs::write(dir.path().join("site-refusing.vcl"), refusing)?;
        let vcl_path = format!("{}:{}", dir.path().display(), vcl_dir.display());
        let child = Command::new(exe)
            .arg("-F")
            .arg("-n")
            .arg(dir.path().join("n"))
            .arg("-a")
            .arg(addr.to_string())
            .args(["-p", &format!("vcl_path={vcl_path}")])
            .arg("-f")
            .arg(vcl_dir.join("data-api.vcl"))
            .args(["-s", "malloc,64m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting varnishd")?;
        let varnish = Self {
            child,
            addr,
            dir,
            vcl_dir: vcl_dir.to_owned(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(started.elapsed() < STATE_WAIT, "varnishd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(varnish)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs `varnishadm` with `args` against this instance; its output.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("varnishadm")
            .arg("-n")
            .arg(self.dir.path().join("n"))
            .args(args)
            .output()
            .context("varnishadm")?;
        anyhow::ensure!(
            out.status.success(),
            "varnishadm {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads the shipped VCL with a site whose purge ACL allows nobody here (Varnish answers
    /// purges 403) under `name`, without using it yet.
    pub fn load_refusing_vcl(&self, name: &str) -> anyhow::Result<()> {
        let vcl = std::fs::read_to_string(self.vcl_dir.join("data-api.vcl"))?;
        let refusing = vcl.replace("include \"site.vcl\";", "include \"site-refusing.vcl\";");
        anyhow::ensure!(refusing != vcl, "the VCL's site include was not found");
        let path = self.dir.path().join(format!("{name}.vcl"));
        std::fs::write(&path, refusing)?;
        self.admin(&["vcl.load", name, &path.display().to_string()])?;
        Ok(())
    }

    /// A counter of `varnishstat` (`MAIN.cache_hit`, ...).
    pub fn stat(&self, field: &str) -> anyhow::Result<u64> {
        let out = Command::new("varnishstat")
            .arg("-n")
            .arg(self.dir.path().join("n"))
            .args(["-1", "-f", field])
            .output()
            .context("varnishstat")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{field} in {text:?}"))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        tools::terminate(&mut self.child);
    }
}
