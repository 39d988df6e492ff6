//! secmon's wire protocol: every type that crosses NATS, and the subject names.
//!
//! Invariant: this crate does no IO and holds no state. Every other crate speaks to
//! the wire through these types, so a change here is a protocol change: golden
//! files in `tests/golden/` pin the JSON of every message.

mod agent_id;
mod alert;
pub mod canonical;
mod decode;
mod envelope;
mod messages;
pub mod payload;
pub mod signing;
mod status;
mod subjects;

pub use agent_id::{AgentId, AgentIdError};
pub use alert::{AlertMessage, AlertMessageKind, AlertStatusChangeWire};
pub use decode::{DecodeError, Versioned, decode};
pub use envelope::{Envelope, EventClass, Severity};
pub use messages::{
    CommandError, CommandReply, CommandRequest, Heartbeat, HostFacts, RegisterReply, Registration,
    ShutdownNotice, SpoolStats,
};
pub use status::AgentStatus;
pub use subjects::{AgentSubject, Subjects};

/// The major protocol version this build speaks. Minor, additive changes keep the
/// major number: readers ignore fields they do not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default upper bound for one encoded event; larger messages are rejected.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// JetStream stream that holds agent events.
pub const EVENTS_STREAM: &str = "SECMON_EVENTS";
/// JetStream stream that holds alerts.
pub const ALERTS_STREAM: &str = "SECMON_ALERTS";
