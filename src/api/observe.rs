//! Per-request telemetry: the latency histogram and in-flight gauge, a server span that continues
//! an incoming W3C `traceparent` (and answers with its own), and the access log line.
//!
//! This runs on every request, so it is written for cost: trace ids are made and formatted
//! without allocating, log lines get them from a task-local (see `telemetry`), and a tracing span
//! is opened only when spans are exported.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use metrics::Gauge;
use opentelemetry::{
    Context,
    trace::{SpanContext, TraceContextExt, TraceState},
};
use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderName, HeaderValue},
};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{Metrics, http::HttpMethod};
use crate::route::ApiRoute;
use crate::telemetry::{
    TRACE,
    trace_context::{TraceHeader, TraceParent},
};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// `inner`, measured, traced and logged as `observe` says.
pub struct Observed<E> {
    pub inner: E,
    pub observe: Observe,
}

impl<E: Endpoint> Endpoint for Observed<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        observe(&self.inner, req, &self.observe).await
    }
}

/// What the observe middleware records.
pub struct Observe {
    pub metrics: Arc<Metrics>,
    pub spans: bool,
    pub access_log: bool,
    /// Whether spans are exported: only then are HTTP attributes recorded on the request span.
    pub export: bool,
}

/// Runs `ep` for `req`, measured, traced and logged as configured.
async fn observe<E: Endpoint>(ep: &E, req: Request, o: &Observe) -> poem::Result<Response> {
    let started = Instant::now();
    let route = ApiRoute::of(req.uri().path());
    let method = HttpMethod::of(req.method());
    let _active = Active::enter(o.metrics.active_requests());
    let (resp, span) = if o.spans {
        let incoming = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let (span, ids) = if o.export {
            let (span, ids) = exported_span(&req, route, method, incoming);
            (Some(span), ids)
        } else {
            (None, TraceParent::child_of(incoming).header())
        };
        let call = ep.call(req);
        let result = match &span {
            Some(span) => TRACE.scope(ids, call.instrument(span.clone())).await,
            None => TRACE.scope(ids, call).await,
        };
        let mut resp = result?.into_response();
        resp.headers_mut().insert(TRACEPARENT, header_value(&ids));
        (resp, Some((span, ids)))
    } else {
        (ep.call(req).await?.into_response(), None)
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    o.metrics.observe_http(route, method, status, elapsed);
    if let Some((Some(span), _)) = &span {
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }
    if o.access_log {
        let log = || {
            tracing::info!(
            target: "data_api::access",
            method = method.as_str(),
            route = route.template(),
            status,
            // Microseconds are what a log reader can use; more digits are noise.
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            "request"
            )
        };
        match &span {
            Some((_, ids)) => TRACE.sync_scope(*ids, log),
            None => log(),
        }
    }
    Ok(resp)
}

/// With export: the OpenTelemetry server span, with its HTTP attributes; its ids answer.
fn exported_span(
    req: &Request,
    route: ApiRoute,
    method: HttpMethod,
    incoming: Option<TraceParent>,
) -> (tracing::Span, TraceHeader) {
    let span = tracing::info_span!(
        target: "data_api::http",
        "HTTP request",
        otel.name = span_name(route, method),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.route = route.template(),
        url.path = req.uri().path(),
        client.address = Empty,
        client.port = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some(peer) = req.remote_addr().as_socket_addr() {
        span.record("client.address", tracing::field::display(peer.ip()));
        span.record("client.port", i64::from(peer.port()));
    }
    if let Some(parent) = incoming {
        let remote = SpanContext::new(
            parent.trace_id,
            parent.span_id,
            parent.flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    let sc = span.context().span().span_context().clone();
    if !sc.is_valid() {
        // No OpenTelemetry layer took the span (export configured but not installed): ids of our own.
        return (span, TraceParent::child_of(incoming).header());
    }
    let ours = TraceParent {
        trace_id: sc.trace_id(),
        span_id: sc.span_id(),
        flags: sc.trace_flags(),
    };
    let ids = ours.header();
    span.record("trace_id", ids.trace_id());
    span.record("span_id", ids.span_id());
    (span, ids)
}

fn header_value(header: &TraceHeader) -> HeaderValue {
    HeaderValue::from_bytes(&header.0).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
    })
}

/// `GET /data/{id}`-style span names, made once.
fn span_name(route: ApiRoute, method: HttpMethod) -> &'static str {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ApiRoute::ALL
            .iter()
            .flat_map(|r| {
                HttpMethod::ALL
                    .iter()
                    .map(move |m| format!("{} {}", m.as_str(), r.template()))
            })
            .collect()
    });
    names
        .get(route as usize * HttpMethod::ALL.len() + method as usize)
        .map_or("HTTP request", String::as_str)
}

/// Counts a request as in flight until dropped (also when the client hangs up mid-request).
struct Active<'a>(&'a Gauge);

impl<'a> Active<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
