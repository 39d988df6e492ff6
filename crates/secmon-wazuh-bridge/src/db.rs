//! Read side of Wazuh's `global.db`: a read-only SQLite connection that lists the
//! `agent` table as validated [`AgentRecord`]s.
//!
//! Invariants:
//! - The connection is opened read-only and never creates the file; it cannot write.
//! - The SELECT names only the known columns that exist in this database (4.x or 5.x
//!   schema); it never selects `internal_key` and never uses `SELECT *`, so the agent
//!   keys never enter the process.
//! - A read is a series of short statements of [`CHUNK_ROWS`] rows each (`id > last
//!   ORDER BY id LIMIT n`), each its own read transaction: the shared lock is held
//!   for about a millisecond at a time, however many agents there are, so wazuh-db's
//!   writer (which retries busy in a tight loop) never waits for a whole scan. A commit
//!   landing between two chunks makes the read a mix of two committed states, each
//!   row itself consistent; `data_version` has then changed, so the caller reads again
//!   and converges (see [`WazuhDb::data_version`]).
//! - No row breaks a read: every value of any storage class is accepted, cut, cleaned
//!   or dropped (`None`), and each fix is counted in `rows_sanitized`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::metrics::{Metrics, ReasonLabel};
use crate::model::{AgentRecord, Status};

/// Longest text kept from a column, in characters.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest `group` list kept, in characters.
pub const MAX_GROUPS_CHARS: usize = 4096;
/// Latest time accepted (9999-12-31T23:59:59Z, Wazuh's pinned manager keepalive).
pub const MAX_EPOCH: i64 = 253_402_300_799;
/// More rows than this in `agent` is refused: it bounds the bridge's memory.
pub const MAX_ROWS: usize = 2_000_000;
/// Rows per read statement: small enough that the shared lock is held for about a
/// millisecond (a few in a debug build), large enough that 100,000 agents take only
/// 200 statements (re-running a prepared statement costs microseconds).
pub const CHUNK_ROWS: usize = 500;

/// Which Wazuh schema the `agent` table has, judged by its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaFlavor {
    /// Wazuh 4.x: `node_name`, `os_codename`, ... and row 0 for the manager.
    V4,
    /// Wazuh 5.x: `os_type`, no `os_codename` / `node_name`.
    V5,
}

impl SchemaFlavor {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaFlavor::V4 => "4.x",
            SchemaFlavor::V5 => "5.x",
        }
    }

    /// 5.x when `os_type` exists or a 4.x-only column is missing.
    pub fn detect(columns: &[String]) -> Self {
        let has = |c: &str| columns.iter().any(|x| x.eq_ignore_ascii_case(c));
        if has("os_type") || !has("node_name") || !has("os_codename") {
            SchemaFlavor::V5
        } else {
            SchemaFlavor::V4
        }
    }
}

impl std::fmt::Display for SchemaFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the database side (reader, fixture, simulator); each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{}: no such file (expected a Wazuh global.db)", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{}: no `agent` table: not a Wazuh global.db", path.display())]
    NoAgentTable { path: PathBuf },
    #[error("{}: table `agent` has no `{column}` column", path.display())]
    MissingColumn { path: PathBuf, column: &'static str },
    #[error("{}: database locked for longer than {waited:?} ({what})", path.display())]
    Busy { path: PathBuf, what: &'static str, waited: Duration },
    #[error("{}: more than {max} rows in `agent`; refusing to read them", path.display())]
    TooManyRows { path: PathBuf, max: usize },
    #[error("{}: {what}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DbError {
    pub(crate) fn sqlite(path: &Path, what: &'static str, source: rusqlite::Error) -> Self {
        DbError::Sqlite { path: path.to_owned(), what, source }
    }

    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return DbError::NotFound { path: path.to_owned() };
        }
        DbError::Io { path: path.to_owned(), what, source }
    }

    /// True when the database was locked by a writer (worth retrying later).
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Busy { .. } => true,
            DbError::Sqlite { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Where a selected column goes in [`AgentRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Name,
    Ip,
    RegisterIp,
    OsName,
    OsVersion,
    OsPlatform,
    OsArch,
    OsType,
    Version,
    NodeName,
    DateAdd,
    LastKeepalive,
    Groups,
    ConnectionStatus,
    DisconnectionTime,
    StatusCode,
}

/// The columns the bridge reads, by name. `internal_key` is deliberately absent.
const KNOWN_COLUMNS: &[(&str, Field)] = &[
    ("id", Field::Id),
    ("name", Field::Name),
    ("ip", Field::Ip),
    ("register_ip", Field::RegisterIp),
    ("os_name", Field::OsName),
    ("os_version", Field::OsVersion),
    ("os_platform", Field::OsPlatform),
    ("os_arch", Field::OsArch),
    ("os_type", Field::OsType),
    ("version", Field::Version),
    ("node_name", Field::NodeName),
    ("date_add", Field::DateAdd),
    ("last_keepalive", Field::LastKeepalive),
    ("group", Field::Groups),
    ("connection_status", Field::ConnectionStatus),
    ("disconnection_time", Field::DisconnectionTime),
    ("status_code", Field::StatusCode),
];

/// Sanitizing reasons, in the order of the per-read counters.
const REASONS: [&str; 7] = [
    "too_long",
    "control_chars",
    "invalid_utf8",
    "bad_time",
    "unknown_status",
    "bad_integer",
    "missing_name",
];
const TOO_LONG: usize = 0;
const CONTROL_CHARS: usize = 1;
const INVALID_UTF8: usize = 2;
const BAD_TIME: usize = 3;
const UNKNOWN_STATUS: usize = 4;
const BAD_INTEGER: usize = 5;
const MISSING_NAME: usize = 6;

/// Fixes made during one read, counted locally and added to the metrics once.
#[derive(Default)]
struct Fixes([u64; REASONS.len()]);

impl Fixes {
    fn add(&mut self, reason: usize) {
        self.0[reason] += 1;
    }
}

/// The column names of table `agent` (empty when there is no such table).
pub(crate) fn agent_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA table_info(agent)")?;
    let names = stmt.query_map([], |row| row.get::<_, String>(1))?;
    names.collect()
}

/// The SELECT over the known columns present in `columns`, and where each goes.
fn build_select(columns: &[String]) -> (String, Vec<Field>) {
    let mut fields = Vec::new();
    let mut names = Vec::new();
    for (name, field) in KNOWN_COLUMNS {
        if columns.iter().any(|c| c.eq_ignore_ascii_case(name)) {
            // Quoted: `group` is an SQL keyword.
            names.push(format!("\"{name}\""));
            fields.push(*field);
        }
    }
    // One chunk after the last id read. Row 0 is the manager itself; `id` is the
    // rowid, so the range and the order cost nothing.
    let sql = format!(
        "SELECT {} FROM agent WHERE id > ?1 AND id <> 0 ORDER BY id LIMIT {CHUNK_ROWS}",
        names.join(", ")
    );
    (sql, fields)
}

/// A read-only handle on one `global.db`.
pub struct WazuhDb {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
    flavor: SchemaFlavor,
    sql: String,
    fields: Vec<Field>,
    /// (device, inode) of the file when opened, to notice a replaced database.
    file_id: (u64, u64),
    /// `PRAGMA schema_version` when the columns were read, to notice an upgrade.
    schema_version: i64,
    /// Rows of the last read: the next read reserves that much at once instead of
    /// regrowing (and copying) its vector ~17 times at 100,000 agents.
    last_len: std::cell::Cell<usize>,
    max_rows: usize,
}

impl std::fmt::Debug for WazuhDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WazuhDb")
            .field("path", &self.path)
            .field("flavor", &self.flavor)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl WazuhDb {
    /// Opens `path` read-only (never creating it) and reads which columns `agent` has.
    /// `busy_timeout` bounds how long one read waits for wazuh-db's write lock.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, DbError> {
        // Stat before opening: if the file is swapped in between, the next
        // `reopen_if_replaced` sees a different inode and reopens (never the reverse).
        let meta = std::fs::metadata(path).map_err(|e| DbError::io(path, "stat", e))?;
        if !meta.is_file() {
            return Err(DbError::NotFound { path: path.to_owned() });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| DbError::sqlite(path, "open", e))?;
        conn.busy_timeout(busy_timeout).map_err(|e| DbError::sqlite(path, "set busy timeout", e))?;
        let mut db = WazuhDb {
            conn,
            path: path.to_owned(),
            busy_timeout,
            flavor: SchemaFlavor::V4,
            sql: String::new(),
            fields: Vec::new(),
            file_id: (meta.dev(), meta.ino()),
            schema_version: 0,
            last_len: std::cell::Cell::new(0),
            max_rows: MAX_ROWS,
        };
        db.load_columns()?;
        tracing::debug!(path = %path.display(), flavor = db.flavor.as_str(), "opened Wazuh database read-only");
        Ok(db)
    }

    fn load_columns(&mut self) -> Result<(), DbError> {
        let path = &self.path;
        let schema_version: i64 = self
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(|e| DbError::sqlite(path, "read schema version", e))?;
        let columns =
            agent_columns(&self.conn).map_err(|e| DbError::sqlite(path, "read table_info(agent)", e))?;
        if columns.is_empty() {
            return Err(DbError::NoAgentTable { path: path.clone() });
        }
        if !columns.iter().any(|c| c.eq_ignore_ascii_case("id")) {
            return Err(DbError::MissingColumn { path: path.clone(), column: "id" });
        }
        let (sql, fields) = build_select(&columns);
        self.flavor = SchemaFlavor::detect(&columns);
        self.sql = sql;
        self.fields = fields;
        self.schema_version = schema_version;
        Ok(())
    }

    pub fn flavor(&self) -> SchemaFlavor {
        self.flavor
    }

    /// Lowers (or raises) the row bound of [`MAX_ROWS`].
    pub fn set_max_rows(&mut self, max: usize) {
        self.max_rows = max;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SELECT this handle runs (for logs and tests: it never names `internal_key`).
    pub fn select_sql(&self) -> &str {
        &self.sql
    }

    /// `PRAGMA data_version`: changes when another connection has committed since the
    /// last call. Call it *before* `read_agents`, so a commit landing in between only
    /// causes one extra read, never a missed one.
    pub fn data_version(&self) -> Result<i64, DbError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.sqlite_err("read data_version", e))
    }

    fn sqlite_err(&self, what: &'static str, e: rusqlite::Error) -> DbError {
        if is_busy(&e) {
            return DbError::Busy { path: self.path.clone(), what, waited: self.busy_timeout };
        }
        DbError::sqlite(&self.path, what, e)
    }

    /// All agents (row 0, the manager, excluded), in id order, validated.
    pub fn read_agents(&self, metrics: &Metrics) -> Result<Vec<AgentRecord>, DbError> {
        let hint = self.last_len.get();
        let mut out = Vec::with_capacity((hint + hint / 16).min(self.max_rows));
        // Takes each record out of the reused chunk buffer: its strings move into the
        // list (no copy), and the slot starts afresh.
        self.visit_inner(metrics, |r| {
            out.push(std::mem::replace(r, AgentRecord::new(0, "", Status::Unknown)))
        })?;
        self.last_len.set(out.len());
        Ok(out)
    }

    /// Like [`read_agents`](Self::read_agents), without building the list: `f` sees
    /// each agent in id order, through one reused record (its strings keep their
    /// buffers from row to row, so a read allocates next to nothing). `f` runs between
    /// chunks, outside any read transaction, so it cannot hold up wazuh-db's writer.
    /// On an error, the agents already seen are not a complete list. Returns how many
    /// agents `f` saw.
    pub fn visit_agents(&self, metrics: &Metrics, mut f: impl FnMut(&AgentRecord)) -> Result<usize, DbError> {
        self.visit_inner(metrics, |r| f(r))
    }

    fn visit_inner(&self, metrics: &Metrics, mut f: impl FnMut(&mut AgentRecord)) -> Result<usize, DbError> {
        let mut fixes = Fixes::default();
        let result = self.visit_rows(&mut fixes, &mut f);
        // Counted even when the read failed half-way: those fixes happened.
        for (reason, n) in REASONS.iter().zip(fixes.0) {
            if n > 0 {
                metrics.rows_sanitized.get_or_create(&ReasonLabel { reason: (*reason).to_owned() }).inc_by(n);
            }
        }
        if let Ok(rows) = result
            && fixes.0.iter().any(|n| *n > 0)
        {
            tracing::debug!(
                path = %self.path.display(),
                rows,
                too_long = fixes.0[TOO_LONG],
                control_chars = fixes.0[CONTROL_CHARS],
                invalid_utf8 = fixes.0[INVALID_UTF8],
                bad_time = fixes.0[BAD_TIME],
                unknown_status = fixes.0[UNKNOWN_STATUS],
                bad_integer = fixes.0[BAD_INTEGER],
                missing_name = fixes.0[MISSING_NAME],
                "sanitized agent rows"
            );
        }
        result
    }

    fn visit_rows(&self, fixes: &mut Fixes, f: &mut impl FnMut(&mut AgentRecord)) -> Result<usize, DbError> {
        let mut stmt =
            self.conn.prepare_cached(&self.sql).map_err(|e| self.sqlite_err("prepare SELECT", e))?;
        // One chunk of records, reused for every chunk.
        let mut buf: Vec<AgentRecord> = Vec::new();
        let (mut total, mut last) = (0usize, i64::MIN);
        loop {
            let (mut seen, mut filled, start) = (0usize, 0usize, last);
            {
                // One statement = one read transaction: the shared lock is released
                // when `rows` is dropped (the statement is reset) at the end of the chunk.
                let mut rows = stmt.query([last]).map_err(|e| self.sqlite_err("read agents", e))?;
                while let Some(row) = rows.next().map_err(|e| self.sqlite_err("read agents", e))? {
                    seen += 1;
                    if filled == buf.len() {
                        buf.push(AgentRecord::new(0, "", Status::Unknown));
                    }
                    if self.fill(row, &mut buf[filled], fixes)? {
                        last = last.max(buf[filled].id);
                        filled += 1;
                    }
                }
            }
            if total + filled > self.max_rows {
                return Err(DbError::TooManyRows { path: self.path.clone(), max: self.max_rows });
            }
            buf[..filled].iter_mut().for_each(&mut *f);
            total += filled;
            // A short chunk is the end. So is a full one that did not advance: only
            // possible in a non-rowid table whose ids are not integers.
            if seen < CHUNK_ROWS || last == start {
                return Ok(total);
            }
        }
    }

    /// Validates one row into `rec` (reusing its buffers). `false` when the row has
    /// no integer id to publish under (only a hand-made, non-rowid table can hold one).
    fn fill(
        &self,
        row: &rusqlite::Row<'_>,
        rec: &mut AgentRecord,
        fixes: &mut Fixes,
    ) -> Result<bool, DbError> {
        let mut has_id = false;
        rec.status = Status::Unknown;
        rec.raw_status = None;
        for (i, field) in self.fields.iter().enumerate() {
            let v = row.get_ref(i).map_err(|e| self.sqlite_err("read agents", e))?;
            match field {
                Field::Id => match integer(v) {
                    Some(id) => {
                        rec.id = id;
                        has_id = true;
                    }
                    None => fixes.add(BAD_INTEGER),
                },
                Field::Name => {
                    if !text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.name) {
                        rec.name.clear();
                        fixes.add(MISSING_NAME);
                    }
                }
                Field::Ip => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.ip),
                Field::RegisterIp => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.register_ip),
                Field::OsName => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.os_name),
                Field::OsVersion => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.os_version),
                Field::OsPlatform => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.os_platform),
                Field::OsArch => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.os_arch),
                Field::OsType => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.os_type),
                Field::Version => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.version),
                Field::NodeName => opt_text_into(v, MAX_TEXT_CHARS, fixes, &mut rec.node_name),
                Field::DateAdd => rec.date_add = epoch(v, fixes),
                Field::LastKeepalive => rec.last_keepalive = epoch(v, fixes),
                Field::Groups => opt_text_into(v, MAX_GROUPS_CHARS, fixes, &mut rec.groups),
                Field::ConnectionStatus => {
                    // Known values are matched on the raw bytes: no copy for them.
                    rec.status = match v {
                        ValueRef::Text(b) => Status::from_db(std::str::from_utf8(b).ok()),
                        _ => Status::Unknown,
                    };
                    if rec.status == Status::Unknown {
                        fixes.add(UNKNOWN_STATUS);
                        rec.raw_status = text(v, MAX_TEXT_CHARS, fixes);
                    }
                }
                Field::DisconnectionTime => rec.disconnection_time = epoch(v, fixes),
                Field::StatusCode => {
                    rec.status_code = integer(v);
                    if rec.status_code.is_none() && v != ValueRef::Null {
                        fixes.add(BAD_INTEGER);
                    }
                }
            }
        }
        if !self.fields.contains(&Field::ConnectionStatus) {
            // A pre-4.2 table without connection_status: nothing to publish but Unknown.
            fixes.add(UNKNOWN_STATUS);
        }
        Ok(has_id && rec.id != 0)
    }

    /// Reopens when the file at the path is no longer the one opened (Wazuh restored
    /// or replaced `global.db`), and re-reads the columns when the schema changed in
    /// place (an upgrade). `Ok(true)` when either happened.
    pub fn reopen_if_replaced(&mut self) -> Result<bool, DbError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| DbError::io(&self.path, "stat", e))?;
        if (meta.dev(), meta.ino()) != self.file_id {
            let fresh = WazuhDb::open(&self.path, self.busy_timeout)?;
            tracing::info!(path = %self.path.display(), flavor = fresh.flavor.as_str(), "database file replaced: reopened");
            *self = fresh;
            return Ok(true);
        }
        let schema_version: i64 = self
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(|e| self.sqlite_err("read schema version", e))?;
        if schema_version != self.schema_version {
            self.load_columns()?;
            tracing::info!(path = %self.path.display(), flavor = self.flavor.as_str(), "database schema changed: columns re-read");
            return Ok(true);
        }
        Ok(false)
    }
}

/// An integer from INTEGER, whole REAL or decimal TEXT; anything else is `None`.
fn integer(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Epoch seconds in [0, MAX_EPOCH]; NULL is `None` silently, anything else odd is
/// `None` and counted.
fn epoch(v: ValueRef<'_>, fixes: &mut Fixes) -> Option<i64> {
    if v == ValueRef::Null {
        return None;
    }
    match integer(v) {
        Some(t) if (0..=MAX_EPOCH).contains(&t) => Some(t),
        _ => {
            fixes.add(BAD_TIME);
            None
        }
    }
}

/// A text of any storage class: NULL is `None`; numbers are written out; bytes are
/// decoded lossily, stripped of control characters and cut to `max` characters.
fn text(v: ValueRef<'_>, max: usize, fixes: &mut Fixes) -> Option<String> {
    let mut s = String::new();
    text_into(v, max, fixes, &mut s).then_some(s)
}

/// [`text`] into an optional buffer, keeping its allocation when there is one.
fn opt_text_into(v: ValueRef<'_>, max: usize, fixes: &mut Fixes, dst: &mut Option<String>) {
    match dst {
        Some(s) => {
            if !text_into(v, max, fixes, s) {
                *dst = None;
            }
        }
        None => *dst = text(v, max, fixes),
    }
}

/// [`text`] into `out` (cleared first); `false` for NULL.
fn text_into(v: ValueRef<'_>, max: usize, fixes: &mut Fixes, out: &mut String) -> bool {
    use std::fmt::Write;
    out.clear();
    let bytes = match v {
        ValueRef::Null => return false,
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
            return true;
        }
        ValueRef::Real(f) => {
            let _ = write!(out, "{f}");
            return true;
        }
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
    };
    // Fast path (nearly every value): short printable ASCII is kept as is.
    // (A fold without early exit: the compiler vectorizes it.)
    if bytes.len() <= max
        && bytes.iter().fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b))
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        out.push_str(s);
        return true;
    }
    clean_text(bytes, max, fixes, out);
    true
}

/// The slow path of [`text_into`]: walks the bytes once, stopping at `max` kept
/// characters, so a 10 MB value costs no 10 MB allocation.
fn clean_text(bytes: &[u8], max: usize, fixes: &mut Fixes, out: &mut String) {
    let mut kept = 0usize;
    let (mut invalid, mut control, mut long) = (false, false, false);
    'chunks: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                control = true;
                continue;
            }
            if kept == max {
                long = true;
                break 'chunks;
            }
            out.push(c);
            kept += 1;
        }
        if !chunk.invalid().is_empty() {
            invalid = true;
            if kept == max {
                long = true;
                break;
            }
            out.push(char::REPLACEMENT_CHARACTER);
            kept += 1;
        }
    }
    if invalid {
        fixes.add(INVALID_UTF8);
    }
    if control {
        fixes.add(CONTROL_CHARS);
    }
    if long {
        fixes.add(TOO_LONG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_never_names_internal_key() {
        let all = cols(&[
            "id",
            "name",
            "ip",
            "register_ip",
            "internal_key",
            "os_name",
            "os_codename",
            "node_name",
            "group",
            "connection_status",
            "status_code",
        ]);
        let (sql, fields) = build_select(&all);
        assert!(!sql.contains("internal_key"), "{sql}");
        assert!(!sql.contains('*'), "{sql}");
        assert!(sql.contains("\"group\""), "{sql}");
        assert!(sql.contains("WHERE id > ?1 AND id <> 0 ORDER BY id LIMIT 500"), "{sql}");
        assert_eq!(fields.len(), 9);
    }

    #[test]
    fn select_lists_only_columns_that_exist() {
        let (sql, fields) = build_select(&cols(&["id", "name", "os_type", "connection_status"]));
        assert_eq!(fields, vec![Field::Id, Field::Name, Field::OsType, Field::ConnectionStatus]);
        assert!(!sql.contains("node_name"));
    }

    #[test]
    fn flavor_detection() {
        let v4 = cols(&["id", "name", "os_codename", "node_name"]);
        let v5_official = cols(&["id", "name", "os_type", "node_name"]);
        let v5_issue = cols(&["id", "name", "os_type"]);
        assert_eq!(SchemaFlavor::detect(&v4), SchemaFlavor::V4);
        assert_eq!(SchemaFlavor::detect(&v5_official), SchemaFlavor::V5);
        assert_eq!(SchemaFlavor::detect(&v5_issue), SchemaFlavor::V5);
        assert_eq!(SchemaFlavor::V4.as_str(), "4.x");
        assert_eq!(SchemaFlavor::V5.as_str(), "5.x");
    }

    #[test]
    fn text_cleaning() {
        let mut f = Fixes::default();
        assert_eq!(text(ValueRef::Text(b"web-01"), 256, &mut f).as_deref(), Some("web-01"));
        assert_eq!(f.0, [0; 7]);
        assert_eq!(text(ValueRef::Text(b"a\x1b[31mb\n"), 256, &mut f).as_deref(), Some("a[31mb"));
        assert_eq!(f.0[CONTROL_CHARS], 1);
        assert_eq!(text(ValueRef::Blob(b"x\xffy"), 256, &mut f).as_deref(), Some("x\u{fffd}y"));
        assert_eq!(f.0[INVALID_UTF8], 1);
        let long = "é".repeat(300);
        let got = text(ValueRef::Text(long.as_bytes()), 256, &mut f).unwrap();
        assert_eq!(got.chars().count(), 256);
        assert_eq!(f.0[TOO_LONG], 1);
        // Exactly at the limit is not "too long".
        let exact = "é".repeat(256);
        assert_eq!(text(ValueRef::Text(exact.as_bytes()), 256, &mut f).unwrap(), exact);
        assert_eq!(f.0[TOO_LONG], 1);
        assert_eq!(text(ValueRef::Integer(42), 256, &mut f).as_deref(), Some("42"));
        assert_eq!(text(ValueRef::Null, 256, &mut f), None);
        // C1 control characters (U+0080..U+009F) are control characters too.
        assert_eq!(text(ValueRef::Text("a\u{85}b".as_bytes()), 256, &mut f).as_deref(), Some("ab"));
        assert_eq!(f.0[CONTROL_CHARS], 2);
    }

    #[test]
    fn epoch_validation() {
        let mut f = Fixes::default();
        assert_eq!(epoch(ValueRef::Integer(1_716_897_300), &mut f), Some(1_716_897_300));
        assert_eq!(epoch(ValueRef::Integer(MAX_EPOCH), &mut f), Some(MAX_EPOCH));
        assert_eq!(epoch(ValueRef::Text(b" 1716897300 "), &mut f), Some(1_716_897_300));
        assert_eq!(epoch(ValueRef::Real(1_716_897_300.0), &mut f), Some(1_716_897_300));
        assert_eq!(epoch(ValueRef::Null, &mut f), None);
        assert_eq!(f.0[BAD_TIME], 0);
        assert_eq!(epoch(ValueRef::Integer(-1), &mut f), None);
        assert_eq!(epoch(ValueRef::Integer(MAX_EPOCH + 1), &mut f), None);
        assert_eq!(epoch(ValueRef::Text(b"yesterday"), &mut f), None);
        assert_eq!(epoch(ValueRef::Real(1.5), &mut f), None);
        assert_eq!(epoch(ValueRef::Blob(b"\x01\x02"), &mut f), None);
        assert_eq!(f.0[BAD_TIME], 5);
    }

    #[test]
    fn reader_connection_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        crate::fixture::create_fixture(&path, 5, SchemaFlavor::V4, 1).unwrap();
        let before = std::fs::read(&path).unwrap();
        let db = WazuhDb::open(&path, Duration::from_millis(100)).unwrap();
        let err = db.conn.execute("UPDATE agent SET name = 'pwned' WHERE id = 1", []).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
        let err = db.conn.execute_batch("CREATE TABLE x (a)").unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
        drop(db);
        assert_eq!(std::fs::read(&path).unwrap(), before, "the reader changed the file");
        assert!(!dir.path().join("global.db-journal").exists());
    }
}
