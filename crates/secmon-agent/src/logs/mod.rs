//! Log monitoring: follows the files of `[[logs]]` on one thread, decodes each line
//! (syslog header, then the program's decoder) and emits it as a `log` event, waiting
//! for room in the agent's channel (never dropping a line).
//!
//! Delivery is at-least-once: a file's position is saved to the state dir after its
//! lines' events were queued, so a crash may repeat the lines queued since the last
//! save (at most a second's worth), never lose one. A clean stop saves the positions
//! after the last line.

pub mod decode;
pub mod decoders;
pub mod position;
pub mod syslog;
pub mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use secmon_proto::EventClass;
use serde_json::{Value, json};

pub use decode::{DecodedLine, decode_line, severity_of};

use crate::config::{AgentConfig, LogFormat, LogMonitorSection};
use crate::pipeline::Emitter;
use crate::spool::EventDraft;
use position::PositionStore;
use tail::Tailer;

/// Longest time between two saves of the positions while lines come in (each save
/// is an fsync); a crash repeats at most the lines read since.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// One file as `status` shows it.
#[derive(Debug, Clone, Default)]
struct FileStatus {
    path: String,
    offset: Option<u64>,
    inode: Option<u64>,
    lines: u64,
    error: Option<String>,
}

#[derive(Default)]
struct Figures {
    files: Mutex<Vec<FileStatus>>,
    lines: AtomicU64,
    cut: AtomicU64,
    errors: AtomicU64,
}

struct Running {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    figures: Arc<Figures>,
}

enum State {
    Off,
    Running(Running),
    Stopped(Arc<Figures>),
}

/// The log monitor as the agent holds it.
pub(crate) struct LogSlot(Mutex<State>);

impl LogSlot {
    pub(crate) fn new() -> Self {
        LogSlot(Mutex::new(State::Off))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn running(&self) -> bool {
        matches!(*self.lock(), State::Running(_))
    }

    /// The `logs` part of `status`.
    pub(crate) fn status(&self) -> Value {
        match &*self.lock() {
            State::Off => Value::Null,
            State::Running(r) => figures_json(&r.figures, "running"),
            State::Stopped(f) => figures_json(f, "stopped"),
        }
    }

    /// Starts following the configured files, when there are any.
    pub(crate) fn start(&self, config: &AgentConfig, emitter: &Emitter) {
        if config.logs.is_empty() {
            tracing::info!("log monitoring off: no [[logs]] files configured");
            return;
        }
        let store = PositionStore::new(&config.agent.state_dir);
        let saved = store.load();
        let figures = Arc::new(Figures::default());
        let (stop, stop_rx) = mpsc::channel();
        let settings = config.log_monitor.clone();
        let tailers = config
            .logs
            .iter()
            .map(|s| {
                let mut t = Tailer::new(
                    s.path.clone(),
                    saved.get(&s.path).copied(),
                    settings.start_at,
                    settings.max_line_bytes,
                );
                t.prime();
                (t, s.format)
            })
            .collect();
        let worker =
            Worker { tailers, settings, saved, store, emitter: emitter.clone(), figures: figures.clone() };
        let spawned =
            std::thread::Builder::new().name("secmon-logs".into()).spawn(move || worker.run(stop_rx));
        match spawned {
            Ok(thread) => {
                tracing::info!(files = config.logs.len(), "log monitoring started");
                *self.lock() = State::Running(Running { stop, thread, figures });
            }
            Err(e) => tracing::error!(error = %e, "LOG MONITORING NOT RUNNING: cannot start its thread"),
        }
    }

    /// Stops the thread (it saves the positions) and waits for it.
    pub(crate) async fn stop(&self) {
        let state = std::mem::replace(&mut *self.lock(), State::Off);
        match state {
            State::Running(r) => {
                drop(r.stop);
                if tokio::task::spawn_blocking(move || r.thread.join()).await.is_err() {
                    tracing::error!("the log monitor thread failed");
                }
                tracing::info!("log monitoring stopped");
                *self.lock() = State::Stopped(r.figures);
            }
            other => *self.lock() = other,
        }
    }
}

fn figures_json(f: &Figures, state: &str) -> Value {
    let files: Vec<Value> = f
        .files
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|s| {
            json!({"path": s.path, "offset": s.offset, "inode": s.inode, "lines": s.lines, "error": s.error})
        })
        .collect();
    json!({
        "state": state,
        "files": files,
        "lines": f.lines.load(Ordering::Relaxed),
        "cut": f.cut.load(Ordering::Relaxed),
        "errors": f.errors.load(Ordering::Relaxed),
    })
}

struct Worker {
    tailers: Vec<(Tailer, LogFormat)>,
    settings: LogMonitorSection,
    saved: BTreeMap<PathBuf, position::Position>,
    store: PositionStore,
    emitter: Emitter,
    figures: Arc<Figures>,
}

impl Worker {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        let mut tailers = std::mem::take(&mut self.tailers);
        let mut positions = self.saved.clone();
        let mut last_saved = positions.clone();
        let mut saved_at = Instant::now();
        loop {
            let mut stopped = false;
            let mut more = false;
            for (t, format) in &mut tailers {
                let polled = self.poll_one(t, *format);
                stopped |= polled.stopped;
                more |= polled.more;
                if let Some(p) = t.position() {
                    positions.insert(t.path().to_owned(), p);
                }
                if stopped {
                    break;
                }
            }
            self.publish_status(&tailers);
            if positions != last_saved && (saved_at.elapsed() >= SAVE_EVERY || stopped) {
                saved_at = Instant::now();
                match self.store.save(&positions) {
                    Ok(()) => last_saved = positions.clone(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot save log positions (lines may repeat after a restart)")
                    }
                }
            }
            if stopped {
                tracing::warn!("log monitor: the agent stopped taking events");
                return;
            }
            let pause = if more { Duration::ZERO } else { self.settings.poll_interval };
            match stop.recv_timeout(pause) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // One last read, so what was written up to the stop is in the spool.
        for (t, format) in &mut tailers {
            self.poll_one(t, *format);
            if let Some(p) = t.position() {
                positions.insert(t.path().to_owned(), p);
            }
        }
        self.publish_status(&tailers);
        if let Err(e) = self.store.save(&positions) {
            tracing::error!(error = %e, "cannot save log positions (lines may repeat after a restart)");
        }
    }

    /// Polls one file.
    fn poll_one(&mut self, t: &mut Tailer, format: LogFormat) -> tail::Polled {
        let path = t.path().to_string_lossy().into_owned();
        let emitter = &self.emitter;
        let figures = &self.figures;
        let mut emit = |line: tail::Line<'_>| {
            let now = Utc::now();
            let d = decode_line(&path, line.text, format, now, &chrono::Local);
            let draft = EventDraft {
                time: d.time.unwrap_or(now),
                class: EventClass::Log,
                activity: d.activity,
                severity: d.severity,
                payload: serde_json::to_value(&d.record).unwrap_or(Value::Null),
            };
            if !emitter.emit_blocking(draft) {
                return false;
            }
            figures.lines.fetch_add(1, Ordering::Relaxed);
            if line.cut {
                figures.cut.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %path, "log line cut at log_monitor.max_line_bytes");
            }
            true
        };
        match t.poll(&mut emit) {
            Ok(polled) => {
                if t.error.take().is_some() {
                    tracing::info!(path = %path, "log file readable again");
                }
                polled
            }
            Err(e) => {
                let msg = e.to_string();
                if t.error.as_deref() != Some(msg.as_str()) {
                    // Logged and counted once per distinct failure; retried every poll.
                    tracing::error!(path = %path, error = %msg, "cannot read log file; retrying");
                    self.figures.errors.fetch_add(1, Ordering::Relaxed);
                    t.error = Some(msg);
                }
                tail::Polled::default()
            }
        }
    }

    fn publish_status(&self, tailers: &[(Tailer, LogFormat)]) {
        let files = tailers
            .iter()
            .map(|(t, _)| {
                let p = t.position();
                FileStatus {
                    path: t.path().to_string_lossy().into_owned(),
                    offset: p.map(|p| p.offset),
                    inode: p.map(|p| p.inode),
                    lines: t.lines,
                    error: t.error.clone(),
                }
            })
            .collect();
        *self.figures.files.lock().unwrap_or_else(PoisonError::into_inner) = files;
    }
}
