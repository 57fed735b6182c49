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
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderName, HeaderValue},
};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace_context::{TraceParent, random_u64, random_u128};
use crate::metrics::{
    Metrics,
    http::{METHODS, ROUTES, method_of, route_of},
};
use crate::telemetry::{TRACE, TraceIds};

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
    let route = route_of(req.uri().path());
    let method = method_of(req.method());
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
            (None, local_ids(incoming))
        };
        let call = ep.call(req);
        let result = match &span {
            Some(span) => TRACE.scope(ids, call.instrument(span.clone())).await,
            None => TRACE.scope(ids, call).await,
        };
        let mut resp = result?.into_response();
        resp.headers_mut().insert(TRACEPARENT, header_value(&ids.0));
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
            method = METHODS[method],
            route = ROUTES[route],
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
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

/// Without export: ids made here, continuing the incoming trace if there is one.
fn local_ids(incoming: Option<TraceParent>) -> TraceIds {
    let ours = TraceParent {
        trace_id: incoming.map_or_else(random_u128, |p| p.trace_id),
        span_id: random_u64(),
        flags: incoming.map_or(0, |p| p.flags),
    };
    TraceIds(ours.header())
}

/// With export: the OpenTelemetry server span, with its HTTP attributes; its ids answer.
fn exported_span(
    req: &Request,
    route: usize,
    method: usize,
    incoming: Option<TraceParent>,
) -> (tracing::Span, TraceIds) {
    let span = tracing::info_span!(
        target: "data_api::http",
        "HTTP request",
        otel.name = span_name(route, method),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = METHODS[method],
        http.route = ROUTES[route],
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
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    let sc = span.context().span().span_context().clone();
    if !sc.is_valid() {
        // No OpenTelemetry layer took the span (export configured but not installed): ids of our own.
        return (span, local_ids(incoming));
    }
    let ours = TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    };
    let ids = TraceIds(ours.header());
    span.record("trace_id", ids.trace_id());
    span.record("span_id", ids.span_id());
    (span, ids)
}

fn header_value(header: &[u8; 55]) -> HeaderValue {
    HeaderValue::from_bytes(header).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
    })
}

/// `GET /data/{id}`-style span names, made once.
fn span_name(route: usize, method: usize) -> &'static str {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ROUTES
            .iter()
            .flat_map(|r| METHODS.iter().map(move |m| format!("{m} {r}")))
            .collect()
    });
    names
        .get(route * METHODS.len() + method)
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
