//! Logs and traces: a `RUST_LOG`-style filter for log lines (human or JSON), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer that exports spans over OTLP/HTTP.
//!
//! The two layers have their own filters: `RUST_LOG=warn` must not silently drop the spans the
//! OTLP layer would export, and exporting debug-level spans (cache lookups, queries) must not turn
//! them into log lines.

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings, TraceSettings};

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
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match log.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Human => fmt::layer().boxed(),
    }
    .with_filter(log_filter);

    let provider = match trace.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) if !trace.otel_sdk_disabled => Some(provider(endpoint, trace)?),
        _ => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        let filter =
            EnvFilter::try_new(&trace.otel_filter).unwrap_or_else(|_| EnvFilter::new("info"));
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
    let mut resource = Resource::builder();
    if trace.otel_service_name.is_none() {
        resource = resource.with_service_name("data-api");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
