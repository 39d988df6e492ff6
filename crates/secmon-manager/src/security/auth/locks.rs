//! Login lockouts kept in `security.db`, so a manager restart does not lift them. The
//! counting stays in memory ([`super::limiter`]); only a lock, once set, is written
//! here, and the locks still running are restored at start.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::limiter::{LockKey, MAX_KEYS};
use crate::security::{SecurityDb, SecurityDbError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS login_locks (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);";

pub(crate) fn ensure_schema(db: &SecurityDb) -> Result<(), SecurityDbError> {
    db.ensure_schema(SCHEMA)
}

fn kind_and_key(k: &LockKey) -> (&'static str, String) {
    match k {
        LockKey::User(u) => ("user", u.clone()),
        LockKey::Addr(a) => ("addr", a.to_string()),
    }
}

/// Records locks set at `now` (each for its duration) and forgets the ended ones.
pub fn save(conn: &Connection, locks: &[(LockKey, Duration)], now: DateTime<Utc>) -> rusqlite::Result<()> {
    let now_ms = now.timestamp_millis();
    conn.execute("DELETE FROM login_locks WHERE locked_until <= ?1", [now_ms])?;
    for (k, d) in locks {
        let (kind, key) = kind_and_key(k);
        let until = now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        conn.execute(
            "INSERT INTO login_locks (kind, key, locked_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, key) DO UPDATE SET locked_until = excluded.locked_until",
            params![kind, key, until],
        )?;
    }
    Ok(())
}

/// The locks still running at `now`, with the time left; at most [`MAX_KEYS`] of each
/// kind (the longest-running first), as the limiter holds no more. A row that does not
/// read as a lock (an address that does not parse) is skipped and logged.
pub fn load(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<Vec<(LockKey, Duration)>> {
    let now_ms = now.timestamp_millis();
    let mut stmt = conn.prepare(
        "SELECT kind, key, locked_until FROM login_locks WHERE kind = ?1 AND locked_until > ?2
         ORDER BY locked_until DESC LIMIT ?3",
    )?;
    let mut out = Vec::new();
    for kind in ["user", "addr"] {
        let rows = stmt.query_map(params![kind, now_ms, MAX_KEYS as i64], |r| {
            Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (key, until) = row?;
            let left = Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0));
            let lock = match kind {
                "user" => LockKey::User(key),
                _ => match key.parse::<IpAddr>() {
                    Ok(a) => LockKey::Addr(a),
                    Err(_) => {
                        tracing::warn!(key = %key.escape_debug(), "login lock on an unreadable address skipped");
                        continue;
                    }
                },
            };
            out.push((lock, left));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_kept_until_they_end() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let t0 = Utc::now();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let user = LockKey::User("victim".into());
        save(&c, &[(user.clone(), Duration::from_secs(60)), (LockKey::Addr(a), Duration::from_secs(10))], t0)
            .unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut got = load(&c, at(5)).unwrap();
        got.sort_by_key(|(_, d)| *d);
        assert_eq!(
            got,
            vec![(LockKey::Addr(a), Duration::from_secs(5)), (user.clone(), Duration::from_secs(55))]
        );
        assert_eq!(load(&c, at(30)).unwrap(), vec![(user.clone(), Duration::from_secs(30))]);
        // Locked again later: the new end counts; ended locks are deleted on save.
        save(&c, &[(user.clone(), Duration::from_secs(60))], at(30)).unwrap();
        assert_eq!(load(&c, at(80)).unwrap(), vec![(user, Duration::from_secs(10))]);
        let rows: i64 = c.query_row("SELECT COUNT(*) FROM login_locks", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
        assert!(load(&c, at(100)).unwrap().is_empty());
        // A row that is not a lock is skipped.
        c.execute(
            "INSERT INTO login_locks VALUES ('addr', 'not an address', ?1)",
            [at(1000).timestamp_millis()],
        )
        .unwrap();
        assert!(load(&c, at(100)).unwrap().is_empty());
    }
}
