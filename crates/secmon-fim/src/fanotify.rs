//! The fanotify backend: one filesystem mark per watched filesystem instead of one
//! watch per directory, and the acting process with every event.
//!
//! The group reports file handles and names (`FAN_REPORT_DFID_NAME` plus
//! `FAN_REPORT_FID`, and `FAN_REPORT_TARGET_FID` where the kernel has it, ≥ 5.17):
//! an event names its directory by handle and the entry by name. Handles are turned
//! into paths with `open_by_handle_at` on a descriptor kept per mount and a readlink
//! of `/proc/self/fd/N`, cached per directory handle (the watched roots' handles
//! are known from the start). Events are then filtered to the watched trees, since
//! a filesystem mark sees the whole filesystem. Opens and reads (`access`) come
//! from inode marks on the watched paths only: a filesystem-wide open mask would
//! be a flood. A filesystem that refuses a filesystem mark gets inode marks on
//! every directory instead (and then needs [`Backend::dir_created`]).
//!
//! A directory deleted before its events are read cannot be opened by handle any
//! more; its own delete event (which names it, with `FAN_REPORT_TARGET_FID`) gives
//! its parent and name, so `rm -rf` of a tree still reports every file by path.
//! Link-count changes of unlinked files (handle only, object gone) are dropped and
//! counted (`gone`): the unlink itself is reported by its directory.
//!
//! Invariants:
//! - No event is dropped silently: events of the agent's own process are ignored
//!   and counted; an event whose directory cannot be placed waits (bounded, up to
//!   [`PENDING_MAX_AGE`]) for the deletion that explains it, and is then counted and
//!   turned into [`RawKind::Overflow`] (a full rescan); a kernel queue overflow and
//!   an unparseable read buffer are [`RawKind::Overflow`] too.
//! - A path in an event is the directory's path as cached in event order, else as
//!   it is when the event is read (or its last path, for a directory deleted
//!   meanwhile), joined with the entry name. Near a directory rename a path can be
//!   the newer one; the engine re-reads the state of every path it is told about,
//!   so that can delay a report, never falsify it.
//! - Move halves carry synthetic cookies (fanotify has none): a half the backend
//!   cannot pair gets a cookie no other half has, so the engine never pairs
//!   unrelated halves and treats it as a delete or a create.
//! - Every buffer, cache and queue here is bounded; parsing never trusts a length.
//!
//! Not covered in real time: filesystems mounted inside a watched tree after it was
//! watched (the scheduled scans see them).
//!
//! Written on libc, by hand: nix 0.30's `fanotify` module has no `FAN_REPORT_*FID`
//! init flags and reads only the fixed event metadata (from a 4 KiB buffer), not
//! the file-handle and name records this backend lives on; `open_by_handle_at` and
//! `name_to_handle_at` have no wrapper there either.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secmon_proto::payload::ProcessInfo;

use crate::FimError;
use crate::raw::{Backend, Coverage, RawEvent, RawKind};
use crate::who;

const NAME: &str = "fanotify";

/// Size of one read from the group (several reads per [`Backend::read`] call).
pub const READ_BUF: usize = 64 * 1024;
/// Reads per [`Backend::read`] call before the batch is handled.
const READS_PER_CALL: usize = 16;
/// Directory handles whose path is cached.
pub const DIR_CACHE_MAX: usize = 4096;
/// Events waiting for their directory to be placed.
pub const PENDING_MAX: usize = 4096;
/// How long an event may wait for its directory to be placed.
pub const PENDING_MAX_AGE: Duration = Duration::from_millis(500);
/// Deleted directories remembered (handle → parent handle and name).
const DEPARTED_MAX: usize = 16_384;
const DEPARTED_TTL: Duration = Duration::from_secs(10);
/// Who-data of a pid is reused for this long (a burst from one process).
const PROC_CACHE_TTL: Duration = Duration::from_millis(10);
const PROC_CACHE_MAX: usize = 256;
/// Longest file handle the kernel hands out (`MAX_HANDLE_SZ`).
pub const MAX_HANDLE_BYTES: usize = 128;
/// Size of `struct fanotify_event_metadata`.
pub const METADATA_LEN: usize = 24;

/// Changes: on a filesystem mark, and on directory inode marks where that fails.
/// `FAN_EVENT_ON_CHILD` on a filesystem mark makes the kernel report the parent and
/// name with events on files (else they come with the file's handle only).
/// No `FAN_DELETE_SELF`: a watched root going away is seen as `FAN_DELETE` or
/// `FAN_RENAME` in its parent, and on a filesystem mark it would add one event to
/// every deletion anywhere on the filesystem.
const CHANGE_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;
/// Reads and opens: on inode marks only (a filesystem-wide open mask is a flood).
const ACCESS_MASK: u64 = libc::FAN_OPEN | libc::FAN_ACCESS;

/// Whether this process may use the fanotify backend here: root (CAP_SYS_ADMIN)
/// and a kernel that reports file handles with names (Linux ≥ 5.9).
pub fn available() -> Result<(), String> {
    init_group(false).map(drop).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => "needs CAP_SYS_ADMIN (run the agent as root)".to_string(),
        Some(libc::EINVAL) => {
            "kernel cannot report file handles with names (needs Linux 5.9 or later)".into()
        }
        Some(libc::ENOSYS) => "kernel built without fanotify".into(),
        _ => format!("fanotify_init: {e}"),
    })
}

fn init_group(target_fid: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_REPORT_FID
        | libc::FAN_REPORT_DFID_NAME;
    if target_fid {
        flags |= libc::FAN_REPORT_TARGET_FID;
    }
    // SAFETY: plain syscall; the returned descriptor is owned from here on.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------
// Parsing: a pure function over the bytes read from the group.

/// A file handle as fanotify reports it, with the filesystem it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fid {
    pub fsid: [i32; 2],
    pub handle_type: i32,
    pub handle: Box<[u8]>,
}

/// One information record of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoRecord {
    /// A directory and an entry name in it; the name `.` means the directory itself.
    DfidName(Fid, Vec<u8>),
    /// A directory (the event was about it, or no name was recorded).
    Dfid(Fid),
    /// The object itself.
    Fid(Fid),
    /// `FAN_RENAME`: where the entry was.
    OldDfidName(Fid, Vec<u8>),
    /// `FAN_RENAME`: where the entry is now.
    NewDfidName(Fid, Vec<u8>),
    /// A record type this backend does not use (pidfd, error, …).
    Other(u8),
}

/// One event: `struct fanotify_event_metadata` and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    pub mask: u64,
    /// An open descriptor on the object, or `FAN_NOFD` (always, in handle mode).
    pub fd: RawFd,
    pub pid: i32,
    pub records: Vec<InfoRecord>,
}

/// What [`parse_events`] made of a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub events: Vec<ParsedEvent>,
    /// Events skipped because their records did not parse.
    pub malformed: u64,
    /// The buffer's tail was not a sequence of events (a bad length): everything
    /// from there on is lost.
    pub lost_tail: bool,
    /// Descriptors of skipped events, to be closed.
    pub stray_fds: Vec<RawFd>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses what one `read` from a fanotify group returned. Every length is checked:
/// an event with a bad record is counted and skipped, a bad event length ends the
/// buffer (`lost_tail`); nothing here panics or reads out of bounds.
pub fn parse_events(buf: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut rest = buf;
    while !rest.is_empty() {
        let event_len = u32_at(rest, 0).map_or(0, |l| l as usize);
        if rest.len() < METADATA_LEN || event_len < METADATA_LEN || event_len > rest.len() {
            out.malformed += 1;
            out.lost_tail = true;
            break;
        }
        let (ev, next) = rest.split_at(event_len);
        rest = next;
        let vers = ev[4];
        let metadata_len = u16_at(ev, 6).map_or(0, usize::from);
        if vers != libc::FANOTIFY_METADATA_VERSION || metadata_len < METADATA_LEN || metadata_len > event_len
        {
            // Another layout: its descriptor field cannot be trusted either.
            out.malformed += 1;
            continue;
        }
        let (Some(mask), Some(fd), Some(pid)) = (u64_at(ev, 8), i32_at(ev, 16), i32_at(ev, 20)) else {
            out.malformed += 1;
            continue;
        };
        match parse_records(&ev[metadata_len..]) {
            Some(records) => out.events.push(ParsedEvent { mask, fd, pid, records }),
            None => {
                out.malformed += 1;
                if fd >= 0 {
                    out.stray_fds.push(fd);
                }
            }
        }
    }
    out
}

fn parse_records(mut b: &[u8]) -> Option<Vec<InfoRecord>> {
    let mut records = Vec::new();
    while !b.is_empty() {
        let info_type = *b.first()?;
        let len = usize::from(u16_at(b, 2)?);
        if len < 4 || len > b.len() {
            return None;
        }
        let body = &b[4..len];
        b = &b[len..];
        let rec = match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => InfoRecord::Fid(parse_fid(body)?.0),
            libc::FAN_EVENT_INFO_TYPE_DFID => InfoRecord::Dfid(parse_fid(body)?.0),
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => {
                let (fid, tail) = parse_fid(body)?;
                let name = parse_name(tail)?;
                match info_type {
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME => InfoRecord::DfidName(fid, name),
                    libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => InfoRecord::OldDfidName(fid, name),
                    _ => InfoRecord::NewDfidName(fid, name),
                }
            }
            other => InfoRecord::Other(other),
        };
        records.push(rec);
    }
    Some(records)
}

/// `__kernel_fsid_t fsid; struct file_handle { u32 handle_bytes; i32 handle_type;
/// u8 f_handle[]; }`, then whatever follows (a name, padding).
fn parse_fid(body: &[u8]) -> Option<(Fid, &[u8])> {
    let fsid = [i32_at(body, 0)?, i32_at(body, 4)?];
    let bytes = u32_at(body, 8)? as usize;
    let handle_type = i32_at(body, 12)?;
    if bytes == 0 || bytes > MAX_HANDLE_BYTES {
        return None;
    }
    let handle = body.get(16..16 + bytes)?;
    Some((Fid { fsid, handle_type, handle: handle.into() }, &body[16 + bytes..]))
}

/// A NUL-terminated entry name: never empty, `..` or with a `/` (so joining it to a
/// directory cannot leave that directory).
fn parse_name(tail: &[u8]) -> Option<Vec<u8>> {
    let end = tail.iter().position(|c| *c == 0)?;
    let name = &tail[..end];
    if name.is_empty() || name == b".." || name.contains(&b'/') {
        return None;
    }
    Some(name.to_vec())
}

// ---------------------------------------------------------------------------------
// The backend.

/// How the backend covers filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanotifyOptions {
    /// Mark whole filesystems (the point of this backend). `false` uses directory
    /// inode marks everywhere, as it does by itself on a filesystem that refuses a
    /// filesystem mark; it exists so that path can be exercised.
    pub filesystem_marks: bool,
    /// Take renames whole (`FAN_RENAME`) where the kernel has it. `false` asks for
    /// halves (`FAN_MOVED_FROM`/`FAN_MOVED_TO`), as kernels before 5.17 send them;
    /// it exists so that path can be exercised.
    pub rename_events: bool,
    /// Have delete events name the deleted object (`FAN_REPORT_TARGET_FID`) where
    /// the kernel can. `false` does without, as before 5.17; it exists so that path
    /// can be exercised.
    pub target_fid: bool,
}

impl Default for FanotifyOptions {
    fn default() -> Self {
        Self { filesystem_marks: true, rename_events: true, target_fid: true }
    }
}

/// Counters for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanotifyStats {
    /// Events read from the kernel.
    pub events: u64,
    /// Events of the agent's own process, ignored.
    pub own: u64,
    /// Events outside every watched tree.
    pub outside: u64,
    /// Events whose directory could not be placed; each led to a rescan.
    pub unresolved: u64,
    /// Events about objects gone before they were read that no directory names
    /// (an unlinked file's link-count change); the unlink itself is reported.
    pub gone: u64,
    /// Events that did not parse.
    pub malformed: u64,
    /// Kernel queue overflows.
    pub overflows: u64,
    /// Filesystem marks placed.
    pub filesystem_marks: u64,
    /// Inode marks placed (access, or the per-directory fallback).
    pub inode_marks: u64,
    /// Whether renames arrive whole (`FAN_RENAME`) rather than in halves.
    pub rename_events: bool,
    /// Whether deletions name the deleted object (`FAN_REPORT_TARGET_FID`).
    pub target_fid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsMode {
    /// A filesystem mark covers every change.
    Filesystem,
    /// Directory inode marks (the filesystem refused a filesystem mark).
    Inode,
}

struct Filesystem {
    /// One descriptor per mount point watched paths live under: a handle is turned
    /// into a path relative to the mount it is opened through.
    mounts: Vec<(PathBuf, OwnedFd)>,
    mode: FsMode,
}

struct Watch {
    /// As the engine named it (events carry paths under it).
    given: PathBuf,
    /// With symlinks resolved, as the kernel names paths.
    real: PathBuf,
    recursive: bool,
    access: bool,
}

struct Departed {
    parent: Fid,
    name: Vec<u8>,
    at: Instant,
}

struct Pending {
    ev: ParsedEvent,
    cookie: u32,
    process: Option<ProcessInfo>,
    since: Instant,
}

/// Directory handle → path, two generations: a lookup in the old one promotes the
/// entry, and when the new one is full the old one is dropped (an LRU at the cost
/// of two hash maps).
#[derive(Default)]
struct DirCache {
    new: HashMap<Fid, PathBuf>,
    old: HashMap<Fid, PathBuf>,
}

impl DirCache {
    fn get(&mut self, fid: &Fid) -> Option<PathBuf> {
        if let Some(p) = self.new.get(fid) {
            return Some(p.clone());
        }
        let p = self.old.remove(fid)?;
        self.insert(fid.clone(), p.clone());
        Some(p)
    }

    fn insert(&mut self, fid: Fid, path: PathBuf) {
        if self.new.len() >= DIR_CACHE_MAX / 2 {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(fid, path);
    }

    fn clear(&mut self) {
        self.new.clear();
        self.old.clear();
    }
}

/// What an event turned into once its paths were known.
enum Located {
    /// (path, kind) pairs, paths as the kernel names them.
    Paths(Vec<(PathBuf, RawKind)>),
    /// Its directory is not known (yet).
    Unresolved,
    /// About an object that no longer exists and that no directory names (the
    /// link-count change of an unlinked file): its removal came as its own event.
    Gone,
    Malformed,
}

/// Real-time FIM over fanotify. See the module docs.
pub struct FanotifyBackend {
    fd: OwnedFd,
    opts: FanotifyOptions,
    target_fid: bool,
    /// Decided by the first filesystem mark: the kernel takes `FAN_RENAME`.
    rename: Option<bool>,
    fs: HashMap<[i32; 2], Filesystem>,
    watches: Vec<Watch>,
    /// Watch indices by real root path.
    by_root: HashMap<PathBuf, Vec<usize>>,
    /// Files under an access inode mark: their events may carry only their handle.
    access_objects: HashMap<Fid, PathBuf>,
    /// (dev, ino) → mask already placed as an inode mark.
    inode_marks: HashMap<(u64, u64), u64>,
    dirs: DirCache,
    /// Watched root directory handles → their paths (see `refresh_roots`).
    root_handles: HashMap<Fid, PathBuf>,
    departed: HashMap<Fid, Departed>,
    pending: VecDeque<Pending>,
    procs: HashMap<u32, (Instant, ProcessInfo)>,
    own_pid: u32,
    /// Last synthetic move cookie handed out.
    cookie: u32,
    /// The previous event was a `FAN_MOVED_FROM` by this pid, under this cookie.
    last_moved_from: Option<(i32, u32)>,
    buf: Vec<u8>,
    stats: FanotifyStats,
    last_prune: Instant,
}

impl FanotifyBackend {
    pub fn new() -> Result<FanotifyBackend, FimError> {
        Self::with_options(FanotifyOptions::default())
    }

    pub fn with_options(opts: FanotifyOptions) -> Result<FanotifyBackend, FimError> {
        let unavailable =
            |e: io::Error| FimError::BackendUnavailable { backend: NAME, reason: e.to_string() };
        // FAN_REPORT_TARGET_FID (5.17) names a deleted directory in its delete event,
        // which is how events inside a directory deleted before they were read still
        // get a path. Older kernels refuse the flag with EINVAL.
        let first =
            if opts.target_fid { init_group(true) } else { Err(io::Error::from_raw_os_error(libc::EINVAL)) };
        let (fd, target_fid) = match first {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (init_group(false).map_err(unavailable)?, false)
            }
            Err(e) => return Err(unavailable(e)),
        };
        if !target_fid && opts.target_fid {
            tracing::warn!(
                "fanotify: kernel without FAN_REPORT_TARGET_FID; changes inside directories deleted \
                 before they are read trigger a rescan"
            );
        }
        Ok(FanotifyBackend {
            fd,
            opts,
            target_fid,
            rename: if opts.rename_events { None } else { Some(false) },
            fs: HashMap::new(),
            watches: Vec::new(),
            by_root: HashMap::new(),
            access_objects: HashMap::new(),
            inode_marks: HashMap::new(),
            dirs: DirCache::default(),
            root_handles: HashMap::new(),
            departed: HashMap::new(),
            pending: VecDeque::new(),
            procs: HashMap::new(),
            own_pid: std::process::id(),
            cookie: 0,
            last_moved_from: None,
            buf: vec![0; READ_BUF],
            stats: FanotifyStats { target_fid, ..Default::default() },
            last_prune: Instant::now(),
        })
    }

    pub fn stats(&self) -> FanotifyStats {
        self.stats.clone()
    }

    fn change_mask(&self) -> u64 {
        match self.rename {
            Some(false) => CHANGE_MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO,
            _ => CHANGE_MASK | libc::FAN_RENAME,
        }
    }

    fn mark(&self, flags: libc::c_uint, mask: u64, path: &Path) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid group descriptor and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | flags,
                mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Makes sure the filesystem holding `anchor` is known (a descriptor on the
    /// mount `anchor` is under, for handle resolution) and, with filesystem marks,
    /// marked. Returns its mode.
    fn ensure_fs(&mut self, anchor: &Path, cov: &mut Coverage) -> io::Result<FsMode> {
        let fsid = statfs_fsid(anchor)?;
        let mount = mount_point_of(anchor);
        if let Some(fs) = self.fs.get_mut(&fsid) {
            if !fs.mounts.iter().any(|(m, _)| *m == mount) {
                fs.mounts.push((mount, open_mount_fd(anchor)?));
            }
            return Ok(fs.mode);
        }
        let mount_fd = open_mount_fd(anchor)?;
        let mode = if self.opts.filesystem_marks {
            match self.mark_filesystem(anchor) {
                Ok(()) => {
                    cov.dirs += 1;
                    self.stats.filesystem_marks += 1;
                    FsMode::Filesystem
                }
                Err(e) => {
                    // EXDEV (btrfs subvolume), ENODEV (no fsid), EOPNOTSUPP, …: the
                    // filesystem is covered directory by directory instead.
                    tracing::info!(path = %anchor.display(), error = %e, "fanotify: no filesystem mark, using directory marks");
                    FsMode::Inode
                }
            }
        } else {
            FsMode::Inode
        };
        self.fs.insert(fsid, Filesystem { mounts: vec![(mount, mount_fd)], mode });
        Ok(mode)
    }

    fn mark_filesystem(&mut self, anchor: &Path) -> io::Result<()> {
        let flags = libc::FAN_MARK_FILESYSTEM;
        if self.rename.is_none() {
            // FAN_RENAME (5.17) gives both names in one event; older kernels refuse it.
            match self.mark(flags, CHANGE_MASK | libc::FAN_RENAME, anchor) {
                Ok(()) => {
                    self.rename = Some(true);
                    self.stats.rename_events = true;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.mark(flags, CHANGE_MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO, anchor)?;
                    self.rename = Some(false);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.mark(flags, self.change_mask(), anchor)
    }

    /// An inode mark on `path` with `mask` (added to what it had). Counts new marks.
    fn mark_inode(&mut self, path: &Path, mask: u64, cov: &mut Coverage) -> io::Result<()> {
        let md = std::fs::symlink_metadata(path)?;
        let key = (md.dev(), md.ino());
        let had = self.inode_marks.get(&key).copied().unwrap_or(0);
        if had & mask == mask {
            return Ok(());
        }
        let mask = if md.is_dir() { mask } else { mask & !(libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD) };
        match self.mark(libc::FAN_MARK_INODE, mask, path) {
            Ok(()) => {
                if self.rename.is_none() && mask & libc::FAN_RENAME != 0 {
                    self.rename = Some(true);
                    self.stats.rename_events = true;
                }
            }
            // No filesystem mark decided rename support yet, and this kernel
            // refuses FAN_RENAME (< 5.17): halves from now on.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && self.rename.is_none()
                    && mask & libc::FAN_RENAME != 0 =>
            {
                self.rename = Some(false);
                let mask = (mask & !libc::FAN_RENAME) | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;
                self.mark(libc::FAN_MARK_INODE, mask, path)?;
            }
            Err(e) => return Err(e),
        }
        if had == 0 {
            cov.dirs += 1;
            self.stats.inode_marks += 1;
        }
        self.inode_marks.insert(key, had | mask);
        Ok(())
    }

    /// Inode marks on `root` (its whole tree when `recursive`; its directories only,
    /// `FAN_EVENT_ON_CHILD` covers their files). A file root gets the access bits
    /// itself and the change bits on its parent.
    fn mark_tree(&mut self, root: &Path, recursive: bool, change: bool, access: bool, cov: &mut Coverage) {
        let change_mask = if change { self.change_mask() } else { 0 };
        let access_mask = if access { ACCESS_MASK | libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD } else { 0 };
        if change_mask | access_mask == 0 {
            return;
        }
        let is_dir = std::fs::metadata(root).map(|m| m.is_dir()).unwrap_or(false);
        if !is_dir {
            if access && root.exists() {
                match self.mark_inode(root, ACCESS_MASK, cov) {
                    Ok(()) => {
                        if let Ok(fid) = name_to_handle(root) {
                            self.access_objects.insert(fid, root.to_path_buf());
                        }
                    }
                    Err(e) => uncovered(cov, mark_reason(&e), root, &e),
                }
            }
            // The nearest existing directory sees the file appear, change, go.
            if change
                && let Some(dir) = root.ancestors().skip(1).find(|a| a.is_dir())
                && let Err(e) = self.mark_inode(dir, change_mask, cov)
            {
                uncovered(cov, mark_reason(&e), dir, &e);
            }
            return;
        }
        let mask = change_mask | access_mask;
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .same_file_system(true)
            .max_depth(if recursive { usize::MAX } else { 0 });
        for entry in walk {
            match entry {
                Ok(e) if e.file_type().is_dir() => {
                    if let Err(err) = self.mark_inode(e.path(), mask, cov) {
                        uncovered(cov, mark_reason(&err), e.path(), &err);
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    let path = err.path().unwrap_or(root).to_path_buf();
                    uncovered(cov, "unreadable_dir", &path, &err);
                }
            }
        }
    }

    // -- resolution ----------------------------------------------------------------

    /// Opens `fid` through each mount of its filesystem and reads the path back.
    /// Prefers a path inside a watch (a filesystem mounted twice names the same
    /// directory twice). The flag tells the directory was deleted meanwhile.
    fn open_handle(&self, fid: &Fid) -> Option<(PathBuf, bool)> {
        let fs = self.fs.get(&fid.fsid)?;
        let mut first = None;
        for (_, mount_fd) in &fs.mounts {
            let Some(found) = open_by_handle(mount_fd, fid) else { continue };
            if fs.mounts.len() == 1 || self.covering(&found.0, false).is_some() {
                return Some(found);
            }
            first.get_or_insert(found);
        }
        first
    }

    /// Handles of the watched root directories as they are now. The cache of
    /// everything else fills as events come, but a root's handle is known from the
    /// start, so events in a root that is renamed away before they are read still
    /// get the path they happened at.
    fn refresh_roots(&mut self) {
        self.root_handles.clear();
        for w in &self.watches {
            if w.real.is_dir()
                && let Ok(fid) = name_to_handle(&w.real)
            {
                self.root_handles.insert(fid, w.real.clone());
            }
        }
    }

    fn resolve_dir(&mut self, fid: &Fid, depth: usize) -> Option<PathBuf> {
        if let Some(p) = self.root_handles.get(fid) {
            return Some(p.clone());
        }
        if let Some(p) = self.dirs.get(fid) {
            return Some(p);
        }
        if let Some((path, deleted)) = self.open_handle(fid) {
            if !deleted {
                self.dirs.insert(fid.clone(), path.clone());
            }
            return Some(path);
        }
        // Deleted before we read about it: its delete event (already queued, since
        // the deletion happened) names its parent and name.
        if depth < 64 {
            let (parent, name) = self.departed.get(fid).map(|d| (d.parent.clone(), d.name.clone()))?;
            let dir = self.resolve_dir(&parent, depth + 1)?;
            return Some(dir.join(std::ffi::OsString::from_vec(name)));
        }
        None
    }

    fn resolve_object(&mut self, fid: &Fid) -> Option<PathBuf> {
        if let Some(p) = self.access_objects.get(fid) {
            return Some(p.clone());
        }
        self.open_handle(fid).map(|(p, _)| p)
    }

    fn resolve_entry(&mut self, dir: &Fid, name: &[u8]) -> Option<PathBuf> {
        let d = self.resolve_dir(dir, 0)?;
        Some(if name == b"." { d } else { d.join(std::ffi::OsStr::from_bytes(name)) })
    }

    /// `cookie` goes into move halves (see [`FanotifyBackend::move_cookie`]).
    fn locate(&mut self, ev: &ParsedEvent, cookie: u32) -> Located {
        let m = ev.mask;
        if m & libc::FAN_RENAME != 0 {
            let old = ev.records.iter().find_map(|r| match r {
                InfoRecord::OldDfidName(f, n) => Some((f, n)),
                _ => None,
            });
            let new = ev.records.iter().find_map(|r| match r {
                InfoRecord::NewDfidName(f, n) => Some((f, n)),
                _ => None,
            });
            let (Some((of, on)), Some((nf, nn))) = (old, new) else { return Located::Malformed };
            let (Some(from), Some(to)) = (self.resolve_entry(of, on), self.resolve_entry(nf, nn)) else {
                return Located::Unresolved;
            };
            return Located::Paths(vec![(to, RawKind::Renamed { from })]);
        }
        let dfid_name = ev.records.iter().find_map(|r| match r {
            InfoRecord::DfidName(f, n) => Some((f, n)),
            _ => None,
        });
        let dfid = ev.records.iter().find_map(|r| match r {
            InfoRecord::Dfid(f) => Some(f),
            _ => None,
        });
        let obj = ev.records.iter().find_map(|r| match r {
            InfoRecord::Fid(f) => Some(f),
            _ => None,
        });
        let mut path = match (dfid_name, dfid) {
            (Some((f, n)), _) => self.resolve_entry(f, n),
            (None, Some(f)) => self.resolve_dir(f, 0),
            (None, None) => None,
        };
        // The object's own handle names it too, where it still is where the event
        // happened (not for a deletion or the old side of a move).
        let object_stays = m & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) == 0;
        if path.is_none()
            && object_stays
            && let Some(f) = obj
        {
            path = self.resolve_object(f);
        }
        let Some(path) = path else {
            return match (dfid_name.is_some() || dfid.is_some(), obj.is_some()) {
                (true, _) => Located::Unresolved,
                (false, true) => Located::Gone,
                (false, false) => Located::Malformed,
            };
        };
        let mut out = Vec::new();
        for (bit, kind) in [
            (libc::FAN_CREATE, RawKind::Created),
            (libc::FAN_MOVED_TO, RawKind::MovedTo { cookie }),
            (libc::FAN_MODIFY, RawKind::Modified),
            (libc::FAN_CLOSE_WRITE, RawKind::ClosedWrite),
            (libc::FAN_ATTRIB, RawKind::Attrib),
            (libc::FAN_OPEN, RawKind::Opened),
            (libc::FAN_ACCESS, RawKind::Accessed),
            (libc::FAN_MOVED_FROM, RawKind::MovedFrom { cookie }),
            (libc::FAN_DELETE, RawKind::Deleted),
        ] {
            if m & bit != 0 {
                out.push((path.clone(), kind));
            }
        }
        Located::Paths(out)
    }

    /// The watch covering `path` (for an open or read: a watch with `access`), and
    /// whether `path` is its root.
    fn covering(&self, path: &Path, access_kind: bool) -> Option<(&Watch, bool)> {
        for (depth, anc) in path.ancestors().enumerate() {
            let Some(ids) = self.by_root.get(anc) else { continue };
            for &i in ids {
                let w = &self.watches[i];
                let inside = depth == 0 || w.recursive || depth == 1;
                if inside && (!access_kind || w.access) {
                    return Some((w, depth == 0));
                }
            }
        }
        None
    }

    /// `path` under the watch's name for its root.
    fn engine_path(w: &Watch, path: &Path) -> PathBuf {
        if w.given == w.real {
            return path.to_path_buf();
        }
        match path.strip_prefix(&w.real) {
            Ok(rel) if rel.as_os_str().is_empty() => w.given.clone(),
            Ok(rel) => w.given.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    fn process(&mut self, pid: i32, now: Instant) -> Option<ProcessInfo> {
        let pid = u32::try_from(pid).ok().filter(|p| *p > 0)?;
        if let Some((at, info)) = self.procs.get(&pid)
            && now.duration_since(*at) < PROC_CACHE_TTL
        {
            return Some(info.clone());
        }
        if self.procs.len() >= PROC_CACHE_MAX {
            self.procs.retain(|_, (at, _)| now.duration_since(*at) < PROC_CACHE_TTL);
            if self.procs.len() >= PROC_CACHE_MAX {
                self.procs.clear();
            }
        }
        let info = who::process_info(pid);
        self.procs.insert(pid, (now, info.clone()));
        Some(info)
    }

    /// Turns located paths into raw events for the watched trees.
    fn emit(
        &mut self,
        ev: &ParsedEvent,
        items: Vec<(PathBuf, RawKind)>,
        mut process: Option<ProcessInfo>,
        now: Instant,
        out: &mut Vec<RawEvent>,
    ) {
        let is_dir = ev.mask & libc::FAN_ONDIR != 0;
        let mut any = false;
        let mut root_appeared = false;
        for (path, kind) in items {
            let access_kind = matches!(kind, RawKind::Opened | RawKind::Accessed);
            let mut emitted: Vec<(PathBuf, RawKind)> = Vec::new();
            let mut gone_roots: Vec<PathBuf> = Vec::new();
            if let RawKind::Renamed { from } = &kind {
                let to_w = self.covering(&path, false).map(|(w, root)| {
                    root_appeared |= root;
                    Self::engine_path(w, &path)
                });
                let from_w = self.covering(from, false).map(|(w, root)| (Self::engine_path(w, from), root));
                match (from_w, to_w) {
                    (Some((f, root)), Some(t)) => {
                        if root {
                            gone_roots.push(f.clone());
                        }
                        emitted.push((t, RawKind::Renamed { from: f }));
                    }
                    (Some((f, root)), None) => {
                        if root {
                            gone_roots.push(f.clone());
                        }
                        // A lone half, under a cookie nothing else carries.
                        emitted.push((f, RawKind::MovedFrom { cookie: self.fresh_cookie() }));
                    }
                    (None, Some(t)) => emitted.push((t, RawKind::MovedTo { cookie: self.fresh_cookie() })),
                    (None, None) => {}
                }
            } else if let Some((w, root)) = self.covering(&path, access_kind) {
                let p = Self::engine_path(w, &path);
                if root && matches!(kind, RawKind::Deleted | RawKind::MovedFrom { .. }) {
                    gone_roots.push(p.clone());
                }
                root_appeared |= root && is_dir && matches!(kind, RawKind::Created | RawKind::MovedTo { .. });
                emitted.push((p, kind));
            }
            for (p, kind) in emitted {
                any = true;
                if process.is_none() {
                    process = self.process(ev.pid, now);
                }
                out.push(RawEvent { path: p, kind, is_dir, process: process.clone(), at: now });
            }
            for root in gone_roots {
                out.push(RawEvent {
                    path: root,
                    kind: RawKind::RootGone,
                    is_dir,
                    process: process.clone(),
                    at: now,
                });
            }
        }
        if !any {
            self.stats.outside += 1;
        }
        if root_appeared && is_dir {
            self.refresh_roots();
        }
    }

    fn fresh_cookie(&mut self) -> u32 {
        self.cookie = self.cookie.wrapping_add(1).max(1);
        self.cookie
    }

    /// fanotify has no rename cookie, but the engine pairs move halves by cookie:
    /// each half gets a fresh one, except that a `FAN_MOVED_TO` right after a
    /// `FAN_MOVED_FROM` of the same process takes that one's (the kernel queues the
    /// two halves of a rename one after the other). Only kernels without
    /// `FAN_RENAME` (< 5.17) send halves; an unpaired half is a delete or create to
    /// the engine.
    fn move_cookie(&mut self, ev: &ParsedEvent) -> u32 {
        let prev = self.last_moved_from.take();
        if ev.mask & libc::FAN_MOVED_FROM != 0 {
            let c = self.fresh_cookie();
            self.last_moved_from = Some((ev.pid, c));
            c
        } else if ev.mask & libc::FAN_MOVED_TO != 0 {
            match prev {
                Some((pid, c)) if pid == ev.pid => c,
                _ => self.fresh_cookie(),
            }
        } else {
            0
        }
    }

    fn handle_event(&mut self, ev: ParsedEvent, now: Instant, out: &mut Vec<RawEvent>) {
        self.stats.events += 1;
        if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.stats.overflows += 1;
            out.push(overflow(now));
            return;
        }
        if u32::try_from(ev.pid).is_ok_and(|p| p == self.own_pid) {
            self.stats.own += 1;
            return;
        }
        let dir_moved = ev.mask & libc::FAN_ONDIR != 0
            && ev.mask & (libc::FAN_RENAME | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0;
        let cookie = self.move_cookie(&ev);
        match self.locate(&ev, cookie) {
            Located::Paths(items) => self.emit(&ev, items, None, now, out),
            Located::Malformed => self.stats.malformed += 1,
            Located::Gone => self.stats.gone += 1,
            Located::Unresolved => {
                if self.pending.len() >= PENDING_MAX {
                    self.stats.unresolved += 1;
                    out.push(overflow(now));
                } else {
                    // Who-data now: the process may be gone when the event is placed.
                    let process = self.process(ev.pid, now);
                    self.pending.push_back(Pending { ev, cookie, process, since: now });
                }
            }
        }
        if dir_moved {
            // Every cached path below the moved directory is stale now. (A deleted
            // directory changes no other path, and its handle is never reused.)
            self.dirs.clear();
            self.refresh_roots();
        }
    }

    /// Remembers deleted directories named by their delete events, so that events
    /// inside them, read after they were gone, still get a path.
    fn note_departed(&mut self, events: &[ParsedEvent], now: Instant) {
        if !self.target_fid {
            return;
        }
        if now.duration_since(self.last_prune) > Duration::from_secs(1) || self.departed.len() >= DEPARTED_MAX
        {
            self.departed.retain(|_, d| now.duration_since(d.at) < DEPARTED_TTL);
            self.last_prune = now;
        }
        for ev in events {
            if ev.mask & libc::FAN_DELETE == 0 || ev.mask & libc::FAN_ONDIR == 0 {
                continue;
            }
            let parent = ev.records.iter().find_map(|r| match r {
                InfoRecord::DfidName(f, n) => Some((f, n)),
                _ => None,
            });
            let child = ev.records.iter().find_map(|r| match r {
                InfoRecord::Fid(f) => Some(f),
                _ => None,
            });
            if let (Some((parent, name)), Some(child)) = (parent, child)
                && self.departed.len() < DEPARTED_MAX
            {
                self.departed
                    .insert(child.clone(), Departed { parent: parent.clone(), name: name.clone(), at: now });
            }
        }
    }

    /// Retries events still waiting for a path; those waiting too long are counted
    /// and answered with a rescan.
    fn retry_pending(&mut self, older_than: Instant, now: Instant, out: &mut Vec<RawEvent>) {
        let mut lost = 0u64;
        let mut keep = VecDeque::new();
        while let Some(p) = self.pending.pop_front() {
            if p.since >= older_than {
                keep.push_back(p);
                continue;
            }
            match self.locate(&p.ev, p.cookie) {
                Located::Paths(items) => self.emit(&p.ev, items, p.process, now, out),
                Located::Malformed => self.stats.malformed += 1,
                Located::Unresolved if now.duration_since(p.since) < PENDING_MAX_AGE => keep.push_back(p),
                Located::Unresolved => lost += 1,
                Located::Gone => self.stats.gone += 1,
            }
        }
        self.pending = keep;
        if lost > 0 {
            self.stats.unresolved += lost;
            tracing::warn!(
                events = lost,
                total = self.stats.unresolved,
                "fanotify: events without a path, rescanning"
            );
            out.push(overflow(now));
        }
    }

    fn read_batch(&mut self) -> Result<(Vec<ParsedEvent>, bool), FimError> {
        let mut events = Vec::new();
        let mut lost = false;
        for _ in 0..READS_PER_CALL {
            // SAFETY: buf is a live, writable buffer of buf.len() bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => return Err(FimError::Backend { backend: NAME, source: e }),
                }
            }
            if n == 0 {
                break;
            }
            let parsed = parse_events(&self.buf[..n as usize]);
            self.stats.malformed += parsed.malformed;
            lost |= parsed.lost_tail;
            for fd in parsed.stray_fds.iter().copied().chain(parsed.events.iter().map(|e| e.fd)) {
                if fd >= 0 {
                    // SAFETY: the kernel opened this descriptor for us; nobody else owns it.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            events.extend(parsed.events);
        }
        Ok((events, lost))
    }
}

impl Backend for FanotifyBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Marks the filesystem holding `path` (once per filesystem) and every other
    /// filesystem mounted inside the tree; where a filesystem refuses, and for
    /// `access`, places inode marks instead. `uncovered` holds one entry per
    /// directory that could not be marked: (reason, path, error).
    fn watch(&mut self, path: &Path, recursive: bool, access: bool) -> Coverage {
        let mut cov = Coverage::default();
        let real = real_path(path);
        // The engine calls this again for a root that went away or was left
        // uncovered: the filter entry is kept once, the marks are placed again.
        let known = self
            .watches
            .iter()
            .any(|w| w.given == path && w.real == real && w.recursive == recursive && w.access == access);
        if !known {
            let idx = self.watches.len();
            self.watches.push(Watch { given: path.to_path_buf(), real: real.clone(), recursive, access });
            self.by_root.entry(real.clone()).or_default().push(idx);
        }
        let Some(anchor) = real.ancestors().find(|a| a.exists()).map(Path::to_path_buf) else {
            uncovered(&mut cov, "mark_failed", path, &"no existing ancestor");
            return cov;
        };
        let mode = match self.ensure_fs(&anchor, &mut cov) {
            Ok(m) => m,
            Err(e) => {
                uncovered(&mut cov, mark_reason(&e), &anchor, &e);
                return cov;
            }
        };
        if real.is_dir()
            && let Ok(fid) = name_to_handle(&real)
        {
            self.root_handles.insert(fid, real.clone());
        }
        if real.exists() {
            self.mark_tree(&real, recursive, mode == FsMode::Inode, access, &mut cov);
        } else if mode == FsMode::Inode {
            // Not there yet: its nearest ancestor sees it appear.
            self.mark_tree(&anchor, false, true, false, &mut cov);
        }
        if real.is_dir() {
            // Other filesystems mounted inside the tree need their own mark. (Mounts
            // made later are not seen; the scheduled scans cover them.)
            for mp in mount_points_under(&real, recursive) {
                match self.ensure_fs(&mp, &mut cov) {
                    Ok(FsMode::Filesystem) => {
                        if access {
                            self.mark_tree(&mp, recursive, false, true, &mut cov);
                        }
                    }
                    Ok(FsMode::Inode) => uncovered(&mut cov, "mark_failed", &mp, &"filesystem mark refused"),
                    Err(e) => uncovered(&mut cov, mark_reason(&e), &mp, &e),
                }
            }
        }
        cov
    }

    fn realtime_dirs(&self) -> Option<u64> {
        Some(self.stats.filesystem_marks + self.stats.inode_marks)
    }

    fn reports_close_write(&self) -> bool {
        true
    }

    fn dir_created(&mut self, dir: &Path, access: bool) -> Coverage {
        let mut cov = Coverage::default();
        let real = real_path(dir);
        let inode_mode = match statfs_fsid(&real) {
            Ok(fsid) => match self.fs.get(&fsid) {
                Some(fs) => fs.mode == FsMode::Inode,
                // A filesystem not seen before (mounted inside a tree since).
                None => match self.ensure_fs(&real, &mut cov) {
                    Ok(mode) => mode == FsMode::Inode,
                    Err(e) => {
                        uncovered(&mut cov, mark_reason(&e), &real, &e);
                        return cov;
                    }
                },
            },
            Err(e) => {
                uncovered(&mut cov, "unreadable_dir", &real, &e);
                return cov;
            }
        };
        self.mark_tree(&real, true, inode_mode, access, &mut cov);
        cov
    }

    fn read(&mut self, out: &mut Vec<RawEvent>, timeout: Duration) -> Result<(), FimError> {
        let start = Instant::now();
        // Wake up in time to settle waiting events.
        let wait = match self.pending.front() {
            Some(p) => timeout.min((p.since + PENDING_MAX_AGE).saturating_duration_since(start)),
            None => timeout,
        };
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = (wait.as_millis().min(i32::MAX as u128) as i32)
            .saturating_add(i32::from(wait.subsec_nanos() % 1_000_000 != 0));
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(FimError::Backend { backend: NAME, source: e });
            }
        }
        let now = Instant::now();
        if r > 0 {
            let (events, lost) = self.read_batch()?;
            let now = Instant::now();
            self.note_departed(&events, now);
            for ev in events {
                self.handle_event(ev, now, out);
            }
            if lost {
                out.push(overflow(now));
            }
        }
        self.retry_pending(now, Instant::now(), out);
        Ok(())
    }
}

fn overflow(now: Instant) -> RawEvent {
    RawEvent { path: PathBuf::new(), kind: RawKind::Overflow, is_dir: false, process: None, at: now }
}

fn uncovered(cov: &mut Coverage, reason: &str, path: &Path, err: &dyn std::fmt::Display) {
    cov.uncovered.push((reason.to_string(), path.to_path_buf(), err.to_string()));
}

fn mark_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "watch_limit",
        Some(libc::EACCES) | Some(libc::ENOENT) | Some(libc::ENOTDIR) => "unreadable_dir",
        _ => "mark_failed",
    }
}

/// `path` with symlinks resolved as far as it exists, the rest appended.
fn real_path(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let mut rest = Vec::new();
    for anc in path.ancestors() {
        if let Ok(p) = std::fs::canonicalize(anc) {
            return rest.iter().rev().fold(p, |acc: PathBuf, c: &&std::ffi::OsStr| acc.join(c));
        }
        if let Some(name) = anc.file_name() {
            rest.push(name);
        }
    }
    path.to_path_buf()
}

/// A descriptor for `open_by_handle_at`, which refuses `O_PATH` ones: the directory
/// `path` is or is in, opened for reading (never the file itself, which may be a
/// device).
fn open_mount_fd(path: &Path) -> io::Result<OwnedFd> {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new("/")) };
    let c =
        CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated path; the descriptor is owned from here on.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn statfs_fsid(path: &Path) -> io::Result<[i32; 2]> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // fsid_t is two ints; its fields are private in libc, so read its bytes.
    // SAFETY: fsid_t is 8 bytes of plain data.
    let raw: [i32; 2] = unsafe { std::mem::transmute_copy(&st.f_fsid) };
    Ok(raw)
}

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct HandleBuf {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_BYTES],
}

fn open_by_handle(mount_fd: &OwnedFd, fid: &Fid) -> Option<(PathBuf, bool)> {
    let mut h = HandleBuf {
        handle_bytes: fid.handle.len() as u32,
        handle_type: fid.handle_type,
        f_handle: [0; MAX_HANDLE_BYTES],
    };
    h.f_handle.get_mut(..fid.handle.len())?.copy_from_slice(&fid.handle);
    // SAFETY: h is a properly laid out file_handle with handle_bytes ≤ its capacity.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&mut h as *mut HandleBuf).cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // SAFETY: zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let deleted = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0 && st.st_nlink == 0;
    let link = if deleted {
        let b = link.as_os_str().as_bytes();
        PathBuf::from(std::ffi::OsStr::from_bytes(b.strip_suffix(b" (deleted)").unwrap_or(b)))
    } else {
        link
    };
    // Anything but an absolute path (an unreachable dentry) is of no use.
    link.is_absolute().then_some((link, deleted))
}

fn name_to_handle(path: &Path) -> io::Result<Fid> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut h =
        HandleBuf { handle_bytes: MAX_HANDLE_BYTES as u32, handle_type: 0, f_handle: [0; MAX_HANDLE_BYTES] };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: valid path, handle buffer with its capacity in handle_bytes, out-pointer.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut h as *mut HandleBuf).cast(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (h.handle_bytes as usize).min(MAX_HANDLE_BYTES);
    Ok(Fid { fsid: statfs_fsid(path)?, handle_type: h.handle_type, handle: h.f_handle[..n].into() })
}

/// Mount points from `/proc/self/mountinfo` (fifth field, octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(f))))
        .collect()
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The mount point `path` lives under (the longest mount point prefix).
fn mount_point_of(path: &Path) -> PathBuf {
    mount_points()
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| "/".into())
}

/// Mount points strictly inside `root` (direct children only unless `recursive`).
fn mount_points_under(root: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m != root && m.starts_with(root) && (recursive || m.parent() == Some(root)))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const FSID: [i32; 2] = [7, -9];

    /// A fid-carrying record: header, fsid, file_handle, then the name (NUL
    /// terminated) and padding to 4 bytes, as the kernel lays it out.
    fn fid_record(info_type: u8, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&FSID[0].to_ne_bytes());
        body.extend_from_slice(&FSID[1].to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(n) = name {
            body.extend_from_slice(n);
            body.push(0);
        }
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        record(info_type, &body)
    }

    fn record(info_type: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![info_type, 0];
        r.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        r.extend_from_slice(body);
        r
    }

    fn event(mask: u64, fd: i32, pid: i32, records: &[Vec<u8>]) -> Vec<u8> {
        let len = METADATA_LEN + records.iter().map(Vec::len).sum::<usize>();
        let mut e = Vec::new();
        e.extend_from_slice(&(len as u32).to_ne_bytes());
        e.push(libc::FANOTIFY_METADATA_VERSION);
        e.push(0);
        e.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&fd.to_ne_bytes());
        e.extend_from_slice(&pid.to_ne_bytes());
        for r in records {
            e.extend_from_slice(r);
        }
        e
    }

    fn fid(handle: &[u8]) -> Fid {
        Fid { fsid: FSID, handle_type: 1, handle: handle.into() }
    }

    #[test]
    fn an_event_with_a_directory_name_and_object_parses() {
        let buf = event(
            libc::FAN_MODIFY,
            libc::FAN_NOFD,
            42,
            &[
                fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &[1, 2, 3, 4, 5, 6, 7, 8], Some(b"passwd")),
                fid_record(libc::FAN_EVENT_INFO_TYPE_FID, &[9; 8], None),
            ],
        );
        let p = parse_events(&buf);
        assert_eq!((p.malformed, p.lost_tail), (0, false));
        assert_eq!(
            p.events,
            vec![ParsedEvent {
                mask: libc::FAN_MODIFY,
                fd: libc::FAN_NOFD,
                pid: 42,
                records: vec![
                    InfoRecord::DfidName(fid(&[1, 2, 3, 4, 5, 6, 7, 8]), b"passwd".to_vec()),
                    InfoRecord::Fid(fid(&[9; 8])),
                ],
            }]
        );
    }

    #[test]
    fn a_rename_an_overflow_and_unknown_records_parse_back_to_back() {
        let mut buf = event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            libc::FAN_NOFD,
            1,
            &[
                fid_record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, &[1; 12], Some(b"a")),
                fid_record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, &[2; 12], Some(b"b")),
                record(libc::FAN_EVENT_INFO_TYPE_PIDFD, &5i32.to_ne_bytes()),
            ],
        );
        buf.extend(event(libc::FAN_Q_OVERFLOW, libc::FAN_NOFD, 0, &[]));
        buf.extend(event(
            libc::FAN_ATTRIB | libc::FAN_ONDIR,
            libc::FAN_NOFD,
            3,
            &[fid_record(libc::FAN_EVENT_INFO_TYPE_DFID, &[3; 8], None)],
        ));
        let p = parse_events(&buf);
        assert_eq!((p.malformed, p.lost_tail), (0, false));
        assert_eq!(p.events.len(), 3);
        assert_eq!(
            p.events[0].records,
            vec![
                InfoRecord::OldDfidName(fid(&[1; 12]), b"a".to_vec()),
                InfoRecord::NewDfidName(fid(&[2; 12]), b"b".to_vec()),
                InfoRecord::Other(libc::FAN_EVENT_INFO_TYPE_PIDFD),
            ]
        );
        assert_eq!(p.events[1].mask, libc::FAN_Q_OVERFLOW);
        assert_eq!(p.events[2].records, vec![InfoRecord::Dfid(fid(&[3; 8]))]);
    }

    #[test]
    fn a_truncated_buffer_keeps_the_whole_events_and_flags_the_tail() {
        let one = event(libc::FAN_CREATE, -1, 1, &[fid_record(2, &[1; 8], Some(b"x"))]);
        let mut buf = one.clone();
        buf.extend(&one);
        for cut in one.len() + 1..buf.len() {
            let p = parse_events(&buf[..cut]);
            assert_eq!(p.events.len(), 1, "cut at {cut}");
            assert!(p.lost_tail, "cut at {cut}");
        }
        // Every prefix of the first event alone: nothing parsed, no panic.
        for cut in 1..one.len() {
            let p = parse_events(&buf[..cut]);
            assert!(p.events.is_empty() && p.lost_tail, "cut at {cut}");
        }
        assert_eq!(parse_events(&[]), Parsed::default());
    }

    #[test]
    fn bad_event_lengths_end_the_buffer() {
        let mut tiny = event(libc::FAN_CREATE, -1, 1, &[]);
        tiny[..4].copy_from_slice(&8u32.to_ne_bytes());
        let p = parse_events(&tiny);
        assert!(p.events.is_empty() && p.lost_tail && p.malformed == 1);
        let mut huge = event(libc::FAN_CREATE, -1, 1, &[]);
        huge[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_events(&huge).lost_tail);
    }

    #[test]
    fn malformed_records_skip_their_event_only() {
        let good = event(libc::FAN_CREATE, -1, 1, &[fid_record(2, &[1; 8], Some(b"ok"))]);
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("record length 0", vec![vec![2, 0, 0, 0]]),
            ("record length past the event", vec![vec![2, 0, 200, 0, 0, 0, 0, 0]]),
            ("record header cut", vec![vec![2, 0]]),
            ("handle longer than MAX_HANDLE_SZ", vec![fid_record(1, &[0; 132], None)]),
            ("empty handle", vec![fid_record(1, &[], None)]),
            (
                "name without NUL",
                vec![{
                    let mut r = fid_record(2, &[1; 8], None);
                    r.extend_from_slice(b"abcd");
                    let len = r.len() as u16;
                    r[2..4].copy_from_slice(&len.to_ne_bytes());
                    r
                }],
            ),
            ("name with a slash", vec![fid_record(2, &[1; 8], Some(b"../etc"))]),
            ("name ..", vec![fid_record(2, &[1; 8], Some(b".."))]),
            ("empty name", vec![fid_record(2, &[1; 8], Some(b""))]),
            ("fid record too short for its handle header", vec![record(1, &[0; 10])]),
        ];
        for (what, recs) in cases {
            let mut buf = event(libc::FAN_CREATE, 17, 1, &recs);
            buf.extend(&good);
            let p = parse_events(&buf);
            assert_eq!(p.malformed, 1, "{what}");
            assert!(!p.lost_tail, "{what}");
            assert_eq!(p.events.len(), 1, "{what}");
            assert_eq!(
                p.events[0].records,
                vec![InfoRecord::DfidName(fid(&[1; 8]), b"ok".to_vec())],
                "{what}"
            );
            assert_eq!(p.stray_fds, vec![17], "{what}: the skipped event's descriptor is handed back");
        }
    }

    #[test]
    fn another_metadata_version_is_skipped_without_trusting_its_fd() {
        let mut buf = event(libc::FAN_CREATE, 5, 1, &[]);
        buf[4] = libc::FANOTIFY_METADATA_VERSION + 1;
        buf.extend(event(libc::FAN_DELETE, -1, 2, &[]));
        let p = parse_events(&buf);
        assert_eq!(p.malformed, 1);
        assert!(p.stray_fds.is_empty());
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].mask, libc::FAN_DELETE);
    }

    #[test]
    fn garbage_never_panics() {
        // A small xorshift: deterministic noise, plus valid events with bytes flipped.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = event(
            libc::FAN_MODIFY,
            -1,
            9,
            &[fid_record(2, &[4; 8], Some(b"name")), fid_record(1, &[5; 8], None)],
        );
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = parse_events(&noise);
            let mut flipped = valid.clone();
            for _ in 0..3 {
                let i = (next() as usize) % flipped.len();
                flipped[i] = next() as u8;
            }
            let _ = parse_events(&flipped);
        }
    }

    #[test]
    fn the_dir_cache_stays_bounded_and_keeps_recent_entries() {
        let mut c = DirCache::default();
        let key = |i: u32| Fid { fsid: [0, 0], handle_type: 1, handle: i.to_ne_bytes().into() };
        for i in 0..(DIR_CACHE_MAX as u32 * 3) {
            c.insert(key(i), PathBuf::from(format!("/d{i}")));
            // Entry 0 is looked up all the time: it is kept.
            assert_eq!(c.get(&key(0)), Some(PathBuf::from("/d0")));
            assert!(c.new.len() + c.old.len() <= DIR_CACHE_MAX);
        }
        assert_eq!(c.get(&key(1)), None);
        c.clear();
        assert_eq!(c.get(&key(0)), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal(r"/mnt/with\040space"), b"/mnt/with space");
        assert_eq!(unescape_octal(r"/a\134b"), b"/a\\b");
        assert_eq!(unescape_octal(r"/odd\04"), b"/odd\\04");
        assert_eq!(unescape_octal("/"), b"/");
    }

    #[test]
    fn a_missing_path_is_resolved_as_far_as_it_exists() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("ln")).unwrap();
        assert_eq!(real_path(&d.path().join("ln/not/yet")), real.join("not/yet"));
    }
}
