//! Control-plane messages: registration, heartbeats, shutdown notices and commands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{AgentId, AgentStatus, decode::Versioned};

/// Facts about the host an agent runs on, sent at registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// Distribution name and version, from os-release (`Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Non-loopback IP addresses.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// `secmon.agent.<id>.register`, request/reply. Sent on every (re)connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub v: u32,
    pub agent_id: AgentId,
    pub name: String,
    pub agent_version: String,
    pub host: HostFacts,
    pub started_at: DateTime<Utc>,
    /// Sensors running on the agent.
    #[serde(default)]
    pub sensors: Vec<String>,
    /// sha256 of the agent's effective configuration.
    #[serde(default)]
    pub config_digest: String,
    /// Interval at which heartbeats will come, so the manager can judge timeouts.
    pub heartbeat_interval_ms: u64,
    /// Sequence number of the last event the agent created (0 if none).
    #[serde(default)]
    pub last_seq: u64,
}

impl Versioned for Registration {
    fn version(&self) -> u32 {
        self.v
    }
}

/// The manager's answer to a [`Registration`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterReply {
    pub v: u32,
    pub accepted: bool,
    /// Status the manager now holds for the agent.
    pub status: AgentStatus,
    /// Why the registration was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Versioned for RegisterReply {
    fn version(&self) -> u32 {
        self.v
    }
}

/// Spool occupancy reported with heartbeats and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpoolStats {
    /// Events waiting to be published.
    pub depth: u64,
    pub bytes: u64,
    /// Events dropped because the spool was full, since the agent started.
    pub dropped: u64,
}

/// `secmon.agent.<id>.heartbeat`, core NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u32,
    pub agent_id: AgentId,
    pub time: DateTime<Utc>,
    pub uptime_secs: u64,
    /// Sequence number of the last event the agent created.
    pub last_seq: u64,
    #[serde(default)]
    pub spool: SpoolStats,
}

impl Versioned for Heartbeat {
    fn version(&self) -> u32 {
        self.v
    }
}

/// `secmon.agent.<id>.shutdown`, core NATS: the agent is stopping cleanly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownNotice {
    pub v: u32,
    pub agent_id: AgentId,
    pub time: DateTime<Utc>,
    pub reason: String,
    pub last_seq: u64,
}

impl Versioned for ShutdownNotice {
    fn version(&self) -> u32 {
        self.v
    }
}

/// `secmon.cmd.<id>`, request/reply from the manager to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub v: u32,
    pub id: Uuid,
    pub command: String,
    #[serde(default)]
    pub args: Value,
    pub issued_at: DateTime<Utc>,
}

impl Versioned for CommandRequest {
    fn version(&self) -> u32 {
        self.v
    }
}

/// An agent's answer to a [`CommandRequest`]. Exactly one of `result` / `error`
/// is meaningful: `ok` says which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub v: u32,
    /// The request's id.
    pub id: Uuid,
    pub agent_id: AgentId,
    pub ok: bool,
    #[serde(default)]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
}

impl Versioned for CommandReply {
    fn version(&self) -> u32 {
        self.v
    }
}

/// Stable error codes: `unknown_command`, `bad_args`, `failed`, `malformed_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandReply {
    pub fn success(id: Uuid, agent_id: AgentId, result: Value) -> Self {
        Self { v: crate::PROTOCOL_VERSION, id, agent_id, ok: true, result, error: None }
    }

    pub fn failure(id: Uuid, agent_id: AgentId, code: &str, message: impl Into<String>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            id,
            agent_id,
            ok: false,
            result: Value::Null,
            error: Some(CommandError { code: code.to_owned(), message: message.into() }),
        }
    }
}
