//! `/health/live` and `/health/ready`, for orchestrators and load balancers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, OpenApi, payload::Json};

use super::error::Problem;
use super::{ApiTags, models::Health};
use crate::store::Store;

/// Health probes.
pub struct HealthApi {
    pub store: Store,
    /// Set when shutdown begins, so readiness fails at once while requests drain.
    pub shutting_down: Arc<AtomicBool>,
    pub ready_timeout: Duration,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready: the database answered in time.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Not ready: shutting down, or the database did not answer in time.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process is up.
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self) -> Json<Health> {
        Json(Health {
            status: "ok".to_owned(),
        })
    }

    /// Readiness
    ///
    /// 200 when the database answers within the ready timeout; 503 otherwise and during shutdown.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ReadyResponse {
        if self.shutting_down.load(Ordering::Relaxed) {
            return not_ready("the service is shutting down");
        }
        let db = self.store.db();
        let ping = async {
            db.read.ping().await?;
            db.write.ping().await
        };
        match tokio::time::timeout(self.ready_timeout, ping).await {
            Ok(Ok(())) => ReadyResponse::Ready(Json(Health {
                status: "ok".to_owned(),
            })),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: database ping failed");
                not_ready("the database is unreachable")
            }
            Err(_) => not_ready("the database did not answer in time"),
        }
    }
}

fn not_ready(detail: &str) -> ReadyResponse {
    ReadyResponse::NotReady(Json(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        detail.to_owned(),
    )))
}
