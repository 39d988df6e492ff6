//! File integrity monitoring as an agent sensor: starts `secmon_fim` on its own
//! threads when there is something to watch, turns its events into spool drafts
//! (waiting for room, never dropping), and stops it before the spool closes.

use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use secmon_fim::{Fim, FimEvent, FimHandle, FimOptions, Sink};
use secmon_proto::payload::AgentLifecycle;
use secmon_proto::{EventClass, Severity};
use serde_json::{Value, json};

use crate::config::AgentConfig;
use crate::pipeline::Emitter;
use crate::spool::EventDraft;

/// Most directory entries looked at when checking for camera devices, so a broad
/// pattern cannot make the agent's start walk a whole tree.
const CAMERA_PROBE_MAX_ENTRIES: usize = 10_000;
/// Deepest a `**` camera pattern is followed.
const CAMERA_PROBE_MAX_DEPTH: usize = 8;

pub(crate) enum FimState {
    /// Nothing to watch (or not started yet).
    Off,
    Running(FimHandle),
    Failed(String),
    /// Stopped at shutdown.
    Stopped,
}

/// The FIM engine as the agent holds it.
pub(crate) struct FimSlot(Mutex<FimState>);

impl FimSlot {
    pub(crate) fn new() -> Self {
        FimSlot(Mutex::new(FimState::Off))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FimState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn running(&self) -> bool {
        matches!(*self.lock(), FimState::Running(_))
    }

    /// The `fim` part of `status`: the engine's figures, or why it is not running.
    pub(crate) fn status(&self) -> Value {
        match &*self.lock() {
            FimState::Off => Value::Null,
            FimState::Running(h) => serde_json::to_value(h.status()).unwrap_or(Value::Null),
            FimState::Failed(e) => json!({"state": "failed", "error": e}),
            FimState::Stopped => json!({"state": "stopped"}),
        }
    }

    /// Starts FIM when at least one watch is enabled or a camera pattern matches a
    /// device. A failure is logged, reported as an `agent`/`fim_error` event, and the
    /// agent goes on without FIM.
    pub(crate) async fn start(&self, config: &AgentConfig, emitter: &Emitter, config_digest: String) {
        let enabled = config.watches.iter().filter(|w| w.enabled).count();
        let cameras = camera_present(&config.fim.camera_paths);
        if enabled == 0 && !cameras {
            tracing::info!("file integrity monitoring off: no enabled [[watches]] and no camera device");
            return;
        }
        let opts = FimOptions {
            watches: config.watches.clone(),
            fim: config.fim.clone(),
            state_dir: config.agent.state_dir.clone(),
        };
        let sink_emitter = emitter.clone();
        let sink: Sink = Box::new(move |ev: FimEvent| {
            let draft = EventDraft {
                time: ev.time,
                class: ev.class,
                activity: ev.activity,
                severity: ev.severity,
                payload: ev.payload,
            };
            if !sink_emitter.emit_blocking(draft) {
                tracing::warn!("file integrity event after the agent stopped; not recorded");
            }
        });
        let error = match tokio::task::spawn_blocking(move || Fim::start(opts, sink)).await {
            Ok(Ok(handle)) => {
                let st = handle.status();
                tracing::info!(backend = %st.backend, watches = enabled, cameras, "file integrity monitoring started");
                *self.lock() = FimState::Running(handle);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) if e.is_panic() => format!("the engine panicked at start: {}", panic_message(e)),
            Err(e) => format!("the start task failed: {e}"),
        };
        tracing::error!(error = %error, "FILE INTEGRITY MONITORING NOT RUNNING; the agent goes on without it");
        let payload = AgentLifecycle {
            agent_version: crate::VERSION.into(),
            config_digest,
            detail: Some(error.clone()),
        };
        let draft = EventDraft::now(
            EventClass::Agent,
            "fim_error",
            Severity::High,
            serde_json::to_value(payload).expect("payload serializes"),
        );
        emitter.emit_waiting(draft, std::time::Duration::from_secs(1)).await;
        *self.lock() = FimState::Failed(error);
    }

    /// Stops the engine (it writes its baseline) on a blocking thread.
    pub(crate) async fn stop(&self) {
        let state = std::mem::replace(&mut *self.lock(), FimState::Stopped);
        match state {
            FimState::Running(handle) => {
                if let Err(e) = tokio::task::spawn_blocking(move || handle.stop()).await {
                    tracing::error!(error = %e, "stopping file integrity monitoring failed");
                }
                tracing::info!("file integrity monitoring stopped");
            }
            other => *self.lock() = other,
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// True when a path matching one of the camera patterns exists.
pub(crate) fn camera_present(patterns: &[String]) -> bool {
    patterns.iter().any(|p| !matching_paths(p, 1).is_empty())
}

/// Up to `limit` existing paths matching the glob `pattern` (absolute, validated).
fn matching_paths(pattern: &str, limit: usize) -> Vec<PathBuf> {
    let Ok(glob) = globset::GlobBuilder::new(pattern).literal_separator(true).build() else {
        return Vec::new();
    };
    let matcher = glob.compile_matcher();
    // Walk from the longest directory prefix without wildcards.
    let mut base = PathBuf::from("/");
    let mut depth = 0;
    let mut in_literal_prefix = true;
    for c in Path::new(pattern).components() {
        let Component::Normal(part) = c else { continue };
        let part = part.to_string_lossy();
        if in_literal_prefix && !part.contains(['*', '?', '[', '{', '\\']) {
            base.push(part.as_ref());
        } else {
            in_literal_prefix = false;
            depth = if part.contains("**") { CAMERA_PROBE_MAX_DEPTH } else { depth + 1 };
        }
    }
    let mut found = Vec::new();
    if depth == 0 {
        if base.exists() {
            found.push(base);
        }
        return found;
    }
    let mut budget = CAMERA_PROBE_MAX_ENTRIES;
    let mut stack = vec![(base, 0usize)];
    while let Some((dir, d)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if budget == 0 || found.len() >= limit {
                return found;
            }
            budget -= 1;
            let path = entry.path();
            if matcher.is_match(&path) {
                found.push(path.clone());
            }
            if d + 1 < depth && entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((path, d + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_patterns_match_existing_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("video0"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("v4l/by-id")).unwrap();
        std::fs::write(dir.path().join("v4l/by-id/usb-cam"), "").unwrap();
        assert!(camera_present(&[format!("{root}/video*")]));
        assert!(!camera_present(&[format!("{root}/media*")]));
        assert!(camera_present(&[format!("{root}/v4l/*/usb-*")]));
        assert!(camera_present(&[format!("{root}/**/usb-cam")]));
        assert!(!camera_present(&[format!("{root}/*/usb-cam")]), "* does not cross a /");
        assert!(camera_present(&[format!("{root}/video0")]), "a literal path that exists");
        assert!(!camera_present(&[format!("{root}/video1")]));
        assert!(!camera_present(&[]));
    }
}
