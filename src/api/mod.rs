//! The HTTP surface: the OpenAPI service with its operations, `/openapi.json`, Swagger UI at
//! `/docs`, and the middleware every request passes through.

/// Implements poem-openapi's `Type` for one of our scalar types: required, its own raw value,
/// named `$name`, described by the schema `$schema` builds.
macro_rules! scalar_type {
    ($ty:ty, $name:expr, $schema:expr) => {
        impl poem_openapi::types::Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                $schema
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}

pub(crate) mod auth;
pub(crate) mod conditional;
pub(crate) mod dashboard;
pub(crate) mod data;
pub(crate) mod dispatch;
pub(crate) mod edge;
pub(crate) mod error;
pub(crate) mod health;
pub mod middleware;
pub mod models;
pub(crate) mod observe;
pub(crate) mod spec;
pub(crate) mod text;

use std::sync::{Arc, atomic::AtomicBool};

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, Response, Route,
    endpoint::make_sync,
    get,
    http::Method,
    middleware::{Compression, Cors},
};
use poem_openapi::{OpenApiService, Tags};

use crate::config::Settings;
use crate::dashboard::Dashboard;
use crate::metrics::Metrics;
use crate::store::Store;

/// Operation groups in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Create, read, update, delete and list items.
    Data,
    /// Liveness and readiness probes.
    Health,
}

/// The OpenAPI service over `data` (the `/data` resource) and the probes.
pub fn openapi(
    data: data::DataApi,
    store: Store,
    settings: &Settings,
    shutting_down: Arc<AtomicBool>,
) -> OpenApiService<(data::DataApi, health::HealthApi), ()> {
    let health = health::HealthApi {
        store,
        shutting_down,
        ready_timeout: settings.server.ready_timeout,
    };
    OpenApiService::new((data, health), "data-api", env!("CARGO_PKG_VERSION")).description(
        "Items at `/data/{id}` with create, read, replace, update, delete and keyset-paginated \
             listing. Reads are served from a coherent in-memory cache; every response carries an \
             `ETag` (the item's version) for conditional requests. Errors are RFC 9457 \
             `application/problem+json`.",
    )
}

/// Every route, wrapped in the middleware (outermost first): telemetry, compression, the
/// request guard (limits and problem+json), CORS, panic catching. `/metrics` and `/dashboard`
/// are included unless they have an address of their own. Fails if `/docs` could not be given the served document.
pub fn routes(
    store: Store,
    settings: &Settings,
    shutting_down: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    keys: auth::ApiKeys,
    dashboard: Arc<Dashboard>,
) -> anyhow::Result<impl Endpoint + use<>> {
    let data = data::DataApi {
        store: store.clone(),
        cache_control: settings.http.cache_control.clone(),
        keys,
    };
    let api = openapi(data.clone(), store, settings, shutting_down);
    let raw = api.spec();
    let document = spec::document(&raw);
    let docs = spec::docs_endpoint(&api.swagger_ui_html(), &raw, &document)?;
    let spec = spec::json_endpoint(document);
    let limits = middleware::Limits::from_settings(&settings.limits);
    let mut route = Route::new().at("/openapi.json", spec).nest("/docs", docs);
    let m = &settings.metrics;
    if m.enabled && m.bind.is_none() {
        route = route.at(
            "/metrics",
            metrics_endpoint(metrics.clone(), m.token.clone()),
        );
    }
    if !m.enabled || m.bind.is_none() {
        route = route.nest(
            "/dashboard",
            self::dashboard::routes(dashboard, m.token.clone()),
        );
    }
    let cors = settings.http.cors_origins.as_deref().map(cors);
    let guarded = middleware::Guarded {
        // CORS inside the guard, so its refusals are answered as problem+json too.
        inner: middleware::catch_panics(
            dispatch::Dispatch {
                api: api.into_endpoint(),
                rest: route,
                items: data,
            },
            &metrics,
        )
        .with_if(cors.is_some(), cors.unwrap_or_default()),
        limits,
    };
    let observe = observe::Observe {
        metrics,
        spans: settings.trace.enabled,
        access_log: settings.trace.access_log,
        export: settings.trace.exports(),
    };
    Ok(observe::Observed {
        inner: guarded.with_if(settings.http.compression, Compression::new()),
        observe,
    })
}

/// `GET /metrics`: the Prometheus text exposition, behind a bearer token if one is set.
pub fn metrics_endpoint(metrics: Arc<Metrics>, token: Option<String>) -> impl Endpoint + use<> {
    get(make_sync(move |req| {
        if let Some(token) = &token
            && !auth::metrics_token_given(&req, token)
        {
            return auth::metrics_unauthorized("/metrics", "Bearer");
        }
        Response::builder()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(metrics.render())
    }))
}

/// CORS for the configured origins (`*`: any).
fn cors(origins: &str) -> Cors {
    let mut cors = Cors::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            "content-type",
            "authorization",
            "if-match",
            "if-none-match",
            "traceparent",
        ])
        .expose_headers(["etag", "location", "traceparent", "retry-after"])
        .max_age(600);
    let list: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "*")
        .collect();
    if !list.is_empty() {
        cors = cors.allow_origins(list);
    }
    cors
}
