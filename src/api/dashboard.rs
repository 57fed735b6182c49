//! The dashboard's endpoints: the page and its script and style (compiled into the binary, no
//! third-party code, served under `Content-Security-Policy: default-src 'self'`), and the data
//! the page polls. With `--metrics-token` all of it needs the token, as `/metrics` does: a
//! browser sends it as the password of HTTP Basic authentication (any user name), which it asks
//! for once and then sends with every request of the page.

use std::{sync::Arc, time::Duration};

use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route,
    endpoint::{make, make_sync},
    get,
    http::StatusCode,
};

use super::auth;
use super::error::Problem;
use crate::dashboard::{Dashboard, DataQuery};

const PAGE: &str = include_str!("../dashboard/assets/index.html");
const SCRIPT: &str = include_str!("../dashboard/assets/dashboard.js");
const STYLE: &str = include_str!("../dashboard/assets/dashboard.css");
/// Named by the page, so the browser does not ask for `/favicon.ico` (a 404 in its console).
const ICON: &[u8] = include_bytes!("../dashboard/assets/favicon.png");

/// Every response of the dashboard: nothing but its own origin may be loaded or run.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The range the page shows when it does not say, and the longest it may ask for.
const DEFAULT_RANGE: Duration = Duration::from_secs(300);
const MAX_RANGE: Duration = Duration::from_secs(3600);

/// `/dashboard` (the page), `/dashboard/dashboard.js`, `/dashboard/dashboard.css` and
/// `/dashboard/data`, behind `token` when one is set.
pub fn routes(dashboard: Arc<Dashboard>, token: Option<String>) -> impl Endpoint + use<> {
    let asset = |body: &'static str, kind: &'static str| {
        get(make_sync(move |_| {
            Response::builder()
                .content_type(kind)
                .header("Cache-Control", "no-cache")
                .body(body)
        }))
    };
    Route::new()
        .at("/", asset(PAGE, "text/html; charset=utf-8"))
        .at(
            "/dashboard.js",
            asset(SCRIPT, "text/javascript; charset=utf-8"),
        )
        .at("/dashboard.css", asset(STYLE, "text/css; charset=utf-8"))
        .at(
            "/favicon.png",
            get(make_sync(|_| {
                Response::builder()
                    .content_type("image/png")
                    .header("Cache-Control", "max-age=86400")
                    .body(ICON)
            })),
        )
        .at(
            "/data",
            get(make(move |req: Request| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, poem::Error>(data(&dashboard, &req).await) }
            })),
        )
        .around(move |ep, req| {
            let token = token.clone();
            async move {
                if let Some(token) = &token
                    && !auth::metrics_token_given(&req, token)
                {
                    return Ok(auth::metrics_unauthorized(
                        "/dashboard",
                        "Basic realm=\"data-api metrics\", charset=\"UTF-8\"",
                    ));
                }
                let resp = ep.call(req).await?.into_response();
                Ok(resp
                    .with_header("Content-Security-Policy", CSP)
                    .with_header("X-Content-Type-Options", "nosniff")
                    .with_header("Referrer-Policy", "no-referrer")
                    .into_response())
            }
        })
}

/// `GET /dashboard/data?since=<unix ms>&range=<seconds>`.
async fn data(dashboard: &Arc<Dashboard>, req: &Request) -> Response {
    match parse_query(req.uri().query().unwrap_or_default()) {
        // Closed after each poll, so an open tab holds no `--max-connections` place in between.
        Ok(q) => Response::builder()
            .content_type("application/json")
            .header("Cache-Control", "no-store")
            .header("Connection", "close")
            .body(dashboard.data_json(q).await),
        Err(detail) => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", detail).into_response()
        }
    }
}

/// `since` (unix milliseconds: only newer points) and `range` (seconds, 1–3600; default 300).
fn parse_query(query: &str) -> Result<DataQuery, String> {
    let mut q = DataQuery {
        since_ms: None,
        range: DEFAULT_RANGE,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("`{key}` must be a whole number, not {value:?}"))
        };
        match key {
            "since" => q.since_ms = Some(number()?),
            "range" => {
                let s = number()?;
                if !(1..=MAX_RANGE.as_secs()).contains(&s) {
                    return Err(format!(
                        "`range` must be 1 to {} seconds",
                        MAX_RANGE.as_secs()
                    ));
                }
                q.range = Duration::from_secs(s);
            }
            _ => return Err(format!("unknown parameter `{key}` (since, range)")),
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_or_say_why_not() {
        let q = parse_query("since=1700000000000&range=60").unwrap();
        assert_eq!(
            (q.since_ms, q.range.as_secs()),
            (Some(1_700_000_000_000), 60)
        );
        assert_eq!(parse_query("").unwrap().range, DEFAULT_RANGE);
        for bad in [
            "range=0",
            "range=3601",
            "since=-1",
            "since=abc",
            "x=1",
            "range",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assets_load_nothing_from_elsewhere() {
        for (name, body) in [("page", PAGE), ("script", SCRIPT), ("style", STYLE)] {
            for outside in [
                "http://", "https://", "//cdn", "<script>", "style=", "onclick", "eval(",
            ] {
                assert!(!body.contains(outside), "{name} contains {outside:?}");
            }
        }
        assert!(
            PAGE.contains("src=\"/dashboard/dashboard.js\""),
            "the page loads its own script"
        );
    }
}
