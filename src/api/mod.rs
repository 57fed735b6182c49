//! The HTTP surface: the OpenAPI service with its operations, `/openapi.json`, Swagger UI at
//! `/docs`, and the middleware every request passes through.

pub mod conditional;
pub mod data;
pub mod health;
pub mod middleware;
pub mod models;
pub mod text;

use std::sync::{Arc, atomic::AtomicBool};

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::config::Settings;
use crate::store::Store;

/// Operation groups in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Create, read, update, delete and list items.
    Data,
    /// Liveness and readiness probes.
    Health,
}

/// The OpenAPI service; also used to render the spec for the snapshot test.
pub fn openapi(
    store: Store,
    settings: &Settings,
    shutting_down: Arc<AtomicBool>,
) -> OpenApiService<(data::DataApi, health::HealthApi), ()> {
    let data = data::DataApi {
        store: store.clone(),
        cache_control: settings.http.cache_control.clone(),
    };
    let health = health::HealthApi {
        store,
        shutting_down,
        ready_timeout: settings.http.ready_timeout,
    };
    OpenApiService::new((data, health), "data-api", env!("CARGO_PKG_VERSION")).description(
        "Items at `/data/{id}` with create, read, replace, update, delete and keyset-paginated \
             listing. Reads are served from a coherent in-memory cache; every response carries an \
             `ETag` (the item's version) for conditional requests. Errors are RFC 9457 \
             `application/problem+json`.",
    )
}

/// Every route, wrapped in the body limit and the problem+json error mapping.
pub fn routes(
    store: Store,
    settings: &Settings,
    shutting_down: Arc<AtomicBool>,
) -> impl Endpoint + use<> {
    let api = openapi(store, settings, shutting_down);
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let limit = settings.http.body_limit;
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api)
        .around(move |ep, req| async move { middleware::guard(&ep, req, limit).await })
}
