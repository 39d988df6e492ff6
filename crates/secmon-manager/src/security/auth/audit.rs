//! The audit log: one record per state-changing API request (every method but GET
//! and HEAD), per denied request (401, 403, 429) and per failed login, with who,
//! role, when, from where, what (method, path, action, target), the HTTP status,
//! the result and a detail. It keeps everything (an audit log is not trimmed
//! behind the admin's back) and is indexed by time; `GET /api/audit` pages it.
//!
//! Handlers add what only they know (the command sent, why an enrollment token was
//! refused, the enrolled agent) through the [`AuditNote`] in the request's
//! extensions; code outside a request calls [`record`].
//! Invariant: no password or token is ever put into a record.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ToSql, params_from_iter};
use serde::Serialize;
use utoipa::ToSchema;

use super::from_ms;
use crate::security::{SecurityDb, SecurityDbError};

/// Longest text kept in one field (longer values are cut, on a char boundary).
const MAX_FIELD: usize = 512;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    remote_addr TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    status INTEGER NOT NULL,
    result TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE INDEX IF NOT EXISTS audit_actor_time ON audit(actor, time);
CREATE INDEX IF NOT EXISTS audit_action_time ON audit(action, time);";

/// One audit record as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub time: DateTime<Utc>,
    /// User name, `token:<name>`, `local` (local mode), `anonymous`, or the user
    /// name a failed login tried.
    pub actor: String,
    /// The actor's role, when authenticated.
    pub role: Option<String>,
    /// Client IP:port as the manager saw the connection.
    pub remote_addr: Option<String>,
    pub method: String,
    pub path: String,
    /// `login`, `logout`, `user.create`, `agent.command`, `alert.update`, ...
    pub action: String,
    /// What the action was on (agent id, alert id, user name, ...).
    pub target: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// `ok`, `denied` or `error`.
    pub result: String,
    pub detail: Option<String>,
}

/// A record to write; `time` defaults to now.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub time: Option<DateTime<Utc>>,
    pub actor: String,
    pub role: Option<String>,
    pub remote_addr: Option<String>,
    pub method: String,
    pub path: String,
    pub action: String,
    pub target: Option<String>,
    pub status: u16,
    pub result: String,
    pub detail: Option<String>,
}

/// `ok` below 400, `denied` for 401, 403 and 429, `error` otherwise.
pub fn result_for(status: u16) -> &'static str {
    match status {
        401 | 403 | 429 => "denied",
        s if s < 400 => "ok",
        _ => "error",
    }
}

/// What a handler adds to the record of its request. The auth middleware puts one
/// into every request's extensions; handlers take `Option<Extension<AuditNote>>`
/// and call its setters. Unset fields keep the middleware's values.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<NoteFields>>);

#[derive(Debug, Clone, Default)]
pub(crate) struct NoteFields {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub detail: Option<String>,
}

impl AuditNote {
    fn with(&self, f: impl FnOnce(&mut NoteFields)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
    /// Who acted, when the request carries no principal (a failed login's user
    /// name, an enrolling agent).
    pub fn set_actor(&self, actor: impl Into<String>) {
        let a = actor.into();
        self.with(|n| n.actor = Some(a));
    }
    /// Overrides the action derived from the route.
    pub fn set_action(&self, action: impl Into<String>) {
        let a = action.into();
        self.with(|n| n.action = Some(a));
    }
    pub fn set_target(&self, target: impl Into<String>) {
        let t = target.into();
        self.with(|n| n.target = Some(t));
    }
    /// Why, or what exactly (never a secret).
    pub fn set_detail(&self, detail: impl Into<String>) {
        let d = detail.into();
        self.with(|n| n.detail = Some(d));
    }
    pub(crate) fn take(&self) -> NoteFields {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub(crate) fn ensure_schema(db: &SecurityDb) -> Result<(), SecurityDbError> {
    db.ensure_schema(SCHEMA)
}

/// Cuts `s` to [`MAX_FIELD`] bytes and replaces control characters, so a record
/// cannot forge lines where it is displayed.
fn clean(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

fn insert(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    let opt = |v: &Option<String>| v.as_deref().map(clean);
    conn.execute(
        "INSERT INTO audit (time, actor, role, remote_addr, method, path, action, target, status, result, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        rusqlite::params![
            e.time.unwrap_or_else(Utc::now).timestamp_millis(),
            clean(&e.actor),
            opt(&e.role),
            opt(&e.remote_addr),
            clean(&e.method),
            clean(&e.path),
            clean(&e.action),
            opt(&e.target),
            e.status,
            clean(&e.result),
            opt(&e.detail),
        ],
    )?;
    Ok(())
}

/// Writes one audit record (on a blocking thread). For events outside an API
/// request; inside one, use the request's [`AuditNote`] instead (the middleware
/// already writes one record per request).
pub async fn record(db: &SecurityDb, entry: AuditEntry) -> Result<(), SecurityDbError> {
    db.call(move |c| insert(c, &entry)).await
}

/// [`record`] on the calling thread (CLI subcommands, tests).
pub fn record_blocking(db: &SecurityDb, entry: &AuditEntry) -> Result<(), SecurityDbError> {
    ensure_schema(db)?;
    db.with_conn(|c| insert(c, entry))
}

/// Filters of `GET /api/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub offset: u64,
    pub limit: u64,
}

/// One page of records, newest first, and the number matching.
pub(crate) fn query(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<(Vec<AuditRecord>, u64)> {
    let mut wh: Vec<&str> = Vec::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(a) = &q.actor {
        wh.push("actor = ?");
        args.push(Box::new(a.clone()));
    }
    if let Some(a) = &q.action {
        wh.push("action = ?");
        args.push(Box::new(a.clone()));
    }
    if let Some(t) = q.since {
        wh.push("time >= ?");
        args.push(Box::new(t.timestamp_millis()));
    }
    if let Some(t) = q.until {
        wh.push("time < ?");
        args.push(Box::new(t.timestamp_millis()));
    }
    let filter = if wh.is_empty() { String::new() } else { format!(" WHERE {}", wh.join(" AND ")) };
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM audit{filter}"),
        params_from_iter(args.iter().map(|b| b.as_ref())),
        |r| r.get(0),
    )?;
    let sql = format!(
        "SELECT id, time, actor, role, remote_addr, method, path, action, target, status, result, detail
         FROM audit{filter} ORDER BY time DESC, id DESC LIMIT {} OFFSET {}",
        q.limit, q.offset
    );
    let mut st = conn.prepare(&sql)?;
    let items = st
        .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                time: from_ms(r.get(1)?),
                actor: r.get(2)?,
                role: r.get(3)?,
                remote_addr: r.get(4)?,
                method: r.get(5)?,
                path: r.get(6)?,
                action: r.get(7)?,
                target: r.get(8)?,
                status: r.get(9)?,
                result: r.get(10)?,
                detail: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_cleaned_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let db = SecurityDb::open(dir.path()).unwrap();
        for (i, actor) in ["ann", "bob", "ann"].iter().enumerate() {
            let e = AuditEntry {
                actor: actor.to_string(),
                method: "POST".into(),
                path: format!("/api/x/{i}\nforged"),
                action: "x.create".into(),
                status: 201,
                result: result_for(201).into(),
                ..Default::default()
            };
            record_blocking(&db, &e).unwrap();
        }
        let q = AuditQuery { actor: Some("ann".into()), limit: 1, ..Default::default() };
        let (items, total) = db.with_conn(|c| query(c, &q)).unwrap();
        assert_eq!(total, 2);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].path, "/api/x/2\u{fffd}forged");
        assert_eq!(items[0].result, "ok");
        assert_eq!(result_for(403), "denied");
        assert_eq!(result_for(500), "error");
    }
}
