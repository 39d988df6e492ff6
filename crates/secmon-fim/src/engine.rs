//! The engine thread: the start-up walk, then the loop that turns raw notifications
//! into reports, runs scheduled scans and persists the baseline.
//!
//! Every report is the difference between the baseline and the state read from the
//! filesystem at that moment (then the baseline takes that state), so a lost,
//! duplicated or reordered notification can delay a report but never falsify or
//! repeat it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rayon::prelude::*;
use secmon_proto::payload::{FileActivity, FileKind, FileState, FimBaseline, FimCoverage, ProcessInfo};
use secmon_proto::{EventClass, Severity};

use crate::baseline::{self, Baseline, Stored};
use crate::coalesce::{Coalescer, Pending, Seen};
use crate::config::{FimSection, HashAlgo};
use crate::detect::{self, Activity};
use crate::diff::{self, ContentStore};
use crate::hash::{self, HashOut};
use crate::raw::{Backend, Coverage, RawEvent, RawKind};
use crate::watches::WatchSet;
use crate::{FimEvent, FimStatus, Sink, compare, meta, scan, who};

mod examine;
mod output;
mod walk;

/// Pending paths beyond this fall back to a full rescan (memory stays bounded).
pub const MAX_PENDING: usize = 100_000;
/// Longest the loop sleeps without looking at commands.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Paths examined per loop turn before reading the kernel queue again.
const EXAMINE_BATCH: usize = 2048;
/// Entries hashed together on the pool during a walk.
const CHUNK_ENTRIES: usize = 256;
/// Content kept in memory per chunk for `report_changes` copies.
const CHUNK_CONTENT_BYTES: u64 = 32 * 1024 * 1024;
/// How long one of our own opens may wait to be matched with its notification.
const SELF_OPEN_TTL: Duration = Duration::from_secs(2);

pub(crate) enum Cmd {
    Scan,
    Stop,
}

/// State shared with the [`crate::FimHandle`].
#[derive(Default)]
pub(crate) struct Shared {
    pub status: Mutex<FimStatus>,
    pub ready: Mutex<bool>,
    pub ready_cv: Condvar,
}

impl Shared {
    pub fn set_ready(&self) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.ready_cv.notify_all();
    }

    pub fn with_status(&self, f: impl FnOnce(&mut FimStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The start-up walk: differences are offline changes; nothing is reported for
    /// roots the stored baseline did not cover.
    Startup,
    Scan,
    /// A directory appeared (created or moved in): its contents are new.
    Realtime,
}

impl Mode {
    fn source(self) -> &'static str {
        match self {
            Mode::Startup => "offline",
            Mode::Scan => "scan",
            Mode::Realtime => "realtime",
        }
    }
}

/// A large file hashed after the start-up walk.
struct LazyJob {
    path: PathBuf,
    algo: HashAlgo,
    max_size: u64,
    /// Its stored hash, when the stored state otherwise matched (a different hash is
    /// then an offline change).
    prev: Option<String>,
}

struct Item {
    path: PathBuf,
    owner: usize,
    state: FileState,
    hash: Option<HashOut>,
    /// Who made it, when known (the start of a new tree).
    process: Option<ProcessInfo>,
}

pub(crate) struct Engine {
    fim: FimSection,
    ws: Arc<WatchSet>,
    backend: Box<dyn Backend>,
    backend_name: &'static str,
    base: Baseline,
    stored: Option<Stored>,
    first_run: bool,
    /// Roots the stored baseline did not cover: the start-up walk reports nothing there.
    quiet_roots: HashSet<PathBuf>,
    co: Coalescer,
    pool: rayon::ThreadPool,
    sink: Sink,
    shared: Arc<Shared>,
    cmds: Receiver<Cmd>,
    content: ContentStore,
    baseline_file: PathBuf,
    generation: u64,
    raw: Vec<RawEvent>,
    self_opens: HashMap<PathBuf, (u32, Instant)>,
    access_seen: HashMap<(PathBuf, u32), Instant>,
    lazy: Vec<LazyJob>,
    lazy_prev: HashMap<PathBuf, Option<String>>,
    lazy_tx: Sender<(PathBuf, HashOut)>,
    lazy_rx: Receiver<(PathBuf, HashOut)>,
    lazy_outstanding: usize,
    /// An overflow happened then: a full rescan is due.
    rescan_since: Option<Instant>,
    rewatch: bool,
    /// Directories without a real-time watch, by reason (`watch_limit`, `mark_failed`).
    uncovered: u64,
    coverage_sum: u64,
    limit_reported: bool,
    unreadable_reported: Vec<PathBuf>,
    offline_changes: u64,
    own_pid: u32,
    own_opens_undrained: bool,
}

pub(crate) struct EngineParts {
    pub fim: FimSection,
    pub ws: Arc<WatchSet>,
    pub backend: Box<dyn Backend>,
    pub stored: Option<Stored>,
    pub pool: rayon::ThreadPool,
    pub sink: Sink,
    pub shared: Arc<Shared>,
    pub cmds: Receiver<Cmd>,
    pub content: ContentStore,
    pub baseline_file: PathBuf,
    pub coverage: Vec<Coverage>,
}

impl Engine {
    pub fn new(p: EngineParts) -> Self {
        let (lazy_tx, lazy_rx) = std::sync::mpsc::channel();
        let first_run = p.stored.is_none();
        let mut base = Baseline::default();
        let mut quiet_roots = HashSet::new();
        let roots: Vec<PathBuf> = p.ws.list.iter().filter(|w| !w.camera).map(|w| w.root.clone()).collect();
        match &p.stored {
            Some(s) => {
                for (path, state) in &s.entries {
                    // Only what a current watch covers; the rest was unwatched since.
                    if roots.iter().any(|r| path.starts_with(r)) {
                        base.insert(path.clone(), state.clone(), 0);
                    }
                }
                for r in &roots {
                    if !s.roots.contains(r) {
                        quiet_roots.insert(r.clone());
                    }
                }
            }
            None => quiet_roots.extend(roots.iter().cloned()),
        }
        let backend_name = p.backend.name();
        let mut e = Self {
            co: Coalescer::new(p.fim.coalesce, p.fim.coalesce_max),
            fim: p.fim,
            ws: p.ws,
            backend: p.backend,
            backend_name,
            base,
            stored: p.stored,
            first_run,
            quiet_roots,
            pool: p.pool,
            sink: p.sink,
            shared: p.shared,
            cmds: p.cmds,
            content: p.content,
            baseline_file: p.baseline_file,
            generation: 0,
            raw: Vec::new(),
            self_opens: HashMap::new(),
            access_seen: HashMap::new(),
            lazy: Vec::new(),
            lazy_prev: HashMap::new(),
            lazy_tx,
            lazy_rx,
            lazy_outstanding: 0,
            rescan_since: None,
            rewatch: false,
            uncovered: 0,
            coverage_sum: 0,
            limit_reported: false,
            unreadable_reported: Vec::new(),
            offline_changes: 0,
            own_pid: std::process::id(),
            own_opens_undrained: false,
        };
        for c in &p.coverage {
            e.coverage_sum += c.dirs;
        }
        e.account_coverage(&p.coverage, true);
        e
    }

    pub fn run(mut self) {
        self.startup();
        let mut next_scan = self.next_scan_time(Instant::now());
        let mut last_persist = Instant::now();
        let mut scan_requested = false;
        loop {
            let mut stop = false;
            while let Ok(cmd) = self.cmds.try_recv() {
                match cmd {
                    Cmd::Scan => scan_requested = true,
                    Cmd::Stop => stop = true,
                }
            }
            if stop {
                break;
            }
            let now = Instant::now();
            let mut wait = MAX_WAIT;
            if let Some(d) = self.co.next_deadline() {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if let Some(t) = next_scan {
                wait = wait.min(t.saturating_duration_since(now));
            }
            if self.lazy_outstanding > 0 {
                wait = wait.min(Duration::from_millis(20));
            }
            if scan_requested || self.rescan_since.is_some() {
                wait = Duration::ZERO;
            }
            self.raw.clear();
            let mut raw = std::mem::take(&mut self.raw);
            if let Err(e) = self.backend.read(&mut raw, wait) {
                tracing::warn!(error = %e, "fim: backend read failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            let got = raw.len();
            self.ingest(&mut raw);
            self.raw = raw;

            let due = self.co.pop_due(Instant::now(), EXAMINE_BATCH);
            for (path, p) in due {
                self.examine(path, p, "realtime");
            }
            self.lazy_results();

            let now = Instant::now();
            // A lone move half is a move out (already pending as a deletion); forget
            // its cookie so a late reuse cannot pair with it.
            let _ = self.co.expire_moves(now, Duration::from_secs(1));
            // After an overflow, rescan once the burst has been read (or after a
            // second of unceasing events).
            if let Some(since) = self.rescan_since
                && (got == 0 || since.elapsed() >= Duration::from_secs(1))
            {
                self.rescan_since = None;
                self.full_scan();
            }
            if scan_requested || next_scan.is_some_and(|t| now >= t) {
                scan_requested = false;
                self.full_scan();
                next_scan = self.next_scan_time(Instant::now());
            }
            if self.base.dirty && last_persist.elapsed() >= self.fim.persist_interval {
                self.persist();
                last_persist = Instant::now();
            }
            self.prune(now);
            self.publish_status("running");
        }
        // Report what is already waiting, then keep the baseline for the next start.
        for (path, p) in self.co.drain_all() {
            self.examine(path, p, "realtime");
        }
        self.persist();
        self.publish_status("stopped");
    }

    fn next_scan_time(&self, from: Instant) -> Option<Instant> {
        (!self.fim.scan_interval.is_zero()).then(|| from + self.fim.scan_interval)
    }

    fn startup(&mut self) {
        let t0 = Instant::now();
        self.publish_status("scanning");
        for root in scan::top_roots(&self.ws) {
            self.reconcile(&root, Mode::Startup, None);
        }
        // Stored paths under no current root, or no longer owned: forget silently.
        let owned: Vec<PathBuf> =
            self.base.iter().filter(|(p, _)| self.ws.owner(p).is_none()).map(|(p, _)| p.clone()).collect();
        for p in owned {
            self.base.remove(&p);
        }
        self.stored = None;
        self.drain_own_opens();
        self.persist();
        let payload = FimBaseline {
            files: self.base.len() as u64,
            duration_ms: t0.elapsed().as_millis() as u64,
            offline_changes: self.offline_changes,
            first_run: self.first_run,
            backend: self.backend_name.to_string(),
        };
        self.emit_agent("fim_baseline", Severity::Info, serde_json::to_value(payload).unwrap_or_default());
        self.publish_status("running");
        self.shared.set_ready();
        self.start_lazy();
    }

    // ---- raw notifications ----

    fn ingest(&mut self, raw: &mut Vec<RawEvent>) {
        for ev in raw.drain(..) {
            match &ev.kind {
                RawKind::Overflow => {
                    self.overflow("queue_overflow", "the kernel event queue overflowed; rescanning");
                    continue;
                }
                RawKind::MovedFrom { cookie } => {
                    self.co.moved_from(*cookie, &ev.path, ev.is_dir, ev.at);
                    continue;
                }
                RawKind::MovedTo { cookie } => {
                    self.co.moved_to(*cookie, &ev.path, ev.is_dir, ev.at);
                    if ev.is_dir {
                        self.cover_new_dir(&ev.path);
                    }
                    continue;
                }
                RawKind::Renamed { from } => {
                    self.co.renamed(from, &ev.path, ev.is_dir, ev.process.clone(), ev.at);
                    if ev.is_dir {
                        self.cover_new_dir(&ev.path);
                    }
                    continue;
                }
                _ => {}
            }
            let Some(owner) = self.ws.owner(&ev.path) else { continue };
            let waits_close = self.backend.reports_close_write();
            let seen = match ev.kind {
                RawKind::Created => {
                    // Created by an open for writing: wait for the close. (A link,
                    // symlink or node made otherwise has no writer to wait for.)
                    let writing = waits_close
                        && !ev.is_dir
                        && std::fs::symlink_metadata(&ev.path).is_ok_and(|m| m.file_type().is_file());
                    Seen { created: true, writing, ..Seen::default() }
                }
                RawKind::Modified => Seen { modified: true, writing: waits_close, ..Seen::default() },
                RawKind::ClosedWrite => Seen { modified: true, closed: true, ..Seen::default() },
                RawKind::Attrib => Seen { attrib: true, ..Seen::default() },
                RawKind::Deleted | RawKind::RootGone => Seen { deleted: true, ..Seen::default() },
                RawKind::Opened | RawKind::Accessed => {
                    if ev.is_dir || !self.ws.list[owner].cfg.access {
                        continue;
                    }
                    if self.backend.sees_own_opens() && self.own_open(&ev.path) {
                        continue;
                    }
                    let mut process = ev.process.clone();
                    let camera = self.ws.list[owner].camera || self.ws.is_camera(&ev.path);
                    if process.is_none() && camera && !self.co.has_process(&ev.path) {
                        // inotify does not say who: whoever holds the device now
                        // (once per burst of opens: the scan of /proc is not free).
                        process = who::holders_of(&ev.path).into_iter().find(|p| p.pid != self.own_pid);
                    }
                    self.co.note(&ev.path, Seen { opened: true, ..Seen::default() }, false, process, ev.at);
                    continue;
                }
                _ => continue,
            };
            if ev.kind == RawKind::Created && ev.is_dir {
                self.cover_new_dir(&ev.path);
            }
            self.co.note(&ev.path, seen, ev.is_dir, ev.process.clone(), ev.at);
        }
        if self.co.len() > MAX_PENDING {
            self.co.clear();
            self.overflow("queue_overflow", "too many paths waiting; rescanning");
        }
    }

    /// A directory appeared: watch it (and what is already in it) at once.
    fn cover_new_dir(&mut self, dir: &Path) {
        let Some(owner) = self.ws.owner(dir) else { return };
        let w = &self.ws.list[owner];
        let is_root = self.ws.list.iter().any(|w| w.root == dir);
        if !(w.cfg.recursive || is_root) {
            return;
        }
        let access = w.cfg.access;
        let cov = self.backend.dir_created(dir, access);
        self.coverage_sum += cov.dirs;
        self.account_coverage(std::slice::from_ref(&cov), false);
    }

    /// Discounts a notification caused by our own open (inotify cannot tell who).
    fn own_open(&mut self, path: &Path) -> bool {
        let Some((n, until)) = self.self_opens.get_mut(path) else { return false };
        if *n == 0 || Instant::now() > *until {
            self.self_opens.remove(path);
            return false;
        }
        *n -= 1;
        if *n == 0 {
            self.self_opens.remove(path);
        }
        true
    }

    fn note_own_open(&mut self, path: &Path, owner: usize) {
        if self.backend.sees_own_opens() && self.ws.list[owner].cfg.access {
            let e = self.self_opens.entry(path.to_path_buf()).or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now() + SELF_OPEN_TTL;
            self.own_opens_undrained = true;
        }
    }

    /// Reads our own open notifications right away: while one waits unread in the
    /// kernel queue, an identical open by someone else would be merged into it.
    fn drain_own_opens(&mut self) {
        if self.own_opens_undrained {
            self.own_opens_undrained = false;
            self.drain_backend();
        }
    }

    fn overflow(&mut self, reason: &str, detail: &str) {
        self.shared.with_status(|s| s.overflows += 1);
        if self.rescan_since.is_none() {
            tracing::warn!(reason, detail, "fim: events lost, rescanning");
            let payload = FimCoverage {
                reason: reason.into(),
                path: String::new(),
                uncovered_dirs: 0,
                detail: detail.into(),
            };
            self.emit_agent(
                "fim_coverage",
                Severity::Medium,
                serde_json::to_value(payload).unwrap_or_default(),
            );
            self.rescan_since = Some(Instant::now());
        }
    }

    /// Counts directories left without a real-time watch and reports the watch limit
    /// once per episode (cleared when a rewatch covers everything again).
    fn account_coverage(&mut self, covs: &[Coverage], reset: bool) {
        if reset {
            self.uncovered = 0;
        }
        let mut limit: Vec<&PathBuf> = Vec::new();
        for c in covs {
            for (reason, path, _) in &c.uncovered {
                match reason.as_str() {
                    "watch_limit" => {
                        self.uncovered += 1;
                        limit.push(path);
                    }
                    "mark_failed" => self.uncovered += 1,
                    _ => {}
                }
            }
        }
        if !limit.is_empty() {
            self.rewatch = true;
            if !self.limit_reported {
                self.limit_reported = true;
                let n = limit.len() as u64;
                let payload = FimCoverage {
                    reason: "watch_limit".into(),
                    path: limit[0].to_string_lossy().into_owned(),
                    uncovered_dirs: n,
                    detail: format!(
                        "{} watch limit reached: {n} directories are covered by scheduled scans only \
                         (raise fs.inotify.max_user_watches)",
                        self.backend_name
                    ),
                };
                tracing::warn!(uncovered = n, "fim: watch limit reached");
                self.emit_agent(
                    "fim_coverage",
                    Severity::Medium,
                    serde_json::to_value(payload).unwrap_or_default(),
                );
            }
        }
    }
}

fn set_hash(st: &mut FileState, algo: HashAlgo, hash: &Result<String, String>) {
    match hash {
        Ok(h) => {
            st.hash = Some(h.clone());
            st.hash_algo = Some(algo.as_str().to_string());
            st.hash_skipped = None;
        }
        Err(reason) => {
            st.hash = None;
            st.hash_algo = None;
            st.hash_skipped = Some(reason.clone());
        }
    }
}
