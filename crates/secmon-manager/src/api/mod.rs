//! REST API (axum): health, agents, events, alerts, commands, OpenAPI and metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::Subjects;

use crate::metrics::Metrics;
use crate::registry::RegistryHandle;
use crate::store::Store;

/// Everything the API handlers need; built by [`crate::app`].
pub struct ApiContext {
    pub store: Arc<dyn Store>,
    pub registry: RegistryHandle,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub metrics: Arc<Metrics>,
    pub started_at: DateTime<Utc>,
    /// How long `POST /api/agents/{id}/command` waits for the agent's reply.
    pub command_timeout: Duration,
}

/// The API router. `crate::app` serves it on `[api] listen`.
pub fn router(ctx: Arc<ApiContext>) -> axum::Router {
    let _ = ctx;
    axum::Router::new()
}
