//! The embedded SQLite backend: `<data_dir>/secmon.db` in WAL mode.
//!
//! One writer connection (ingest batches and registry changes take turns; SQLite
//! has a single writer anyway) and a small pool of read-only connections, so API
//! queries read a consistent snapshot without waiting for an ingest transaction.
//! Every call runs on a blocking thread (`spawn_blocking`), never on the runtime.

mod agents;
mod alerts;
mod codec;
mod events;
mod files;
mod migrate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::alerts::AlertDraft;
use secmon_proto::AgentId;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{
    AgentQuery, AgentRecord, AlertDetails, AlertQuery, AlertRecord, AlertStatusChange, EventQuery, FileQuery,
    FileStateRecord, FileUpdate, InsertOutcome, OutboxMessage, Page, RaisedAlert, SeqState, StatusChange,
    Store, StoreError, StoredEvent,
};

pub use migrate::SCHEMA_VERSION;

/// Database file name inside the data dir.
pub const DB_FILE: &str = "secmon.db";

/// Read-only connections: enough for concurrent API requests on a small machine.
const READERS: usize = 4;

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    // Readers first: fields drop in order, and the writer, closing last, is the
    // connection that may remove the WAL file.
    readers: Arc<ReadPool>,
    writer: Arc<Mutex<Connection>>,
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    available: Semaphore,
}

/// A pooled read connection, returned to the pool on drop (also on panic).
struct Pooled {
    conn: Option<Connection>,
    pool: Arc<ReadPool>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.conns.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            self.pool.available.add_permits(1);
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Database(format!("storage task failed: {e}"))
}

impl SqliteStore {
    /// Opens (creating when missing) `data_dir/secmon.db` and brings its schema up
    /// to date. Fails with [`StoreError::SchemaTooNew`] on a database written by a
    /// newer manager.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Database(format!("cannot create data dir {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        let mut writer = Connection::open(&path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "cannot enable WAL on {}: journal mode is {mode}",
                path.display()
            )));
        }
        writer.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = OFF;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -32768;",
        )?;
        writer.set_prepared_statement_cache_capacity(32);
        migrate::migrate(&mut writer)?;

        let mut conns = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )?;
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -8192;")?;
            c.set_prepared_statement_cache_capacity(32);
            conns.push(c);
        }
        Ok(SqliteStore {
            path,
            readers: Arc::new(ReadPool { conns: Mutex::new(conns), available: Semaphore::new(READERS) }),
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(join_error)?
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let permit = self
            .readers
            .available
            .acquire()
            .await
            .map_err(|_| StoreError::Database("store is closed".into()))?;
        permit.forget(); // given back by `Pooled::drop`
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.conns.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let pooled = Pooled { conn, pool };
            let conn = pooled.conn.as_ref().expect("a permit guarantees a free connection");
            f(conn)
        })
        .await
        .map_err(join_error)?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn health(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(agents::load_all).await
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let id = id.clone();
        self.read(move |c| agents::get(c, &id)).await
    }

    async fn list_agents(&self, q: &AgentQuery) -> Result<Page<AgentRecord>, StoreError> {
        let q = q.clone();
        self.read(move |c| agents::list(c, &q)).await
    }

    async fn save_agent(&self, agent: &AgentRecord, transitions: &[StatusChange]) -> Result<(), StoreError> {
        let batch = vec![(agent.clone(), transitions.to_vec())];
        self.write(move |c| agents::save(c, &batch)).await
    }

    async fn save_agents(&self, batch: &[(AgentRecord, Vec<StatusChange>)]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.write(move |c| agents::save(c, &batch)).await
    }

    async fn status_history(&self, id: &AgentId, limit: u64) -> Result<Vec<StatusChange>, StoreError> {
        let id = id.clone();
        self.read(move |c| agents::history(c, &id, limit)).await
    }

    async fn load_seq_states(&self) -> Result<Vec<(AgentId, SeqState)>, StoreError> {
        self.read(events::load_seq_states).await
    }

    async fn insert_events(
        &self,
        events: &[StoredEvent],
        seq: &[(AgentId, SeqState)],
        files: &[FileUpdate],
    ) -> Result<InsertOutcome, StoreError> {
        // Encoding happens here, off the blocking thread's critical section.
        let rows = events.iter().map(events::EncodedEvent::encode).collect::<Result<Vec<_>, _>>()?;
        let files = files.iter().map(files::EncodedFileUpdate::encode).collect::<Result<Vec<_>, _>>()?;
        let seq = seq.to_vec();
        self.write(move |c| events::insert(c, &rows, &seq, &files)).await
    }

    async fn get_file_state(
        &self,
        agent: &AgentId,
        path: &str,
    ) -> Result<Option<FileStateRecord>, StoreError> {
        let (agent, path) = (agent.clone(), path.to_owned());
        self.read(move |c| files::get(c, &agent, &path)).await
    }

    async fn list_file_states(&self, q: &FileQuery) -> Result<Page<FileStateRecord>, StoreError> {
        let q = q.clone();
        self.read(move |c| files::list(c, &q)).await
    }

    async fn has_file_states(&self, agent: &AgentId) -> Result<bool, StoreError> {
        let agent = agent.clone();
        self.read(move |c| files::agent_has_files(c, &agent)).await
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let q = q.clone();
        self.read(move |c| events::list(c, &q)).await
    }

    async fn count_events(&self) -> Result<u64, StoreError> {
        self.read(events::count_all).await
    }

    async fn existing_event_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| events::existing_ids(c, &ids)).await
    }

    async fn insert_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        let alert = alert.clone();
        self.write(move |c| alerts::upsert(c, &alert)).await
    }

    async fn get_alert(&self, id: Uuid) -> Result<Option<AlertDetails>, StoreError> {
        self.read(move |c| alerts::get(c, id)).await
    }

    async fn raise_alert(&self, draft: &AlertDraft, window: Duration) -> Result<RaisedAlert, StoreError> {
        let draft = draft.clone();
        self.write(move |c| alerts::raise(c, &draft, window)).await
    }

    async fn set_alert_status(
        &self,
        id: Uuid,
        change: &AlertStatusChange,
    ) -> Result<AlertDetails, StoreError> {
        let change = change.clone();
        self.write(move |c| alerts::set_status(c, id, &change)).await
    }

    async fn pending_alert_messages(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError> {
        // The writer: the outbox is written and emptied there, so it reads its own writes.
        self.write(move |c| alerts::pending(c, limit)).await
    }

    async fn remove_alert_messages(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.write(move |c| alerts::remove(c, &ids)).await
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Page<AlertRecord>, StoreError> {
        let q = q.clone();
        self.read(move |c| alerts::list(c, &q)).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Fold the WAL back into the database so the file is complete on its own.
        self.write(|c| {
            c.execute_batch("PRAGMA optimize;")?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod file_state_tests;

#[cfg(test)]
mod alert_tests;
