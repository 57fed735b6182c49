//! Logs, traces and metrics.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};

/// Log output.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs")]
pub struct LogSettings {
    /// Log line format. Env: DATA_API_LOG_FORMAT. The filter comes from RUST_LOG (default `info,poem::server=warn`).
    #[arg(long = "log-format", env = "DATA_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Tracing: request spans, the access log, and OTLP export.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tracing")]
pub struct TraceSettings {
    /// Trace every request: continue the caller's W3C `traceparent` or start a trace, answer
    /// with `traceparent`, put `trace_id`/`span_id` on its log lines, and (with an OTLP endpoint)
    /// export its spans. Env: DATA_API_TRACING.
    #[arg(id = "tracing", value_name = "TRACING", long = "tracing", env = "DATA_API_TRACING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Write one log line per request. Env: DATA_API_ACCESS_LOG.
    #[arg(long, env = "DATA_API_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// Export spans over OTLP/HTTP to this collector (e.g. `http://127.0.0.1:4318`; `/v1/traces`
    /// is appended). Unset: nothing is exported. Env: OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of exported spans. Env: OTEL_SERVICE_NAME.
    #[arg(
        long = "otel-service-name",
        env = "OTEL_SERVICE_NAME",
        default_value = "data-api"
    )]
    pub service_name: String,

    /// Turn OpenTelemetry export off even when an endpoint is set. Env: OTEL_SDK_DISABLED.
    #[arg(long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub sdk_disabled: bool,

    /// Which spans are exported (an `EnvFilter`, separate from RUST_LOG).
    /// Env: DATA_API_OTEL_FILTER.
    #[arg(
        long = "otel-filter",
        env = "DATA_API_OTEL_FILTER",
        default_value = "info,data_api=debug"
    )]
    pub filter: String,
}

impl TraceSettings {
    /// Whether spans are exported over OTLP.
    pub fn exports(&self) -> bool {
        !self.sdk_disabled && self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsSettings {
    /// Record metrics and serve them at `/metrics`. Env: DATA_API_METRICS.
    #[arg(id = "metrics", value_name = "METRICS", long = "metrics", env = "DATA_API_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Serve `/metrics` on this address instead of the API's, so it need not be public.
    /// Env: DATA_API_METRICS_BIND.
    #[arg(
        id = "metrics_bind",
        value_name = "METRICS_BIND",
        long = "metrics-bind",
        env = "DATA_API_METRICS_BIND"
    )]
    pub bind: Option<SocketAddr>,

    /// How often pool and cache gauges are sampled. Env: DATA_API_METRICS_INTERVAL.
    #[arg(long = "metrics-interval", env = "DATA_API_METRICS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// How far back `/dashboard` shows each tick (a coarser series covers the last hour).
    /// Env: DATA_API_DASHBOARD_WINDOW.
    #[arg(long = "dashboard-window", env = "DATA_API_DASHBOARD_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub dashboard_window: Duration,

    /// Require the token on `/metrics` and `/dashboard`: `Authorization: Bearer <token>`, or
    /// HTTP Basic with the token as the password (browsers). Set but empty (or blank) is refused at
    /// start: unset it to leave the endpoints open. Env: DATA_API_METRICS_TOKEN.
    #[arg(
        long = "metrics-token",
        env = "DATA_API_METRICS_TOKEN",
        hide_env_values = true,
        value_parser = super::secret
    )]
    pub token: Option<String>,
}
