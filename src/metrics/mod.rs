//! Prometheus metrics: one registry per application, handles registered once and kept, so
//! recording on the hot path is an atomic update — no label-set allocation, no registry lock.

pub mod catalog;
pub(crate) mod http;

use std::{sync::OnceLock, time::Duration};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use self::catalog::{Kind, MetricDef};
use self::http::{HttpMethod, STATUS_LABELS, STATUSES};
use crate::route::ApiRoute;

const META: Metadata<'static> = Metadata::new("data_api", Level::INFO, Some(module_path!()));

/// The application's metrics.
pub struct Metrics {
    recorder: Option<PrometheusRecorder>,
    process: metrics_process::Collector,
    active: Gauge,
    panics: Counter,
    /// Request-duration series by (route, method, cached status), registered on first use.
    http: Box<[OnceLock<Histogram>]>,
}

impl Metrics {
    /// A registry with every family described and the always-present series registered; with
    /// `enabled == false`, handles that record nothing.
    pub fn new(enabled: bool) -> Self {
        let recorder = enabled.then(|| {
            catalog::ALL
                .iter()
                .filter(|m| m.kind == Kind::Histogram)
                // Setting buckets only fails for an empty list.
                .try_fold(PrometheusBuilder::new(), |b, m| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m.name.to_owned()),
                        catalog::LATENCY_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder()
        });
        let slots = ApiRoute::ALL.len() * HttpMethod::ALL.len() * STATUSES.len();
        let mut m = Self {
            recorder,
            process: metrics_process::Collector::default(),
            active: Gauge::noop(),
            panics: Counter::noop(),
            http: (0..slots).map(|_| OnceLock::new()).collect(),
        };
        m.describe_all();
        m.active = m.gauge(&catalog::HTTP_SERVER_ACTIVE_REQUESTS, &[]);
        m.panics = m.counter(&catalog::HTTP_SERVER_PANICS, &[]);
        // Families that exist before the first request.
        let _ = m.http_histogram(ApiRoute::Item, HttpMethod::Get, 200);
        let _ = m.http_histogram(ApiRoute::Collection, HttpMethod::Post, 201);
        m.gauge(
            &catalog::BUILD_INFO,
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

    /// The counter `def{labels}`.
    pub fn counter(&self, def: &MetricDef, labels: &[(&'static str, &'static str)]) -> Counter {
        debug_assert_eq!(def.kind, Kind::Counter, "{}", def.name);
        self.recorder.as_ref().map_or(Counter::noop(), |r| {
            r.register_counter(&Self::key(def.name, labels), &META)
        })
    }

    /// The gauge `def{labels}`.
    pub fn gauge(&self, def: &MetricDef, labels: &[(&'static str, &'static str)]) -> Gauge {
        debug_assert_eq!(def.kind, Kind::Gauge, "{}", def.name);
        self.recorder.as_ref().map_or(Gauge::noop(), |r| {
            r.register_gauge(&Self::key(def.name, labels), &META)
        })
    }

    /// The histogram `def{labels}`.
    pub fn histogram(&self, def: &MetricDef, labels: &[(&'static str, &'static str)]) -> Histogram {
        debug_assert_eq!(def.kind, Kind::Histogram, "{}", def.name);
        self.recorder.as_ref().map_or(Histogram::noop(), |r| {
            r.register_histogram(&Self::key(def.name, labels), &META)
        })
    }

    /// The in-flight request gauge.
    pub fn active_requests(&self) -> &Gauge {
        &self.active
    }

    /// The counter of handlers that panicked.
    pub fn panics(&self) -> &Counter {
        &self.panics
    }

    /// Records one finished request.
    pub fn observe_http(
        &self,
        route: ApiRoute,
        method: HttpMethod,
        status: u16,
        elapsed: Duration,
    ) {
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
    fn http_slot(&self, route: ApiRoute, method: HttpMethod, s: usize) -> &Histogram {
        let index = (route as usize * HttpMethod::ALL.len() + method as usize) * STATUSES.len() + s;
        self.http[index].get_or_init(|| {
            self.histogram(
                &catalog::HTTP_SERVER_REQUEST_DURATION,
                &[
                    ("http_request_method", method.as_str()),
                    ("http_route", route.template()),
                    ("http_response_status_code", STATUS_LABELS[s]),
                ],
            )
        })
    }

    fn http_histogram(&self, route: ApiRoute, method: HttpMethod, status: u16) -> Histogram {
        if let Some(s) = http::status_of(status) {
            return self.http_slot(route, method, s).clone();
        }
        let Some(r) = &self.recorder else {
            return Histogram::noop();
        };
        // Rare codes: registered each time (the registry returns the same series).
        let labels = vec![
            Label::from_static_parts("http_request_method", method.as_str()),
            Label::from_static_parts("http_route", route.template()),
            Label::new("http_response_status_code", status.to_string()),
        ];
        let key = Key::from_parts(catalog::HTTP_SERVER_REQUEST_DURATION.name, labels);
        r.register_histogram(&key, &META)
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
        for m in catalog::ALL {
            let (name, help) = (
                KeyName::from_const_str(m.name),
                SharedString::const_str(m.help),
            );
            match m.kind {
                Kind::Counter => r.describe_counter(name, m.unit, help),
                Kind::Gauge => r.describe_gauge(name, m.unit, help),
                Kind::Histogram => r.describe_histogram(name, m.unit, help),
            }
        }
    }
}
