//! The agent's identity, created once in the state dir and kept for its whole life,
//! and the lock that stops two agents from sharing one state dir.
//!
//! An enrolled agent's identity is written by enrollment with the id the manager
//! assigned (its NATS permissions name that id); it is never replaced by a random one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use secmon_proto::AgentId;
use serde::{Deserialize, Serialize};

/// `identity.json` in the state dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: AgentId,
    pub created_at: DateTime<Utc>,
    /// Set by enrollment: the id above is the manager's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<EnrolledWith>,
}

/// Where and with which key this agent enrolled (public values only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolledWith {
    /// The manager's API URL.
    pub manager: String,
    /// The agent's NKey public key (`U...`).
    pub public_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create state dir {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A damaged identity is an error, not a reason to mint a new one: a new id would
    /// silently make this host a different agent in the fleet.
    #[error("{path} is damaged ({reason}); fix it, or delete it to enroll as a new agent")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("another secmon-agent is running with state dir {0}; stop it first")]
    Locked(PathBuf),
    /// The creds name an agent id that only `identity.json` recorded.
    #[error(
        "{path} is missing but this agent is enrolled ({creds} exists); restore it, or enroll again \
         with `secmon-agent enroll --force`"
    )]
    EnrolledWithoutIdentity { path: PathBuf, creds: PathBuf },
}

/// The identity file in the state dir.
pub const IDENTITY_FILE: &str = "identity.json";
const LOCK_FILE: &str = "lock";

/// Creates `dir` (mode 0700) when missing. An existing dir keeps its mode, but a
/// warning says when others can read it.
pub fn ensure_state_dir(dir: &Path) -> Result<(), IdentityError> {
    let err = |source| IdentityError::StateDir { path: dir.to_owned(), source };
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mode = fs::metadata(dir).map_err(err)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "state dir is accessible to other users");
    }
    Ok(())
}

impl Identity {
    /// Loads `identity.json` from `state_dir`, creating it (and the dir) on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Identity, IdentityError> {
        ensure_state_dir(state_dir)?;
        if let Some(id) = Identity::load(state_dir)? {
            return Ok(id);
        }
        let creds = crate::enroll::creds_path(state_dir);
        if creds.exists() {
            return Err(IdentityError::EnrolledWithoutIdentity {
                path: state_dir.join(IDENTITY_FILE),
                creds,
            });
        }
        let id = Identity { agent_id: AgentId::generate(), created_at: Utc::now(), enrolled: None };
        id.store(state_dir)?;
        tracing::info!(agent_id = %id.agent_id, "created a new agent identity");
        Ok(id)
    }

    /// Reads `identity.json` from `state_dir`; None when there is none.
    pub fn load(state_dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let path = state_dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IdentityError::Damaged { path: path.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    /// Writes `identity.json` into `state_dir` (atomically, mode 0600).
    pub fn store(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let path = state_dir.join(IDENTITY_FILE);
        write_atomically(&path, &serde_json::to_vec_pretty(self).expect("identity serializes"))
            .map_err(|source| IdentityError::Write { path, source })
    }
}

/// Writes `bytes` to a temp file, syncs it and renames it over `path` (mode 0600), so
/// a crash leaves either the old or the new content, never a mix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// An exclusive `flock` on `<state_dir>/lock`, held while the agent runs.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, IdentityError> {
        let path = state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| IdentityError::Write { path: path.clone(), source })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| IdentityError::Locked(state_dir.to_owned()))?;
        Ok(StateLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let a = Identity::load_or_create(&dir).unwrap();
        let b = Identity::load_or_create(&dir).unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(dir.join(IDENTITY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn damaged_identity_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(IDENTITY_FILE), b"{not json").unwrap();
        let e = Identity::load_or_create(tmp.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Damaged { .. }), "{e}");
    }

    #[test]
    fn an_enrolled_identity_is_kept_and_never_replaced_by_a_random_one() {
        let tmp = tempfile::tempdir().unwrap();
        let enrolled = Identity {
            agent_id: AgentId::new("ag-from-manager").unwrap(),
            created_at: Utc::now(),
            enrolled: Some(EnrolledWith { manager: "https://m:8443".into(), public_key: "UABC".into() }),
        };
        enrolled.store(tmp.path()).unwrap();
        assert_eq!(Identity::load_or_create(tmp.path()).unwrap(), enrolled);
        // Creds without the identity: refuse rather than mint an id the creds do not allow.
        fs::remove_file(tmp.path().join(IDENTITY_FILE)).unwrap();
        fs::write(tmp.path().join(crate::enroll::CREDS_FILE), b"creds").unwrap();
        let e = Identity::load_or_create(tmp.path()).unwrap_err();
        assert!(matches!(e, IdentityError::EnrolledWithoutIdentity { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        // An identity from before enrollment existed still loads (no `enrolled`).
        fs::write(
            tmp.path().join(IDENTITY_FILE),
            br#"{"agent_id":"old","created_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(Identity::load_or_create(tmp.path()).unwrap().enrolled, None);
    }

    #[test]
    fn second_lock_on_the_same_dir_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(tmp.path()).unwrap();
        assert!(matches!(StateLock::acquire(tmp.path()), Err(IdentityError::Locked(_))));
        drop(first);
        StateLock::acquire(tmp.path()).unwrap();
    }
}
