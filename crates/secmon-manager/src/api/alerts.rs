//! `GET /api/alerts`. Empty until detection rules exist, but a real query.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use secmon_proto::Severity;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiContext;
use super::error::{ApiError, ErrorBody};
use super::params;
use crate::store::{AlertQuery, AlertRecord, AlertStatus, Page};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// Last seen at or after: RFC 3339, or an age such as `15m`, `2h`, `7d`.
    since: Option<String>,
    /// Last seen before: RFC 3339, or an age.
    until: Option<String>,
    /// Minimum severity: info, low, medium, high, critical.
    #[param(example = "high")]
    severity: Option<String>,
    /// Only alerts of this agent.
    agent: Option<String>,
    /// open, acknowledged or closed.
    status: Option<String>,
    /// Only alerts of this rule id.
    rule: Option<String>,
    /// Rows to skip (at most 1000000).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Rows to return (default 50, at most 1000).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// List alerts, newest first.
#[utoipa::path(
    get, path = "/api/alerts", tag = "alerts",
    params(AlertListParams),
    responses(
        (status = 200, description = "One page of alerts", body = Page<AlertRecord>),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn list_alerts(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Page<AlertRecord>>, ApiError> {
    let p: AlertListParams = params::query(&uri)?;
    let now = chrono::Utc::now();
    let (offset, limit) = params::paging(p.offset.as_deref(), p.limit.as_deref())?;
    let since = params::time("since", p.since.as_deref(), now)?;
    let until = params::time("until", p.until.as_deref(), now)?;
    params::time_range(since, until)?;
    let q = AlertQuery {
        since,
        until,
        min_severity: params::choice::<Severity>("severity", p.severity.as_deref())?,
        agent: params::opt_agent_id("agent", p.agent.as_deref())?,
        status: params::choice::<AlertStatus>("status", p.status.as_deref())?,
        rule: params::text("rule", p.rule)?,
        offset,
        limit,
    };
    Ok(Json(ctx.store.list_alerts(&q).await?))
}
