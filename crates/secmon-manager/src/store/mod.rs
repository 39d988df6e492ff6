//! The manager's storage interface. Everything the manager keeps goes through
//! [`Store`]; SQLite ([`sqlite`]) is the embedded backend, and a second backend
//! (PostgreSQL, for several managers) is an addition behind the same trait.
//!
//! Invariant: no other module opens a database or writes SQL.

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, AgentStatus, Envelope, EventClass, HostFacts, Severity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub mod files;
pub mod sqlite;

pub use files::{FileAccess, FileChange, FileQuery, FileStateRecord, FileUpdate};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("migration {version} failed: {reason}")]
    Migration { version: u32, reason: String },
    #[error(
        "database schema version {found} is newer than this manager supports ({supported}); upgrade the manager"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
    /// The change does not apply to the record's current state (an alert status
    /// transition that is not allowed).
    #[error("{0}")]
    Conflict(String),
}

/// One page of a list query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the filters, over all pages.
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// An agent as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentRecord {
    #[schema(value_type = String)]
    pub id: AgentId,
    pub name: String,
    #[schema(value_type = String)]
    pub status: AgentStatus,
    /// Reason for the last status change.
    pub status_reason: String,
    pub status_changed_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub host: HostFacts,
    pub agent_version: String,
    pub sensors: Vec<String>,
    pub config_digest: String,
    pub heartbeat_interval_ms: u64,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last registration, heartbeat or shutdown notice.
    pub last_seen: Option<DateTime<Utc>>,
    /// Sequence tracking of the agent's events.
    pub seq: SeqState,
}

/// Per-agent event sequence tracking: the highest sequence number seen, the ranges
/// still missing below it (bounded), and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeqState {
    pub last_seq: u64,
    /// Missing ranges `[from, to]` below `last_seq`, oldest first; bounded in length.
    pub missing: Vec<(u64, u64)>,
    /// Events skipped over (sum of gap sizes ever opened).
    pub gap_events: u64,
    /// Events that arrived late and filled a gap.
    pub late_events: u64,
    /// Events whose sequence number had already been seen (dropped).
    pub replays: u64,
    /// Missing ranges dropped from `missing` to keep it bounded.
    #[serde(default)]
    pub given_up_ranges: u64,
}

/// A stored status transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    #[schema(value_type = String)]
    pub agent_id: AgentId,
    #[schema(value_type = Option<String>)]
    pub from: Option<AgentStatus>,
    #[schema(value_type = String)]
    pub to: AgentStatus,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// An event as stored: the envelope plus when the manager received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub envelope: Envelope,
    pub received: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Closed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Closed => "closed",
        }
    }
}

impl std::str::FromStr for AlertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "acknowledged" => Ok(Self::Acknowledged),
            "closed" => Ok(Self::Closed),
            _ => Err(format!("unknown alert status {s:?}: expected open, acknowledged or closed")),
        }
    }
}

/// An alert raised by a detection rule. Repeats of the same rule, agent and key
/// within `[alerts] dedup_window` fold into it (see [`crate::alerts::aggregate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertRecord {
    pub id: Uuid,
    pub rule_id: String,
    pub title: String,
    #[schema(value_type = String)]
    pub severity: Severity,
    #[schema(value_type = Option<String>)]
    pub agent_id: Option<AgentId>,
    pub status: AlertStatus,
    pub tags: Vec<String>,
    /// The correlation group the rule matched on (empty when none).
    #[serde(default)]
    pub key: String,
    /// Ids of the triggering events kept: all of them up to 20, then the first 10
    /// and the last 10.
    pub event_ids: Vec<Uuid>,
    /// All triggering events, kept in `event_ids` or not.
    #[serde(default)]
    pub event_count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Rule matches folded into this alert.
    pub count: u64,
}

/// One entry of an alert's status history (the first is its creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertStatusChange {
    pub at: DateTime<Utc>,
    /// Who made the change: the `by` of the request (`local` by default), or
    /// `secmon` for the alert's creation.
    pub by: String,
    /// Absent on creation.
    pub from: Option<AlertStatus>,
    pub to: AlertStatus,
    pub comment: String,
}

/// An alert with its status history, oldest change first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertDetails {
    #[serde(flatten)]
    pub alert: AlertRecord,
    pub history: Vec<AlertStatusChange>,
}

/// What [`Store::raise_alert`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlert {
    pub alert: AlertRecord,
    /// A new alert (else a repeat folded into an open one).
    pub created: bool,
}

/// An alert message waiting in the outbox for JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Outbox row, removed once JetStream acknowledged the message.
    pub id: i64,
    /// `Nats-Msg-Id`, so a message republished after a lost ack is dropped by the
    /// stream's duplicate window.
    pub msg_id: String,
    pub severity: Severity,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentSortField {
    #[default]
    Name,
    Status,
    LastSeen,
    RegisteredAt,
}

#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    pub status: Option<AgentStatus>,
    /// Exact name.
    pub name: Option<String>,
    /// Case-insensitive substring of id, name, hostname or an IP address.
    pub q: Option<String>,
    pub sort: AgentSortField,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub agent: Option<AgentId>,
    pub class: Option<EventClass>,
    /// Event time, inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Event time, exclusive.
    pub until: Option<DateTime<Utc>>,
    /// Arrival time at the manager, inclusive. When set, results are ordered by
    /// arrival instead of event time: the cursor `secmon events --follow` uses.
    pub received_since: Option<DateTime<Utc>>,
    /// Oldest first (for following); newest first otherwise.
    pub ascending: bool,
    pub offset: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Alert `last_seen`, inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Alert `last_seen`, exclusive.
    pub until: Option<DateTime<Utc>>,
    pub min_severity: Option<Severity>,
    pub agent: Option<AgentId>,
    pub status: Option<AlertStatus>,
    pub rule: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// What happened to a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: u64,
    /// Events whose id was already stored (a redelivery): not stored again.
    pub duplicates: u64,
    /// Per event of the batch, in order: stored now (true) or a duplicate.
    pub stored: Vec<bool>,
}

/// The storage interface. Methods are async so a networked backend fits; the SQLite
/// backend runs its work on blocking threads.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness check for `/api/health`.
    async fn health(&self) -> Result<(), StoreError>;

    /// Every agent, for rebuilding the in-memory registry at start.
    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    async fn list_agents(&self, q: &AgentQuery) -> Result<Page<AgentRecord>, StoreError>;
    /// Writes the agent's record and, in the same transaction, the transitions.
    /// The record's `seq` is not written: ingest owns it ([`Store::insert_events`]).
    async fn save_agent(&self, agent: &AgentRecord, transitions: &[StatusChange]) -> Result<(), StoreError>;
    /// [`Store::save_agent`] for many agents in one transaction (heartbeat timeouts
    /// of a whole rack, periodic `last_seen` flushes).
    async fn save_agents(&self, batch: &[(AgentRecord, Vec<StatusChange>)]) -> Result<(), StoreError> {
        for (agent, transitions) in batch {
            self.save_agent(agent, transitions).await?;
        }
        Ok(())
    }
    /// Sequence state of every agent that has events (registered or not), for
    /// ingest to resume where it stopped.
    async fn load_seq_states(&self) -> Result<Vec<(AgentId, SeqState)>, StoreError> {
        Ok(self.load_agents().await?.into_iter().map(|a| (a.id, a.seq)).collect())
    }
    /// Most recent transitions first.
    async fn status_history(&self, id: &AgentId, limit: u64) -> Result<Vec<StatusChange>, StoreError>;

    /// Stores a batch in one transaction, ignoring ids already stored, and writes
    /// the agents' updated sequence state in the same transaction. In that same
    /// transaction it applies the file state updates of the events it inserted
    /// (each only where it is newer than the state held; see [`files`]), so the
    /// file state never disagrees with the events stored.
    async fn insert_events(
        &self,
        events: &[StoredEvent],
        seq: &[(AgentId, SeqState)],
        files: &[FileUpdate],
    ) -> Result<InsertOutcome, StoreError>;
    async fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>, StoreError>;
    async fn count_events(&self) -> Result<u64, StoreError>;
    /// Which of `ids` are stored (tells a redelivered event from a replayed sequence
    /// number).
    async fn existing_event_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>, StoreError>;

    /// The state of one path of an agent (deleted or not).
    async fn get_file_state(
        &self,
        agent: &AgentId,
        path: &str,
    ) -> Result<Option<FileStateRecord>, StoreError>;
    /// One agent's file states, ordered by path.
    async fn list_file_states(&self, q: &FileQuery) -> Result<Page<FileStateRecord>, StoreError>;
    /// True when any file state of the agent is stored (registered or not).
    async fn has_file_states(&self, agent: &AgentId) -> Result<bool, StoreError>;

    /// Stores an alert; an alert with the same id is replaced (count, last_seen,
    /// status move on as a rule aggregates).
    async fn insert_alert(&self, alert: &AlertRecord) -> Result<(), StoreError>;
    async fn list_alerts(&self, q: &AlertQuery) -> Result<Page<AlertRecord>, StoreError>;
    /// One alert with its status history.
    async fn get_alert(&self, id: Uuid) -> Result<Option<AlertDetails>, StoreError>;
    /// In one transaction: finds the alert the draft folds into (same rule, agent
    /// and key, not closed, within `window`), folds it or creates a new alert,
    /// and for a new alert writes its first history entry and its outbox message.
    async fn raise_alert(
        &self,
        draft: &crate::alerts::AlertDraft,
        window: std::time::Duration,
    ) -> Result<RaisedAlert, StoreError>;
    /// In one transaction: checks the transition ([`StoreError::Conflict`] when
    /// not allowed, [`StoreError::NotFound`] for an unknown id), writes the status,
    /// the history entry and the outbox message.
    async fn set_alert_status(
        &self,
        id: Uuid,
        change: &AlertStatusChange,
    ) -> Result<AlertDetails, StoreError>;
    /// The oldest alert messages not yet acknowledged by JetStream.
    async fn pending_alert_messages(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Removes published messages from the outbox.
    async fn remove_alert_messages(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Flushes and releases what can be released before the process exits.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
