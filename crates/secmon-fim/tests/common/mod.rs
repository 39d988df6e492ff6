//! Shared helpers of the FIM engine tests: start FIM on real temp dirs with the
//! inotify backend, and wait (with deadlines) for what the sink received.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use secmon_fim::{BackendChoice, Fim, FimEvent, FimHandle, FimOptions, FimSection, WatchConfig};
use secmon_proto::EventClass;
use secmon_proto::payload::FileActivity;

/// Generous: the CI machine is slow and shared.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn section() -> FimSection {
    FimSection { backend: BackendChoice::Inotify, scan_interval: Duration::ZERO, ..FimSection::default() }
}

pub fn watch(path: &Path) -> WatchConfig {
    WatchConfig { path: path.to_path_buf(), description: "test watch".into(), ..WatchConfig::default() }
}

pub struct Running {
    pub fim: Option<FimHandle>,
    pub events: Events,
}

impl Running {
    pub fn handle(&self) -> &FimHandle {
        self.fim.as_ref().expect("running")
    }

    pub fn stop(&mut self) {
        if let Some(f) = self.fim.take() {
            f.stop();
        }
    }
}

/// Starts FIM and waits until its start-up walk is done.
pub fn start(watches: Vec<WatchConfig>, fim: FimSection, state_dir: &Path) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Box::new(move |e: FimEvent| {
        let _ = tx.send(e);
    });
    let opts = FimOptions { watches, fim, state_dir: state_dir.to_path_buf() };
    let handle = Fim::start(opts, sink).expect("fim starts");
    assert!(handle.wait_ready(DEADLINE), "fim did not finish its start-up walk in time");
    Running { fim: Some(handle), events: Events { rx, history: Vec::new(), taken: Vec::new() } }
}

pub struct Events {
    rx: Receiver<FimEvent>,
    /// Everything received, in order.
    pub history: Vec<FimEvent>,
    /// Events a wait already returned (each is returned once).
    taken: Vec<bool>,
}

impl Events {
    fn pull(&mut self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(e) => {
                self.history.push(e);
                self.taken.push(false);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(left.min(Duration::from_millis(10)));
                false
            }
        }
    }

    /// The first matching event no wait returned before; panics after the deadline,
    /// listing what did arrive.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&FimEvent) -> bool) -> FimEvent {
        let until = Instant::now() + DEADLINE;
        let mut i = 0;
        loop {
            while i < self.history.len() {
                if !self.taken[i] && pred(&self.history[i]) {
                    self.taken[i] = true;
                    return self.history[i].clone();
                }
                i += 1;
            }
            if Instant::now() >= until {
                panic!("no event for {what} within {DEADLINE:?}; got:\n{}", self.dump());
            }
            self.pull(until);
        }
    }

    /// Waits for a file event with this activity and path.
    pub fn wait_file(&mut self, activity: &str, path: &Path) -> FileActivity {
        let p = path.to_string_lossy().into_owned();
        let e = self.wait_for(&format!("{activity} {p}"), |e| {
            e.activity == activity && file(e).is_some_and(|f| f.path == p)
        });
        file(&e).expect("a file event")
    }

    /// Collects everything that arrives during `d`.
    pub fn settle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pull(until);
        }
    }

    /// File events received so far (after letting `d` pass).
    pub fn files_after(&mut self, d: Duration) -> Vec<(String, FileActivity)> {
        self.settle(d);
        self.history.iter().filter_map(|e| file(e).map(|f| (e.activity.clone(), f))).collect()
    }

    pub fn dump(&self) -> String {
        self.history
            .iter()
            .map(|e| match file(e) {
                Some(f) => format!("  {} {} ({}) src={}", e.activity, f.path, f.event_type, f.source),
                None => format!("  {:?}/{} {}", e.class, e.activity, e.payload),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn clear(&mut self) {
        self.history.clear();
        self.taken.clear();
    }
}

pub fn file(e: &FimEvent) -> Option<FileActivity> {
    if e.class == EventClass::File || e.class == EventClass::Device {
        serde_json::from_value(e.payload.clone()).ok()
    } else {
        None
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    secmon_fim::hash::hash_bytes(secmon_fim::HashAlgo::Sha256, data)
}

/// A temp dir whose canonical path is used (so reported paths compare equal).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().canonicalize().expect("canonical tempdir");
    (d, p)
}
