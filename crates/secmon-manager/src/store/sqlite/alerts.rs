//! Alerts and the alert list query.

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use secmon_proto::{AgentId, Severity};

use super::codec::{Filter, from_json, int, json, parse, parse_ts, ts, uint};
use crate::store::{AlertQuery, AlertRecord, AlertStatus, Page, StoreError};

pub fn upsert(c: &mut Connection, a: &AlertRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO alerts (id, rule_id, title, severity, agent_id, status, tags, event_ids, first_seen, last_seen, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET rule_id = excluded.rule_id, title = excluded.title,
             severity = excluded.severity, agent_id = excluded.agent_id, status = excluded.status,
             tags = excluded.tags, event_ids = excluded.event_ids, first_seen = excluded.first_seen,
             last_seen = excluded.last_seen, count = excluded.count",
    )?
    .execute(params![
        a.id.to_string(),
        a.rule_id,
        a.title,
        i64::from(a.severity.rank()),
        a.agent_id.as_ref().map(|x| x.as_str()),
        a.status.as_str(),
        json(&a.tags)?,
        json(&a.event_ids)?,
        ts(&a.first_seen),
        ts(&a.last_seen),
        int(a.count),
    ])?;
    Ok(())
}

pub fn list(c: &Connection, q: &AlertQuery) -> Result<Page<AlertRecord>, StoreError> {
    let mut f = Filter::default();
    if let Some(t) = &q.since {
        f.and("last_seen >= ?", [Value::Text(ts(t))]);
    }
    if let Some(t) = &q.until {
        f.and("last_seen < ?", [Value::Text(ts(t))]);
    }
    if let Some(s) = q.min_severity {
        f.and("severity >= ?", [Value::Integer(i64::from(s.rank()))]);
    }
    if let Some(a) = &q.agent {
        f.and("agent_id = ?", [Value::Text(a.as_str().into())]);
    }
    if let Some(s) = q.status {
        f.and("status = ?", [Value::Text(s.as_str().into())]);
    }
    if let Some(r) = &q.rule {
        f.and("rule_id = ?", [Value::Text(r.clone())]);
    }
    let where_sql = f.sql();
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM alerts{where_sql}"),
        params_from_iter(f.params.iter()),
        |r| r.get(0),
    )?;
    let sql = format!(
        "SELECT id, rule_id, title, severity, agent_id, status, tags, event_ids, first_seen, last_seen, count
         FROM alerts{where_sql} ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?"
    );
    let items = f.page(c, &sql, q.limit, q.offset, |r| {
        let id: String = r.get(0)?;
        let rank: i64 = r.get(3)?;
        let agent: Option<String> = r.get(4)?;
        Ok(AlertRecord {
            id: id.parse().map_err(|e| StoreError::Corrupt(format!("bad alert id {id:?}: {e}")))?,
            rule_id: r.get(1)?,
            title: r.get(2)?,
            severity: u8::try_from(rank)
                .ok()
                .and_then(Severity::from_rank)
                .ok_or_else(|| StoreError::Corrupt(format!("bad severity rank {rank}")))?,
            agent_id: agent.map(AgentId::new).transpose().map_err(|e| StoreError::Corrupt(e.to_string()))?,
            status: parse::<AlertStatus>(&r.get::<_, String>(5)?)?,
            tags: from_json(&r.get::<_, String>(6)?, "tags")?,
            event_ids: from_json(&r.get::<_, String>(7)?, "event ids")?,
            first_seen: parse_ts(&r.get::<_, String>(8)?)?,
            last_seen: parse_ts(&r.get::<_, String>(9)?)?,
            count: uint(r.get(10)?),
        })
    })?;
    Ok(Page { items, total: uint(total), offset: q.offset, limit: q.limit })
}
