//! REST API (axum): health, agents, file states, events, alerts, rules, commands, OpenAPI and metrics,
//! and (from [`crate::security::auth`]) login, users, API tokens and the audit log.
//!
//! Every request passes [`crate::security::auth::middleware::authenticate`]: in secure
//! mode it needs a bearer token and a role the route allows; in local mode it acts as
//! the local admin. Either way state-changing and denied requests are audited.
//!
//! Invariants: every response to bad input is a 4xx with the JSON error shape of
//! [`error::ApiError`] (never a 500); query parameters an endpoint does not
//! declare are refused ([`params`]); the OpenAPI document is generated from the
//! handlers, so it cannot drift from them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use secmon_proto::Subjects;
use utoipa::OpenApi;

use crate::metrics::Metrics;
use crate::registry::RegistryHandle;
use crate::security::auth::middleware as auth_mw;
use crate::security::auth::routes as auth;
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
    /// Users, tokens, login lockout, role policy and audit log ([`crate::security::auth`]).
    pub auth: Arc<crate::security::auth::AuthState>,
    // enroll wiring begin (ApiContext fields)
    /// Enrollment and agent keys; `None` in local mode.
    pub enroll: Option<Arc<crate::security::enroll::Enrollment>>,
    // enroll wiring end
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
        auth::login,
        auth::logout,
        auth::me,
        auth::list_users,
        auth::create_user,
        auth::delete_user,
        auth::create_token,
        auth::list_tokens,
        auth::delete_token,
        auth::list_audit,
        // enroll wiring begin (OpenAPI paths)
        crate::security::enroll::routes::create_token,
        crate::security::enroll::routes::list_tokens,
        crate::security::enroll::routes::delete_token,
        crate::security::enroll::routes::ca_pem,
        crate::security::enroll::routes::enroll,
        crate::security::enroll::routes::agent_config,
        // enroll wiring end
    ),
    tags(
        (name = "health"), (name = "agents"), (name = "files"), (name = "events"), (name = "alerts"), (name = "rules"), (name = "metrics"),
        (name = "meta"), (name = "auth")
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the bearer scheme and requires it everywhere but on the public routes.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        // The public routes: an empty requirement overrides the global one.
        for (path, method) in [
            ("/api/health", "get"),
            ("/api/openapi.json", "get"),
            ("/api/login", "post"),
            ("/api/enroll", "post"),
            ("/api/ca.pem", "get"),
        ] {
            let Some(item) = openapi.paths.paths.get_mut(path) else { continue };
            let op = match method {
                "get" => item.get.as_mut(),
                _ => item.post.as_mut(),
            };
            if let Some(op) = op {
                op.security = Some(Vec::new());
            }
        }
    }
}

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
        .route("/api/agents/{id}/command", post(commands::send_command))
        .route("/api/agents/{id}/files", get(files::agent_files))
        .route("/api/events", get(events::list_events))
        .route("/api/alerts", get(alerts::list_alerts))
        .route("/api/alerts/{id}", get(alerts::get_alert).patch(alerts::patch_alert))
        .route("/api/rules", get(rules::list_rules))
        .route("/api/rules/{id}", get(rules::get_rule))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/me", get(auth::me))
        .route("/api/users", get(auth::list_users).post(auth::create_user))
        .route("/api/users/{username}", axum::routing::delete(auth::delete_user))
        .route("/api/tokens", get(auth::list_tokens).post(auth::create_token))
        .route("/api/tokens/{id}", axum::routing::delete(auth::delete_token))
        .route("/api/audit", get(auth::list_audit))
        // enroll wiring begin (routes)
        .merge(crate::security::enroll::routes::routes())
        // enroll wiring end
        .route("/metrics", get(metrics_route::metrics))
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Inside the latency layer (401s and 403s are measured too), around every
        // route and the fallback (unknown routes need a token as well).
        .layer(axum::middleware::from_fn_with_state(ctx.auth.clone(), auth_mw::authenticate))
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
            "/api/login",
            "/api/logout",
            "/api/me",
            "/api/users",
            "/api/users/{username}",
            "/api/tokens",
            "/api/tokens/{id}",
            "/api/audit",
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
