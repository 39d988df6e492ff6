//! `GET /api/alerts` (filtered list), `GET /api/alerts/{id}` (with status history
//! and event ids) and `PATCH /api/alerts/{id}` (acknowledge, close, reopen).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::{Extension, Json};
use secmon_proto::Severity;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiContext;
use super::error::{ApiError, ErrorBody, echo, json_body};
use super::params::{self, NoParams};
use crate::alerts::{AlertError, MAX_BY, MAX_COMMENT, StatusRequest};
use crate::security::{AuthKind, Principal};
use crate::store::{AlertDetails, AlertQuery, AlertRecord, AlertStatus, Page};

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

fn path_alert_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    match path {
        Ok(Path(id)) => Uuid::parse_str(&id)
            .map_err(|_| ApiError::bad_parameter("id", format!("{} is not an alert id (a UUID)", echo(&id)))),
        Err(e) => Err(ApiError::bad_parameter("id", e.body_text())),
    }
}

fn unknown_alert(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no alert with id {id}"))
}

/// One alert with its status history (oldest first) and triggering event ids.
#[utoipa::path(
    get, path = "/api/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (UUID)")),
    responses(
        (status = 200, description = "The alert", body = AlertDetails),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Unknown alert", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn get_alert(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<AlertDetails>, ApiError> {
    let id = path_alert_id(path)?;
    let _: NoParams = params::query(&uri)?;
    ctx.store.get_alert(id).await?.map(Json).ok_or_else(|| unknown_alert(id))
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    /// `acknowledged`, `closed` or `open` (reopen).
    #[schema(example = "acknowledged")]
    pub status: String,
    /// Why, for the history (at most 4096 bytes).
    #[serde(default)]
    pub comment: String,
    /// Who (at most 128 bytes; default `local`). In secure mode the authenticated
    /// caller's name is recorded instead.
    #[serde(default)]
    pub by: Option<String>,
}

/// The body as an [`AlertPatch`]: a JSON object (serde would take an array for a
/// struct too); every malformed body is a 400, a body over the size limit a 413.
fn patch_body(body: Result<Json<serde_json::Value>, JsonRejection>) -> Result<AlertPatch, ApiError> {
    let v = json_body(body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("invalid JSON body: expected an object"));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Acknowledge, close or reopen an alert. Allowed: open to acknowledged or
/// closed, acknowledged to closed or open, closed to open. The change is kept in
/// the alert's history and published on `<prefix>.alert.<severity>`.
#[utoipa::path(
    patch, path = "/api/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (UUID)")),
    request_body = AlertPatch,
    responses(
        (status = 200, description = "The alert after the change", body = AlertDetails),
        (status = 400, description = "Bad id, body, status, or a comment over 4096 bytes", body = ErrorBody),
        (status = 404, description = "Unknown alert", body = ErrorBody),
        (status = 409, description = "Transition not allowed (`invalid_transition`)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 500, description = "Storage error", body = ErrorBody),
    )
)]
pub async fn patch_alert(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    principal: Option<Extension<Principal>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<AlertDetails>, ApiError> {
    let id = path_alert_id(path)?;
    let _: NoParams = params::query(&uri)?;
    let b = patch_body(body)?;
    let to: AlertStatus = b.status.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid status {}: expected acknowledged, closed or open",
            echo(&b.status)
        ))
    })?;
    if b.comment.len() > MAX_COMMENT {
        return Err(ApiError::bad_request(format!("comment is longer than {MAX_COMMENT} bytes")));
    }
    if let Some(by) = &b.by
        && (by.is_empty() || by.len() > MAX_BY || by.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "by must be 1 to {MAX_BY} bytes without control characters"
        )));
    }
    // An authenticated caller cannot write somebody else's name into the history.
    let by = match principal {
        Some(Extension(p)) if p.auth != AuthKind::Local => Some(p.name),
        _ => b.by,
    };
    match ctx.alerts.set_status(id, StatusRequest { to, comment: b.comment, by }).await {
        Ok(d) => Ok(Json(d)),
        Err(AlertError::NotFound) => Err(unknown_alert(id)),
        Err(AlertError::Transition(m)) => Err(ApiError::new(StatusCode::CONFLICT, "invalid_transition", m)),
        Err(AlertError::Invalid(m)) => Err(ApiError::bad_request(m)),
        Err(AlertError::Store(e)) => Err(ApiError::storage(&e)),
    }
}
