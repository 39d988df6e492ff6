//! What a real-time backend hands the engine: raw kernel notifications, already turned
//! into paths (and, under fanotify, the acting process). The engine coalesces them and
//! decides what to report by comparing the path's state with the baseline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secmon_proto::payload::ProcessInfo;

use crate::FimError;

/// One raw notification.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub path: PathBuf,
    pub kind: RawKind,
    /// The notification was about a directory.
    pub is_dir: bool,
    /// The acting process, when the backend knows it (fanotify).
    pub process: Option<ProcessInfo>,
    /// When the backend read it.
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    Created,
    /// Content written (write, truncate) or closed after writing.
    Modified,
    /// Closed after writing (inotify `IN_CLOSE_WRITE`), from backends whose
    /// [`Backend::reports_close_write`] is true: the engine then waits for the writer
    /// to close a file it saw created or written (up to `coalesce_max`) instead of
    /// reporting a half-written file.
    ClosedWrite,
    /// Metadata changed (mode, owner, times, link count).
    Attrib,
    Deleted,
    /// One half of a rename, paired by cookie (inotify).
    MovedFrom {
        cookie: u32,
    },
    MovedTo {
        cookie: u32,
    },
    /// A rename with both sides known (fanotify `FAN_RENAME`); `path` is the new path.
    Renamed {
        from: PathBuf,
    },
    /// Opened (any mode) — reported only where `access` is on.
    Opened,
    /// Read — reported only where `access` is on.
    Accessed,
    /// The watched root itself went away or was unmounted.
    RootGone,
    /// The kernel queue overflowed: events were lost, the engine rescans.
    Overflow,
}

/// What happened when a backend was asked to cover a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Directories now watched in real time.
    pub dirs: u64,
    /// Directories that could not be watched, and why (`watch_limit`,
    /// `unreadable_dir`, `mark_failed`), with the first such path.
    pub uncovered: Vec<(String, PathBuf, String)>,
}

/// A real-time source of [`RawEvent`]s. The engine calls every method from its one
/// thread.
pub trait Backend: Send {
    /// `inotify` or `fanotify`.
    fn name(&self) -> &'static str;
    /// Starts watching `path` (a directory, or a single file whose parent is then
    /// watched for it), its whole tree when `recursive`, and with opens and reads
    /// when `access`.
    fn watch(&mut self, path: &Path, recursive: bool, access: bool) -> Coverage;
    /// A directory appeared inside a recursive watch: cover it (and its subtree).
    /// Backends that mark whole filesystems do nothing here.
    fn dir_created(&mut self, dir: &Path, access: bool) -> Coverage;
    /// Waits up to `timeout` for notifications and appends them to `out`.
    fn read(&mut self, out: &mut Vec<RawEvent>, timeout: Duration) -> Result<(), FimError>;
    /// Directories watched in real time right now, when the backend counts them
    /// (inotify); the engine otherwise sums the [`Coverage`] it was given.
    fn realtime_dirs(&self) -> Option<u64> {
        None
    }
    /// True when the agent's own opens show up as notifications (inotify cannot tell
    /// who opened a file; fanotify drops the agent's own pid). The engine then
    /// discounts the opens it makes itself while hashing.
    fn sees_own_opens(&self) -> bool {
        false
    }
    /// True when the backend sends [`RawKind::ClosedWrite`].
    fn reports_close_write(&self) -> bool {
        false
    }
}
