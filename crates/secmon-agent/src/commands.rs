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
use crate::scripts::{RunError, ScriptRunner};
use crate::uplink::{Conns, sleep_or_stop, wait_conn};

/// The commands this agent answers, in the order `unknown_command` lists them.
pub const KNOWN_COMMANDS: &[&str] = &["ping", "status", "reload-config", "register", "run-script"];

/// Serves commands until `stop` fires, subscribing again on every connection.
/// Commands are handled one at a time: they are rare, and a reload must not race
/// another. `run-script` is the exception: it runs in its own task (scripts can take
/// minutes), bounded by the runner's semaphore.
pub(crate) async fn run_commands(shared: Arc<Shared>, mut conns: Conns, mut stop: watch::Receiver<bool>) {
    let subject = shared.subjects.command(&shared.agent_id);
    // `[commands]` applies from the start config: a change needs a restart.
    let scripts = Arc::new(ScriptRunner::new(&shared.start_config.commands));
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
            if is_run_script(&msg.payload) {
                let (shared, scripts, client) = (shared.clone(), scripts.clone(), conn.client.clone());
                tokio::spawn(async move {
                    let reply = handle(&shared, &scripts, &msg.payload).await;
                    send_reply(&client, msg.reply, reply).await;
                });
                continue;
            }
            let reply = handle(&shared, &scripts, &msg.payload).await;
            send_reply(&conn.client, msg.reply, reply).await;
        }
    }
}

async fn send_reply(client: &async_nats::Client, to: Option<async_nats::Subject>, reply: CommandReply) {
    let Some(to) = to else {
        tracing::warn!(ok = reply.ok, "command without a reply subject; answer not sent");
        return;
    };
    let payload = serde_json::to_vec(&reply).expect("reply serializes");
    if let Err(e) = client.publish(to, payload.into()).await {
        tracing::warn!(error = %e, "command reply not sent");
    }
}

/// Cheap look at the command name, to decide whether to handle it in its own task.
fn is_run_script(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .is_some_and(|v| v.get("command") == Some(&json!("run-script")))
}

/// Decodes and runs one command.
pub(crate) async fn handle(shared: &Shared, scripts: &ScriptRunner, payload: &[u8]) -> CommandReply {
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
        "status" => {
            let mut status = shared.status();
            status["scripts"] = json!(scripts.names());
            CommandReply::success(req.id, id, status)
        }
        "run-script" => match scripts.run(&req.args).await {
            Ok(out) => {
                CommandReply::success(req.id, id, serde_json::to_value(out).expect("output serializes"))
            }
            Err(e) => {
                let mut reply = CommandReply::failure(req.id, id, e.code(), e.to_string());
                // A timeout still returns what the script printed before it was killed.
                if let RunError::Timeout { output, .. } = e {
                    reply.result = serde_json::to_value(*output).expect("output serializes");
                }
                reply
            }
        },
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
