//! `<data_dir>/security.db`: one SQLite connection (the data is small and writes are
//! rare), used from blocking threads. Each part of [`crate::security`] creates its
//! own tables with [`SecurityDb::ensure_schema`] (idempotent `CREATE ... IF NOT EXISTS`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// File name inside the data dir.
pub const SECURITY_DB: &str = "security.db";

#[derive(Debug, thiserror::Error)]
pub enum SecurityDbError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("security database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("security database task failed: {0}")]
    Task(String),
}

/// Cloneable handle to the security database.
#[derive(Clone)]
pub struct SecurityDb {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SecurityDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityDb").field("path", &self.path).finish()
    }
}

impl SecurityDb {
    /// Opens (creating 0600 when missing) `<data_dir>/security.db`.
    pub fn open(data_dir: &Path) -> Result<Self, SecurityDbError> {
        let path = data_dir.join(SECURITY_DB);
        let open_err = |source| SecurityDbError::Open { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(open_err)?;
        // Create the file 0600 before SQLite opens it: it holds password hashes.
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(open_err)?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `sql` (a batch of idempotent statements) now, on the calling thread.
    pub fn ensure_schema(&self, sql: &str) -> Result<(), SecurityDbError> {
        self.lock().execute_batch(sql)?;
        Ok(())
    }

    /// Runs `f` with the connection on the calling thread (init, tests).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SecurityDbError> {
        Ok(f(&mut self.lock())?)
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, SecurityDbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| SecurityDbError::Task(e.to_string()))?
        .map_err(SecurityDbError::from)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn created_private_and_usable_from_async_code() {
        let dir = tempfile::tempdir().unwrap();
        let db = SecurityDb::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECURITY_DB)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        db.ensure_schema(
            "CREATE TABLE IF NOT EXISTS t (x INTEGER); CREATE TABLE IF NOT EXISTS t (x INTEGER);",
        )
        .unwrap();
        db.call(|c| c.execute("INSERT INTO t VALUES (?1)", [42])).await.unwrap();
        let x: i64 = db.call(|c| c.query_row("SELECT x FROM t", [], |r| r.get(0))).await.unwrap();
        assert_eq!(x, 42);
    }
}
