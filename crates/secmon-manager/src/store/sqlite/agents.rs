//! Agents, their status history, and the agent list query.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};
use secmon_proto::{AgentId, AgentStatus};

use super::codec::{Filter, from_json, int, json, like_pattern, parse, parse_ts, ts, uint};
use super::events::seq_from_row;
use crate::store::{AgentQuery, AgentRecord, AgentSortField, Page, StatusChange, StoreError};

const SELECT: &str = "SELECT a.id, a.name, a.status, a.status_reason, a.status_changed_at, a.host,
        a.agent_version, a.sensors, a.config_digest, a.heartbeat_interval_ms, a.registered_at, a.last_seen,
        s.last_seq, s.missing, s.gap_events, s.late_events, s.replays, s.given_up_ranges
    FROM agents a LEFT JOIN seq_state s ON s.agent_id = a.id";

fn from_row(r: &Row<'_>) -> Result<AgentRecord, StoreError> {
    let id: String = r.get(0)?;
    let last_seen: Option<String> = r.get(11)?;
    Ok(AgentRecord {
        id: AgentId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name: r.get(1)?,
        status: parse::<AgentStatus>(&r.get::<_, String>(2)?)?,
        status_reason: r.get(3)?,
        status_changed_at: parse_ts(&r.get::<_, String>(4)?)?,
        host: from_json(&r.get::<_, String>(5)?, "host facts")?,
        agent_version: r.get(6)?,
        sensors: from_json(&r.get::<_, String>(7)?, "sensors")?,
        config_digest: r.get(8)?,
        heartbeat_interval_ms: uint(r.get(9)?),
        registered_at: parse_ts(&r.get::<_, String>(10)?)?,
        last_seen: last_seen.as_deref().map(parse_ts).transpose()?,
        seq: seq_from_row(r, 12)?.unwrap_or_default(),
    })
}

pub fn load_all(c: &Connection) -> Result<Vec<AgentRecord>, StoreError> {
    let mut st = c.prepare_cached(SELECT)?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_row(r)?);
    }
    Ok(out)
}

pub fn get(c: &Connection, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("{SELECT} WHERE a.id = ?1"))?;
    let mut rows = st.query([id.as_str()])?;
    rows.next()?.map(from_row).transpose()
}

/// Writes records and their transitions in one transaction.
pub fn save(c: &mut Connection, batch: &[(AgentRecord, Vec<StatusChange>)]) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO agents (id, name, status, status_reason, status_changed_at, hostname, ips, host,
                 agent_version, sensors, config_digest, heartbeat_interval_ms, registered_at, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, status = excluded.status,
                 status_reason = excluded.status_reason, status_changed_at = excluded.status_changed_at,
                 hostname = excluded.hostname, ips = excluded.ips, host = excluded.host,
                 agent_version = excluded.agent_version, sensors = excluded.sensors,
                 config_digest = excluded.config_digest, heartbeat_interval_ms = excluded.heartbeat_interval_ms,
                 registered_at = excluded.registered_at, last_seen = excluded.last_seen",
        )?;
        let mut history = tx.prepare_cached(
            "INSERT INTO status_changes (agent_id, from_status, to_status, at, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (a, changes) in batch {
            upsert.execute(params![
                a.id.as_str(),
                a.name,
                a.status.as_str(),
                a.status_reason,
                ts(&a.status_changed_at),
                a.host.hostname,
                a.host.ips.join(" "),
                json(&a.host)?,
                a.agent_version,
                json(&a.sensors)?,
                a.config_digest,
                int(a.heartbeat_interval_ms),
                ts(&a.registered_at),
                a.last_seen.as_ref().map(ts),
            ])?;
            for ch in changes {
                history.execute(params![
                    ch.agent_id.as_str(),
                    ch.from.map(|s| s.as_str()),
                    ch.to.as_str(),
                    ts(&ch.at),
                    ch.reason
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

pub fn history(c: &Connection, id: &AgentId, limit: u64) -> Result<Vec<StatusChange>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT agent_id, from_status, to_status, at, reason FROM status_changes
         WHERE agent_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut rows = st.query(params![id.as_str(), int(limit)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let from: Option<String> = r.get(1)?;
        out.push(StatusChange {
            agent_id: AgentId::new(r.get::<_, String>(0)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            from: from.as_deref().map(parse::<AgentStatus>).transpose()?,
            to: parse(&r.get::<_, String>(2)?)?,
            at: parse_ts(&r.get::<_, String>(3)?)?,
            reason: r.get(4)?,
        });
    }
    Ok(out)
}

/// Lifecycle order, so sorting by status groups agents the way the lifecycle reads.
const STATUS_RANK: &str = "CASE a.status WHEN 'never_connected' THEN 0 WHEN 'pending' THEN 1 \
     WHEN 'active' THEN 2 WHEN 'disconnected' THEN 3 ELSE 4 END";

pub fn list(c: &Connection, q: &AgentQuery) -> Result<Page<AgentRecord>, StoreError> {
    let mut f = Filter::default();
    if let Some(s) = q.status {
        f.and("a.status = ?", [Value::Text(s.as_str().into())]);
    }
    if let Some(n) = &q.name {
        f.and("a.name = ?", [Value::Text(n.clone())]);
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        let p = Value::Text(like_pattern(text));
        f.and(
            "(a.id LIKE ? ESCAPE '\\' OR a.name LIKE ? ESCAPE '\\' OR a.hostname LIKE ? ESCAPE '\\' \
             OR a.ips LIKE ? ESCAPE '\\')",
            [p.clone(), p.clone(), p.clone(), p],
        );
    }
    let where_sql = f.sql();
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM agents a{where_sql}"),
        params_from_iter(f.params.iter()),
        |r| r.get(0),
    )?;

    let dir = if q.descending { "DESC" } else { "ASC" };
    let key = match q.sort {
        AgentSortField::Name => "a.name",
        AgentSortField::Status => STATUS_RANK,
        AgentSortField::LastSeen => "a.last_seen",
        AgentSortField::RegisteredAt => "a.registered_at",
    };
    let sql = format!("{SELECT}{where_sql} ORDER BY {key} {dir}, a.id {dir} LIMIT ? OFFSET ?");
    let items = f.page(c, &sql, q.limit, q.offset, from_row)?;
    Ok(Page { items, total: uint(total), offset: q.offset, limit: q.limit })
}
