//! The headers an edge cache in front reads (`--edge-max-age`; the rules are in `cache::edge`):
//! how long it may keep an answer, and the surrogate keys that purge it.
//!
//! - `Surrogate-Control` (Varnish, Fastly, Akamai) and `CDN-Cache-Control` (RFC 9213; Cloudflare,
//!   Akamai): `max-age=N`, or `no-store` while purges fail. Targeted at shared caches, so the
//!   browsers' `Cache-Control` (`--cache-control`) stays as it is.
//! - `Surrogate-Key` (Varnish's xkey, Fastly; space-separated) and `Cache-Tag` (Cloudflare;
//!   comma-separated): the keys purges name. The edge strips them before clients see them (the
//!   shipped VCL does it for Varnish).

use poem::{
    Response,
    http::{HeaderName, HeaderValue, StatusCode},
};

use crate::cache::edge::{EdgePurger, LIST_KEY, SERVICE_KEY, item_keys};

/// What an answer depends on.
#[derive(Debug, Clone, Copy)]
pub enum Depends {
    /// `GET /data/{id}`: the item (its 404 included, so a create purges it).
    Item(i64),
    /// A page of `GET /data`.
    List,
}

const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Adds the edge's headers to `resp`, an answer to a read that depends on `on`: answers the
/// edge may keep (200, 304, and an item's 404) get them; anything else is left alone.
pub fn decorate(resp: &mut Response, edge: &EdgePurger, on: Depends) {
    let keeps = match on {
        Depends::Item(_) => matches!(
            resp.status(),
            StatusCode::OK | StatusCode::NOT_MODIFIED | StatusCode::NOT_FOUND
        ),
        Depends::List => resp.status() == StatusCode::OK,
    };
    if !keeps {
        return;
    }
    let keys: Vec<String> = match on {
        Depends::Item(id) => item_keys(id).into(),
        Depends::List => vec![SERVICE_KEY.to_owned(), LIST_KEY.to_owned()],
    };
    let headers = resp.headers_mut();
    // `max-age=N` or `no-store`: always a valid value.
    let control = HeaderValue::from_str(edge.edge_control())
        .unwrap_or_else(|_| HeaderValue::from_static("no-store"));
    headers.insert(SURROGATE_CONTROL, control.clone());
    headers.insert(CDN_CACHE_CONTROL, control);
    // Keys are ASCII letters, digits, `-` and `/`: always valid values.
    if let Ok(v) = HeaderValue::from_str(&keys.join(" ")) {
        headers.insert(SURROGATE_KEY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&keys.join(",")) {
        headers.insert(CACHE_TAG, v);
    }
}
