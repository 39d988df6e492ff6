-- Alerts users work with: aggregation key, event totals, status history, and an
-- outbox of messages for JetStream (stored first, published after).

ALTER TABLE alerts ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
-- The dedup lookup: an alert a repeat may fold into is never closed.
CREATE INDEX alerts_dedup ON alerts (rule_id, agent_id, group_key, last_seen) WHERE status != 'closed';
CREATE INDEX alerts_status ON alerts (status, last_seen);

CREATE TABLE alert_history (
    id          INTEGER PRIMARY KEY,
    alert_id    TEXT NOT NULL,
    at          TEXT NOT NULL,
    by_whom     TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    comment     TEXT NOT NULL
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);

-- Messages for SECMON_ALERTS, deleted once JetStream acknowledged them.
CREATE TABLE alert_outbox (
    id       INTEGER PRIMARY KEY,
    msg_id   TEXT NOT NULL,
    severity INTEGER NOT NULL,
    body     TEXT NOT NULL
);
