//! `GET /api/health`: is this manager connected to NATS and can it use its storage?

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::params::{self, NoParams};

/// A storage check slower than this counts as a failure: a health endpoint that
/// hangs is worse than one that says "degraded".
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when NATS and storage both are; `degraded` otherwise.
    pub status: String,
    pub version: String,
    pub uptime_secs: u64,
    pub nats: NatsHealth,
    pub storage: StorageHealth,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NatsHealth {
    pub connected: bool,
    /// `connected`, `disconnected` or `pending`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StorageHealth {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Manager health.
#[utoipa::path(
    get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "NATS and storage are fine", body = Health),
        (status = 503, description = "NATS or storage is not", body = Health),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    )
)]
pub async fn health(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<(StatusCode, Json<Health>), ApiError> {
    let _: NoParams = params::query(&uri)?;
    let state = ctx.nats.connection_state();
    let connected = matches!(state, async_nats::connection::State::Connected);
    let storage = match tokio::time::timeout(STORAGE_CHECK_TIMEOUT, ctx.store.health()).await {
        Ok(Ok(())) => StorageHealth { ok: true, error: None },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "storage health check failed");
            StorageHealth { ok: false, error: Some(e.to_string()) }
        }
        Err(_) => StorageHealth {
            ok: false,
            error: Some(format!("no answer within {} s", STORAGE_CHECK_TIMEOUT.as_secs())),
        },
    };
    let all_ok = connected && storage.ok;
    let body = Health {
        status: if all_ok { "ok" } else { "degraded" }.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: (chrono::Utc::now() - ctx.started_at).num_seconds().max(0) as u64,
        nats: NatsHealth { connected, state: state.to_string() },
        storage,
    };
    let code = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((code, Json(body)))
}
