//! One error type for the whole service, answered as RFC 9457 `application/problem+json`.
//!
//! Clients get a type, title, status and a detail they can act on; internal causes (SQL, panics)
//! are logged and never sent.

use poem::{IntoResponse, Response, error::ResponseError, http::StatusCode};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use sea_orm::DbErr;
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "1";

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

    /// The problem as a complete response.
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
    /// 413: the body exceeds the configured limit.
    #[error("the request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 414: the request target is longer than `--max-uri-length`.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// 431: the request headers are larger than `--max-header-bytes`.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 503 with `Retry-After`: the database could not be reached in time (pool exhausted or down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// 401 with `WWW-Authenticate`: a write without an API key while keys are configured.
    #[error("this operation needs an API key: Authorization: Bearer <key>")]
    Unauthorized,
    /// 403: a write with an API key that is not one of the configured keys.
    #[error("the API key is not valid")]
    Forbidden,
    /// 422: an `Idempotency-Key` reused with a different request body.
    #[error("this Idempotency-Key was used with a different request body")]
    KeyReused,
    /// 503 with `Retry-After`: more requests in flight than `--max-in-flight`.
    #[error("too many requests in flight")]
    Overloaded,
    /// 503 with `Retry-After`: the request took longer than `--request-timeout`.
    #[error("the request took longer than {0:?}")]
    TimedOut(std::time::Duration),
    /// 500: anything else; logged with its cause, answered with generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

/// Whether `err` means the database cannot serve now (pool exhausted, down, busy, read-only)
/// rather than a fault in the query: such errors are answered 503 with `Retry-After`.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                e.as_ref(),
                Sqlx::PoolTimedOut
                    | Sqlx::PoolClosed
                    | Sqlx::Io(_)
                    | Sqlx::Tls(_)
                    | Sqlx::WorkerCrashed
            ) || is_busy(e.as_ref())
        }
        _ => false,
    }
}

/// SQLite busy/locked/read-only, or PostgreSQL shutting down or out of connections.
fn is_busy(e: &sea_orm::sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| {
            matches!(
                code.as_ref(),
                // SQLite: BUSY, LOCKED, READONLY and their extended codes.
                "5" | "6" | "8" | "517" | "261" | "262" | "773" | "1032" | "264" | "520" | "776"
            // PostgreSQL: admin/crash shutdown, cannot connect now, too many connections.
            | "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08003" | "08001"
            )
        })
}

impl AppError {
    fn problem(&self) -> Problem {
        match self {
            Self::BadRequest(d) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-request", d.clone())
            }
            Self::PayloadTooLarge(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                self.to_string(),
            ),
            Self::UriTooLong(_) => {
                Problem::new(StatusCode::URI_TOO_LONG, "uri-too-long", self.to_string())
            }
            Self::HeadersTooLarge(_) => Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                self.to_string(),
            ),
            Self::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The database is unavailable or busy; retry shortly.".to_owned(),
            ),
            Self::Unauthorized => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", self.to_string())
            }
            Self::Forbidden => Problem::new(StatusCode::FORBIDDEN, "forbidden", self.to_string()),
            Self::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                self.to_string(),
            ),
            Self::Overloaded => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "The service is handling as many requests as it allows; retry shortly.".to_owned(),
            ),
            Self::TimedOut(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", self.to_string())
            }
            Self::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "An internal error occurred; it has been logged.".to_owned(),
            ),
        }
    }
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn as_response(&self) -> Response {
        match self {
            Self::Unavailable(cause) => tracing::warn!(%cause, "answering 503"),
            Self::Internal(cause) => tracing::error!(%cause, "answering 500"),
            _ => {}
        }
        let resp = self.problem().into_response();
        if matches!(self, Self::Unauthorized) {
            return resp
                .with_header("WWW-Authenticate", "Bearer")
                .into_response();
        }
        if matches!(
            self,
            Self::Unavailable(_) | Self::Overloaded | Self::TimedOut(_)
        ) {
            resp.with_header("Retry-After", RETRY_AFTER_SECS)
                .into_response()
        } else {
            resp
        }
    }
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
