//! Per-request telemetry: the latency histogram and in-flight gauge, a server span that continues
//! an incoming W3C `traceparent` (and answers with its own), and the access log line.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use metrics::Gauge;
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceFlags},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use poem::{Endpoint, IntoResponse, Request, Response, http::HeaderValue};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{
    Metrics,
    http::{METHODS, ROUTES, method_of, route_of},
};

/// What the observe middleware records.
#[derive(Clone)]
pub struct Observe {
    pub metrics: Arc<Metrics>,
    pub spans: bool,
    pub access_log: bool,
}

/// Runs `ep` for `req`, measured, traced and logged as configured.
pub async fn observe<E: Endpoint>(ep: &E, req: Request, o: &Observe) -> poem::Result<Response> {
    let started = Instant::now();
    let route = route_of(req.uri().path());
    let method = method_of(req.method());
    let _active = Active::enter(o.metrics.active_requests());
    let (resp, span) = if o.spans {
        let span = request_span(&req, route, method);
        let traceparent = traceparent(&span, &req);
        let mut resp = ep.call(req).instrument(span.clone()).await?.into_response();
        resp.headers_mut().insert("traceparent", traceparent);
        (resp, Some(span))
    } else {
        (ep.call(req).await?.into_response(), None)
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    o.metrics.observe_http(route, method, status, elapsed);
    if let Some(span) = &span {
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }
    if o.access_log {
        let _entered = span.as_ref().map(|s| s.enter());
        tracing::info!(
            target: "data_api::access",
            method = METHODS[method],
            route = ROUTES[route],
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    Ok(resp)
}

fn request_span(req: &Request, route: usize, method: usize) -> tracing::Span {
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
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the span's trace and span ids on it (for log lines) and returns the `traceparent`
/// to answer with. With OpenTelemetry export on, the ids are the exported span's; otherwise they
/// are made here, continuing the incoming trace id if there is one.
fn traceparent(span: &tracing::Span, req: &Request) -> HeaderValue {
    let otel = span.context().span().span_context().clone();
    let (trace_id, span_id, flags) = if otel.is_valid() {
        (
            otel.trace_id().to_string(),
            otel.span_id().to_string(),
            otel.trace_flags(),
        )
    } else {
        let incoming = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let parent: &SpanContext = &incoming.span().span_context().clone();
        let trace_id = if parent.is_valid() {
            parent.trace_id().to_string()
        } else {
            format!("{:032x}", rand::random::<u128>() | 1)
        };
        let flags = if parent.is_valid() {
            parent.trace_flags()
        } else {
            TraceFlags::default()
        };
        (
            trace_id,
            format!("{:016x}", rand::random::<u64>() | 1),
            flags,
        )
    };
    span.record("trace_id", trace_id.as_str());
    span.record("span_id", span_id.as_str());
    let value = format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8());
    HeaderValue::from_str(&value).unwrap_or_else(|_| {
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

struct Headers<'a>(&'a poem::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
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
