//! The request guard: head limits (target and header size, legible headers), the body limit and
//! the body timeout, the in-flight cap and the request timeout; every error that leaves the routes is answered
//! as problem+json (see `error::problem_for`), and a panicking handler as a 500.

use std::{any::Any, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use metrics::Counter;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response,
    error::ResponseError,
    http::{Method, header},
    middleware::{CatchPanic, PanicHandler},
};
use tokio::sync::Semaphore;

use super::error::{AppError, problem_for};
use crate::config::LimitSettings;
use crate::metrics::Metrics;
use crate::route::ApiRoute;

/// `inner` behind the request limits, with every error answered as problem+json.
pub struct Guarded<E> {
    pub inner: E,
    pub limits: Limits,
}

impl<E: Endpoint> Endpoint for Guarded<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        guard(&self.inner, req, &self.limits).await
    }
}

/// Checks the head, buffers bodies of POST/PUT/PATCH up to the body limit (413 beyond, chunked
/// bodies included) within the body timeout (408), takes an in-flight permit, applies the
/// request timeout; then converts any error into problem+json.
///
/// The body is read before the permit is taken: a client that sends its body slowly holds a
/// connection, never a permit, so slow clients cannot crowd out the requests that are ready.
async fn guard<E: Endpoint>(ep: &E, mut req: Request, limits: &Limits) -> poem::Result<Response> {
    if let Err(e) = check_head(&req, limits) {
        return Ok(e.as_response());
    }
    let route = ApiRoute::of(req.uri().path());
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let read = limit_body(&mut req, limits.body);
        let read = match limits.body_timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .unwrap_or(Err(BodyError::TimedOut(t))),
            None => read.await,
        };
        if let Err(e) = read {
            return Ok(AppError::from(e).as_response());
        }
    }
    let _permit = match &limits.in_flight {
        Some(permits) if !route.is_probe() => match permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => return Ok(AppError::Overloaded.as_response()),
        },
        _ => None,
    };
    let result = match limits.timeout {
        Some(t) => match tokio::time::timeout(t, ep.call(req)).await {
            Ok(result) => result,
            Err(_) => return Ok(AppError::TimedOut(t).as_response()),
        },
        None => ep.call(req).await,
    };
    Ok(match result {
        Ok(resp) => resp.into_response(),
        Err(err) => problem_for(err, route),
    })
}

/// `ep`, with a panic in it answered as a 500 problem instead of a dropped connection.
pub fn catch_panics<E: Endpoint>(ep: E, metrics: &Metrics) -> impl Endpoint + use<E> {
    let answer = PanicAnswer {
        panics: metrics.panics().clone(),
    };
    ep.with(CatchPanic::new().with_handler(answer))
}

/// Answers a panicking handler with a 500 problem (the connection stays usable), logs the
/// panic (with the request's trace id, like every line written during a request) and counts it.
#[derive(Clone)]
struct PanicAnswer {
    panics: Counter,
}

impl PanicHandler for PanicAnswer {
    type Response = Response;

    fn get_response(&self, err: Box<dyn Any + Send + 'static>) -> Response {
        let message = err
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| err.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        self.panics.increment(1);
        AppError::Internal(format!("handler panicked: {message}")).as_response()
    }
}

/// Request headers whose value the service interprets: they must be visible ASCII, or a
/// condition like `If-Match` would silently read as absent.
const INTERPRETED_HEADERS: [&str; 10] = [
    "if-match",
    "if-none-match",
    "authorization",
    "idempotency-key",
    "content-type",
    "content-length",
    "accept-encoding",
    "origin",
    "traceparent",
    "tracestate",
];

/// The request head within the limits, and the headers we read legible; 414, 431 or 400 if not.
fn check_head(req: &Request, limits: &Limits) -> Result<(), AppError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.uri {
        return Err(AppError::UriTooLong(limits.uri));
    }
    // One pass, no lookups: this runs on every request.
    let mut size = 0;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len();
        if value.to_str().is_err() && INTERPRETED_HEADERS.contains(&name.as_str()) {
            return Err(AppError::BadRequest(format!(
                "header `{name}` must be visible ASCII"
            )));
        }
    }
    if size > limits.headers {
        return Err(AppError::HeadersTooLarge(limits.headers));
    }
    Ok(())
}

/// Request limits.
pub struct Limits {
    /// Largest body in bytes.
    pub body: usize,
    /// Longest request target (path and query) in bytes.
    pub uri: usize,
    /// Most bytes of header names and values.
    pub headers: usize,
    /// Permits for requests in flight; `None`: no cap.
    pub in_flight: Option<Semaphore>,
    /// Longest a request may take once its body is in; `None`: no limit.
    pub timeout: Option<Duration>,
    /// Longest a request body may take to arrive; `None`: no limit.
    pub body_timeout: Option<Duration>,
}

impl Limits {
    pub fn from_settings(s: &LimitSettings) -> Self {
        Self {
            body: s.body_limit,
            uri: s.max_uri_length,
            headers: s.max_header_bytes,
            in_flight: (s.max_in_flight > 0).then(|| Semaphore::new(s.max_in_flight)),
            timeout: (!s.request_timeout.is_zero()).then_some(s.request_timeout),
            body_timeout: (!s.body_timeout.is_zero()).then_some(s.body_timeout),
        }
    }
}

/// Why a body could not be accepted.
pub enum BodyError {
    TooLarge(usize),
    Read(String),
    TimedOut(Duration),
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => AppError::PayloadTooLarge(limit),
            BodyError::Read(msg) => AppError::BadRequest(format!("could not read the body: {msg}")),
            BodyError::TimedOut(t) => AppError::BodyTimedOut(t),
        }
    }
}

async fn limit_body(req: &mut Request, limit: usize) -> Result<(), BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client waiting for `100 Continue` has sent no body: reading would invite it to.
    let sending = req.headers().get(header::EXPECT).is_none();
    let mut body = req.take_body().into_bytes_stream();
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        if sending && n <= DRAIN_MAX as u64 {
            drain(&mut body).await;
        }
        return Err(BodyError::TooLarge(limit));
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if data.len() + chunk.len() > limit {
            drain(&mut body).await;
            return Err(BodyError::TooLarge(limit));
        }
        data.extend_from_slice(&chunk);
    }
    req.set_body(data.freeze());
    Ok(())
}

/// Most bytes read and thrown away after a body is refused.
const DRAIN_MAX: usize = 1 << 20;
/// Longest time spent on that.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads and discards what a client still sends of a refused body, up to `DRAIN_MAX` bytes and
/// `DRAIN_TIME`, so that it reads the 413: a socket closed with unread data in it is answered
/// with a reset, which the client can see before the answer ("lingering close", as nginx does).
async fn drain(body: &mut (impl Stream<Item = std::io::Result<Bytes>> + Unpin)) {
    let discard = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read >= DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}
