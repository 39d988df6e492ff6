//! File integrity state: the last known state of each watched path of each agent,
//! as its `file` events (and camera `device` events) tell it.
//!
//! Ingest turns events into [`FileUpdate`]s (`crate::file_state`, pure); the store
//! applies them in the transaction that stores the events, and only for events that
//! transaction actually inserted. Each write is conditional: a path's state moves
//! only to an event that is newer (event time, then sequence number) than the one
//! it holds, so late events from an agent's spool never roll it back, and applying
//! the same event twice changes nothing.

use chrono::{DateTime, Utc};
use secmon_proto::AgentId;
use secmon_proto::payload::{FileKind, FileState, ProcessInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One change to one path's state, from one stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct FileUpdate {
    pub event_id: Uuid,
    pub agent_id: AgentId,
    pub path: String,
    /// What the path is, from the event (kept when the update brings no attributes).
    pub kind: FileKind,
    /// The event's activity (`created`, `modified`, ...).
    pub activity: String,
    /// Event time: with `seq`, the order that decides which update wins.
    pub time: DateTime<Utc>,
    pub seq: u64,
    /// The process that acted, when the agent knew it.
    pub process: Option<ProcessInfo>,
    pub change: FileChange,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileChange {
    /// The path's content state moves on (`created`, `modified`,
    /// `attributes_changed`, `deleted`, both sides of `renamed`).
    Content {
        /// New attributes; `None` keeps the ones recorded (a `deleted` without a
        /// `before` state keeps the last known attributes).
        attrs: Option<FileState>,
        deleted: bool,
        /// Set on the old path of a rename: where the file went.
        renamed_to: Option<String>,
        /// Set on the new path of a rename: where the file came from.
        renamed_from: Option<String>,
    },
    /// `accessed`: only the last access (time, event, process); the content state
    /// stays as it is.
    Access,
}

/// The last access to a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileAccess {
    /// Event time of the access.
    pub time: DateTime<Utc>,
    pub event_id: Uuid,
    pub seq: u64,
    /// The process that accessed the path (pid, exe, cmdline, uid, user...), or null.
    #[schema(value_type = Option<Object>)]
    pub process: Option<ProcessInfo>,
}

/// The last known state of one path of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileStateRecord {
    #[schema(value_type = String)]
    pub agent_id: AgentId,
    pub path: String,
    /// file, dir, symlink, char_device, block_device, fifo, socket or other.
    #[schema(value_type = String, example = "file")]
    pub kind: FileKind,
    /// Content hash (hex), when the agent hashed the file.
    pub hash: Option<String>,
    /// sha256, blake3, sha1 or md5.
    pub hash_algo: Option<String>,
    /// Why there is no hash (`too_large`, `unreadable: ...`, `pending`).
    pub hash_skipped: Option<String>,
    pub size: Option<u64>,
    /// `st_mode` (type and permission bits) as a number.
    pub mode: Option<u32>,
    /// `mode` in octal, e.g. `100644`.
    #[schema(example = "100644")]
    pub mode_octal: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Seconds since the epoch, with nanoseconds.
    pub mtime: Option<f64>,
    pub ctime: Option<f64>,
    pub inode: Option<u64>,
    /// Symlink target.
    pub target: Option<String>,
    /// True after `deleted`, or on the old path of a `renamed`; the attributes are
    /// the last known ones.
    pub deleted: bool,
    /// Where the file was renamed to (the old path of a rename).
    pub renamed_to: Option<String>,
    /// Where the file was renamed from (the new path of a rename).
    pub renamed_from: Option<String>,
    /// Activity of the last change: created, modified, attributes_changed, deleted
    /// or renamed (null when only accesses are known).
    pub last_activity: Option<String>,
    /// Event time of the last change.
    pub last_change: Option<DateTime<Utc>>,
    pub last_event_id: Option<Uuid>,
    pub last_seq: Option<u64>,
    /// The process behind the last change, or null when the agent did not know it.
    #[schema(value_type = Option<Object>)]
    pub who: Option<ProcessInfo>,
    /// The last access (`accessed` events), or null.
    pub last_access: Option<FileAccess>,
    /// When the manager last wrote this state (the commit of the events that changed it).
    pub updated_at: DateTime<Utc>,
}

/// A list query over one agent's file states, ordered by path.
#[derive(Debug, Clone)]
pub struct FileQuery {
    pub agent: AgentId,
    /// Only paths starting with this (plain text, no wildcards).
    pub prefix: Option<String>,
    /// Also deleted (and renamed-away) paths.
    pub include_deleted: bool,
    pub offset: u64,
    pub limit: u64,
}
