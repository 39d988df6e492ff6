use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{AgentId, PROTOCOL_VERSION, decode::Versioned};

/// One event, as an agent publishes it on `secmon.agent.<id>.event.<class>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Major protocol version.
    pub v: u32,
    /// UUIDv7; also the JetStream message id, so a retried publish is stored once.
    pub id: Uuid,
    pub agent_id: AgentId,
    /// Per-agent, strictly increasing from 1; lets the manager see loss and replays.
    pub seq: u64,
    /// When the thing happened.
    pub time: DateTime<Utc>,
    /// When the agent observed it.
    pub observed: DateTime<Utc>,
    pub class: EventClass,
    /// What happened, in the class's vocabulary (`created`, `modified`, `started`, ...).
    pub activity: String,
    pub severity: Severity,
    /// Class-specific data; see [`crate::payload`] for the typed shapes.
    #[serde(default)]
    pub payload: Value,
    /// Signature over the canonical form (added by the security issue); absent in
    /// the local development mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Fields this build does not know: kept so that re-encoding loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Envelope {
    /// A new envelope stamped now, with a fresh UUIDv7 id.
    pub fn new(
        agent_id: AgentId,
        seq: u64,
        class: EventClass,
        activity: impl Into<String>,
        severity: Severity,
        payload: Value,
    ) -> Self {
        let now = Utc::now();
        Self {
            v: PROTOCOL_VERSION,
            id: Uuid::now_v7(),
            agent_id,
            seq,
            time: now,
            observed: now,
            class,
            activity: activity.into(),
            severity,
            payload,
            sig: None,
            extra: Map::new(),
        }
    }
}

impl Versioned for Envelope {
    fn version(&self) -> u32 {
        self.v
    }
}

/// Event classes, each mapped to its OCSF class so SIEM export is a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    File,
    Process,
    Network,
    Log,
    Device,
    Agent,
}

impl EventClass {
    pub const ALL: [EventClass; 6] = [
        EventClass::File,
        EventClass::Process,
        EventClass::Network,
        EventClass::Log,
        EventClass::Device,
        EventClass::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::File => "file",
            EventClass::Process => "process",
            EventClass::Network => "network",
            EventClass::Log => "log",
            EventClass::Device => "device",
            EventClass::Agent => "agent",
        }
    }

    /// OCSF class id: File System Activity 1001, Process Activity 1007, Network
    /// Activity 4001; logs map to OCSF's base event (0) and device and agent
    /// activity to Device Config State Change (5019) until a better fit exists.
    pub fn ocsf_class_id(self) -> u32 {
        match self {
            EventClass::File => 1001,
            EventClass::Process => 1007,
            EventClass::Network => 4001,
            EventClass::Log => 0,
            EventClass::Device | EventClass::Agent => 5019,
        }
    }
}

impl std::fmt::Display for EventClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("unknown class {s:?}: expected one of file, process, network, log, device, agent")
        })
    }
}

/// Severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Numeric rank (0 = info .. 4 = critical), for storage and "at least" filters.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        Self::ALL.get(rank as usize).copied()
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("unknown severity {s:?}: expected one of info, low, medium, high, critical")
        })
    }
}
