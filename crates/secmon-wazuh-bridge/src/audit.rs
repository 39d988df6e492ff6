//! The append-only audit log: one JSON line per published message (time, event or
//! batch id, subject, sha256 of the exact bytes sent), so an auditor can prove what
//! the bridge published and match it against what subscribers received.
//!
//! Invariant: the file is opened with O_APPEND and never truncated or rewritten;
//! created 0600 (it names every agent). A line is written after NATS acknowledged
//! (JetStream) or the flush succeeded (core NATS).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot write audit log {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    id: &'a str,
    subject: &'a str,
    sha256: String,
    bytes: usize,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Open { path: path.into(), source })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open { path: path.into(), source })?;
        Ok(Self { path: path.into(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line for a message that was published.
    pub fn record(&self, id: &str, subject: &str, payload: &[u8]) -> Result<(), AuditError> {
        let line = Line {
            time: crate::model::now_rfc3339(),
            id,
            subject,
            sha256: hex::encode(Sha256::digest(payload)),
            bytes: payload.len(),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write call per line: O_APPEND keeps concurrent lines whole.
        f.write_all(text.as_bytes()).map_err(|source| AuditError::Write { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_with_digest_and_keeps_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit/audit.jsonl");
        AuditLog::open(&p).unwrap().record("evt_001_1_registered", "wazuh.agent.001.status", b"abc").unwrap();
        let log = AuditLog::open(&p).unwrap();
        log.record("b2", "wazuh.security.agent_events", b"").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "evt_001_1_registered");
        assert_eq!(
            lines[0]["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256(abc)"
        );
        assert_eq!(lines[1]["subject"], "wazuh.security.agent_events");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
