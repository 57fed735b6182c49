//! Prometheus metrics: one registry per application, handles registered once and kept, so
//! recording on the hot path is an atomic update — no label-set allocation, no registry lock.

pub mod gate;
pub mod http;
pub mod names;

use std::{sync::OnceLock, time::Duration};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use self::http::{METHODS, ROUTES, STATUS_LABELS, STATUSES};
use self::names::*;

const META: Metadata<'static> = Metadata::new("data_api", Level::INFO, Some(module_path!()));

/// The application's metrics.
pub struct Metrics {
    recorder: Option<PrometheusRecorder>,
    process: metrics_process::Collector,
    active: Gauge,
    /// Request-duration series by (route, method, cached status), registered on first use.
    http: Box<[OnceLock<Histogram>]>,
}

impl Metrics {
    /// A registry with every family described and the always-present series registered; with
    /// `enabled == false`, handles that record nothing.
    pub fn new(enabled: bool) -> Self {
        let recorder = enabled.then(|| {
            let buckets = [
                HTTP_SERVER_REQUEST_DURATION,
                DB_OPERATION_DURATION,
                DB_CONNECTION_WAIT_TIME,
            ];
            // Names already end in their unit; setting buckets only fails for an empty list.
            buckets
                .into_iter()
                .try_fold(PrometheusBuilder::new(), |b, name| {
                    b.set_buckets_for_metric(Matcher::Full(name.to_owned()), LATENCY_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder()
        });
        let slots = ROUTES.len() * METHODS.len() * STATUSES.len();
        let mut m = Self {
            recorder,
            process: metrics_process::Collector::default(),
            active: Gauge::noop(),
            http: (0..slots).map(|_| OnceLock::new()).collect(),
        };
        m.describe_all();
        m.active = m.gauge(HTTP_SERVER_ACTIVE_REQUESTS, &[]);
        // Families that exist before the first request.
        let _ = m.http_histogram(1, 0, 200);
        let _ = m.http_histogram(0, 2, 201);
        m.gauge(
            BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("DATA_API_GIT_REVISION")),
            ],
        )
        .set(1.0);
        m
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.recorder.is_some()
    }

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::from_static_parts(k, v))
                .collect::<Vec<_>>(),
        )
    }

    /// The counter `name{labels}`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.recorder.as_ref().map_or(Counter::noop(), |r| {
            r.register_counter(&Self::key(name, labels), &META)
        })
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.recorder.as_ref().map_or(Gauge::noop(), |r| {
            r.register_gauge(&Self::key(name, labels), &META)
        })
    }

    /// The histogram `name{labels}`.
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        self.recorder.as_ref().map_or(Histogram::noop(), |r| {
            r.register_histogram(&Self::key(name, labels), &META)
        })
    }

    /// The in-flight request gauge.
    pub fn active_requests(&self) -> &Gauge {
        &self.active
    }

    /// Records one finished request.
    pub fn observe_http(&self, route: usize, method: usize, status: u16, elapsed: Duration) {
        if self.recorder.is_none() {
            return;
        }
        match http::status_of(status) {
            Some(s) => self
                .http_slot(route, method, s)
                .record(elapsed.as_secs_f64()),
            None => self
                .http_histogram(route, method, status)
                .record(elapsed.as_secs_f64()),
        }
    }

    /// The cached series for a status in `STATUSES` (index `s`), registered on first use.
    fn http_slot(&self, route: usize, method: usize, s: usize) -> &Histogram {
        let slot = &self.http[(route * METHODS.len() + method) * STATUSES.len() + s];
        slot.get_or_init(|| {
            let labels = [
                ("http_request_method", METHODS[method]),
                ("http_route", ROUTES[route]),
                ("http_response_status_code", STATUS_LABELS[s]),
            ];
            self.histogram(HTTP_SERVER_REQUEST_DURATION, &labels)
        })
    }

    fn http_histogram(&self, route: usize, method: usize, status: u16) -> Histogram {
        let labels = |code: &'static str| {
            [
                ("http_request_method", METHODS[method]),
                ("http_route", ROUTES[route]),
                ("http_response_status_code", code),
            ]
        };
        match http::status_of(status) {
            Some(s) => self.http_slot(route, method, s).clone(),
            // Rare codes: registered each time (the registry returns the same series).
            None => {
                let Some(r) = &self.recorder else {
                    return Histogram::noop();
                };
                let [m, route, _] = labels("");
                let labels = vec![
                    Label::from_static_parts(m.0, m.1),
                    Label::from_static_parts(route.0, route.1),
                    Label::new("http_response_status_code", status.to_string()),
                ];
                r.register_histogram(
                    &Key::from_parts(HTTP_SERVER_REQUEST_DURATION, labels),
                    &META,
                )
            }
        }
    }

    /// The Prometheus text exposition, with process metrics collected now.
    pub fn render(&self) -> String {
        let Some(recorder) = &self.recorder else {
            return String::new();
        };
        metrics::with_local_recorder(recorder, || self.process.collect());
        recorder.handle().render()
    }

    /// Periodic housekeeping of the registry.
    pub fn upkeep(&self) {
        if let Some(r) = &self.recorder {
            r.handle().run_upkeep();
        }
    }

    fn describe_all(&self) {
        let Some(r) = &self.recorder else { return };
        metrics::with_local_recorder(r, || self.process.describe());
        let s = Some(Unit::Seconds);
        let described: [(&'static str, Option<Unit>, &'static str, u8); 19] = [
            (
                HTTP_SERVER_REQUEST_DURATION,
                s,
                "Duration of HTTP requests, by method, route template and status.",
                2,
            ),
            (
                HTTP_SERVER_ACTIVE_REQUESTS,
                None,
                "HTTP requests being handled now.",
                1,
            ),
            (
                HTTP_SERVER_OPEN_CONNECTIONS,
                None,
                "Client connections open now.",
                1,
            ),
            (
                HTTP_SERVER_CONNECTION_LIMIT,
                None,
                "Configured maximum of open client connections (0: no cap).",
                1,
            ),
            (
                CACHE_GETS,
                None,
                "Item cache lookups by result (hit, miss).",
                0,
            ),
            (
                CACHE_LOAD_COALESCED,
                None,
                "Cache misses served by another request's database load.",
                0,
            ),
            (
                CACHE_EVICTIONS,
                None,
                "Cache entries removed, by cause (size, expired, explicit, replaced).",
                0,
            ),
            (CACHE_ENTRIES, None, "Entries in the item cache.", 1),
            (
                CACHE_SIZE_BYTES,
                Some(Unit::Bytes),
                "Bytes of response bodies held in the item cache.",
                1,
            ),
            (
                CACHE_CAPACITY,
                None,
                "Configured maximum entries of the item cache.",
                1,
            ),
            (
                DB_OPERATION_DURATION,
                s,
                "Duration of database operations, by operation.",
                2,
            ),
            (
                DB_OPERATION_ERRORS,
                None,
                "Failed database operations, by operation and error type.",
                0,
            ),
            (
                DB_CONNECTION_COUNT,
                None,
                "Pooled database connections, by state (idle, used).",
                1,
            ),
            (
                DB_CONNECTION_MAX,
                None,
                "Configured maximum connections of the pool.",
                1,
            ),
            (
                DB_CONNECTION_IDLE_MIN,
                None,
                "Configured minimum connections of the pool.",
                1,
            ),
            (
                DB_CONNECTION_PENDING,
                None,
                "Requests waiting for a database connection.",
                1,
            ),
            (
                DB_CONNECTION_WAIT_TIME,
                s,
                "Time spent waiting for a database connection.",
                2,
            ),
            (
                DB_CONNECTION_TIMEOUTS,
                None,
                "Waits for a connection that timed out (answered 503).",
                0,
            ),
            (
                BUILD_INFO,
                None,
                "Always 1; labels carry the version and git revision.",
                1,
            ),
        ];
        for (name, unit, help, kind) in described {
            let help = SharedString::const_str(help);
            match kind {
                0 => r.describe_counter(KeyName::from_const_str(name), unit, help),
                1 => r.describe_gauge(KeyName::from_const_str(name), unit, help),
                _ => r.describe_histogram(KeyName::from_const_str(name), unit, help),
            }
        }
    }
}
