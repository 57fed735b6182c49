//! One error type for the whole service, and the one place where every failure — ours, poem's
//! and poem-openapi's — becomes an RFC 9457 `application/problem+json` response.
//!
//! Clients get a type, title, status and a detail they can act on; internal causes (SQL, panics)
//! are logged and never sent.

use poem::{
    IntoResponse, Response,
    error::{MethodNotAllowedError, NotFoundError, ResponseError},
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    error::{ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError},
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use sea_orm::DbErr;
use serde::Serialize;

use crate::route::ApiRoute;
use crate::store::DbFailure;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "1";

/// What an internal error is answered with; the cause goes to the log.
const INTERNAL_DETAIL: &str = "An internal error occurred; it has been logged.";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Object, Serialize)]
pub struct Problem {
    /// A URI reference identifying the kind of problem.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, specifically.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    /// A problem of kind `slug` (a `urn:problem:data-api:` URN) with the status's reason as title.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<Option<String>>) -> Self {
        Self {
            kind: format!("urn:problem:data-api:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A struct of strings and a number always serializes.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        Response::builder()
            .status(status)
            .content_type(PROBLEM_JSON)
            .body(body)
    }
}

/// Every failure a request can end in, outside the expected outcomes of each operation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or fails validation.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate`: a write without an API key while keys are configured.
    #[error("this operation needs an API key: Authorization: Bearer <key>")]
    Unauthorized,
    /// 403: a write with an API key that is not one of the configured keys.
    #[error("the API key is not valid")]
    Forbidden,
    /// 408 with `Connection: close`: the body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimedOut(std::time::Duration),
    /// 413: the body exceeds the configured limit.
    #[error("the request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 414: the request target is longer than `--max-uri-length`.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// 422: an `Idempotency-Key` reused with a different request body.
    #[error("this Idempotency-Key was used with a different request body")]
    KeyReused,
    /// 431: the request headers are larger than `--max-header-bytes`.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 500: anything else; logged with its cause, answered with generic text.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503 with `Retry-After`: the database could not be reached in time (pool exhausted or down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: more requests in flight than `--max-in-flight`.
    #[error("too many requests in flight")]
    Overloaded,
    /// 503 with `Retry-After`: the request took longer than `--request-timeout`.
    #[error("the request took longer than {0:?}")]
    TimedOut(std::time::Duration),
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        if DbFailure::of(&err).is_unavailable() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl AppError {
    /// The `urn:problem:data-api:` slug of the problem type.
    const fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BodyTimedOut(_) => "body-timeout",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UriTooLong(_) => "uri-too-long",
            Self::KeyReused => "idempotency-key-reused",
            Self::HeadersTooLarge(_) => "headers-too-large",
            Self::Internal(_) => "internal",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded => "overloaded",
            Self::TimedOut(_) => "timeout",
        }
    }

    /// What the client is told: our own words, never an internal cause.
    fn detail(&self) -> String {
        match self {
            Self::BadRequest(d) => d.clone(),
            Self::Internal(_) => INTERNAL_DETAIL.to_owned(),
            Self::Unavailable(_) => {
                "The database is unavailable or busy; retry shortly.".to_owned()
            }
            Self::Overloaded => {
                "The service is handling as many requests as it allows; retry shortly.".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BodyTimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) | Self::Overloaded | Self::TimedOut(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn as_response(&self) -> Response {
        match self {
            Self::Unavailable(cause) => tracing::warn!(%cause, "answering 503"),
            Self::Internal(cause) => tracing::error!(%cause, "answering 500"),
            _ => {}
        }
        let resp = Problem::new(self.status(), self.slug(), self.detail()).into_response();
        match self {
            Self::Unauthorized => resp.with_header(header::WWW_AUTHENTICATE, "Bearer"),
            // The rest of the body may still come: the connection cannot carry another request.
            Self::BodyTimedOut(_) => resp.with_header(header::CONNECTION, "close"),
            Self::Unavailable(_) | Self::Overloaded | Self::TimedOut(_) => {
                resp.with_header(header::RETRY_AFTER, RETRY_AFTER_SECS)
            }
            _ => return resp,
        }
        .into_response()
    }
}

/// Any error that left an endpoint (ours, poem's or poem-openapi's) as problem+json; `route`
/// is what the request was for, so a 405 can say which methods it allows.
pub fn problem_for(err: poem::Error, route: ApiRoute) -> Response {
    if err.is::<AppError>() {
        return err.into_response();
    }
    let status = err.status();
    let detail = err.to_string();
    let (slug, detail) = if err.is::<NotFoundError>() {
        ("no-route", "no such route".to_owned())
    } else if err.is::<MethodNotAllowedError>() {
        let allow = route.allow();
        let p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("this route allows {allow}"),
        );
        return p.with_header(header::ALLOW, allow).into_response();
    } else if err.is::<ParsePathError>() || err.is::<ParseParamError>() {
        // poem-openapi names path parameters by position; ours is the item id.
        ("invalid-parameter", detail.replace("`param0`", "`id`"))
    } else if err.is::<ParseRequestPayloadError>() {
        ("invalid-body", detail)
    } else if err.is::<ContentTypeError>() {
        ("unsupported-media-type", detail)
    } else if status.is_server_error() {
        tracing::error!(error = %detail, "unhandled server error");
        ("internal", INTERNAL_DETAIL.to_owned())
    } else {
        ("http-error", detail)
    };
    Problem::new(status, slug, detail).into_response()
}

/// The error responses every operation can give, for the OpenAPI document.
impl ApiResponse for AppError {
    fn meta() -> MetaResponses {
        let problem = |status: u16, description: &'static str| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content: vec![MetaMediaType {
                content_type: PROBLEM_JSON,
                schema: Problem::schema_ref(),
            }],
            headers: vec![],
        };
        MetaResponses {
            responses: vec![
                problem(
                    400,
                    "Malformed request: bad JSON, wrong types, an invalid id or parameter, or a failed validation.",
                ),
                problem(
                    401,
                    "A write without an API key while the service has keys (`WWW-Authenticate: Bearer`).",
                ),
                problem(403, "A write with an API key that is not valid."),
                problem(413, "The request body is larger than the configured limit."),
                problem(
                    414,
                    "The request target (path and query) is longer than the configured limit.",
                ),
                problem(
                    431,
                    "The request headers are larger than the configured limit.",
                ),
                problem(
                    422,
                    "`Idempotency-Key` reused with a different request body.",
                ),
                problem(415, "The request body is not `application/json`."),
                problem(500, "An internal error; the cause is logged, not sent."),
                problem(
                    503,
                    "The database is unavailable or busy, the connection pool is exhausted, too many requests are in flight, or the request timed out; see `Retry-After`.",
                ),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}
