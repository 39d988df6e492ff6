//! API authentication and authorisation: users with argon2id passwords
//! ([`password`], [`users`]), bearer tokens — login sessions and API tokens, stored
//! as SHA-256 digests ([`tokens`]) —, the per-request check that turns a bearer
//! into a [`Principal`] and applies the role policy ([`middleware`]), login
//! lockout ([`limiter`], kept across restarts by [`locks`]), the audit log
//! ([`audit`]) and the routes ([`routes`]).
//!
//! Local mode (`[security] enabled = false`): no authentication, every request is
//! [`Principal::local`], and still audited.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::config::{RoleCommands, SecurityConfig};
use crate::security::{Principal, Role, SecurityDb, SecurityDbError};

pub mod audit;
pub mod limiter;
pub mod locks;
pub mod middleware;
pub mod password;
pub mod routes;
pub mod tokens;
pub mod users;

pub use audit::{AuditEntry, AuditNote, AuditRecord, record};
pub use middleware::ClientAddr;

/// Password checks run at once at most (argon2 costs ~19 MiB and real CPU each),
/// so a login flood cannot exhaust the manager.
const MAX_CONCURRENT_VERIFICATIONS: usize = 4;

/// Authentication state shared by the middleware and the handlers.
#[derive(Debug)]
pub struct AuthState {
    pub db: SecurityDb,
    /// False in local mode.
    pub enabled: bool,
    pub session_ttl: Duration,
    pub limiter: limiter::LoginLimiter,
    pub commands: RoleCommands,
    pub(crate) verify_slots: Semaphore,
}

impl AuthState {
    /// Opens `<data_dir>/security.db` and creates the auth tables.
    pub fn open(data_dir: &Path, cfg: &SecurityConfig) -> Result<Self, SecurityDbError> {
        Self::new(SecurityDb::open(data_dir)?, cfg)
    }

    pub fn new(db: SecurityDb, cfg: &SecurityConfig) -> Result<Self, SecurityDbError> {
        // Also creates the users table, which sessions reference.
        tokens::ensure_schema(&db)?;
        audit::ensure_schema(&db)?;
        locks::ensure_schema(&db)?;
        let limiter = limiter::LoginLimiter::new(cfg.login_max_failures, cfg.lockout);
        let kept = db.with_conn(|c| locks::load(c, Utc::now()))?;
        if !kept.is_empty() {
            tracing::info!(locks = kept.len(), "login lockouts restored");
        }
        for (key, left) in &kept {
            limiter.restore(key, *left);
        }
        Ok(Self {
            db,
            enabled: cfg.enabled,
            session_ttl: cfg.session_ttl,
            limiter,
            commands: cfg.commands.clone(),
            verify_slots: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        })
    }

    /// Whether `p` may send agent command `command`: admins any, analysts and
    /// readonly users only those in their `[security.commands]` list.
    pub fn may_run_command(&self, p: &Principal, command: &str) -> bool {
        let allowed = match p.role {
            Role::Admin => return true,
            Role::Analyst => &self.commands.analyst,
            Role::Readonly => &self.commands.readonly,
        };
        allowed.iter().any(|c| c == command)
    }
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A role column; an unknown value is a conversion error (never a silent default).
pub(crate) fn role_from_sql(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Role> {
    let s: String = r.get(idx)?;
    s.parse::<Role>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into()))
}
