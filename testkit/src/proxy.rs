//! A TCP proxy that can silently stop forwarding: connections stay open and bytes are dropped,
//! as a dead network path looks to both ends (no reset, no FIN), so only timeouts and leases
//! can notice.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Proxies a local port to `upstream` while `forwarding` holds; returns the port's address.
/// While it does not, bytes are dropped (a dead path).
pub async fn silent_proxy(upstream: SocketAddr, forwarding: Arc<AtomicBool>) -> SocketAddr {
    proxy(upstream, forwarding, Stopped::Drop).await
}

/// Proxies a local port to `upstream`; while `flowing` does not hold it stops reading, so bytes
/// wait in the kernel's buffers and arrive, in order, once it holds again (a partition that
/// heals before TCP gives up).
pub async fn pausing_proxy(upstream: SocketAddr, flowing: Arc<AtomicBool>) -> SocketAddr {
    proxy(upstream, flowing, Stopped::Hold).await
}

/// What a proxy does with bytes while it is not forwarding.
#[derive(Clone, Copy)]
enum Stopped {
    Drop,
    Hold,
}

async fn proxy(upstream: SocketAddr, forwarding: Arc<AtomicBool>, stopped: Stopped) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, forwarding.clone(), stopped));
            tokio::spawn(pipe(sr, cw, forwarding.clone(), stopped));
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
    stopped: Stopped,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Stopped::Hold = stopped {
            while !forwarding.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held bytes go on (a read that began before a pause still delivers); only a dead path
        // drops them.
        let deliver = matches!(stopped, Stopped::Hold) || forwarding.load(Ordering::Relaxed);
        if deliver && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
