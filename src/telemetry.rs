//! Log output: a `RUST_LOG`-style filter (default `info`), human or JSON lines.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Call once, from `main`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry();
    match settings.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_filter(filter))
            .init(),
        LogFormat::Human => registry.with(fmt::layer().with_filter(filter)).init(),
    }
}
