//! A cap on open connections. At the cap the server stops accepting: new connections wait in
//! the kernel's backlog until one closes, instead of costing a task and a file descriptor each
//! (and, past the descriptor limit, an accept loop that fails on every turn).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use poem::{
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};

use crate::metrics::{Metrics, catalog};
use metrics::Gauge;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// An acceptor that holds at most `max` connections open (`None`: no cap), counting them in
/// the `http_server_open_connections` gauge.
pub struct Capped<A> {
    inner: A,
    permits: Option<Arc<Semaphore>>,
    open: Gauge,
}

impl<A> Capped<A> {
    /// `max` 0 means no cap.
    pub fn new(inner: A, max: usize, metrics: &Metrics) -> Self {
        metrics
            .gauge(&catalog::HTTP_SERVER_CONNECTION_LIMIT, &[])
            .set(max as f64);
        Self {
            inner,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            open: metrics.gauge(&catalog::HTTP_SERVER_OPEN_CONNECTIONS, &[]),
        }
    }
}

impl<A: Acceptor> Acceptor for Capped<A> {
    type Io = CappedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        // Wait for room before accepting, so the connection stays in the backlog meanwhile.
        let permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let (io, local, remote, scheme) = self.inner.accept().await?;
        self.open.increment(1.0);
        let io = CappedIo {
            io,
            _permit: permit,
            open: self.open.clone(),
        };
        Ok((io, local, remote, scheme))
    }
}

/// A connection that gives its place back when dropped.
pub struct CappedIo<T> {
    io: T,
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
}

impl<T> Drop for CappedIo<T> {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CappedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CappedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
