//! The request guard: head limits (target and header size, legible headers), the in-flight
//! cap, the body limit and the request timeout; and turning every error (ours, poem's and
//! poem-openapi's) into `application/problem+json`.

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::{MethodNotAllowedError, NotFoundError, ReadBodyError},
    http::{Method, StatusCode, header},
};
use poem_openapi::error::{
    ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};

use std::time::Duration;

use poem::error::ResponseError;
use tokio::sync::Semaphore;

use crate::error::{AppError, Problem};

/// `inner` behind the request limits, with every error answered as problem+json.
pub struct Guarded<E> {
    pub inner: E,
    pub limits: Limits,
}

impl<E: Endpoint> Endpoint for Guarded<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        guard(&self.inner, req, &self.limits).await
    }
}

/// Checks the head, takes an in-flight permit, buffers bodies of POST/PUT/PATCH up to the body
/// limit (413 beyond, chunked bodies included), applies the timeout; then converts any error
/// into problem+json.
async fn guard<E: Endpoint>(ep: &E, mut req: Request, limits: &Limits) -> poem::Result<Response> {
    if let Err(e) = check_head(&req, limits) {
        return Ok(e.as_response());
    }
    let path = req.uri().path();
    let path_is_item = path.starts_with("/data/");
    let path_is_collection = path == "/data";
    let exempt = path.starts_with("/health/") || path == "/metrics";
    let _permit = match &limits.in_flight {
        Some(permits) if !exempt => match permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => return Ok(AppError::Overloaded.as_response()),
        },
        _ => None,
    };
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && let Err(e) = limit_body(&mut req, limits.body).await
    {
        return Ok(AppError::from(e).as_response());
    }
    let result = match limits.timeout {
        Some(t) => match tokio::time::timeout(t, ep.call(req)).await {
            Ok(result) => result,
            Err(_) => return Ok(AppError::TimedOut(t).as_response()),
        },
        None => ep.call(req).await,
    };
    Ok(match result {
        Ok(resp) => resp.into_response(),
        Err(err) => problem_for(err, path_is_item, path_is_collection),
    })
}

/// Request headers whose value the service interprets: they must be visible ASCII, or a
/// condition like `If-Match` would silently read as absent.
const INTERPRETED_HEADERS: [&str; 10] = [
    "if-match",
    "if-none-match",
    "authorization",
    "idempotency-key",
    "content-type",
    "content-length",
    "accept-encoding",
    "origin",
    "traceparent",
    "tracestate",
];

/// The request head within the limits, and the headers we read legible; 414, 431 or 400 if not.
fn check_head(req: &Request, limits: &Limits) -> Result<(), AppError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.uri {
        return Err(AppError::UriTooLong(limits.uri));
    }
    // One pass, no lookups: this runs on every request.
    let mut size = 0;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len();
        if value.to_str().is_err() && INTERPRETED_HEADERS.contains(&name.as_str()) {
            return Err(AppError::BadRequest(format!(
                "header `{name}` must be visible ASCII"
            )));
        }
    }
    if size > limits.headers {
        return Err(AppError::HeadersTooLarge(limits.headers));
    }
    Ok(())
}

/// Request limits.
pub struct Limits {
    /// Largest body in bytes.
    pub body: usize,
    /// Longest request target (path and query) in bytes.
    pub uri: usize,
    /// Most bytes of header names and values.
    pub headers: usize,
    /// Permits for requests in flight; `None`: no cap.
    pub in_flight: Option<Semaphore>,
    /// Longest a request may take; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl Limits {
    pub fn from_settings(s: &crate::config::HttpSettings) -> Self {
        Self {
            body: s.body_limit,
            uri: s.max_uri_length,
            headers: s.max_header_bytes,
            in_flight: (s.max_in_flight > 0).then(|| Semaphore::new(s.max_in_flight)),
            timeout: (!s.request_timeout.is_zero()).then_some(s.request_timeout),
        }
    }
}

/// Why a body could not be accepted.
pub enum BodyError {
    TooLarge(usize),
    Read(String),
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => AppError::PayloadTooLarge(limit),
            BodyError::Read(msg) => AppError::BadRequest(format!("could not read the body: {msg}")),
        }
    }
}

async fn limit_body(req: &mut Request, limit: usize) -> Result<(), BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let bytes = req
        .take_body()
        .into_bytes_limit(limit)
        .await
        .map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => BodyError::TooLarge(limit),
            other => BodyError::Read(other.to_string()),
        })?;
    req.set_body(bytes);
    Ok(())
}

fn problem_for(err: poem::Error, item: bool, collection: bool) -> Response {
    if err.is::<AppError>() {
        return err.into_response();
    }
    let detail = err.to_string();
    let (status, slug, detail) = if err.is::<NotFoundError>() {
        (
            StatusCode::NOT_FOUND,
            "no-route",
            "no such route".to_owned(),
        )
    } else if err.is::<MethodNotAllowedError>() {
        let allow = if item {
            "GET, PUT, PATCH, DELETE"
        } else if collection {
            "GET, POST"
        } else {
            "GET"
        };
        let p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("this route allows {allow}"),
        );
        return p
            .into_response()
            .with_header(header::ALLOW, allow)
            .into_response();
    } else if err.is::<ParsePathError>() || err.is::<ParseParamError>() {
        // poem-openapi names path parameters by position; ours is the item id.
        let detail = detail.replace("`param0`", "`id`");
        (StatusCode::BAD_REQUEST, "invalid-parameter", detail)
    } else if err.is::<ParseRequestPayloadError>() {
        (StatusCode::BAD_REQUEST, "invalid-body", detail)
    } else if err.is::<ContentTypeError>() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    } else if err.status().is_server_error() {
        tracing::error!(error = %detail, "unhandled server error");
        (
            err.status(),
            "internal",
            "An internal error occurred; it has been logged.".to_owned(),
        )
    } else {
        (err.status(), "http-error", detail)
    };
    Problem::new(status, slug, detail).into_response()
}
