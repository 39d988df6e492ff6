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

/// `agent` class, activity `disconnected`: made by the manager (not the agent) when
/// its registry marks an agent disconnected. Such envelopes have `seq` 0, which no
/// agent event can have (agents count from 1 and ingest drops 0 as a replay), so
/// they stay out of the agent's sequence tracking; `extra` carries
/// [`MANAGER_ORIGIN`] too, for readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatusChange {
    pub reason: DisconnectReason,
    /// The status before (`pending`, `active`).
    pub from: crate::AgentStatus,
    /// The last heartbeat or registration; null when never seen.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// The manager's heartbeat timeout (`[agents] heartbeat_timeout`).
    pub timeout_secs: u64,
    /// The status reason the registry recorded (`heartbeat timeout`,
    /// `shutdown notice: SIGTERM`).
    pub detail: String,
}

/// Why the manager marked an agent disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// No heartbeat within the timeout and no shutdown notice: worth an alert.
    HeartbeatTimeout,
    /// The agent said it was stopping.
    ShutdownNotice,
}

/// The `extra` field (`"origin": "manager"`) of events the manager makes itself.
pub const MANAGER_ORIGIN: (&str, &str) = ("origin", "manager");

/// `file` class (and `device` class for camera devices): one change or access seen by
/// the agent's file integrity monitoring. Activities: `created`, `modified`,
/// `attributes_changed`, `deleted`, `renamed`, `accessed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileActivity {
    /// Absolute path (the new path for `renamed`).
    pub path: String,
    /// The path before a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// What the path is (of the state after, or before for `deleted`).
    pub kind: FileKind,
    /// Root of the watch that covers the path.
    pub watch: String,
    /// The watch's description, from the config.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub watch_description: String,
    /// Classic event type: `FileCreate`, `FileModify`, `FileDelete`, `FileAccess`,
    /// `CameraAccess` or `SshAccess`.
    pub event_type: String,
    /// Which detector classified the path, if any: `camera` or `ssh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    /// One line a person reads: "authorized_keys modified by vim (pid 4242)".
    pub description: String,
    /// State recorded before the change (absent for `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<FileState>,
    /// State after the change (absent for `deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<FileState>,
    /// For `modified` and `attributes_changed`: which of `size`, `mode`, `uid`, `gid`,
    /// `mtime`, `ctime`, `inode`, `hash`, `kind`, `target` differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Unified diff of a text file (`report_changes`), cut at the configured limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// True when `diff` was cut (it then ends with a marker line).
    #[serde(default, skip_serializing_if = "is_false")]
    pub diff_truncated: bool,
    /// The process that acted (fanotify who-data, or the holder of a device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// How the change was seen: `realtime`, `scan` (a scheduled scan found what real
    /// time missed) or `offline` (it happened while the agent was not running).
    pub source: String,
    /// The real-time backend in use: `inotify` or `fanotify`.
    pub backend: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Other,
}

/// Recorded attributes of a path (the baseline entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub kind: FileKind,
    pub size: u64,
    /// Permission and type bits as `st_mode`, e.g. 0o100644 is shown as 33188.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, with nanoseconds.
    pub mtime: f64,
    pub ctime: f64,
    pub inode: u64,
    /// Content hash, hex, when the file was hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// `sha256`, `blake3`, `sha1` or `md5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algo: Option<String>,
    /// Why the file has no hash: `too_large`, `unreadable: <reason>`, `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_skipped: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FileState {
    /// A regular file, mode 0644, owned by root, with a sha256 `hash` and zero times
    /// and inode: the common start of samples and test fixtures, which override what
    /// they care about.
    pub fn sha256_file(size: u64, hash: &str) -> Self {
        Self {
            kind: FileKind::File,
            size,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: 0.0,
            ctime: 0.0,
            inode: 0,
            hash: Some(hash.to_owned()),
            hash_algo: Some("sha256".into()),
            hash_skipped: None,
            target: None,
        }
    }
}

/// A process as the agent saw it in `/proc` when the event arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Short name (`comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Executable path (`/proc/<pid>/exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Real user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// True when the process had already exited: only `pid` is known then.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exited: bool,
}

/// `agent` class, activity `fim_baseline`: the start-up baseline walk finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FimBaseline {
    /// Paths recorded.
    pub files: u64,
    pub duration_ms: u64,
    /// Changes found against the stored baseline (happened while the agent was down).
    pub offline_changes: u64,
    /// True when no stored baseline existed (first run): nothing was compared.
    pub first_run: bool,
    pub backend: String,
}

/// `agent` class, activity `fim_coverage`: part of a watch is not covered in real time
/// (the inotify watch limit, a queue overflow, an unreadable directory); scheduled
/// scans cover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FimCoverage {
    /// `watch_limit`, `queue_overflow`, `unreadable_dir`, `mark_failed`.
    pub reason: String,
    pub path: String,
    /// Directories left without a real-time watch.
    #[serde(default)]
    pub uncovered_dirs: u64,
    pub detail: String,
}

/// `log` class: one line from a tailed log file, with what the decoders read from it.
/// Activities: what the decoder recognised (`auth_failed`, `auth_accepted`,
/// `invalid_user`, `disconnected`, `sudo`, `su`, `user_added`, `user_modified`,
/// `password_changed`, `cron`, ...) or `line` for a line no decoder knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The file the line came from.
    pub path: String,
    /// The whole line as read (lossy UTF-8, cut at the agent's line limit).
    pub raw: String,
    /// The message after the syslog header (the whole line when there is none).
    pub message: String,
    /// How the header was read: `rfc3164`, `rfc5424` or `raw`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The program (syslog tag), e.g. `sshd`, `sudo`, `CRON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The decoder that understood the message: `sshd`, `sudo`, `su`, `useradd`,
    /// `usermod`, `passwd`, `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    /// What the decoder read: `user`, `src_ip`, `src_port`, `method`, `tty`, `pwd`,
    /// `target_user`, `command`, ... (strings and numbers).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
