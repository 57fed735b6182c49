//! The direct lane: the OpenAPI operations called directly, every other route through the
//! router, and `GET /data/{id}` with a plain id answered without poem-openapi's layers.

use super::data::DataApi;
use super::edge::{Depends, decorate};
use crate::route::ApiRoute;

/// The OpenAPI operations called directly and every other route through the router, so a request
/// for `/data/{id}` is matched once (by the OpenAPI service's own router) instead of twice (the
/// outer router, then the nested service's): that second match, its path formatting and request
/// extensions were a large share of a cache hit's instructions (BENCHMARKS.md).
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
                let edge = self.items.store.edge();
                if let Some((id, if_none_match)) = plain_get(&req) {
                    let read = match edge {
                        Some(_) if req.headers().contains_key(CDN_LOOP) => {
                            self.items.read_item_fresh(id, if_none_match).await
                        }
                        _ => self.items.read_item(id, if_none_match).await,
                    };
                    let mut resp = self.items.read_response(read?);
                    if let Some(edge) = edge {
                        decorate(&mut resp, edge, Depends::Item(id));
                    }
                    return Ok(resp);
                }
                let id = path_id(req.uri().path());
                let mut resp = cold(self.api.call(req)).await?;
                if let (Some(edge), Some(id)) = (edge, id) {
                    decorate(&mut resp, edge, Depends::Item(id));
                }
                Ok(resp)
            }
            ApiRoute::Collection if req.method() == poem::http::Method::GET => {
                let mut resp = cold(self.api.call(req)).await?;
                if let Some(edge) = self.items.store.edge() {
                    decorate(&mut resp, edge, Depends::List);
                }
                Ok(resp)
            }
            route if route.is_operation() => cold(self.api.call(req)).await,
            _ => cold(self.rest.call(req)).await,
        }
    }
}

/// Another lane's future, boxed: the operations' futures are kilobytes (every extractor's state),
/// and unboxed they would size this endpoint's future, so the direct lane and every layer around
/// it would move kilobytes per request (`memcpy` that a profile of hits showed).
/// One allocation is nothing beside a database round trip.
fn cold<R: poem::IntoResponse>(
    call: impl Future<Output = poem::Result<R>>,
) -> impl Future<Output = poem::Result<poem::Response>> {
    let call = Box::pin(call);
    async move { call.await.map(poem::IntoResponse::into_response) }
}

/// The header a CDN adds to what it forwards (RFC 8586): the request is an edge cache's miss.
const CDN_LOOP: &str = "cdn-loop";

/// The item id in a `/data/{id}` path, if it is one.
fn path_id(path: &str) -> Option<i64> {
    path.strip_prefix("/data/")?.parse().ok()
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
    use super::plain_get;

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
