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
pub async fn silent_proxy(upstream: SocketAddr, forwarding: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, forwarding.clone()));
            tokio::spawn(pipe(sr, cw, forwarding.clone()));
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forwarding.load(Ordering::Relaxed) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
