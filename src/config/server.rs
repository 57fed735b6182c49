//! The HTTP server: its listener and lifecycle, request limits, response behaviour and API keys.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use poem::http::HeaderValue;

/// The listener and the process's lifecycle.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerSettings {
    /// Address to listen on. Env: DATA_API_BIND.
    #[arg(long, env = "DATA_API_BIND", default_value = "0.0.0.0:8000")]
    pub bind: SocketAddr,

    /// Most connections open at once; at the cap new ones wait in the kernel's backlog until
    /// one closes. Keep it below the file descriptor limit (`ulimit -n`). 0: no cap.
    /// Env: DATA_API_MAX_CONNECTIONS.
    #[arg(long, env = "DATA_API_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,

    /// Closes a connection that has sent and received nothing for this long between requests
    /// (idle keep-alive connections, and clients that connect and send nothing); in the middle of
    /// a request, after this plus the request timeout, so a request being handled is not cut
    /// short. 0s: never. Env: DATA_API_IDLE_TIMEOUT.
    #[arg(long, env = "DATA_API_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT. Env: DATA_API_DRAIN_TIMEOUT.
    #[arg(long, env = "DATA_API_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How long `/health/ready` waits for the database before answering 503.
    /// Env: DATA_API_READY_TIMEOUT.
    #[arg(long, env = "DATA_API_READY_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,

    /// Apply pending migrations when the server starts. Env: DATA_API_MIGRATE_ON_START.
    #[arg(long, env = "DATA_API_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

/// What one request may be and cost.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Request limits")]
pub struct LimitSettings {
    /// Largest accepted request body in bytes (chunked bodies included); larger gets 413.
    /// Env: DATA_API_BODY_LIMIT.
    #[arg(long, env = "DATA_API_BODY_LIMIT", default_value_t = 1_048_576)]
    pub body_limit: usize,

    /// Longest accepted request target (path and query) in bytes; longer gets 414.
    /// Env: DATA_API_MAX_URI_LENGTH.
    #[arg(long, env = "DATA_API_MAX_URI_LENGTH", default_value_t = 8_192)]
    pub max_uri_length: usize,

    /// Most bytes of request headers (names and values); more gets 431.
    /// Env: DATA_API_MAX_HEADER_BYTES.
    #[arg(long, env = "DATA_API_MAX_HEADER_BYTES", default_value_t = 16_384)]
    pub max_header_bytes: usize,

    /// Most requests handled at once; beyond it a request gets 503 + Retry-After at once instead
    /// of queueing (health probes and /metrics are exempt). 0: no cap.
    /// Env: DATA_API_MAX_IN_FLIGHT.
    #[arg(long, env = "DATA_API_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Longest a request may take once its body has arrived; past it the client gets 503
    /// problem+json (a write that was already under way still completes). 0s: no limit.
    /// Env: DATA_API_REQUEST_TIMEOUT.
    #[arg(long, env = "DATA_API_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Longest the body of a POST/PUT/PATCH may take to arrive after its head; past it the
    /// client gets 408 problem+json and the connection is closed. Bodies are read before a
    /// request takes an in-flight permit, so slow senders hold connections, never permits.
    /// 0s: no limit. Env: DATA_API_BODY_TIMEOUT.
    #[arg(long, env = "DATA_API_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
}

/// How responses are shaped for clients and browsers.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpSettings {
    /// `Cache-Control` sent with `GET /data/{id}` (visible ASCII). Env: DATA_API_CACHE_CONTROL.
    #[arg(long, env = "DATA_API_CACHE_CONTROL", default_value = "no-cache", value_parser = header_text)]
    pub cache_control: HeaderValue,

    /// Compress responses (gzip, deflate, brotli, zstd) when the client's `Accept-Encoding` asks
    /// for it. Env: DATA_API_COMPRESSION.
    #[arg(long, env = "DATA_API_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,

    /// Origins allowed to call the API from a browser (CORS), comma-separated, or `*` for any.
    /// Unset: no CORS headers. Env: DATA_API_CORS_ORIGINS.
    #[arg(long, env = "DATA_API_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
}

/// API keys for writes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "API keys")]
pub struct AuthSettings {
    /// API keys for writes, comma-separated: POST/PUT/PATCH/DELETE then need
    /// `Authorization: Bearer <key>` (401 without, 403 with a wrong one). Several keys allow
    /// rotation. Unset: writes are open (logged as a warning at start); set but holding no key
    /// (empty, blank, only commas) is refused at start. Env: DATA_API_KEYS.
    #[arg(long, env = "DATA_API_KEYS", hide_env_values = true, value_parser = key_list)]
    pub api_keys: Option<String>,

    /// File with one API key per line (`#` comments allowed), added to `--api-keys`; a file
    /// holding no key is refused at start. Env: DATA_API_KEY_FILE.
    #[arg(long, env = "DATA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
}

/// A list of API keys that holds at least one: an empty list is a templating mistake that
/// would leave writes open while the operator believes they are protected.
fn key_list(value: &str) -> Result<String, String> {
    if value.split(',').all(|k| k.trim().is_empty()) {
        return Err("holds no key; unset it to leave writes open".into());
    }
    Ok(value.to_owned())
}

/// A header value we send as configured: visible ASCII and spaces, so it reads back as the same
/// text.
fn header_text(value: &str) -> Result<HeaderValue, String> {
    if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err("must be visible ASCII".into());
    }
    HeaderValue::from_str(value).map_err(|e| e.to_string())
}
