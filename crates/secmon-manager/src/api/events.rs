//! `GET /api/events`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use secmon_proto::EventClass;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::params;
use crate::store::{EventQuery, Page, StoredEvent};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// Only events of this agent.
    agent: Option<String>,
    /// Only events of this class: file, process, network, log, device, agent.
    class: Option<String>,
    /// Event time at or after: RFC 3339, or an age such as `15m`, `2h`, `7d`.
    #[param(example = "15m")]
    since: Option<String>,
    /// Event time before: RFC 3339, or an age.
    until: Option<String>,
    /// Arrival time at the manager at or after: RFC 3339, or an age. Orders the
    /// results by arrival (the cursor for following).
    received_since: Option<String>,
    /// `desc` (newest first, default) or `asc` (oldest first, for following).
    order: Option<String>,
    /// Rows to skip (at most 1000000).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Rows to return (default 50, at most 1000).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// List stored events.
#[utoipa::path(
    get, path = "/api/events", tag = "events",
    params(EventListParams),
    responses(
        (status = 200, description = "One page of events", body = Page<StoredEvent>),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn list_events(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Page<StoredEvent>>, ApiError> {
    let p: EventListParams = params::query(&uri)?;
    let now = chrono::Utc::now();
    let (offset, limit) = params::paging(p.offset.as_deref(), p.limit.as_deref())?;
    let since = params::time("since", p.since.as_deref(), now)?;
    let until = params::time("until", p.until.as_deref(), now)?;
    params::time_range(since, until)?;
    let q = EventQuery {
        agent: params::opt_agent_id("agent", p.agent.as_deref())?,
        class: params::choice::<EventClass>("class", p.class.as_deref())?,
        since,
        until,
        received_since: params::time("received_since", p.received_since.as_deref(), now)?,
        ascending: params::order(p.order.as_deref())?,
        offset,
        limit,
    };
    Ok(Json(ctx.store.list_events(&q).await?))
}
