-- secmon manager schema, version 1.
-- Times: text columns hold RFC 3339 UTC with 9 fraction digits (sortable, exact);
-- events keep integer nanoseconds since the epoch for their indexes.

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    status_reason         TEXT NOT NULL,
    status_changed_at     TEXT NOT NULL,
    hostname              TEXT NOT NULL,
    -- Space-separated, for the `q` search.
    ips                   TEXT NOT NULL,
    host                  TEXT NOT NULL,   -- HostFacts JSON
    agent_version         TEXT NOT NULL,
    sensors               TEXT NOT NULL,   -- JSON array
    config_digest         TEXT NOT NULL,
    heartbeat_interval_ms INTEGER NOT NULL,
    registered_at         TEXT NOT NULL,
    last_seen             TEXT
);
CREATE INDEX agents_name ON agents (name, id);
CREATE INDEX agents_status ON agents (status, id);
CREATE INDEX agents_last_seen ON agents (last_seen, id);
CREATE INDEX agents_registered_at ON agents (registered_at, id);

-- Per-agent sequence tracking, owned by ingest; an agent may have events (and so a
-- row here) before it registers.
CREATE TABLE seq_state (
    agent_id        TEXT PRIMARY KEY NOT NULL,
    last_seq        INTEGER NOT NULL,
    missing         TEXT NOT NULL,        -- JSON [[from, to], ...]
    gap_events      INTEGER NOT NULL,
    late_events     INTEGER NOT NULL,
    replays         INTEGER NOT NULL,
    given_up_ranges INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE status_changes (
    id          INTEGER PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    at          TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX status_changes_agent ON status_changes (agent_id, id);

CREATE TABLE events (
    id          BLOB PRIMARY KEY NOT NULL,  -- UUID, 16 bytes
    agent_id    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    class       TEXT NOT NULL,
    severity    INTEGER NOT NULL,
    time_ns     INTEGER NOT NULL,   -- event time, clamped to the i64 range
    received_ns INTEGER NOT NULL,
    body        TEXT NOT NULL               -- the envelope, JSON
);
CREATE INDEX events_time ON events (time_ns);
CREATE INDEX events_agent_time ON events (agent_id, time_ns);
CREATE INDEX events_class_time ON events (class, time_ns);

-- Counters kept in step with the tables they count, so totals are O(1).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('events', 0);

CREATE TABLE alerts (
    id         TEXT PRIMARY KEY NOT NULL,
    rule_id    TEXT NOT NULL,
    title      TEXT NOT NULL,
    severity   INTEGER NOT NULL,
    agent_id   TEXT,
    status     TEXT NOT NULL,
    tags       TEXT NOT NULL,   -- JSON array
    event_ids  TEXT NOT NULL,   -- JSON array
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    count      INTEGER NOT NULL
);
CREATE INDEX alerts_last_seen ON alerts (last_seen);
CREATE INDEX alerts_agent ON alerts (agent_id, last_seen);
CREATE INDEX alerts_rule ON alerts (rule_id, last_seen);
