//! The inotify backend: one watch per directory (inotify is not recursive), kept in
//! step with the tree as directories appear, move and go.
//!
//! - A directory is watched before it is listed, so nothing created in it is missed.
//! - A watch on a single file is a watch on its parent directory (the engine keeps
//!   only that name), so a replace-by-rename is seen; with `access` the file's inode
//!   is watched too for opens (watching the parent for opens would wake us for every
//!   sibling).
//! - Directory renames inside the tree rewrite the paths of the subtree's watches as
//!   the `IN_MOVED_TO` half is parsed, so events after it carry the new names; a
//!   directory moved out (no second half) loses its watches.
//! - `add_watch` failing with `ENOSPC` is the per-user watch limit: those directories
//!   are reported uncovered (`watch_limit`) and left to scheduled scans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::FimError;
use crate::raw::{Backend, Coverage, RawEvent, RawKind};

pub const NAME: &str = "inotify";

/// Decides that a directory needs no watch (ignored, the agent's state dir).
pub type SkipDir = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// Events taken per `read` call at most, so the engine interleaves its work.
const MAX_EVENTS_PER_READ: usize = 16 * 1024;
/// How long a directory's `IN_MOVED_FROM` waits for its `IN_MOVED_TO` before the
/// directory counts as moved out (the two are queued together by the kernel).
const MOVE_PAIR_GRACE: Duration = Duration::from_millis(50);

struct Wd {
    descriptor: WatchDescriptor,
    path: PathBuf,
    /// A directory watch (else the inode watch of a single file, for opens).
    dir: bool,
}

pub struct InotifyBackend {
    ino: Inotify,
    buf: Vec<u8>,
    by_wd: HashMap<i32, Wd>,
    /// Directory path → wd.
    dirs: BTreeMap<PathBuf, i32>,
    /// Single files watched for opens: path → inode watch (re-added after a replace).
    files: HashMap<PathBuf, Option<i32>>,
    /// Watch roots, for `RootGone`.
    roots: HashSet<PathBuf>,
    skip: SkipDir,
    /// Directory `IN_MOVED_FROM` halves by cookie.
    moved_dirs: HashMap<u32, (PathBuf, Instant)>,
}

fn dir_mask(access: bool) -> WatchMask {
    let mut m = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
        // Two watches sharing a directory get the union of their masks.
        | WatchMask::MASK_ADD;
    if access {
        m |= WatchMask::OPEN;
    }
    m
}

fn uncovered_for(cov: &mut Coverage, path: &Path, e: &io::Error) {
    let reason = match e.raw_os_error() {
        Some(libc::ENOSPC) => "watch_limit",
        Some(libc::EACCES) | Some(libc::EPERM) => "unreadable_dir",
        _ => "mark_failed",
    };
    cov.uncovered.push((reason.to_string(), path.to_path_buf(), e.to_string()));
}

impl InotifyBackend {
    pub fn new(skip: SkipDir) -> Result<Self, FimError> {
        let ino = Inotify::init().map_err(|source| FimError::Backend { backend: NAME, source })?;
        Ok(Self {
            ino,
            buf: vec![0u8; 256 * 1024],
            by_wd: HashMap::new(),
            dirs: BTreeMap::new(),
            files: HashMap::new(),
            roots: HashSet::new(),
            skip,
            moved_dirs: HashMap::new(),
        })
    }

    /// Watches one directory (not its subtree).
    fn add_dir(&mut self, dir: &Path, access: bool) -> io::Result<()> {
        let wd = self.ino.watches().add(dir, dir_mask(access))?;
        let id = wd.get_watch_descriptor_id();
        // The same inode under a new name (a rename we did not pair): follow it.
        if let Some(old) = self.by_wd.get(&id)
            && old.path != dir
            && old.dir
        {
            let old_path = old.path.clone();
            self.dirs.remove(&old_path);
        }
        self.by_wd.insert(id, Wd { descriptor: wd, path: dir.to_path_buf(), dir: true });
        self.dirs.insert(dir.to_path_buf(), id);
        Ok(())
    }

    /// Watches `root` and (when `recursive`) every directory below it, each before it
    /// is listed.
    fn add_tree(&mut self, root: &Path, recursive: bool, access: bool, cov: &mut Coverage) {
        let depth = if recursive { usize::MAX } else { 0 };
        let skip = self.skip.clone();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .max_depth(depth)
            .into_iter()
            .filter_entry(move |e| e.file_type().is_dir() && (e.depth() == 0 || !skip(e.path())));
        let mut limit_hit = false;
        for entry in walker {
            match entry {
                Ok(e) => {
                    if limit_hit {
                        // No point asking again: count what stays uncovered.
                        if self.dirs.contains_key(e.path()) {
                            cov.dirs += 1;
                            continue;
                        }
                        cov.uncovered.push((
                            "watch_limit".into(),
                            e.path().to_path_buf(),
                            "inotify watch limit reached".into(),
                        ));
                        continue;
                    }
                    match self.add_dir(e.path(), access) {
                        Ok(()) => cov.dirs += 1,
                        Err(err)
                            if matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
                        Err(err) => {
                            limit_hit = err.raw_os_error() == Some(libc::ENOSPC);
                            uncovered_for(cov, e.path(), &err);
                        }
                    }
                }
                Err(err) => {
                    // A directory that cannot be listed: its own watch may be in
                    // place, its subtree is not.
                    if let (Some(p), Some(ioe)) = (err.path(), err.io_error())
                        && ioe.kind() == io::ErrorKind::PermissionDenied
                    {
                        cov.uncovered.push(("unreadable_dir".into(), p.to_path_buf(), ioe.to_string()));
                    }
                }
            }
        }
    }

    fn add_file_inode(&mut self, path: &Path) {
        let mask = WatchMask::OPEN | WatchMask::DONT_FOLLOW | WatchMask::MASK_ADD;
        match self.ino.watches().add(path, mask) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                if !self.by_wd.get(&id).is_some_and(|w| w.dir) {
                    self.by_wd.insert(id, Wd { descriptor: wd, path: path.to_path_buf(), dir: false });
                }
                self.files.insert(path.to_path_buf(), Some(id));
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "inotify: no open watch on file");
                self.files.insert(path.to_path_buf(), None);
            }
        }
    }

    /// Rewrites the paths of the watches at and below `from` to below `to`.
    fn rename_subtree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, i32)> = self
            .dirs
            .range::<Path, _>((Bound::Included(from), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(from))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (old, id) in moved {
            self.dirs.remove(&old);
            let Ok(rest) = old.strip_prefix(from) else { continue };
            let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            if let Some(w) = self.by_wd.get_mut(&id) {
                w.path = new.clone();
            }
            self.dirs.insert(new, id);
        }
    }

    /// Drops the watches at and below `dir` (moved out of the tree).
    fn forget_subtree(&mut self, dir: &Path) {
        let gone: Vec<(PathBuf, i32)> = self
            .dirs
            .range::<Path, _>((Bound::Included(dir), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (p, id) in gone {
            self.dirs.remove(&p);
            if let Some(w) = self.by_wd.remove(&id) {
                let _ = self.ino.watches().remove(w.descriptor);
            }
        }
    }

    fn expire_moves(&mut self, now: Instant) {
        let old: Vec<u32> = self
            .moved_dirs
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= MOVE_PAIR_GRACE)
            .map(|(c, _)| *c)
            .collect();
        for c in old {
            if let Some((p, _)) = self.moved_dirs.remove(&c) {
                self.forget_subtree(&p);
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd { fd: self.ino.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }

    fn parse(
        &mut self,
        mask: EventMask,
        wd: i32,
        cookie: u32,
        name: Option<&std::ffi::OsStr>,
        out: &mut Vec<RawEvent>,
    ) {
        let at = Instant::now();
        if mask.contains(EventMask::Q_OVERFLOW) {
            out.push(RawEvent {
                path: PathBuf::new(),
                kind: RawKind::Overflow,
                is_dir: false,
                process: None,
                at,
            });
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            if let Some(w) = self.by_wd.remove(&wd) {
                if self.dirs.get(&w.path) == Some(&wd) {
                    self.dirs.remove(&w.path);
                }
                if let Some(slot) = self.files.get_mut(&w.path)
                    && *slot == Some(wd)
                {
                    *slot = None;
                }
            }
            return;
        }
        let Some(w) = self.by_wd.get(&wd) else { return };
        let watch_is_dir = w.dir;
        let path = match name {
            Some(n) => w.path.join(n),
            None => w.path.clone(),
        };
        let is_dir = mask.contains(EventMask::ISDIR) || (name.is_none() && watch_is_dir);
        let mut push =
            |kind: RawKind| out.push(RawEvent { path: path.clone(), kind, is_dir, process: None, at });

        if mask.contains(EventMask::CREATE) {
            push(RawKind::Created);
            if self.files.contains_key(&path) {
                self.add_file_inode(&path);
            }
        } else if mask.contains(EventMask::MODIFY) {
            push(RawKind::Modified);
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            push(RawKind::ClosedWrite);
        } else if mask.contains(EventMask::ATTRIB) {
            push(RawKind::Attrib);
        } else if mask.contains(EventMask::DELETE) {
            push(RawKind::Deleted);
        } else if mask.contains(EventMask::MOVED_FROM) {
            push(RawKind::MovedFrom { cookie });
            if is_dir {
                self.moved_dirs.insert(cookie, (path.clone(), at));
            }
        } else if mask.contains(EventMask::MOVED_TO) {
            push(RawKind::MovedTo { cookie });
            if let Some((from, _)) = self.moved_dirs.remove(&cookie) {
                self.rename_subtree(&from, &path);
            }
            if self.files.contains_key(&path) {
                self.add_file_inode(&path);
            }
        } else if mask.contains(EventMask::OPEN) {
            push(RawKind::Opened);
        } else if mask.contains(EventMask::ACCESS) {
            push(RawKind::Accessed);
        } else if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT)
            && name.is_none()
            && watch_is_dir
            && self.roots.contains(&path)
        {
            push(RawKind::RootGone);
        }
    }
}

impl Backend for InotifyBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watch(&mut self, path: &Path, recursive: bool, access: bool) -> Coverage {
        let mut cov = Coverage::default();
        let is_dir = std::fs::symlink_metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            self.roots.insert(path.to_path_buf());
            self.add_tree(path, recursive, access, &mut cov);
            return cov;
        }
        // A single file (or a path not there yet): its parent sees it come, change,
        // be replaced and go.
        let Some(parent) = path.parent() else { return cov };
        match self.add_dir(parent, false) {
            Ok(()) => cov.dirs += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                cov.uncovered.push((
                    "mark_failed".into(),
                    path.to_path_buf(),
                    "parent directory missing".into(),
                ));
            }
            Err(e) => uncovered_for(&mut cov, parent, &e),
        }
        if access {
            self.add_file_inode(path);
        }
        cov
    }

    fn dir_created(&mut self, dir: &Path, access: bool) -> Coverage {
        let mut cov = Coverage::default();
        if !(self.skip)(dir) {
            self.add_tree(dir, true, access, &mut cov);
        }
        cov
    }

    fn read(&mut self, out: &mut Vec<RawEvent>, timeout: Duration) -> Result<(), FimError> {
        let now = Instant::now();
        self.expire_moves(now);
        let timeout = if self.moved_dirs.is_empty() { timeout } else { timeout.min(MOVE_PAIR_GRACE) };
        let readable =
            self.wait_readable(timeout).map_err(|source| FimError::Backend { backend: NAME, source })?;
        if !readable {
            return Ok(());
        }
        let start = out.len();
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            if out.len() - start >= MAX_EVENTS_PER_READ {
                break Ok(());
            }
            let events = match self.ino.read_events(&mut buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => break Err(FimError::Backend { backend: NAME, source }),
            };
            let parsed: Vec<(EventMask, i32, u32, Option<std::ffi::OsString>)> = events
                .map(|e| (e.mask, e.wd.get_watch_descriptor_id(), e.cookie, e.name.map(|n| n.to_os_string())))
                .collect();
            for (mask, wd, cookie, name) in parsed {
                self.parse(mask, wd, cookie, name.as_deref(), out);
            }
        };
        self.buf = buf;
        result
    }

    fn realtime_dirs(&self) -> Option<u64> {
        Some(self.dirs.len() as u64)
    }

    fn sees_own_opens(&self) -> bool {
        true
    }

    fn reports_close_write(&self) -> bool {
        true
    }
}
