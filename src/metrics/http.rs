//! Bounded label values for HTTP metrics: the route template, the method and the status code.

/// Route templates; anything else is `unmatched`, so raw paths never become label values.
pub const ROUTES: [&str; 8] = [
    "/data",
    "/data/{id}",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "unmatched",
];
const UNMATCHED: usize = ROUTES.len() - 1;

/// Methods; others are `_OTHER` (as OpenTelemetry prescribes).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "_OTHER",
];

/// Status codes whose series are cached; others are registered on use (still bounded: 100–999).
pub const STATUSES: [u16; 20] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 411, 412, 413, 415, 422, 429, 431, 500, 503,
    504,
];
/// The same codes as label values, so recording allocates nothing.
pub const STATUS_LABELS: [&str; 20] = [
    "200", "201", "204", "304", "400", "401", "403", "404", "405", "408", "411", "412", "413",
    "415", "422", "429", "431", "500", "503", "504",
];

/// The route template index of `path`.
pub fn route_of(path: &str) -> usize {
    match path {
        "/data" => 0,
        "/health/live" => 2,
        "/health/ready" => 3,
        "/metrics" => 4,
        "/openapi.json" => 5,
        "/docs" => 6,
        p if p.starts_with("/docs/") => 6,
        p => match p.strip_prefix("/data/") {
            Some(id) if !id.is_empty() && !id.contains('/') => 1,
            _ => UNMATCHED,
        },
    }
}

/// The method index of `method`.
pub fn method_of(method: &poem::http::Method) -> usize {
    METHODS[..7]
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(7)
}

/// The index of `status` in `STATUSES`, if cached.
pub fn status_of(status: u16) -> Option<usize> {
    STATUSES.iter().position(|s| *s == status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        assert_eq!(ROUTES[route_of("/data")], "/data");
        assert_eq!(ROUTES[route_of("/data/42")], "/data/{id}");
        assert_eq!(ROUTES[route_of("/data/not-a-number")], "/data/{id}");
        assert_eq!(ROUTES[route_of("/data/1/extra")], "unmatched");
        assert_eq!(ROUTES[route_of("/data/")], "unmatched");
        assert_eq!(ROUTES[route_of("/docs/index.css")], "/docs");
        assert_eq!(ROUTES[route_of("/wp-admin")], "unmatched");
        assert_eq!(METHODS[method_of(&poem::http::Method::PATCH)], "PATCH");
        assert_eq!(
            METHODS[method_of(&poem::http::Method::from_bytes(b"BREW").unwrap())],
            "_OTHER"
        );
        assert_eq!(status_of(412).map(|i| STATUS_LABELS[i]), Some("412"));
    }
}
