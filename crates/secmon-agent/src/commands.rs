//! Commands on `secmon.cmd.<id>`: every request with a reply subject gets a reply,
//! including malformed and unknown ones.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use secmon_proto::{CommandReply, CommandRequest, DEFAULT_MAX_EVENT_BYTES, decode};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::Shared;
use crate::uplink::{Conns, sleep_or_stop, wait_conn};

/// The commands this agent answers, in the order `unknown_command` lists them.
pub const KNOWN_COMMANDS: &[&str] = &["ping", "status", "reload-config", "register"];

/// Serves commands until `stop` fires, subscribing again on every connection.
/// Commands are handled one at a time: they are rare, and a reload must not race
/// another.
pub(crate) async fn run_commands(shared: Arc<Shared>, mut conns: Conns, mut stop: watch::Receiver<bool>) {
    let subject = shared.subjects.command(&shared.agent_id);
    loop {
        let Some(conn) = wait_conn(&mut conns, &mut stop).await else { return };
        let mut sub = match conn.client.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, subject, "cannot subscribe to commands; retrying");
                if sleep_or_stop(Duration::from_millis(200), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                msg = sub.next() => match msg {
                    Some(m) => m,
                    None => break, // The connection is gone.
                },
                _ = conns.changed() => break,
                _ = stop.changed() => {
                    let _ = sub.unsubscribe().await;
                    return;
                }
            };
            let reply = handle(&shared, &msg.payload).await;
            let Some(to) = msg.reply else {
                tracing::warn!(ok = reply.ok, "command without a reply subject; answer not sent");
                continue;
            };
            let payload = serde_json::to_vec(&reply).expect("reply serializes");
            if let Err(e) = conn.client.publish(to, payload.into()).await {
                tracing::warn!(error = %e, "command reply not sent");
            }
        }
    }
}

/// Decodes and runs one command.
pub(crate) async fn handle(shared: &Shared, payload: &[u8]) -> CommandReply {
    let id = shared.agent_id.clone();
    let req: CommandRequest = match decode(payload, DEFAULT_MAX_EVENT_BYTES) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed command request");
            return CommandReply::failure(request_id_of(payload), id, "malformed_request", e.to_string());
        }
    };
    tracing::info!(command = %req.command, request = %req.id, "command received");
    match req.command.as_str() {
        "ping" => CommandReply::success(req.id, id, json!({"pong": true, "time": Utc::now()})),
        "status" => CommandReply::success(req.id, id, shared.status()),
        // A manager that does not know us (its database was lost) asks for this.
        "register" => {
            shared.reregister.notify_one();
            CommandReply::success(req.id, id, json!({"registering": true}))
        }
        "reload-config" => match shared.reload().await {
            Ok(outcome) => CommandReply::success(
                req.id,
                id,
                json!({"changed": outcome.changed, "restart_required": outcome.restart_required}),
            ),
            Err(e) => CommandReply::failure(req.id, id, "bad_config", e.to_string()),
        },
        other => CommandReply::failure(
            req.id,
            id,
            "unknown_command",
            format!("unknown command {other:?}; known commands: {}", KNOWN_COMMANDS.join(", ")),
        ),
    }
}

/// The request id, when a malformed request still carries one (so the caller can
/// match the error to its request); nil otherwise.
fn request_id_of(payload: &[u8]) -> Uuid {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("id")?.as_str()?.parse().ok())
        .unwrap_or(Uuid::nil())
}
