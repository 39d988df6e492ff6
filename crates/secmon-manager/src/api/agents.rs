//! `GET /api/agents`, `GET /api/agents/{id}`, `DELETE /api/agents/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use secmon_proto::{AgentId, AgentStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiContext;
use super::error::{ApiError, ErrorBody, echo};
use super::params::{self, NoParams};
use crate::store::{AgentQuery, AgentRecord, Page, StatusChange};

/// Status changes returned with an agent's details.
pub const HISTORY_LEN: u64 = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListParams {
    /// Only agents with this status: never_connected, pending, active, disconnected, removed.
    #[param(example = "active")]
    status: Option<String>,
    /// Only agents with exactly this name.
    name: Option<String>,
    /// Case-insensitive substring of the id, name, hostname or an IP address.
    q: Option<String>,
    /// name, status, last_seen or registered_at; a leading `-` sorts descending.
    #[param(example = "-last_seen")]
    sort: Option<String>,
    /// Rows to skip (at most 1000000).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Rows to return (default 50, at most 1000).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// An agent with its most recent status changes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentDetails {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// Most recent first, at most 20.
    pub history: Vec<StatusChange>,
}

/// The `{id}` path segment as an agent id, or a 400 naming `id`.
pub fn path_id(path: Result<Path<String>, PathRejection>) -> Result<AgentId, ApiError> {
    match path {
        Ok(Path(id)) => params::agent_id("id", &id),
        Err(e) => Err(ApiError::bad_parameter("id", e.body_text())),
    }
}

pub fn unknown_agent(id: &AgentId) -> ApiError {
    ApiError::not_found(format!("no agent with id {}", echo(id.as_str())))
}

/// List agents.
#[utoipa::path(
    get, path = "/api/agents", tag = "agents",
    params(AgentListParams),
    responses(
        (status = 200, description = "One page of agents", body = Page<AgentRecord>),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn list_agents(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Page<AgentRecord>>, ApiError> {
    let p: AgentListParams = params::query(&uri)?;
    let (offset, limit) = params::paging(p.offset.as_deref(), p.limit.as_deref())?;
    let (sort, descending) = params::agent_sort(p.sort.as_deref())?;
    let q = AgentQuery {
        status: params::choice::<AgentStatus>("status", p.status.as_deref())?,
        name: params::text("name", p.name)?,
        q: params::text("q", p.q)?,
        sort,
        descending,
        offset,
        limit,
    };
    let mut page = ctx.store.list_agents(&q).await?;
    for a in &mut page.items {
        fresher(&ctx, a);
    }
    Ok(Json(page))
}

/// Overlays the registry's view, which is fresher than storage for status and
/// `last_seen` (storage gets `last_seen` only every few seconds).
fn fresher(ctx: &ApiContext, stored: &mut AgentRecord) {
    if let Some(live) = ctx.registry.get(&stored.id) {
        stored.status = live.status;
        stored.status_reason = live.status_reason;
        stored.status_changed_at = live.status_changed_at;
        stored.last_seen = live.last_seen.max(stored.last_seen);
    }
}

/// One agent with its recent status history.
#[utoipa::path(
    get, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = AgentDetails),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown agent", body = ErrorBody),
    )
)]
pub async fn get_agent(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<AgentDetails>, ApiError> {
    let id = path_id(path)?;
    let _: NoParams = params::query(&uri)?;
    let mut agent = ctx.store.get_agent(&id).await?.ok_or_else(|| unknown_agent(&id))?;
    fresher(&ctx, &mut agent);
    let history = ctx.store.status_history(&id, HISTORY_LEN).await?;
    Ok(Json(AgentDetails { agent, history }))
}

/// The answer to a removal: the agent, and in secure mode what became of its NATS key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RemovedAgent {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// Secure mode only, for an enrolled agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

/// What became of a removed agent's NATS credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Revocation {
    /// Its user JWT is on the account's revocation list (stored).
    pub revoked: bool,
    /// nats-server took the new list now (its connection is closed); else the list
    /// applies at the server's or the manager's next start.
    pub pushed: bool,
}

/// Remove an agent: it becomes `removed` and its registrations and events are
/// refused from now on; in secure mode its NATS user JWT is revoked, which closes its
/// connection. Its stored events stay.
#[utoipa::path(
    delete, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The removed agent", body = RemovedAgent),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown agent", body = ErrorBody),
    )
)]
pub async fn remove_agent(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<RemovedAgent>, ApiError> {
    let id = path_id(path)?;
    let _: NoParams = params::query(&uri)?;
    let Some(agent) = ctx.registry.remove(&id, "by an operator through the API").await? else {
        return Err(unknown_agent(&id));
    };
    tracing::info!(agent = %id, "agent removed through the API");
    let revocation = match &ctx.enroll {
        None => None,
        Some(e) => match e.revoke(&id).await {
            Ok(None) => None,
            Ok(Some(pushed)) => {
                ctx.metrics.revocation(pushed);
                Some(Revocation { revoked: true, pushed })
            }
            Err(err) => {
                // Removed (its events are refused) but the key is not on the list.
                tracing::error!(agent = %id, error = %err, "cannot revoke the removed agent's key");
                ctx.metrics.revocation(false);
                Some(Revocation { revoked: false, pushed: false })
            }
        },
    };
    Ok(Json(RemovedAgent { agent, revocation }))
}
