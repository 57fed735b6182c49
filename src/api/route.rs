//! The route table: every path the service answers, its template and its methods. Metrics and
//! span names (the `http_route` label), the request guard (which routes skip the in-flight cap)
//! and the `Allow` header of a 405 all read it; a test checks it against the OpenAPI document
//! and the router, so the two cannot drift apart.
//!
//! Requests are classified by path here rather than by the `PathPattern` poem attaches after
//! routing, because the guard needs the route before routing (to exempt probes), and a path
//! classification is a few byte comparisons with no allocation.

use super::data::DataApi;

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

/// The OpenAPI operations called directly and every other route through the router, so a request
/// for `/data/{id}` is matched once (by the OpenAPI service's own router) instead of twice (the
/// outer router, then the nested service's): that second match, its path formatting and request
/// extensions were about a tenth of a cache hit's instructions.
///
/// `GET /data/{id}` with a plain decimal id (the read every client repeats) goes straight to
/// [`DataApi::read_item`], the function the operation itself calls, and is answered by
/// [`DataApi::read_response`], skipping poem-openapi's route match, extractors and endpoint
/// layers. Anything else about it (an id that does not parse, a header that is not text) takes
/// the operation, which answers the 400s.
pub struct Dispatch<A, R> {
    pub api: A,
    pub rest: R,
    pub items: DataApi,
}

impl<A: poem::Endpoint, R: poem::Endpoint> poem::Endpoint for Dispatch<A, R> {
    type Output = poem::Response;

    async fn call(&self, req: poem::Request) -> poem::Result<poem::Response> {
        match ApiRoute::of(req.uri().path()) {
            ApiRoute::Item if req.method() == poem::http::Method::GET => {
                if let Some((id, if_none_match)) = plain_get(&req) {
                    return match self.items.read_item(id, if_none_match).await {
                        Ok(read) => Ok(self.items.read_response(read)),
                        Err(e) => Err(e.into()),
                    };
                }
                cold(self.api.call(req)).await
            }
            route if route.is_operation() => cold(self.api.call(req)).await,
            _ => cold(self.rest.call(req)).await,
        }
    }
}

/// Another lane's future, boxed: the operations' futures are kilobytes (every extractor's state),
/// and unboxed they would size this endpoint's future, so the direct lane and every layer around
/// it would move kilobytes per request (a tenth of a hit's instructions went to `memcpy` there).
/// One allocation is nothing beside a database round trip.
fn cold<R: poem::IntoResponse>(
    call: impl Future<Output = poem::Result<R>>,
) -> impl Future<Output = poem::Result<poem::Response>> {
    let call = Box::pin(call);
    async move { call.await.map(poem::IntoResponse::into_response) }
}

/// The id and `If-None-Match` of a `GET /data/{id}` whose parameters need nothing but this: an id
/// of ASCII digits that is a valid one (1 and up), and a header that is text (or absent). The
/// operation would take the first `If-None-Match` too.
fn plain_get(req: &poem::Request) -> Option<(i64, Option<&str>)> {
    let digits = req.uri().path().strip_prefix("/data/")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = digits.parse::<i64>().ok().filter(|id| *id >= 1)?;
    // A read with `If-Match` is the operation's to decide (412).
    if req.headers().contains_key(poem::http::header::IF_MATCH) {
        return None;
    }
    let if_none_match = match req.headers().get(poem::http::header::IF_NONE_MATCH) {
        Some(value) => Some(value.to_str().ok()?),
        None => None,
    };
    Some((id, if_none_match))
}

#[cfg(test)]
mod tests {
    use super::{ApiRoute, plain_get};

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

    #[test]
    fn plain_gets_are_digits_and_text_only() {
        let get = |uri: &str, inm: Option<&[u8]>| {
            let mut b = poem::Request::builder().uri_str(uri);
            if let Some(v) = inm {
                b = b.header(
                    "if-none-match",
                    poem::http::HeaderValue::from_bytes(v).unwrap(),
                );
            }
            let req = b.finish();
            plain_get(&req).map(|(id, h)| (id, h.map(str::to_owned)))
        };
        assert_eq!(get("/data/42", None), Some((42, None)));
        assert_eq!(
            get("/data/7?x=1", Some(b"\"3\"")),
            Some((7, Some("\"3\"".into())))
        );
        // Left to the operation, which parses, validates and answers 400 as the spec says.
        for uri in [
            "/data/0",
            "/data/+1",
            "/data/-1",
            "/data/%31",
            "/data/x",
            "/data/99999999999999999999",
        ] {
            assert_eq!(get(uri, None), None, "{uri}");
        }
        assert_eq!(get("/data/1", Some(b"\xff")), None);
        let with_if_match = poem::Request::builder()
            .uri_str("/data/1")
            .header("if-match", "\"1\"")
            .finish();
        assert_eq!(
            plain_get(&with_if_match),
            None,
            "If-Match goes to the operation"
        );
    }
}
