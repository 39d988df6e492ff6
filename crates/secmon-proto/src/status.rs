use serde::{Deserialize, Serialize};

/// An agent's connection status. The names match Wazuh's connection statuses so that
/// the manager and the Wazuh bridge speak the same language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Enrolled, never seen.
    NeverConnected,
    /// Registered, first heartbeat not yet seen.
    Pending,
    Active,
    /// Heartbeat timeout or clean shutdown notice.
    Disconnected,
    /// Removed by an operator; its events are refused.
    Removed,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 5] = [
        AgentStatus::NeverConnected,
        AgentStatus::Pending,
        AgentStatus::Active,
        AgentStatus::Disconnected,
        AgentStatus::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::NeverConnected => "never_connected",
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Disconnected => "disconnected",
            AgentStatus::Removed => "removed",
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AgentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}: expected one of never_connected, pending, active, disconnected, removed"
                )
            })
    }
}
