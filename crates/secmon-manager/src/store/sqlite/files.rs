//! File states: conditional upserts applied inside the events transaction, and the
//! per-agent queries.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use secmon_proto::AgentId;
use secmon_proto::payload::{FileKind, FileState};
use uuid::Uuid;

use super::codec::{Filter, from_json, from_nanos, int, json, nanos, parse_ts, ts, uint};
use crate::store::{FileAccess, FileChange, FileQuery, FileStateRecord, FileUpdate, Page, StoreError};

/// A [`FileUpdate`] encoded for its row, prepared before the write lock is taken.
pub struct EncodedFileUpdate {
    event_id: [u8; 16],
    agent_id: String,
    path: String,
    kind: String,
    activity: String,
    time_ns: i64,
    seq: i64,
    process: Option<String>,
    change: EncodedChange,
}

enum EncodedChange {
    Content {
        attrs: Option<Box<Attrs>>,
        deleted: bool,
        renamed_to: Option<String>,
        renamed_from: Option<String>,
    },
    Access,
}

struct Attrs {
    kind: String,
    hash: Option<String>,
    hash_algo: Option<String>,
    hash_skipped: Option<String>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: f64,
    ctime: f64,
    inode: i64,
    target: Option<String>,
}

/// `file`, `dir`, ... as the protocol spells it.
fn kind_str(k: FileKind) -> Result<String, StoreError> {
    match serde_json::to_value(k) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(StoreError::Database(format!("cannot encode file kind {k:?}: {other:?}"))),
    }
}

fn parse_kind(s: &str) -> Result<FileKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("bad file kind {s:?}: {e}")))
}

/// u64 values SQLite cannot hold as such (inodes can use all 64 bits) are stored as
/// their bit pattern, so they come back exactly.
fn bits(v: u64) -> i64 {
    v as i64
}

fn unbits(v: i64) -> u64 {
    v as u64
}

impl Attrs {
    fn encode(s: &FileState) -> Result<Attrs, StoreError> {
        Ok(Attrs {
            kind: kind_str(s.kind)?,
            hash: s.hash.clone(),
            hash_algo: s.hash_algo.clone(),
            hash_skipped: s.hash_skipped.clone(),
            size: bits(s.size),
            mode: i64::from(s.mode),
            uid: i64::from(s.uid),
            gid: i64::from(s.gid),
            mtime: s.mtime,
            ctime: s.ctime,
            inode: bits(s.inode),
            target: s.target.clone(),
        })
    }
}

impl EncodedFileUpdate {
    pub fn encode(u: &FileUpdate) -> Result<EncodedFileUpdate, StoreError> {
        let change = match &u.change {
            FileChange::Content { attrs, deleted, renamed_to, renamed_from } => EncodedChange::Content {
                attrs: attrs.as_ref().map(Attrs::encode).transpose()?.map(Box::new),
                deleted: *deleted,
                renamed_to: renamed_to.clone(),
                renamed_from: renamed_from.clone(),
            },
            FileChange::Access => EncodedChange::Access,
        };
        Ok(EncodedFileUpdate {
            event_id: *u.event_id.as_bytes(),
            agent_id: u.agent_id.as_str().to_owned(),
            path: u.path.clone(),
            kind: kind_str(u.kind)?,
            activity: u.activity.clone(),
            time_ns: nanos(&u.time),
            seq: int(u.seq),
            process: u.process.as_ref().map(json).transpose()?,
            change,
        })
    }
}

/// The condition under which a content change replaces what a row holds: it is the
/// first content change, or a newer one (event time, then sequence number). A macro
/// so the statements stay `&'static str` (no formatting per event).
macro_rules! newer_change {
    () => {
        " WHERE file_states.change_ns IS NULL
            OR (excluded.change_ns, excluded.change_seq) > (file_states.change_ns, file_states.change_seq)"
    };
}

/// A content change with attributes: all columns of the change.
const UPSERT_CONTENT: &str = concat!(
    "INSERT INTO file_states (agent_id, path, kind, hash, hash_algo, hash_skipped, size, mode,
         uid, gid, mtime, ctime, inode, target, deleted, renamed_to, renamed_from,
         last_activity, change_ns, change_seq, event_id, process, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21, ?22, ?23)
     ON CONFLICT (agent_id, path) DO UPDATE SET kind = excluded.kind,
         hash = excluded.hash, hash_algo = excluded.hash_algo,
         hash_skipped = excluded.hash_skipped, size = excluded.size, mode = excluded.mode,
         uid = excluded.uid, gid = excluded.gid, mtime = excluded.mtime,
         ctime = excluded.ctime, inode = excluded.inode, target = excluded.target,
         deleted = excluded.deleted, renamed_to = excluded.renamed_to,
         renamed_from = excluded.renamed_from, last_activity = excluded.last_activity,
         change_ns = excluded.change_ns, change_seq = excluded.change_seq,
         event_id = excluded.event_id, process = excluded.process,
         updated_at = excluded.updated_at",
    newer_change!()
);

/// A content change without attributes: the recorded ones stay (a new row has none).
const UPSERT_KEEP_ATTRS: &str = concat!(
    "INSERT INTO file_states (agent_id, path, kind, deleted, renamed_to, renamed_from,
         last_activity, change_ns, change_seq, event_id, process, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
     ON CONFLICT (agent_id, path) DO UPDATE SET deleted = excluded.deleted,
         renamed_to = excluded.renamed_to, renamed_from = excluded.renamed_from,
         last_activity = excluded.last_activity, change_ns = excluded.change_ns,
         change_seq = excluded.change_seq, event_id = excluded.event_id,
         process = excluded.process, updated_at = excluded.updated_at",
    newer_change!()
);

/// An access: only the access columns, when newer than the recorded access.
const UPSERT_ACCESS: &str = "INSERT INTO file_states (agent_id, path, kind, deleted, access_ns, access_seq,
         access_event_id, access_process, updated_at)
     VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (agent_id, path) DO UPDATE SET access_ns = excluded.access_ns,
         access_seq = excluded.access_seq, access_event_id = excluded.access_event_id,
         access_process = excluded.access_process, updated_at = excluded.updated_at
     WHERE file_states.access_ns IS NULL
         OR (excluded.access_ns, excluded.access_seq) > (file_states.access_ns, file_states.access_seq)";

/// Applies the updates whose event this transaction inserted (`inserted` holds
/// their ids); the others were applied when their event was first stored.
pub fn apply(
    tx: &Transaction<'_>,
    updates: &[EncodedFileUpdate],
    inserted: &HashSet<[u8; 16]>,
    now: &DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = ts(now);
    for u in updates.iter().filter(|u| inserted.contains(&u.event_id)) {
        match &u.change {
            EncodedChange::Content { attrs: Some(a), deleted, renamed_to, renamed_from } => {
                tx.prepare_cached(UPSERT_CONTENT)?.execute(params![
                    u.agent_id,
                    u.path,
                    a.kind,
                    a.hash,
                    a.hash_algo,
                    a.hash_skipped,
                    a.size,
                    a.mode,
                    a.uid,
                    a.gid,
                    a.mtime,
                    a.ctime,
                    a.inode,
                    a.target,
                    *deleted,
                    renamed_to,
                    renamed_from,
                    u.activity,
                    u.time_ns,
                    u.seq,
                    &u.event_id[..],
                    u.process,
                    now,
                ])?;
            }
            EncodedChange::Content { attrs: None, deleted, renamed_to, renamed_from } => {
                tx.prepare_cached(UPSERT_KEEP_ATTRS)?.execute(params![
                    u.agent_id,
                    u.path,
                    u.kind,
                    *deleted,
                    renamed_to,
                    renamed_from,
                    u.activity,
                    u.time_ns,
                    u.seq,
                    &u.event_id[..],
                    u.process,
                    now,
                ])?;
            }
            EncodedChange::Access => {
                tx.prepare_cached(UPSERT_ACCESS)?.execute(params![
                    u.agent_id,
                    u.path,
                    u.kind,
                    u.time_ns,
                    u.seq,
                    &u.event_id[..],
                    u.process,
                    now,
                ])?;
            }
        }
    }
    Ok(())
}

const SELECT: &str = "SELECT agent_id, path, kind, hash, hash_algo, hash_skipped, size, mode, uid, gid,
        mtime, ctime, inode, target, deleted, renamed_to, renamed_from, last_activity, change_ns,
        change_seq, event_id, process, access_ns, access_seq, access_event_id, access_process, updated_at
    FROM file_states";

fn uuid(bytes: Option<Vec<u8>>) -> Result<Option<Uuid>, StoreError> {
    bytes
        .map(|b| Uuid::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("bad event id: {e}"))))
        .transpose()
}

fn small(v: Option<i64>, what: &str) -> Result<Option<u32>, StoreError> {
    v.map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("bad {what} {n}")))).transpose()
}

fn from_row(r: &Row<'_>) -> Result<FileStateRecord, StoreError> {
    let agent: String = r.get(0)?;
    let mode = small(r.get(7)?, "mode")?;
    let process: Option<String> = r.get(21)?;
    let access_ns: Option<i64> = r.get(22)?;
    let last_access = match (access_ns, uuid(r.get(24)?)?) {
        (Some(ns), Some(event_id)) => {
            let process: Option<String> = r.get(25)?;
            Some(FileAccess {
                time: from_nanos(ns),
                event_id,
                seq: uint(r.get::<_, Option<i64>>(23)?.unwrap_or(0)),
                process: process.as_deref().map(|p| from_json(p, "access process")).transpose()?,
            })
        }
        _ => None,
    };
    Ok(FileStateRecord {
        agent_id: AgentId::new(agent).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        path: r.get(1)?,
        kind: parse_kind(&r.get::<_, String>(2)?)?,
        hash: r.get(3)?,
        hash_algo: r.get(4)?,
        hash_skipped: r.get(5)?,
        size: r.get::<_, Option<i64>>(6)?.map(unbits),
        mode,
        mode_octal: mode.map(|m| format!("{m:o}")),
        uid: small(r.get(8)?, "uid")?,
        gid: small(r.get(9)?, "gid")?,
        mtime: r.get(10)?,
        ctime: r.get(11)?,
        inode: r.get::<_, Option<i64>>(12)?.map(unbits),
        target: r.get(13)?,
        deleted: r.get::<_, i64>(14)? != 0,
        renamed_to: r.get(15)?,
        renamed_from: r.get(16)?,
        last_activity: r.get(17)?,
        last_change: r.get::<_, Option<i64>>(18)?.map(from_nanos),
        last_seq: r.get::<_, Option<i64>>(19)?.map(uint),
        last_event_id: uuid(r.get(20)?)?,
        who: process.as_deref().map(|p| from_json(p, "process")).transpose()?,
        last_access,
        updated_at: parse_ts(&r.get::<_, String>(26)?)?,
    })
}

pub fn get(c: &Connection, agent: &AgentId, path: &str) -> Result<Option<FileStateRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("{SELECT} WHERE agent_id = ?1 AND path = ?2"))?;
    st.query_row(params![agent.as_str(), path], |r| Ok(from_row(r))).optional()?.transpose()
}

/// The smallest string greater than every string that starts with `prefix`, for a
/// range scan on the primary key (`path >= prefix AND path < upper`): the last
/// character that has a successor is replaced by it. SQLite compares text bytewise,
/// and UTF-8 byte order is code point order. `None` when no such string exists.
pub fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub fn list(c: &Connection, q: &FileQuery) -> Result<Page<FileStateRecord>, StoreError> {
    let mut f = Filter::default();
    f.and("agent_id = ?", [Value::Text(q.agent.as_str().into())]);
    if let Some(p) = q.prefix.as_deref().filter(|p| !p.is_empty()) {
        f.and("path >= ?", [Value::Text(p.into())]);
        if let Some(upper) = prefix_upper(p) {
            f.and("path < ?", [Value::Text(upper)]);
        }
    }
    if !q.include_deleted {
        f.and("deleted = 0", []);
    }
    let where_sql = f.sql();
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM file_states{where_sql}"),
        rusqlite::params_from_iter(f.params.iter()),
        |r| r.get(0),
    )?;
    let sql = format!("{SELECT}{where_sql} ORDER BY path LIMIT ? OFFSET ?");
    let items = f.page(c, &sql, q.limit, q.offset, from_row)?;
    Ok(Page { items, total: uint(total), offset: q.offset, limit: q.limit })
}

/// True when any file state of the agent is stored (an agent may send events
/// before it registers).
pub fn agent_has_files(c: &Connection, agent: &AgentId) -> Result<bool, StoreError> {
    Ok(c.prepare_cached("SELECT 1 FROM file_states WHERE agent_id = ?1 LIMIT 1")?.exists([agent.as_str()])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_bounds_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_upper("/etc/").as_deref(), Some("/etc0"));
        assert_eq!(prefix_upper("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_upper("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper("\u{10FFFF}"), None);
        assert_eq!(prefix_upper(""), None);
        let upper = prefix_upper("/etc/é").unwrap();
        for inside in ["/etc/é", "/etc/éa", "/etc/é\u{10FFFF}\u{10FFFF}"] {
            assert!(inside >= "/etc/é" && inside < upper.as_str(), "{inside}");
        }
        for outside in ["/etc/f", "/etc/ê", "/etc0", "/etc/e"] {
            assert!(!(outside >= "/etc/é" && outside < upper.as_str()), "{outside}");
        }
    }
}
