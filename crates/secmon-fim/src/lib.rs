//! File integrity monitoring for the secmon agent.
//!
//! [`Fim::start`] loads the stored baseline, starts the real-time backend, walks every
//! watch (reporting what changed while the agent was down), then runs the engine on
//! its own thread: raw notifications → coalescing (a path must stay quiet for
//! `[fim] coalesce`) → the path's new state compared with the baseline → a
//! [`FimEvent`] handed to the sink. Scheduled scans reconcile what real time missed.
//!
//! Invariants: no async runtime and no NATS here (the agent owns both); the engine
//! thread is the only writer of the baseline; a report is always the difference
//! between the baseline and the state read from the filesystem, so a lost or
//! reordered notification can delay a report but never falsify it.

mod baseline;
mod coalesce;
mod compare;
pub mod config;
pub mod detect;
mod diff;
mod engine;
pub mod fanotify;
pub mod hash;
pub mod inotify;
mod meta;
pub mod raw;
mod scan;
mod watches;
pub mod who;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secmon_proto::{EventClass, Severity};
use serde_json::Value;

pub use config::{BackendChoice, FimSection, HashAlgo, WatchConfig};

/// Errors that stop FIM from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum FimError {
    #[error("fim state dir {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable { backend: &'static str, reason: String },
    #[error("{backend}: {source}")]
    Backend { backend: &'static str, source: std::io::Error },
    #[error("fim config: {0}")]
    Config(String),
    #[error("fim threads: {0}")]
    Threads(std::io::Error),
}

/// What FIM hands the agent: an event draft, in the agent's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct FimEvent {
    pub time: DateTime<Utc>,
    /// `file`, `device` (camera) or `agent` (baseline done, coverage lost).
    pub class: EventClass,
    pub activity: String,
    pub severity: Severity,
    /// A [`secmon_proto::payload::FileActivity`], [`secmon_proto::payload::FimBaseline`]
    /// or [`secmon_proto::payload::FimCoverage`].
    pub payload: Value,
}

/// Where FIM delivers events. Called on the engine thread; it may block (that is
/// the back-pressure that keeps a burst from being dropped: the kernel queue then
/// absorbs it, and an overflow there triggers a rescan).
pub type Sink = Box<dyn FnMut(FimEvent) + Send>;

/// Everything [`Fim::start`] needs.
#[derive(Debug, Clone)]
pub struct FimOptions {
    pub watches: Vec<WatchConfig>,
    pub fim: FimSection,
    /// The baseline and report_changes copies live in `<state_dir>/fim`.
    pub state_dir: PathBuf,
}

/// Figures for the agent's `status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FimStatus {
    /// `inotify` or `fanotify`.
    pub backend: String,
    /// `starting`, `scanning`, `running` or `stopped`.
    pub state: String,
    pub watches: usize,
    /// Paths in the baseline.
    pub files: u64,
    /// Directories watched in real time (inotify) or marks placed (fanotify).
    pub realtime_dirs: u64,
    /// Directories left to scheduled scans.
    pub uncovered_dirs: u64,
    pub events: u64,
    pub overflows: u64,
    pub scans: u64,
    pub last_scan: Option<DateTime<Utc>>,
}

/// Starts file integrity monitoring.
pub struct Fim;

impl Fim {
    /// Loads the stored baseline and starts the backend (chosen by `[fim] backend`)
    /// and the engine thread, which walks every watch first (reporting offline
    /// changes against the stored baseline, then an `agent`/`fim_baseline` event)
    /// and then handles real-time notifications and scheduled scans. Blocking: call it
    /// from a thread that may block.
    ///
    /// The watches are in place when this returns: anything that changes afterwards
    /// is either in the start-up walk or notified.
    pub fn start(opts: FimOptions, sink: Sink) -> Result<FimHandle, FimError> {
        config::validate(&opts.watches, &opts.fim).map_err(|e| FimError::Config(e.to_string()))?;
        let fim_dir = opts.state_dir.join("fim");
        let state_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| FimError::State { path, source }
        };
        std::fs::create_dir_all(&fim_dir).map_err(state_err(&fim_dir))?;
        let content_dir = fim_dir.join("content");
        let content = diff::ContentStore::open(content_dir.clone()).map_err(state_err(&content_dir))?;
        let baseline_file = fim_dir.join(baseline::FILE_NAME);
        let stored = match baseline::load(&baseline_file) {
            Ok(s) => s,
            Err(reason) => {
                // Never fatal: the walk builds a new one (as on a first run).
                tracing::warn!(file = %baseline_file.display(), reason, "fim: stored baseline unusable, starting afresh");
                None
            }
        };

        let mut ws = watches::WatchSet::new(&opts.watches, &opts.state_dir, &opts.fim.camera_paths);
        let skip_ws = Arc::new(ws.clone());
        let skip: inotify::SkipDir = Arc::new(move |p: &std::path::Path| skip_ws.skip_dir(p));
        let mut backend = select_backend(opts.fim.backend, skip)?;
        for dev in watches::WatchSet::expand_cameras(&opts.fim.camera_paths, ws.camera_globs()) {
            ws.add_camera(&dev);
        }
        let mut coverage = Vec::new();
        for w in &ws.list {
            coverage.push(backend.watch(&w.root, w.cfg.recursive, w.cfg.access));
        }
        let pool = hash::pool(opts.fim.hash_workers).map_err(FimError::Threads)?;

        let shared = Arc::new(engine::Shared::default());
        shared.with_status(|s| {
            s.backend = backend.name().to_string();
            s.state = "starting".into();
            s.watches = ws.list.len();
        });
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let parts = engine::EngineParts {
            fim: opts.fim.clone(),
            ws: Arc::new(ws),
            backend,
            stored,
            pool,
            sink,
            shared: shared.clone(),
            cmds: cmd_rx,
            content,
            baseline_file,
            coverage,
        };
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("secmon-fim".into())
            .spawn(move || {
                let engine = engine::Engine::new(parts);
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || engine.run()));
                if run.is_err() {
                    tracing::error!("fim: engine stopped by a bug (panic); file monitoring is off");
                    thread_shared.with_status(|s| s.state = "failed".into());
                }
            })
            .map_err(FimError::Threads)?;
        Ok(FimHandle { shared, cmds: cmd_tx, thread: Some(thread) })
    }
}

/// `auto` takes fanotify when it is usable here, else inotify.
fn select_backend(choice: BackendChoice, skip: inotify::SkipDir) -> Result<Box<dyn raw::Backend>, FimError> {
    match choice {
        BackendChoice::Inotify => Ok(Box::new(inotify::InotifyBackend::new(skip)?)),
        BackendChoice::Fanotify => {
            fanotify::available()
                .map_err(|reason| FimError::BackendUnavailable { backend: "fanotify", reason })?;
            Ok(Box::new(fanotify::FanotifyBackend::new()?))
        }
        BackendChoice::Auto => match fanotify::available() {
            Ok(()) => match fanotify::FanotifyBackend::new() {
                Ok(b) => Ok(Box::new(b)),
                Err(e) => {
                    tracing::warn!(error = %e, "fim: fanotify unusable, using inotify");
                    Ok(Box::new(inotify::InotifyBackend::new(skip)?))
                }
            },
            Err(reason) => {
                tracing::info!(reason, "fim: fanotify not available, using inotify");
                Ok(Box::new(inotify::InotifyBackend::new(skip)?))
            }
        },
    }
}

/// A running FIM engine. Dropping it stops the engine like [`FimHandle::stop`].
pub struct FimHandle {
    shared: Arc<engine::Shared>,
    cmds: Sender<engine::Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FimHandle {
    pub fn status(&self) -> FimStatus {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the start-up walk is done; false if `timeout` passed first.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        while !*ready {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            ready = match self.shared.ready_cv.wait_timeout(ready, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Asks for a full scan now (as the schedule would).
    pub fn scan_now(&self) {
        let _ = self.cmds.send(engine::Cmd::Scan);
    }

    /// Stops the engine and writes the baseline. Blocking.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.cmds.send(engine::Cmd::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for FimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
