//! Typed payloads carried in [`crate::Envelope::payload`]. Each class's sensors add
//! their shapes here, so the wire stays defined in one place.

use serde::{Deserialize, Serialize};

/// `agent` class, activities `started`, `stopped`, `config_reloaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLifecycle {
    pub agent_version: String,
    #[serde(default)]
    pub config_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `agent` class, activity `event_loss`: events the agent could not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLoss {
    /// Events lost since the previous loss notice.
    pub lost: u64,
    /// Where they were lost (`spool_full`, `socket_client`, ...).
    pub reason: String,
}
