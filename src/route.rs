//! The route table: every path the service answers, its template and its methods. Metrics and
//! span names (the `http_route` label), the request guard (which routes skip the in-flight cap)
//! and the `Allow` header of a 405 all read it; a test checks it against the OpenAPI document
//! and the router, so the two cannot drift apart.
//!
//! Requests are classified by path here rather than by the `PathPattern` poem attaches after
//! routing, because the guard needs the route before routing (to exempt probes), and a path
//! classification is a few byte comparisons with no allocation.

/// One route of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    /// `/data`
    Collection,
    /// `/data/{id}`
    Item,
    /// `/health/live`
    Live,
    /// `/health/ready`
    Ready,
    /// `/metrics` (unless it has an address of its own)
    Metrics,
    /// `/openapi.json`
    OpenApi,
    /// `/docs` and its assets
    Docs,
    /// `/dashboard`, its assets and data (unless metrics have an address of their own)
    Dashboard,
    /// Anything else, so raw paths never become label values.
    Unmatched,
}

impl ApiRoute {
    /// Every route, in index order.
    pub const ALL: [Self; 9] = [
        Self::Collection,
        Self::Item,
        Self::Live,
        Self::Ready,
        Self::Metrics,
        Self::OpenApi,
        Self::Docs,
        Self::Dashboard,
        Self::Unmatched,
    ];

    /// The route template, as the OpenAPI document writes it.
    pub const fn template(self) -> &'static str {
        match self {
            Self::Collection => "/data",
            Self::Item => "/data/{id}",
            Self::Live => "/health/live",
            Self::Ready => "/health/ready",
            Self::Metrics => "/metrics",
            Self::OpenApi => "/openapi.json",
            Self::Docs => "/docs",
            Self::Dashboard => "/dashboard",
            Self::Unmatched => "unmatched",
        }
    }

    /// The methods the route answers, as an `Allow` header lists them.
    pub const fn allow(self) -> &'static str {
        match self {
            Self::Collection => "GET, POST",
            Self::Item => "GET, PUT, PATCH, DELETE",
            Self::Live
            | Self::Ready
            | Self::Metrics
            | Self::OpenApi
            | Self::Docs
            | Self::Dashboard => "GET",
            Self::Unmatched => "",
        }
    }

    /// Served by the OpenAPI service's operations (the other routes are plain poem routes).
    pub const fn is_operation(self) -> bool {
        matches!(
            self,
            Self::Collection | Self::Item | Self::Live | Self::Ready
        )
    }

    /// Probes, scrapes and the dashboard: never refused by the in-flight cap, so an overloaded
    /// service still reports on itself.
    pub const fn is_probe(self) -> bool {
        matches!(
            self,
            Self::Live | Self::Ready | Self::Metrics | Self::Dashboard
        )
    }

    /// The route `path` belongs to.
    pub fn of(path: &str) -> Self {
        match path {
            "/data" => Self::Collection,
            "/health/live" => Self::Live,
            "/health/ready" => Self::Ready,
            "/metrics" => Self::Metrics,
            "/openapi.json" => Self::OpenApi,
            "/docs" => Self::Docs,
            p if p.starts_with("/docs/") => Self::Docs,
            "/dashboard" => Self::Dashboard,
            p if p.starts_with("/dashboard/") => Self::Dashboard,
            p => match p.strip_prefix("/data/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::Item,
                _ => Self::Unmatched,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiRoute;

    #[test]
    fn paths_map_to_templates() {
        let of = |p| ApiRoute::of(p).template();
        assert_eq!(of("/data"), "/data");
        assert_eq!(of("/data/42"), "/data/{id}");
        assert_eq!(of("/data/not-a-number"), "/data/{id}");
        assert_eq!(of("/data/1/extra"), "unmatched");
        assert_eq!(of("/data/"), "unmatched");
        assert_eq!(of("/docs/index.css"), "/docs");
        assert_eq!(of("/wp-admin"), "unmatched");
        assert_eq!(of("/dashboard/data"), "/dashboard");
        for (i, r) in ApiRoute::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in index order");
        }
    }
}
