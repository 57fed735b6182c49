//! A cap on open connections, and the idle timeout. At the cap the server stops accepting: new
//! connections wait in the kernel's backlog until one closes, instead of costing a task and a
//! file descriptor each (and, past the descriptor limit, an accept loop that fails on every turn).
//!
//! A connection quiet for the idle timeout between requests is closed. This is done here rather
//! than with poem's `Server::idle_timeout`, which wakes a task of its own and re-arms its timer on
//! every read and write (a measurable share of a cache hit's throughput, see BENCHMARKS.md): here a read or write
//! notes the time, and one timer per connection is re-armed only when it fires. A connection in
//! the middle of a request is closed only after it has been quiet for longer than any request
//! may take, so a slow answer is never cut short (see `IdleTimeout`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
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
    time::{Instant, Sleep},
};

/// An acceptor that holds at most `max` connections open (`None`: no cap), counting them in
/// the `http_server_open_connections` gauge.
pub struct Capped<A> {
    inner: A,
    permits: Option<Arc<Semaphore>>,
    open: Gauge,
    idle_timeout: Option<IdleTimeout>,
}

impl<A> Capped<A> {
    /// `max` 0 means no cap; `idle_timeout` `None`: connections may stay quiet forever.
    pub fn new(inner: A, max: usize, idle_timeout: Option<IdleTimeout>, metrics: &Metrics) -> Self {
        metrics
            .gauge(&catalog::HTTP_SERVER_CONNECTION_LIMIT, &[])
            .set(max as f64);
        Self {
            inner,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            open: metrics.gauge(&catalog::HTTP_SERVER_OPEN_CONNECTIONS, &[]),
            idle_timeout,
        }
    }
}

impl<A> Capped<A> {
    /// The same cap and idle timeout, counted in no gauge: for the metrics address, so scrapes
    /// and dashboard tabs neither show in nor take from the service's own connection figures.
    pub fn unmetered(inner: A, max: usize, idle_timeout: Option<IdleTimeout>) -> Self {
        Self {
            inner,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            open: Gauge::noop(),
            idle_timeout,
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
            idle: self.idle_timeout.map(Idle::new),
        };
        Ok((io, local, remote, scheme))
    }
}

/// A connection that gives its place back when dropped, and reads as closed once it has been
/// quiet between requests for the idle timeout.
pub struct CappedIo<T> {
    io: T,
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
    idle: Option<Idle>,
}

/// When a quiet connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct IdleTimeout {
    /// Quiet between requests.
    pub between: Duration,
    /// Quiet in the middle of a request: a head or body half sent, or an answer not yet written.
    /// Longer than any request may take (the idle timeout plus the request timeout), so only a
    /// client that stopped is closed; `None` (no request timeout): never.
    pub mid_request: Option<Duration>,
}

/// The idle timeout of one connection.
struct Idle {
    limits: IdleTimeout,
    /// The last read or write.
    last: Instant,
    /// Bytes of a request were read and its answer not yet flushed: hyper takes an end of input
    /// in the middle of a request as a hang-up, so only `mid_request` applies meanwhile.
    in_request: bool,
    /// Bytes were written since the last flush (hyper also flushes when it has written nothing).
    wrote: bool,
    /// Fires at the earliest moment the connection can have been quiet for long enough.
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(limits: IdleTimeout) -> Self {
        let now = Instant::now();
        Self {
            limits,
            last: now,
            in_request: false,
            wrote: false,
            timer: Box::pin(tokio::time::sleep_until(now + limits.between)),
        }
    }

    /// Whether the connection has been quiet for long enough to close; if not, the timer is
    /// armed (with `cx`'s waker) for the next moment it could be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let quiet = match self.in_request {
                true => self.limits.mid_request,
                false => Some(self.limits.between),
            };
            let due = quiet.map_or(now + self.limits.between, |q| self.last + q);
            if due <= now {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
    }
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
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(idle) = &mut this.idle else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                idle.last = Instant::now();
                idle.in_request = true;
                idle.wrote = false;
                Poll::Ready(Ok(()))
            }
            // Quiet for the timeout: end of input, so hyper closes the connection.
            Poll::Pending if idle.expired(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<T> CappedIo<T> {
    /// Notes bytes written.
    fn wrote(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = Instant::now();
            idle.wrote = true;
        }
    }

    /// Notes a flush: after bytes were written, the end of an answer.
    fn flushed(&mut self) {
        if let Some(idle) = &mut self.idle
            && idle.wrote
        {
            idle.in_request = false;
            idle.wrote = false;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CappedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
