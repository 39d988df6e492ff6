//! Versioned schema migrations. Each migration is a numbered SQL file under
//! `src/store/migrations/`, applied once, in order, with its row in
//! `schema_version`; all pending migrations share one transaction, so a failure
//! leaves the database as it was. A database whose version is newer than
//! [`SCHEMA_VERSION`] is refused rather than guessed at.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::codec::ts;
use crate::store::StoreError;

/// `(version, sql)`, versions 1, 2, ... without holes. Append only: a released
/// migration is never edited.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_events_received.sql")),
    (3, include_str!("../migrations/0003_file_states.sql")),
    (4, include_str!("../migrations/0004_alert_workflow.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The schema version of the database (0 when empty).
pub fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    let has_table: Option<i64> = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if has_table.is_none() {
        return Ok(0);
    }
    let v: Option<i64> = conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    u32::try_from(v.unwrap_or(0)).map_err(|_| StoreError::Corrupt(format!("bad schema version {v:?}")))
}

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, migrations: &[(u32, &str)]) -> Result<(), StoreError> {
    let supported = migrations.last().map_or(0, |m| m.0);
    // IMMEDIATE: a second manager on the same file waits instead of migrating twice.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY NOT NULL,
             applied_at TEXT NOT NULL
         );",
    )?;
    let found = current_version(&tx)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for &(version, sql) in migrations.iter().filter(|m| m.0 > found) {
        let fail = |e: rusqlite::Error| StoreError::Migration { version, reason: e.to_string() };
        tx.execute_batch(sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, ts(&Utc::now())),
        )
        .map_err(fail)?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_without_holes() {
        for (i, (v, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v as usize, i + 1);
        }
    }

    #[test]
    fn applies_in_order_once_and_refuses_newer_databases() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("m.db")).unwrap();
        let v1: &[(u32, &str)] = &[(1, "CREATE TABLE a (x INTEGER);")];
        let v2: &[(u32, &str)] =
            &[(1, "CREATE TABLE a (x INTEGER);"), (2, "ALTER TABLE a ADD COLUMN y TEXT;")];
        migrate_with(&mut c, v1).unwrap();
        assert_eq!(current_version(&c).unwrap(), 1);
        migrate_with(&mut c, v1).unwrap(); // idempotent: would fail if re-applied
        migrate_with(&mut c, v2).unwrap();
        assert_eq!(current_version(&c).unwrap(), 2);
        c.execute("INSERT INTO a (x, y) VALUES (1, 'b')", []).unwrap();

        let e = migrate_with(&mut c, v1).unwrap_err();
        assert!(matches!(e, StoreError::SchemaTooNew { found: 2, supported: 1 }), "{e}");
        assert!(e.to_string().contains("upgrade the manager"));
    }

    #[test]
    fn a_failing_migration_leaves_the_database_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("m.db")).unwrap();
        let bad: &[(u32, &str)] = &[(1, "CREATE TABLE a (x INTEGER);"), (2, "CREATE TABLE b (; nonsense")];
        let e = migrate_with(&mut c, bad).unwrap_err();
        assert!(matches!(e, StoreError::Migration { version: 2, .. }), "{e}");
        assert_eq!(current_version(&c).unwrap(), 0);
    }
}
