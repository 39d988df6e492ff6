//! Alerts, their status history and the outbox of their JetStream messages.

use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, Row, Transaction, params, params_from_iter};
use secmon_proto::{AgentId, Severity};
use uuid::Uuid;

use super::codec::{Filter, from_json, int, json, parse, parse_ts, ts, uint};
use crate::alerts::{AlertDraft, SYSTEM_BY, aggregate};
use crate::store::{
    AlertDetails, AlertQuery, AlertRecord, AlertStatus, AlertStatusChange, OutboxMessage, Page, RaisedAlert,
    StoreError,
};

const COLUMNS: &str = "id, rule_id, title, severity, agent_id, status, tags, event_ids, first_seen, last_seen, count, \
                       group_key, event_count";

pub fn upsert(c: &Connection, a: &AlertRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO alerts (id, rule_id, title, severity, agent_id, status, tags, event_ids, first_seen, last_seen,
                             count, group_key, event_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET rule_id = excluded.rule_id, title = excluded.title,
             severity = excluded.severity, agent_id = excluded.agent_id, status = excluded.status,
             tags = excluded.tags, event_ids = excluded.event_ids, first_seen = excluded.first_seen,
             last_seen = excluded.last_seen, count = excluded.count, group_key = excluded.group_key,
             event_count = excluded.event_count",
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
        a.key,
        int(a.event_count),
    ])?;
    Ok(())
}

fn record(r: &Row<'_>) -> Result<AlertRecord, StoreError> {
    let id: String = r.get(0)?;
    let rank: i64 = r.get(3)?;
    let agent: Option<String> = r.get(4)?;
    Ok(AlertRecord {
        id: id.parse().map_err(|e| StoreError::Corrupt(format!("bad alert id {id:?}: {e}")))?,
        rule_id: r.get(1)?,
        title: r.get(2)?,
        severity: severity(rank)?,
        agent_id: agent.map(AgentId::new).transpose().map_err(|e| StoreError::Corrupt(e.to_string()))?,
        status: parse::<AlertStatus>(&r.get::<_, String>(5)?)?,
        tags: from_json(&r.get::<_, String>(6)?, "tags")?,
        event_ids: from_json(&r.get::<_, String>(7)?, "event ids")?,
        first_seen: parse_ts(&r.get::<_, String>(8)?)?,
        last_seen: parse_ts(&r.get::<_, String>(9)?)?,
        count: uint(r.get(10)?),
        key: r.get(11)?,
        event_count: uint(r.get(12)?),
    })
}

fn severity(rank: i64) -> Result<Severity, StoreError> {
    u8::try_from(rank)
        .ok()
        .and_then(Severity::from_rank)
        .ok_or_else(|| StoreError::Corrupt(format!("bad severity rank {rank}")))
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
    let sql =
        format!("SELECT {COLUMNS} FROM alerts{where_sql} ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?");
    let items = f.page(c, &sql, q.limit, q.offset, record)?;
    Ok(Page { items, total: uint(total), offset: q.offset, limit: q.limit })
}

fn get_record(c: &Connection, id: Uuid) -> Result<Option<AlertRecord>, StoreError> {
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"))?;
    let mut rows = st.query([id.to_string()])?;
    rows.next()?.map(record).transpose()
}

fn history(c: &Connection, id: Uuid) -> Result<Vec<AlertStatusChange>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT at, by_whom, from_status, to_status, comment FROM alert_history WHERE alert_id = ?1 ORDER BY id",
    )?;
    let mut rows = st.query([id.to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let from: Option<String> = r.get(2)?;
        out.push(AlertStatusChange {
            at: parse_ts(&r.get::<_, String>(0)?)?,
            by: r.get(1)?,
            from: from.as_deref().map(parse::<AlertStatus>).transpose()?,
            to: parse::<AlertStatus>(&r.get::<_, String>(3)?)?,
            comment: r.get(4)?,
        });
    }
    Ok(out)
}

pub fn get(c: &Connection, id: Uuid) -> Result<Option<AlertDetails>, StoreError> {
    let Some(alert) = get_record(c, id)? else { return Ok(None) };
    Ok(Some(AlertDetails { history: history(c, id)?, alert }))
}

fn add_history(tx: &Transaction<'_>, id: Uuid, ch: &AlertStatusChange) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO alert_history (alert_id, at, by_whom, from_status, to_status, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id.to_string(),
        ts(&ch.at),
        ch.by,
        ch.from.map(AlertStatus::as_str),
        ch.to.as_str(),
        ch.comment
    ])?;
    Ok(())
}

fn enqueue(
    tx: &Transaction<'_>,
    a: &AlertRecord,
    change: Option<&AlertStatusChange>,
) -> Result<(), StoreError> {
    let body = json(&aggregate::message(a, change))?;
    tx.prepare_cached("INSERT INTO alert_outbox (msg_id, severity, body) VALUES (?1, ?2, ?3)")?
        .execute(params![format!("alert-{}", Uuid::now_v7()), i64::from(a.severity.rank()), body])?;
    Ok(())
}

pub fn raise(c: &mut Connection, d: &AlertDraft, window: Duration) -> Result<RaisedAlert, StoreError> {
    let tx = c.transaction()?;
    let w = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let lo = d.time.checked_sub_signed(w).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let hi = d.time.checked_add_signed(w).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    // Uses the partial index alerts_dedup; the pure fold decides again.
    let existing = {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM alerts
             WHERE rule_id = ?1 AND agent_id = ?2 AND group_key = ?3 AND status != 'closed'
               AND last_seen >= ?4 AND first_seen <= ?5
             ORDER BY last_seen DESC LIMIT 1"
        ))?;
        let mut rows = st.query(params![d.rule_id, d.agent_id.as_str(), d.key, ts(&lo), ts(&hi)])?;
        rows.next()?.map(record).transpose()?
    };
    let folded = aggregate::fold(existing, d, window, Uuid::now_v7());
    upsert(&tx, &folded.alert)?;
    if folded.created {
        let created = AlertStatusChange {
            at: chrono::Utc::now(),
            by: SYSTEM_BY.into(),
            from: None,
            to: AlertStatus::Open,
            comment: format!("raised by rule {}", d.rule_id),
        };
        add_history(&tx, folded.alert.id, &created)?;
        enqueue(&tx, &folded.alert, None)?;
    }
    tx.commit()?;
    Ok(RaisedAlert { alert: folded.alert, created: folded.created })
}

pub fn set_status(
    c: &mut Connection,
    id: Uuid,
    change: &AlertStatusChange,
) -> Result<AlertDetails, StoreError> {
    let tx = c.transaction()?;
    let mut alert = get_record(&tx, id)?.ok_or(StoreError::NotFound)?;
    aggregate::check_transition(alert.status, change.to).map_err(StoreError::Conflict)?;
    let change = AlertStatusChange { from: Some(alert.status), ..change.clone() };
    alert.status = change.to;
    upsert(&tx, &alert)?;
    add_history(&tx, id, &change)?;
    enqueue(&tx, &alert, Some(&change))?;
    let details = AlertDetails { history: history(&tx, id)?, alert };
    tx.commit()?;
    Ok(details)
}

pub fn pending(c: &Connection, limit: u64) -> Result<Vec<OutboxMessage>, StoreError> {
    let mut st =
        c.prepare_cached("SELECT id, msg_id, severity, body FROM alert_outbox ORDER BY id LIMIT ?1")?;
    let mut rows = st.query([int(limit)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(OutboxMessage {
            id: r.get(0)?,
            msg_id: r.get(1)?,
            severity: severity(r.get(2)?)?,
            body: r.get::<_, String>(3)?.into_bytes(),
        });
    }
    Ok(out)
}

pub fn remove(c: &mut Connection, ids: &[i64]) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare_cached("DELETE FROM alert_outbox WHERE id = ?1")?;
        for id in ids {
            st.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(())
}
