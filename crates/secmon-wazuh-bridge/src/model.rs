//! What the bridge knows about a Wazuh agent, and the messages it publishes.
//!
//! Invariant: nothing here can hold an agent's `internal_key`; the reader never
//! selects it (see `db.rs`), and no type has a field for it.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Version of the published message schema (`schema_version` in every message).
pub const SCHEMA_VERSION: u32 = 1;

/// Wazuh's `connection_status`, in the form the bridge publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Status {
    Active,
    Disconnected,
    NeverConnected,
    Pending,
    /// A value Wazuh does not define (or NULL): published as is, never dropped.
    Unknown,
}

impl Status {
    /// From the `connection_status` column; anything else (NULL, garbage) is `Unknown`.
    pub fn from_db(s: Option<&str>) -> Self {
        match s {
            Some("active") => Status::Active,
            Some("disconnected") => Status::Disconnected,
            Some("never_connected") => Status::NeverConnected,
            Some("pending") => Status::Pending,
            _ => Status::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "Active",
            Status::Disconnected => "Disconnected",
            Status::NeverConnected => "NeverConnected",
            Status::Pending => "Pending",
            Status::Unknown => "Unknown",
        }
    }

    /// The column value wazuh-db writes (for the fixture and the simulator).
    pub fn db_value(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disconnected => "disconnected",
            Status::NeverConnected => "never_connected",
            Status::Pending => "pending",
            Status::Unknown => "unknown",
        }
    }
}

/// One row of the `agent` table, validated: every text is valid UTF-8 (lossy),
/// trimmed of control characters and cut to a bounded length; NULLs are `None`.
/// Fields a 5.x database lacks are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: i64,
    pub name: String,
    pub ip: Option<String>,
    pub register_ip: Option<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub os_platform: Option<String>,
    pub os_arch: Option<String>,
    /// 5.x only.
    pub os_type: Option<String>,
    pub version: Option<String>,
    /// 4.x only.
    pub node_name: Option<String>,
    /// Epoch seconds.
    pub date_add: Option<i64>,
    /// Epoch seconds.
    pub last_keepalive: Option<i64>,
    /// Comma-separated group names, as stored.
    pub groups: Option<String>,
    pub status: Status,
    /// The raw `connection_status` value when it is not one Wazuh defines (for `Unknown`).
    pub raw_status: Option<String>,
    /// Epoch seconds; 0 unless disconnected.
    pub disconnection_time: Option<i64>,
    pub status_code: Option<i64>,
}

impl AgentRecord {
    /// A record with only the required fields set (tests, the fixture).
    pub fn new(id: i64, name: &str, status: Status) -> Self {
        Self {
            id,
            name: name.into(),
            ip: None,
            register_ip: None,
            os_name: None,
            os_version: None,
            os_platform: None,
            os_arch: None,
            os_type: None,
            version: None,
            node_name: None,
            date_add: None,
            last_keepalive: None,
            groups: None,
            status,
            raw_status: None,
            disconnection_time: None,
            status_code: None,
        }
    }
}

/// Wazuh's agent id form: at least three digits, zero padded (`001`).
pub fn agent_id_str(id: i64) -> String {
    format!("{id:03}")
}

/// Epoch seconds as RFC 3339; out-of-range values (a hostile or corrupt row) give `None`.
pub fn epoch_rfc3339(secs: i64) -> Option<String> {
    // Wazuh pins the manager's keepalive at 253402300799 (9999-12-31T23:59:59Z): valid.
    Utc.timestamp_opt(secs, 0).single().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// What a snapshot keeps of an agent: the fields changes are detected on and
/// events carry, packed (one allocation for all texts) so 100,000 agents cost
/// about 13 MB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AgentStateFields", into = "AgentStateFields")]
pub struct AgentState {
    pub id: i64,
    pub status: Status,
    /// last_keepalive, disconnection_time, date_add; `NONE` for NULL (an `Option<i64>`
    /// is twice the size, and there are 100,000 of these).
    times: [i64; 3],
    status_code: i64,
    /// Changes published for this agent so far (in the event id, so two identical
    /// transitions within one second still get distinct ids; persisted, so an event
    /// derived again after a crash gets the same one).
    pub generation: u64,
    /// name, ip, version, groups, os_name, os_platform joined by U+001F (validated
    /// texts hold no control characters).
    texts: Box<str>,
}

const SEP: char = '\u{1f}';
/// NULL in the packed integer fields (validated times are never negative; a
/// status code of i64::MIN is treated as NULL).
const NONE: i64 = i64::MIN;

fn some(v: i64) -> Option<i64> {
    (v != NONE).then_some(v)
}

impl AgentState {
    pub fn from_record(r: &AgentRecord) -> Self {
        let fields = Self::record_texts(r);
        let mut texts = String::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                texts.push(SEP);
            }
            if f.contains(SEP) {
                texts.extend(f.chars().filter(|c| *c != SEP));
            } else {
                texts.push_str(f);
            }
        }
        let t = |v: Option<i64>| v.unwrap_or(NONE);
        Self {
            id: r.id,
            status: r.status,
            times: [t(r.last_keepalive), t(r.disconnection_time), t(r.date_add)],
            status_code: t(r.status_code),
            generation: 0,
            texts: texts.into_boxed_str(),
        }
    }

    pub fn last_keepalive(&self) -> Option<i64> {
        some(self.times[0])
    }
    pub fn disconnection_time(&self) -> Option<i64> {
        some(self.times[1])
    }
    pub fn date_add(&self) -> Option<i64> {
        some(self.times[2])
    }
    pub fn status_code(&self) -> Option<i64> {
        some(self.status_code)
    }

    fn record_texts(r: &AgentRecord) -> [&str; 6] {
        fn o(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or("")
        }
        [&r.name, o(&r.ip), o(&r.version), o(&r.groups), o(&r.os_name), o(&r.os_platform)]
    }

    fn text(&self, i: usize) -> Option<&str> {
        self.texts.split(SEP).nth(i).filter(|s| !s.is_empty())
    }
    pub fn name(&self) -> &str {
        self.text(0).unwrap_or("")
    }
    pub fn ip(&self) -> Option<&str> {
        self.text(1)
    }
    pub fn version(&self) -> Option<&str> {
        self.text(2)
    }
    /// Comma-separated, as stored.
    pub fn groups(&self) -> Option<&str> {
        self.text(3)
    }
    pub fn os_name(&self) -> Option<&str> {
        self.text(4)
    }
    pub fn os_platform(&self) -> Option<&str> {
        self.text(5)
    }
    /// Whether nothing a snapshot keeps differs (keepalive-only changes count as
    /// differences); the generation is not compared.
    pub fn same_as(&self, r: &AgentRecord) -> bool {
        // Field by field, without building a state: this runs for every row of
        // every read.
        if self.id != r.id
            || self.status != r.status
            || self.last_keepalive() != r.last_keepalive
            || self.disconnection_time() != r.disconnection_time
            || self.date_add() != r.date_add
            || self.status_code() != r.status_code
        {
            return false;
        }
        let mut parts = self.texts.split(SEP);
        Self::record_texts(r).iter().all(|f| parts.next() == Some(*f)) && parts.next().is_none()
    }
}

#[derive(Serialize, Deserialize)]
struct AgentStateFields {
    id: i64,
    status: Status,
    #[serde(default)]
    last_keepalive: Option<i64>,
    #[serde(default)]
    disconnection_time: Option<i64>,
    #[serde(default)]
    date_add: Option<i64>,
    #[serde(default)]
    status_code: Option<i64>,
    name: String,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    groups: Option<String>,
    #[serde(default)]
    os_name: Option<String>,
    #[serde(default)]
    os_platform: Option<String>,
    #[serde(default)]
    generation: u64,
}

impl From<AgentState> for AgentStateFields {
    fn from(a: AgentState) -> Self {
        let o = |s: Option<&str>| s.map(str::to_owned);
        Self {
            id: a.id,
            status: a.status,
            last_keepalive: a.last_keepalive(),
            disconnection_time: a.disconnection_time(),
            date_add: a.date_add(),
            status_code: a.status_code(),
            name: a.name().to_owned(),
            ip: o(a.ip()),
            version: o(a.version()),
            groups: o(a.groups()),
            os_name: o(a.os_name()),
            os_platform: o(a.os_platform()),
            generation: a.generation,
        }
    }
}

impl From<AgentStateFields> for AgentState {
    fn from(f: AgentStateFields) -> Self {
        let mut r = AgentRecord::new(f.id, &f.name, f.status);
        r.ip = f.ip;
        r.version = f.version;
        r.groups = f.groups;
        r.os_name = f.os_name;
        r.os_platform = f.os_platform;
        r.last_keepalive = f.last_keepalive;
        r.disconnection_time = f.disconnection_time;
        r.date_add = f.date_add;
        r.status_code = f.status_code;
        let mut a = AgentState::from_record(&r);
        a.generation = f.generation;
        a
    }
}

/// The state of one manager node's agents, sorted by agent id (row 0, the manager
/// itself, is not an agent and is never in a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Sorted by `id`, ids unique.
    pub agents: Vec<AgentState>,
}

impl Snapshot {
    pub fn from_records(records: impl IntoIterator<Item = AgentRecord>) -> Self {
        let mut agents: Vec<AgentState> =
            records.into_iter().filter(|r| r.id != 0).map(|r| AgentState::from_record(&r)).collect();
        agents.sort_by_key(|a| a.id);
        agents.dedup_by_key(|a| a.id);
        Self { agents }
    }

    pub fn get(&self, id: i64) -> Option<&AgentState> {
        self.agents.binary_search_by_key(&id, |a| a.id).ok().map(|i| &self.agents[i])
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn summary(&self, changes_detected: u64) -> Summary {
        let mut s =
            Summary { total_agents: self.agents.len() as u64, changes_detected, ..Default::default() };
        for r in &self.agents {
            match r.status {
                Status::Active => s.active_agents += 1,
                Status::Disconnected => s.disconnected_agents += 1,
                Status::NeverConnected => s.never_connected_agents += 1,
                Status::Pending => s.pending_agents += 1,
                Status::Unknown => s.unknown_agents += 1,
            }
        }
        s
    }
}

/// What happened to an agent; the first word of the event id's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new row in `agent`.
    Registered,
    /// The row is gone.
    Removed,
    /// `connection_status` changed (other fields may have changed too).
    StatusChange,
    /// Name, IP, version or groups changed, status did not.
    Updated,
    /// More transitions than the flapping threshold within the window: this event,
    /// then no per-transition events until the agent is quiet for a window.
    Flapping,
    /// The agent is quiet again; carries how many transitions were summarized.
    FlappingEnded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Removed => "removed",
            EventKind::StatusChange => "status_change",
            EventKind::Updated => "updated",
            EventKind::Flapping => "flapping",
            EventKind::FlappingEnded => "flapping_ended",
        }
    }
}

/// One changed field: `name`, `ip`, `version`, `groups`, `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub previous: Option<String>,
    pub current: Option<String>,
}

/// Flapping figures, on `flapping` and `flapping_ended` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlappingInfo {
    /// Transitions seen within the window when flapping was declared.
    pub transitions: u64,
    pub window_secs: u64,
    /// Transitions not published one by one (on `flapping_ended`).
    pub suppressed: u64,
}

/// Published on `<prefix>.agent.<agent_id>.status` (and `.connected` /
/// `.disconnected` when the agent became active / disconnected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub schema_version: u32,
    /// Deterministic: `evt_<agent_id>_<epoch secs>_<kind>`, where the time comes from
    /// the database (see [`event_time`]), so an event derived twice (after a crash)
    /// has the same id and JetStream drops the copy.
    pub event_id: String,
    pub kind: EventKind,
    pub agent_id: String,
    pub agent_name: String,
    pub previous_status: Option<Status>,
    pub current_status: Status,
    pub ip_address: Option<String>,
    pub last_keepalive: Option<String>,
    pub manager_node: String,
    /// When the bridge saw the change (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    pub version: Option<String>,
    pub groups: Vec<String>,
    pub os_name: Option<String>,
    pub os_platform: Option<String>,
    pub registered_at: Option<String>,
    pub disconnection_time: Option<String>,
    pub status_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping: Option<FlappingInfo>,
    /// Filled by `sign.rs`; `None` only before signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// HMAC over the canonical form of the message without this field (see `sign.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// `hmac-sha256`.
    pub alg: String,
    /// First 8 bytes of sha256(key), hex: tells a verifier which key to use.
    pub key_id: String,
    /// Hex.
    pub value: String,
}

/// Counts in a batch and a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total_agents: u64,
    pub active_agents: u64,
    pub disconnected_agents: u64,
    pub never_connected_agents: u64,
    pub pending_agents: u64,
    pub unknown_agents: u64,
    pub changes_detected: u64,
}

impl Summary {
    /// The agent counts by status (the `agents` gauge).
    pub fn by_status(&self) -> [(Status, u64); 5] {
        [
            (Status::Active, self.active_agents),
            (Status::Disconnected, self.disconnected_agents),
            (Status::NeverConnected, self.never_connected_agents),
            (Status::Pending, self.pending_agents),
            (Status::Unknown, self.unknown_agents),
        ]
    }
}

/// Published on `<prefix>.security.agent_events`: the events of one poll cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub schema_version: u32,
    /// `batch_<manager_node>_<first 16 hex of sha256 of the event ids>`: deterministic.
    pub batch_id: String,
    pub manager_node: String,
    pub timestamp: String,
    pub events: Vec<AgentEvent>,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Published on `<prefix>.manager.<node>.heartbeat` every `heartbeat_interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub schema_version: u32,
    pub manager_node: String,
    pub timestamp: String,
    pub bridge_version: String,
    pub uptime_secs: u64,
    /// `4.x` or `5.x` (by the columns present), `unknown` before the first read.
    pub schema: String,
    pub db_path: String,
    pub last_poll: Option<String>,
    pub last_poll_duration_ms: Option<f64>,
    /// `closed`, `open`, `half_open`.
    pub db_breaker: String,
    pub nats_breaker: String,
    pub queue_len: u64,
    pub queue_capacity: u64,
    /// Poll cycles whose changes waited because the publish queue was full (they are
    /// published later, as the net change: see ARCHITECTURE.md).
    pub deferred_cycles: u64,
    pub published: u64,
    pub publish_errors: u64,
    pub agents: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Now, as the bridge writes times (RFC 3339, UTC, milliseconds).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn time_rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
