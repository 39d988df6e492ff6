//! `POST /api/agents/{id}/command`: a request/reply to the agent on
//! `<prefix>.cmd.<id>`, answered with the agent's own reply. Admins may send any
//! command; analysts and readonly users only those in their `[security.commands]`
//! list (403 `forbidden` naming the command). The audit record says which command
//! and how it ended.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::{Extension, Json};
use secmon_proto::{AgentStatus, CommandReply, CommandRequest, PROTOCOL_VERSION};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiContext;
use super::agents::{path_id, unknown_agent};
use super::error::{ApiError, ErrorBody, echo, json_body};
use super::params::{self, NoParams};
use crate::metrics::ResultLabel;
use crate::security::auth::AuditNote;
use crate::security::{AuthKind, Principal, Role};

/// Longest wait a client may ask for with `timeout_ms`.
pub const MAX_COMMAND_TIMEOUT_MS: u64 = 60_000;
/// Largest reply accepted from an agent.
const MAX_REPLY_BYTES: usize = secmon_proto::DEFAULT_MAX_EVENT_BYTES;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// Command name: 1 to 64 characters of a-z 0-9 _ - (`ping`, `status`, `reload-config`).
    #[schema(example = "ping")]
    pub command: String,
    /// Arguments, a JSON object (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// How long to wait for the reply, 1 to 60000 ms (default: the manager's
    /// `[api] command_timeout`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The agent's reply, as the agent sent it (documentation mirror of
/// `secmon_proto::CommandReply`).
#[derive(Debug, ToSchema)]
#[schema(as = CommandReply)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct CommandReplyDoc {
    pub v: u32,
    /// The request's id.
    pub id: Uuid,
    pub agent_id: String,
    /// Whether the agent carried the command out; `error` says why not.
    pub ok: bool,
    #[schema(value_type = Object)]
    pub result: Value,
    pub error: Option<CommandErrorDoc>,
}

#[derive(Debug, ToSchema)]
#[schema(as = CommandError)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct CommandErrorDoc {
    /// `unknown_command`, `bad_args`, `failed` or `malformed_request`.
    pub code: String,
    pub message: String,
}

fn valid_command_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Send a command to an agent and return its reply.
#[utoipa::path(
    post, path = "/api/agents/{id}/command", tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    request_body = CommandBody,
    responses(
        (status = 200, description = "The agent's reply; `ok` false when it refused or failed", body = CommandReplyDoc),
        (status = 400, description = "Bad parameter or body", body = ErrorBody),
        (status = 403, description = "The caller's role may not send this command (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Unknown agent", body = ErrorBody),
        (status = 409, description = "Agent is not active (`agent_not_active`)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 502, description = "The agent's reply did not decode (`bad_agent_reply`)", body = ErrorBody),
        (status = 503, description = "NATS unavailable (`nats_unavailable`)", body = ErrorBody),
        (status = 504, description = "No reply in time (`agent_timeout`) or nobody listening (`agent_unreachable`)", body = ErrorBody),
    )
)]
pub async fn send_command(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<AuditNote>>,
    req: Result<Json<CommandBody>, JsonRejection>,
) -> Result<Json<CommandReply>, ApiError> {
    let audit = audit.map(|e| e.0).unwrap_or_default();
    let count = |result: &str| {
        ctx.metrics.commands.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    };
    // The middleware sets the caller on every request; without one, the least role.
    let caller = principal.map(|e| e.0).unwrap_or_else(|| Principal {
        name: "unknown".into(),
        role: Role::Readonly,
        auth: AuthKind::Session,
    });
    let checked = (|| {
        let id = path_id(path)?;
        let _: NoParams = params::query(&uri)?;
        let b = json_body(req)?;
        if !valid_command_name(&b.command) {
            return Err(ApiError::bad_request(format!(
                "invalid command name {}: expected 1 to 64 characters of a-z 0-9 _ -",
                echo(&b.command)
            )));
        }
        let args = match b.args {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(ApiError::bad_request("args must be a JSON object")),
        };
        let timeout = match b.timeout_ms {
            None => ctx.command_timeout,
            Some(ms @ 1..=MAX_COMMAND_TIMEOUT_MS) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(ApiError::bad_request(format!(
                    "timeout_ms must be from 1 to {MAX_COMMAND_TIMEOUT_MS}, got {ms}"
                )));
            }
        };
        Ok((id, b.command, args, timeout))
    })();
    let (id, command, args, timeout) = checked.inspect_err(|_| count("invalid"))?;
    audit.set_detail(format!("command {command}"));
    // Before the agent lookup, so a refused caller learns nothing about the agent.
    if !ctx.auth.may_run_command(&caller, &command) {
        count("forbidden");
        audit.set_detail(format!("command {command}: not allowed for role {}", caller.role));
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "role {} may not send command {} (see [security.commands] in the manager config)",
                caller.role,
                echo(&command)
            ),
        ));
    }

    // The registry, not storage: its status is the live one.
    let Some(status) = ctx.registry.status(&id) else {
        count("unknown_agent");
        return Err(unknown_agent(&id));
    };
    if status != AgentStatus::Active {
        count("not_active");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "agent_not_active",
            format!("agent {} is {status}, not active: it cannot take commands now", echo(id.as_str())),
        ));
    }

    let request = CommandRequest {
        v: PROTOCOL_VERSION,
        id: Uuid::now_v7(),
        command,
        args,
        issued_at: chrono::Utc::now(),
    };
    let payload = serde_json::to_vec(&request).expect("a CommandRequest always serializes");
    tracing::info!(agent = %id, command = %request.command, request_id = %request.id, by = %caller.name, "sending command");
    let sent = ctx
        .nats
        .send_request(
            ctx.subjects.command(&id),
            async_nats::Request::new().payload(payload.into()).timeout(Some(timeout)),
        )
        .await;
    let msg = match sent {
        Ok(m) => m,
        Err(e) => {
            use async_nats::RequestErrorKind as K;
            let (result, status, code, message) = match e.kind() {
                K::TimedOut => (
                    "timeout",
                    StatusCode::GATEWAY_TIMEOUT,
                    "agent_timeout",
                    format!("agent {id} did not answer within {} ms", timeout.as_millis()),
                ),
                K::NoResponders => (
                    "unreachable",
                    StatusCode::GATEWAY_TIMEOUT,
                    "agent_unreachable",
                    format!("agent {id} is not listening for commands (no responders on NATS)"),
                ),
                K::Other => (
                    "nats_error",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "nats_unavailable",
                    format!("could not send the command over NATS: {e}"),
                ),
            };
            tracing::warn!(agent = %id, request_id = %request.id, result, "command failed");
            count(result);
            audit.set_detail(format!("command {}: {code}", request.command));
            return Err(ApiError::new(status, code, message));
        }
    };
    let reply = secmon_proto::decode::<CommandReply>(&msg.payload, MAX_REPLY_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            if r.id != request.id {
                Err(format!("reply is for request {}, not {}", r.id, request.id))
            } else if r.agent_id != id {
                Err(format!("reply comes from agent {}", r.agent_id))
            } else {
                Ok(r)
            }
        });
    match reply {
        Ok(r) => {
            count(if r.ok { "ok" } else { "error" });
            let outcome = if r.ok { "ok" } else { "refused or failed by the agent" };
            audit.set_detail(format!("command {}: {outcome}", request.command));
            Ok(Json(r))
        }
        Err(why) => {
            tracing::warn!(agent = %id, request_id = %request.id, reason = %why, "bad command reply");
            count("bad_reply");
            audit.set_detail(format!("command {}: bad reply", request.command));
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_agent_reply",
                format!("agent {id} sent a reply that does not decode: {why}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names() {
        for ok in ["ping", "reload-config", "a_1", &"x".repeat(64)] {
            assert!(valid_command_name(ok), "{ok}");
        }
        for bad in ["", "Ping", "a.b", "a b", "*", ">", &"x".repeat(65), "é"] {
            assert!(!valid_command_name(bad), "{bad}");
        }
    }
}
