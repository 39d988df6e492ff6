-- Last known state of each watched path per agent, from `file` events (and camera
-- `device` events). Written in the transaction that stores the events; a row moves
-- only to an event newer than the one it holds, ordered by (change_ns, change_seq)
-- for content changes and (access_ns, access_seq) for accesses.
CREATE TABLE file_states (
    agent_id        TEXT NOT NULL,
    path            TEXT NOT NULL,
    kind            TEXT NOT NULL,      -- file, dir, symlink, ...
    hash            TEXT,
    hash_algo       TEXT,
    hash_skipped    TEXT,
    size            INTEGER,
    mode            INTEGER,
    uid             INTEGER,
    gid             INTEGER,
    mtime           REAL,               -- seconds since the epoch
    ctime           REAL,
    inode           INTEGER,            -- the u64's bits
    target          TEXT,               -- symlink target
    deleted         INTEGER NOT NULL,   -- 0 or 1
    renamed_to      TEXT,
    renamed_from    TEXT,
    -- The last content change (NULL while only accesses are known).
    last_activity   TEXT,
    change_ns       INTEGER,            -- event time, clamped to the i64 range
    change_seq      INTEGER,
    event_id        BLOB,               -- UUID, 16 bytes
    process         TEXT,               -- ProcessInfo JSON
    -- The last access.
    access_ns       INTEGER,
    access_seq      INTEGER,
    access_event_id BLOB,
    access_process  TEXT,               -- ProcessInfo JSON
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (agent_id, path)
) WITHOUT ROWID;
