//! Outside programs and free ports.

use std::path::PathBuf;

/// `tool` on the `PATH`, or at one of `also` (Debian puts some daemons in `/usr/sbin`, which
/// an ordinary user's `PATH` lacks).
pub fn which(tool: &str, also: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| also.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// A port nothing listens on now (the OS's pick for port 0).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Stops a daemon we started: SIGTERM (so a master process stops its workers; SIGKILL would
/// orphan them), then SIGKILL if it has not exited within `STATE_WAIT`.
pub fn terminate(child: &mut std::process::Child) {
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // SAFETY: signalling our own child process by its pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = std::time::Instant::now();
    while matches!(child.try_wait(), Ok(None)) && started.elapsed() < crate::STATE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
