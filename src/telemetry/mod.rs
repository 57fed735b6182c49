//! Logs and traces: a `RUST_LOG`-style filter for log lines (human or JSON), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer that exports spans over OTLP/HTTP.
//!
//! The two layers have their own filters: `RUST_LOG=warn` must not silently drop the spans the
//! OTLP layer would export, and exporting debug-level spans (cache lookups, queries) must not turn
//! them into log lines.
//!
//! Log lines written while a request is handled carry its `trace_id` and `span_id`. They come
//! from a task-local set by the request middleware rather than from a tracing span: a span costs
//! the log layer a formatted field set per request, which is most of what tracing would cost on a
//! cache hit; the task-local costs nothing until a line is actually written.

pub(crate) mod log_format;
pub mod trace_context;

use std::io::IsTerminal;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings, TraceSettings};
use log_format::WithTraceIds;
use trace_context::TraceHeader;

/// Keeps the span exporter alive; `shutdown` flushes what is still queued.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter. Blocking; call once at exit, outside request handling.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing spans at shutdown failed");
        }
    }
}

/// Installs the global subscriber. Call once, from `main`, inside the tokio runtime.
pub fn init(log: &LogSettings, trace: &TraceSettings) -> anyhow::Result<TelemetryGuard> {
    let log_filter = EnvFilter::try_from_default_env()
        // poem logs each connection closed for inactivity at info: noise at any traffic.
        .unwrap_or_else(|_| EnvFilter::new("info,poem::server=warn"))
        // The request span exists for export; log lines get its ids from the task-local.
        .add_directive("data_api::http=off".parse()?);
    let fmt_layer = match log.format {
        LogFormat::Json => {
            let format = fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(true);
            fmt::layer()
                .json()
                .event_format(WithTraceIds {
                    inner: format,
                    json: true,
                })
                .boxed()
        }
        LogFormat::Human => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(WithTraceIds {
                inner: fmt::format(),
                json: false,
            })
            .boxed(),
    }
    .with_filter(log_filter);

    let provider = match trace.otlp_endpoint.as_deref() {
        Some(endpoint) if trace.exports() => Some(provider(endpoint, trace)?),
        _ => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        let filter = EnvFilter::try_new(&trace.filter).unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("data-api"))
            .with_filter(filter)
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(endpoint) = &trace.otlp_endpoint {
        tracing::info!(endpoint, "exporting spans over OTLP/HTTP");
    }
    Ok(TelemetryGuard { provider })
}

fn provider(endpoint: &str, trace: &TraceSettings) -> anyhow::Result<SdkTracerProvider> {
    // The general endpoint names the collector; traces go to its /v1/traces (OTLP/HTTP).
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()?;
    // The flag, or OTEL_SERVICE_NAME through it, or the default: always set here, never left to
    // the SDK's own reading of the environment (which knows nothing of the flag).
    let resource = Resource::builder()
        .with_service_name(trace.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

tokio::task_local! {
    /// Set by the request middleware for the duration of a request (and carried into the tasks
    /// it spawns).
    pub static TRACE: TraceHeader;
}

/// Runs `fut` with the current request's trace ids, if any, so a spawned task keeps them.
pub async fn with_current_trace<F: Future>(fut: F) -> F::Output {
    match TRACE.try_with(|ids| *ids) {
        Ok(ids) => TRACE.scope(ids, fut).await,
        Err(_) => fut.await,
    }
}
