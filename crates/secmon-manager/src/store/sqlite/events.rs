//! Events and per-agent sequence state: batch insert and the event list query.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};
use std::collections::HashSet;

use chrono::Utc;
use secmon_proto::AgentId;
use uuid::Uuid;

use super::codec::{Filter, from_json, from_nanos, int, json, nanos, uint};
use super::files::{self, EncodedFileUpdate};
use crate::store::{EventQuery, InsertOutcome, Page, SeqState, StoreError, StoredEvent};

/// An event encoded for its row, prepared before the write lock is taken.
pub struct EncodedEvent {
    id: [u8; 16],
    agent_id: String,
    seq: i64,
    class: &'static str,
    severity: i64,
    time_ns: i64,
    received_ns: i64,
    body: String,
}

impl EncodedEvent {
    pub fn encode(e: &StoredEvent) -> Result<EncodedEvent, StoreError> {
        let env = &e.envelope;
        Ok(EncodedEvent {
            id: *env.id.as_bytes(),
            agent_id: env.agent_id.as_str().to_owned(),
            seq: int(env.seq),
            class: env.class.as_str(),
            severity: i64::from(env.severity.rank()),
            time_ns: nanos(&env.time),
            received_ns: nanos(&e.received),
            body: json(env)?,
        })
    }
}

/// Inserts the rows (ignoring ids already stored), the sequence states and the file
/// state updates of the inserted rows in one transaction.
pub fn insert(
    c: &mut Connection,
    rows: &[EncodedEvent],
    seq: &[(AgentId, SeqState)],
    files: &[EncodedFileUpdate],
) -> Result<InsertOutcome, StoreError> {
    let tx = c.transaction()?;
    let mut inserted = 0u64;
    let mut stored = Vec::with_capacity(rows.len());
    // Ids inserted now, when file updates need them: a redelivered event's update
    // was applied with the event.
    let mut fresh: HashSet<[u8; 16]> = HashSet::new();
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (id, agent_id, seq, class, severity, time_ns, received_ns, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            let n = ins.execute(params![
                &r.id[..],
                r.agent_id,
                r.seq,
                r.class,
                r.severity,
                r.time_ns,
                r.received_ns,
                r.body
            ])? as u64;
            inserted += n;
            stored.push(n > 0);
            if n > 0 && !files.is_empty() {
                fresh.insert(r.id);
            }
        }
        let mut up = tx.prepare_cached(
            "INSERT INTO seq_state (agent_id, last_seq, missing, gap_events, late_events, replays, given_up_ranges)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (agent_id) DO UPDATE SET last_seq = excluded.last_seq, missing = excluded.missing,
                 gap_events = excluded.gap_events, late_events = excluded.late_events,
                 replays = excluded.replays, given_up_ranges = excluded.given_up_ranges",
        )?;
        for (id, s) in seq {
            up.execute(params![
                id.as_str(),
                int(s.last_seq),
                json(&s.missing)?,
                int(s.gap_events),
                int(s.late_events),
                int(s.replays),
                int(s.given_up_ranges)
            ])?;
        }
        if inserted > 0 {
            tx.prepare_cached("UPDATE counters SET value = value + ?1 WHERE name = 'events'")?
                .execute([int(inserted)])?;
        }
    }
    if !fresh.is_empty() {
        files::apply(&tx, files, &fresh, &Utc::now())?;
    }
    tx.commit()?;
    Ok(InsertOutcome { inserted, duplicates: rows.len() as u64 - inserted, stored })
}

/// Sequence state from columns `first..first + 6` of a row (NULL when the agent
/// has no events yet).
pub fn seq_from_row(r: &Row<'_>, first: usize) -> Result<Option<SeqState>, StoreError> {
    let Some(last_seq) = r.get::<_, Option<i64>>(first)? else { return Ok(None) };
    Ok(Some(SeqState {
        last_seq: uint(last_seq),
        missing: from_json(&r.get::<_, String>(first + 1)?, "missing ranges")?,
        gap_events: uint(r.get(first + 2)?),
        late_events: uint(r.get(first + 3)?),
        replays: uint(r.get(first + 4)?),
        given_up_ranges: uint(r.get(first + 5)?),
    }))
}

pub fn load_seq_states(c: &Connection) -> Result<Vec<(AgentId, SeqState)>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT agent_id, last_seq, missing, gap_events, late_events, replays, given_up_ranges FROM seq_state",
    )?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id = AgentId::new(r.get::<_, String>(0)?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        out.push((id, seq_from_row(r, 1)?.unwrap_or_default()));
    }
    Ok(out)
}

pub fn existing_ids(c: &Connection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    let mut q = c.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
    let mut found = HashSet::new();
    for id in ids {
        if q.exists([&id.as_bytes()[..]])? {
            found.insert(*id);
        }
    }
    Ok(found)
}

pub fn count_all(c: &Connection) -> Result<u64, StoreError> {
    let n: i64 = c.query_row("SELECT value FROM counters WHERE name = 'events'", [], |r| r.get(0))?;
    Ok(uint(n))
}

pub fn list(c: &Connection, q: &EventQuery) -> Result<Page<StoredEvent>, StoreError> {
    let mut f = Filter::default();
    if let Some(a) = &q.agent {
        f.and("agent_id = ?", [Value::Text(a.as_str().into())]);
    }
    if let Some(cl) = q.class {
        f.and("class = ?", [Value::Text(cl.as_str().into())]);
    }
    if let Some(t) = &q.since {
        f.and("time_ns >= ?", [Value::Integer(nanos(t))]);
    }
    if let Some(t) = &q.until {
        f.and("time_ns < ?", [Value::Integer(nanos(t))]);
    }
    if let Some(t) = &q.received_since {
        f.and("received_ns >= ?", [Value::Integer(nanos(t))]);
    }
    let where_sql = f.sql();
    let total = if f.is_empty() {
        count_all(c)?
    } else {
        let n: i64 = c.query_row(
            &format!("SELECT COUNT(*) FROM events{where_sql}"),
            params_from_iter(f.params.iter()),
            |r| r.get(0),
        )?;
        uint(n)
    };
    let dir = if q.ascending { "ASC" } else { "DESC" };
    let key = if q.received_since.is_some() { "received_ns" } else { "time_ns" };
    let sql = format!(
        "SELECT body, received_ns FROM events{where_sql} ORDER BY {key} {dir}, rowid {dir} LIMIT ? OFFSET ?"
    );
    let items = f.page(c, &sql, q.limit, q.offset, |r| {
        let body: String = r.get(0)?;
        Ok(StoredEvent { envelope: from_json(&body, "event")?, received: from_nanos(r.get(1)?) })
    })?;
    Ok(Page { items, total, offset: q.offset, limit: q.limit })
}
