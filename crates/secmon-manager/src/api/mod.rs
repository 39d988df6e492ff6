//! REST API (axum): health, agents, file states, events, alerts, rules, commands, OpenAPI and metrics.
//!
//! Invariants: every response to bad input is a 4xx with the JSON error shape of
//! [`error::ApiError`] (never a 500); query parameters an endpoint does not
//! declare are refused ([`params`]); the OpenAPI document is generated from the
//! handlers, so it cannot drift from them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use chrono::{DateTime, Utc};
use secmon_proto::Subjects;
use utoipa::OpenApi;

use crate::metrics::Metrics;
use crate::registry::RegistryHandle;
use crate::store::Store;

pub mod agents;
pub mod alerts;
pub mod commands;
pub mod error;
pub mod events;
pub mod files;
pub mod health;
pub mod metrics_route;
pub mod params;
pub mod rules;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the API handlers need; built by [`crate::app`].
pub struct ApiContext {
    pub store: Arc<dyn Store>,
    pub registry: RegistryHandle,
    pub alerts: crate::alerts::AlertsHandle,
    pub rules: crate::detection::RulesHandle,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub metrics: Arc<Metrics>,
    pub started_at: DateTime<Utc>,
    /// How long `POST /api/agents/{id}/command` waits for the agent's reply.
    pub command_timeout: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "secmon manager API", description = "Fleet registry, events, file states, alerts and agent commands."),
    paths(
        health::health,
        agents::list_agents,
        agents::get_agent,
        agents::remove_agent,
        commands::send_command,
        files::agent_files,
        events::list_events,
        alerts::list_alerts,
        alerts::get_alert,
        alerts::patch_alert,
        rules::list_rules,
        rules::get_rule,
        metrics_route::metrics,
        openapi_json,
    ),
    tags(
        (name = "health"), (name = "agents"), (name = "files"), (name = "events"), (name = "alerts"), (name = "rules"), (name = "metrics"),
        (name = "meta")
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json(uri: axum::http::Uri) -> Result<Json<utoipa::openapi::OpenApi>, error::ApiError> {
    let _: params::NoParams = params::query(&uri)?;
    Ok(Json(ApiDoc::openapi()))
}

/// The API router. `crate::app` serves it on `[api] listen`.
pub fn router(ctx: Arc<ApiContext>) -> axum::Router {
    axum::Router::new()
        .route("/api/health", get(health::health))
        .route("/api/agents", get(agents::list_agents))
        .route("/api/agents/{id}", get(agents::get_agent).delete(agents::remove_agent))
        .route("/api/agents/{id}/command", axum::routing::post(commands::send_command))
        .route("/api/agents/{id}/files", get(files::agent_files))
        .route("/api/events", get(events::list_events))
        .route("/api/alerts", get(alerts::list_alerts))
        .route("/api/alerts/{id}", get(alerts::get_alert).patch(alerts::patch_alert))
        .route("/api/rules", get(rules::list_rules))
        .route("/api/rules/{id}", get(rules::get_rule))
        .route("/api/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_route::metrics))
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics_route::record_latency))
        .with_state(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/health",
            "/api/agents",
            "/api/agents/{id}",
            "/api/agents/{id}/command",
            "/api/agents/{id}/files",
            "/api/events",
            "/api/alerts",
            "/api/alerts/{id}",
            "/api/rules",
            "/api/rules/{id}",
            "/api/openapi.json",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
        }
        let file_params: Vec<&str> = doc["paths"]["/api/agents/{id}/files"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(file_params, ["id", "path", "prefix", "include_deleted", "offset", "limit"]);
        let params: Vec<&str> = doc["paths"]["/api/agents"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["status", "name", "q", "sort", "offset", "limit"]);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for s in [
            "AgentRecord",
            "AgentDetails",
            "StatusChange",
            "ErrorBody",
            "Health",
            "CommandBody",
            "CommandReply",
            "FilesAnswer",
            "FileStateRecord",
            "FileAccess",
            "Page_FileStateRecord",
            "AlertDetails",
            "AlertStatusChange",
            "AlertPatch",
            "RulesAnswer",
            "RuleInfo",
            "RuleProblem",
        ] {
            assert!(schemas.contains_key(s), "schema {s} missing: {:?}", schemas.keys().collect::<Vec<_>>());
        }
    }
}
