//! Alerts as the manager publishes them on `<prefix>.alert.<severity>` (stream
//! `SECMON_ALERTS`): one message when an alert is raised and one per status change.
//! Repeats folded into an open alert (its `count` growing) are not published, so
//! a noisy rule does not flood integrations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgentId, Severity, Versioned};

/// Why the message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMessageKind {
    /// A new alert.
    Raised,
    /// A user (or the manager) changed its status; `change` says how.
    StatusChanged,
}

/// One status change of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertStatusChangeWire {
    /// `open`, `acknowledged` or `closed`; absent on the alert's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub at: DateTime<Utc>,
    /// Who made the change (`local` until the API has users).
    pub by: String,
    #[serde(default)]
    pub comment: String,
}

/// An alert's state when the message was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub v: u32,
    pub kind: AlertMessageKind,
    /// The alert's id (UUIDv7), stable across its messages.
    pub alert_id: Uuid,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    /// Tags of the rule, ATT&CK ids included (`attack.t1110`).
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// `open`, `acknowledged` or `closed`.
    pub status: String,
    /// The correlation group the rule matched on (empty when none).
    #[serde(default)]
    pub key: String,
    /// Triggering events kept: the first 10 and the last 10.
    #[serde(default)]
    pub event_ids: Vec<Uuid>,
    /// All triggering events, kept or not.
    pub event_count: u64,
    /// Matches folded into this alert.
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The change this message announces (`status_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<AlertStatusChangeWire>,
}

impl Versioned for AlertMessage {
    fn version(&self) -> u32 {
        self.v
    }
}
