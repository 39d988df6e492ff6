//! Mutates a `global.db` the way wazuh-db does, for demos and tests: a read-write
//! connection with a rollback journal (`journal_mode=DELETE`), NO busy timeout, and
//! SQLITE_BUSY retried in a tight loop; changes committed in batches.
//!
//! The time a write spends waiting for the lock is recorded: the bridge's promise is
//! that its reads never make this writer wait long, let alone fail. A write that does
//! not get the lock within `max_lock_wait` is a failure (counted, never a panic).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

use crate::db::{DbError, SchemaFlavor, agent_columns, is_busy};
use crate::fixture::{VERSIONS, agent_ip, group_hash, now_epoch, random_groups, random_key};
use crate::model::Status;

/// Counters of a simulator (cumulative over its life).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub commits: u64,
    pub changes: u64,
    /// Keepalive updates written (not changes: the bridge publishes nothing for them).
    pub keepalives: u64,
    /// SQLITE_BUSY results retried.
    pub busy_retries: u64,
    /// Longest time one statement (usually COMMIT) waited for the lock.
    pub max_lock_wait: Duration,
    /// Writes (or whole batches in `run`) that failed: lock not obtained within
    /// `max_lock_wait`, or any other SQLite error.
    pub failures: u64,
}

/// What a logged change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// `previous` / `new` are [`Status::as_str`] forms (`Active`, `Disconnected`, ...).
    Status,
    /// `new` is the name.
    Registered,
    /// `previous` is the name.
    Removed,
    Ip,
    Version,
    /// Comma-separated, as stored in the `group` column.
    Groups,
    Name,
}

/// One applied change, as written to the JSON-lines log (one object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// 1-based number of the `run` commit that carried it.
    pub commit: u64,
    pub agent_id: i64,
    pub what: ChangeKind,
    pub previous: Option<String>,
    pub new: Option<String>,
    /// Epoch seconds written to the row (keepalive / disconnection time).
    pub time: i64,
}

/// Options of [`Simulator::run`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// One transaction per interval (wazuh-db: 10 to 60 s).
    pub commit_interval: Duration,
    /// Random changes per transaction (besides keepalives).
    pub changes_per_commit: usize,
    /// Share of agents sent a keepalive per commit (only active ones are updated).
    pub keepalive_share: f64,
    pub seed: u64,
    /// Append every applied change here as a JSON line.
    pub log: Option<PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many commits.
    pub max_commits: Option<u64>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(10),
            changes_per_commit: 5,
            keepalive_share: 0.2,
            seed: 0,
            log: None,
            duration: None,
            max_commits: None,
        }
    }
}

/// The fields a change reads before writing (its `previous`).
struct Current {
    name: String,
    ip: Option<String>,
    version: Option<String>,
    groups: Option<String>,
    status: String,
}

pub struct Simulator {
    conn: Connection,
    path: PathBuf,
    flavor: SchemaFlavor,
    max_lock_wait: Duration,
    in_tx: bool,
    /// Highest id ever registered here: a removed agent's id is never reused, so an
    /// observer never mistakes a new agent for an old one.
    last_id: i64,
    rng: StdRng,
    stats: SimStats,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("path", &self.path)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Opens an existing `global.db` read-write, like wazuh-db: rollback journal,
    /// foreign keys on, and no busy timeout (busy is retried here, in a tight loop).
    pub fn open(path: &Path) -> Result<Self, DbError> {
        if !path.is_file() {
            return Err(DbError::NotFound { path: path.to_owned() });
        }
        let err = |what| move |e| DbError::sqlite(path, what, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err("open read-write"))?;
        // rusqlite installs a 5 s busy handler by default; wazuh-db has none.
        conn.busy_timeout(Duration::ZERO).map_err(err("clear busy timeout"))?;
        let _: String =
            conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).map_err(err("journal mode"))?;
        conn.execute_batch("PRAGMA foreign_keys=ON;").map_err(err("foreign keys"))?;
        let columns = agent_columns(&conn).map_err(err("read table_info(agent)"))?;
        if columns.is_empty() {
            return Err(DbError::NoAgentTable { path: path.to_owned() });
        }
        let last_id: i64 = conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM agent", [], |r| r.get(0))
            .map_err(err("max id"))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            flavor: SchemaFlavor::detect(&columns),
            max_lock_wait: Duration::from_secs(1),
            in_tx: false,
            last_id,
            rng: StdRng::from_os_rng(),
            stats: SimStats::default(),
        })
    }

    /// How long a write may wait for the lock before it counts as a failure (1 s).
    pub fn set_max_lock_wait(&mut self, d: Duration) {
        self.max_lock_wait = d;
    }

    pub fn flavor(&self) -> SchemaFlavor {
        self.flavor
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Runs `f` until it does not return SQLITE_BUSY, as wazuh-db does, giving up
    /// (a failure) after `max_lock_wait`.
    fn retry<T>(
        &mut self,
        what: &'static str,
        mut f: impl FnMut(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut first_busy: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            match f(&self.conn) {
                Ok(v) => {
                    // The wait ends when the successful attempt starts: its own work
                    // (for COMMIT, writing pages and fsync) is not waiting for a lock.
                    if let Some(t) = first_busy {
                        self.stats.max_lock_wait = self.stats.max_lock_wait.max(attempt - t);
                    }
                    return Ok(v);
                }
                Err(e) if is_busy(&e) => {
                    let waited = first_busy.get_or_insert_with(Instant::now).elapsed();
                    if waited >= self.max_lock_wait {
                        self.stats.max_lock_wait = self.stats.max_lock_wait.max(waited);
                        self.stats.failures += 1;
                        tracing::warn!(path = %self.path.display(), what, ?waited, "simulator write gave up on the lock");
                        return Err(DbError::Busy { path: self.path.clone(), what, waited });
                    }
                    self.stats.busy_retries += 1;
                    // Tight, but let a reader on the same core finish its scan.
                    std::thread::yield_now();
                }
                Err(e) => {
                    self.stats.failures += 1;
                    return Err(DbError::sqlite(&self.path, what, e));
                }
            }
        }
    }

    /// Starts a batch: the following changes go in one transaction until `commit`.
    pub fn begin(&mut self) -> Result<(), DbError> {
        if self.in_tx {
            return Ok(());
        }
        self.retry("begin", |c| c.execute_batch("BEGIN"))?;
        self.in_tx = true;
        Ok(())
    }

    /// Commits the batch; on failure it is rolled back (nothing half-applied).
    pub fn commit(&mut self) -> Result<(), DbError> {
        if !self.in_tx {
            return Ok(());
        }
        let r = self.retry("commit", |c| c.execute_batch("COMMIT"));
        if r.is_err() {
            self.rollback();
        }
        self.in_tx = false;
        r
    }

    /// Abandons the batch.
    pub fn rollback(&mut self) {
        if self.in_tx || !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.in_tx = false;
    }

    fn exec(
        &mut self,
        what: &'static str,
        sql: &str,
        p: impl rusqlite::Params + Clone,
    ) -> Result<usize, DbError> {
        self.retry(what, |c| c.prepare_cached(sql)?.execute(p.clone()))
    }

    /// Sets `connection_status` with the fields wazuh-db sets along with it.
    /// `Ok(false)` when there is no such agent.
    pub fn set_status(&mut self, id: i64, status: Status) -> Result<bool, DbError> {
        self.set_status_at(id, status, now_epoch())
    }

    fn set_status_at(&mut self, id: i64, status: Status, now: i64) -> Result<bool, DbError> {
        let n = match status {
            Status::Active => self.exec(
                "set active",
                "UPDATE agent SET connection_status = 'active', last_keepalive = ?2, disconnection_time = 0, \
                 status_code = 0, sync_status = 'syncreq' WHERE id = ?1",
                params![id, now],
            )?,
            // 4: no keepalive received (wazuh-db's disconnect-agents sweep).
            Status::Disconnected => self.exec(
                "set disconnected",
                "UPDATE agent SET connection_status = 'disconnected', disconnection_time = ?2, status_code = 4, \
                 sync_status = 'syncreq' WHERE id = ?1",
                params![id, now],
            )?,
            // The agent sent its startup message and waits for the manager's ack.
            Status::Pending => self.exec(
                "set pending",
                "UPDATE agent SET connection_status = 'pending', last_keepalive = ?2, disconnection_time = 0, \
                 status_code = 0, sync_status = 'syncreq' WHERE id = ?1",
                params![id, now],
            )?,
            Status::NeverConnected => self.exec(
                "set never_connected",
                "UPDATE agent SET connection_status = 'never_connected', last_keepalive = NULL, \
                 disconnection_time = 0, status_code = 0, sync_status = 'syncreq' WHERE id = ?1",
                params![id],
            )?,
            // Not a value wazuh-db writes; the CHECK constraint refuses it.
            Status::Unknown => self.exec(
                "set unknown",
                "UPDATE agent SET connection_status = 'unknown' WHERE id = ?1",
                params![id],
            )?,
        };
        Ok(n > 0)
    }

    /// A keepalive from each of `ids`: `last_keepalive = now`. Returns rows updated.
    pub fn keepalive(&mut self, ids: &[i64]) -> Result<usize, DbError> {
        let now = now_epoch();
        let mut n = 0;
        for &id in ids {
            n += self.keepalive_at(id, now, false)?;
        }
        Ok(n)
    }

    fn keepalive_at(&mut self, id: i64, now: i64, only_active: bool) -> Result<usize, DbError> {
        let sql = if only_active {
            "UPDATE agent SET last_keepalive = ?2, sync_status = 'syncreq_keepalive' \
             WHERE id = ?1 AND connection_status = 'active'"
        } else {
            "UPDATE agent SET last_keepalive = ?2, sync_status = 'syncreq_keepalive' WHERE id = ?1"
        };
        let n = self.exec("keepalive", sql, params![id, now])?;
        self.stats.keepalives += n as u64;
        Ok(n)
    }

    /// Registers a new agent (as wazuh-authd does): the next id, never connected, in
    /// group `default`, with a fresh random key. Returns its id.
    pub fn register(&mut self, name: &str, ip: &str) -> Result<i64, DbError> {
        self.register_at(name, ip, now_epoch())
    }

    fn next_id(&mut self) -> Result<i64, DbError> {
        let max: i64 = self.retry("max id", |c| {
            c.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM agent")?.query_row([], |r| r.get(0))
        })?;
        Ok(max.max(self.last_id) + 1)
    }

    fn register_at(&mut self, name: &str, ip: &str, now: i64) -> Result<i64, DbError> {
        let id = self.next_id()?;
        let key = random_key(&mut self.rng);
        let hash = group_hash("default");
        self.exec(
            "register",
            "INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, `group`, group_hash, \
             connection_status) VALUES (?1, ?2, ?3, 'any', ?4, ?5, 'default', ?6, 'never_connected')",
            params![id, name, ip, key, now, hash],
        )?;
        self.exec(
            "register belongs",
            "INSERT OR IGNORE INTO belongs (id_agent, id_group, priority) SELECT ?1, id, 0 FROM `group` WHERE name = 'default'",
            params![id],
        )?;
        self.last_id = id;
        Ok(id)
    }

    /// Removes an agent (row 0, the manager, is never removed). `Ok(false)` if absent.
    pub fn remove(&mut self, id: i64) -> Result<bool, DbError> {
        if id == 0 {
            return Ok(false);
        }
        // belongs and labels follow through ON DELETE CASCADE (foreign keys are on).
        Ok(self.exec("remove", "DELETE FROM agent WHERE id = ?1", params![id])? > 0)
    }

    pub fn set_ip(&mut self, id: i64, ip: &str) -> Result<bool, DbError> {
        Ok(self.exec(
            "set ip",
            "UPDATE agent SET ip = ?2, sync_status = 'syncreq' WHERE id = ?1",
            params![id, ip],
        )? > 0)
    }

    pub fn set_version(&mut self, id: i64, version: &str) -> Result<bool, DbError> {
        let sql = "UPDATE agent SET version = ?2, sync_status = 'syncreq' WHERE id = ?1";
        Ok(self.exec("set version", sql, params![id, version])? > 0)
    }

    /// Sets the comma-separated group list (column, hash and `belongs` rows).
    pub fn set_groups(&mut self, id: i64, groups: &str) -> Result<bool, DbError> {
        let hash = group_hash(groups);
        let sql =
            "UPDATE agent SET `group` = ?2, group_hash = ?3, group_sync_status = 'syncreq' WHERE id = ?1";
        if self.exec("set groups", sql, params![id, groups, hash])? == 0 {
            return Ok(false);
        }
        self.exec("set groups", "DELETE FROM belongs WHERE id_agent = ?1", params![id])?;
        for (priority, g) in groups.split(',').enumerate() {
            self.exec("set groups", "INSERT OR IGNORE INTO `group` (name) VALUES (?1)", params![g])?;
            self.exec(
                "set groups",
                "INSERT OR IGNORE INTO belongs (id_agent, id_group, priority) SELECT ?1, id, ?3 FROM `group` WHERE name = ?2",
                params![id, g, priority as i64],
            )?;
        }
        Ok(true)
    }

    pub fn rename(&mut self, id: i64, name: &str) -> Result<bool, DbError> {
        Ok(self.exec(
            "rename",
            "UPDATE agent SET name = ?2, sync_status = 'syncreq' WHERE id = ?1",
            params![id, name],
        )? > 0)
    }

    fn current(&mut self, id: i64) -> Result<Option<Current>, DbError> {
        self.retry("read agent", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, ip, version, `group`, connection_status FROM agent WHERE id = ?1",
            )?;
            let mut rows = stmt.query(params![id])?;
            match rows.next()? {
                None => Ok(None),
                Some(r) => Ok(Some(Current {
                    name: r.get(0)?,
                    ip: r.get(1)?,
                    version: r.get(2)?,
                    groups: r.get(3)?,
                    status: r.get(4)?,
                })),
            }
        })
    }

    fn agent_ids(&mut self) -> Result<Vec<i64>, DbError> {
        self.retry("list agents", |c| {
            c.prepare_cached("SELECT id FROM agent WHERE id <> 0 ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    /// Commits a batch of keepalives and random changes every `commit_interval` until
    /// `stop` is set or `duration` / `max_commits` is reached. Each applied change is
    /// logged once its commit succeeded (`run_with` also hands it to a callback).
    /// Errs only when it cannot start (log file, agent list); a failed batch is
    /// rolled back, counted in `failures`, and the loop goes on.
    pub fn run(&mut self, opts: &SimOptions, stop: &AtomicBool) -> Result<SimStats, DbError> {
        self.run_with(opts, stop, |_| {})
    }

    /// [`run`](Self::run), calling `on_change` for each change once committed.
    pub fn run_with(
        &mut self,
        opts: &SimOptions,
        stop: &AtomicBool,
        mut on_change: impl FnMut(&Change),
    ) -> Result<SimStats, DbError> {
        let mut log = match &opts.log {
            Some(p) => Some(BufWriter::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| DbError::io(p, "open change log", e))?,
            )),
            None => None,
        };
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let mut ids = self.agent_ids()?;
        let started = Instant::now();
        let mut next = started + opts.commit_interval;
        let mut commit_no = 0u64;
        loop {
            // Wait for the next commit, waking often enough to honour `stop`.
            loop {
                let now = Instant::now();
                if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| now - started >= d) {
                    return Ok(self.stats.clone());
                }
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(20)));
            }
            // No catch-up burst after a slow batch: the next one is an interval away.
            next = (next + opts.commit_interval).max(Instant::now());
            commit_no += 1;
            match self.one_batch(&mut rng, &mut ids, opts, commit_no) {
                Ok(changes) => {
                    self.stats.commits += 1;
                    self.stats.changes += changes.len() as u64;
                    if let Some(w) = log.as_mut() {
                        let written: std::io::Result<()> = changes.iter().try_for_each(|c| {
                            serde_json::to_writer(&mut *w, c)?;
                            w.write_all(b"\n")
                        });
                        if let Err(e) = written.and_then(|_| w.flush()) {
                            tracing::error!(error = %e, "cannot write the simulator change log");
                        }
                    }
                    changes.iter().for_each(&mut on_change);
                }
                Err(e) => {
                    tracing::warn!(error = %e, commit = commit_no, "simulator batch failed and was rolled back");
                    self.rollback();
                    // The batch may have registered or removed agents before failing.
                    ids = self.agent_ids()?;
                }
            }
            if opts.max_commits.is_some_and(|m| commit_no >= m) {
                return Ok(self.stats.clone());
            }
        }
    }

    /// One transaction: keepalives, then `changes_per_commit` changes on distinct agents.
    fn one_batch(
        &mut self,
        rng: &mut StdRng,
        ids: &mut Vec<i64>,
        opts: &SimOptions,
        commit_no: u64,
    ) -> Result<Vec<Change>, DbError> {
        self.begin()?;
        let now = now_epoch();
        let keepalives = (ids.len() as f64 * opts.keepalive_share.clamp(0.0, 1.0)).round() as usize;
        for _ in 0..keepalives {
            let id = ids[rng.random_range(0..ids.len())];
            self.keepalive_at(id, now, true)?;
        }
        // An agent changed twice in one commit would show only its net change to an
        // observer; one change per agent per commit keeps the log checkable.
        let mut touched = HashSet::new();
        let mut out = Vec::with_capacity(opts.changes_per_commit);
        let change = |agent_id, what, previous, new| Change {
            commit: commit_no,
            agent_id,
            what,
            previous,
            new,
            time: now,
        };
        for _ in 0..opts.changes_per_commit {
            let roll = rng.random_range(0..100u32);
            if roll < 8 || ids.is_empty() {
                let id = self.next_id()?;
                let name = format!("sim-{id:06}");
                let id = self.register_at(&name, &agent_ip(id), now)?;
                ids.push(id);
                touched.insert(id);
                out.push(change(id, ChangeKind::Registered, None, Some(name)));
                continue;
            }
            let Some(id) =
                (0..20).map(|_| ids[rng.random_range(0..ids.len())]).find(|id| !touched.contains(id))
            else {
                continue;
            };
            let Some(cur) = self.current(id)? else { continue };
            touched.insert(id);
            match roll {
                8..15 => {
                    self.remove(id)?;
                    ids.retain(|x| *x != id);
                    out.push(change(id, ChangeKind::Removed, Some(cur.name), None));
                }
                15..65 => {
                    let from = Status::from_db(Some(&cur.status));
                    let to = match from {
                        Status::Active => Status::Disconnected,
                        Status::NeverConnected if rng.random_bool(0.5) => Status::Pending,
                        _ => Status::Active,
                    };
                    self.set_status_at(id, to, now)?;
                    out.push(change(
                        id,
                        ChangeKind::Status,
                        Some(from.as_str().into()),
                        Some(to.as_str().into()),
                    ));
                }
                65..77 => {
                    let ip = format!(
                        "172.{}.{}.{}",
                        rng.random_range(16..32),
                        rng.random::<u8>(),
                        rng.random_range(1..255)
                    );
                    self.set_ip(id, &ip)?;
                    out.push(change(id, ChangeKind::Ip, cur.ip, Some(ip)));
                }
                77..87 => {
                    let others: Vec<&str> =
                        VERSIONS.iter().copied().filter(|v| Some(*v) != cur.version.as_deref()).collect();
                    let v = others[rng.random_range(0..others.len())];
                    self.set_version(id, v)?;
                    out.push(change(id, ChangeKind::Version, cur.version, Some(v.into())));
                }
                87..95 => {
                    let Some(groups) = (0..10)
                        .map(|_| random_groups(rng))
                        .find(|g| Some(g.as_str()) != cur.groups.as_deref())
                    else {
                        continue;
                    };
                    self.set_groups(id, &groups)?;
                    out.push(change(id, ChangeKind::Groups, cur.groups, Some(groups)));
                }
                _ => {
                    let name = format!("renamed-{id:06}-{commit_no}");
                    self.rename(id, &name)?;
                    out.push(change(id, ChangeKind::Name, Some(cur.name), Some(name)));
                }
            }
        }
        self.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::create_fixture;

    fn row(path: &Path, id: i64) -> (String, Option<i64>, i64, i64) {
        let c = Connection::open(path).unwrap();
        c.query_row(
            "SELECT connection_status, last_keepalive, disconnection_time, status_code FROM agent WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    }

    #[test]
    fn status_changes_set_wazuh_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 10, SchemaFlavor::V4, 5).unwrap();
        let mut sim = Simulator::open(&path).unwrap();
        let t0 = now_epoch();
        assert!(sim.set_status(3, Status::Disconnected).unwrap());
        let (s, _, dt, code) = row(&path, 3);
        assert_eq!((s.as_str(), code), ("disconnected", 4));
        assert!(dt >= t0);
        assert!(sim.set_status(3, Status::Active).unwrap());
        let (s, ka, dt, code) = row(&path, 3);
        assert_eq!((s.as_str(), dt, code), ("active", 0, 0));
        assert!(ka.unwrap() >= t0);
        assert!(sim.set_status(3, Status::NeverConnected).unwrap());
        assert_eq!(row(&path, 3), ("never_connected".into(), None, 0, 0));
        assert!(!sim.set_status(999, Status::Active).unwrap(), "no agent 999");
        // wazuh-db's CHECK constraint refuses a status it does not define: an error, no panic.
        assert!(sim.set_status(3, Status::Unknown).is_err());
        assert_eq!(sim.stats().failures, 1);
    }

    #[test]
    fn register_remove_and_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 10, SchemaFlavor::V5, 5).unwrap();
        let mut sim = Simulator::open(&path).unwrap();
        assert_eq!(sim.flavor(), SchemaFlavor::V5);
        sim.begin().unwrap();
        let id = sim.register("new-agent", "192.0.2.7").unwrap();
        assert_eq!(id, 11);
        assert!(sim.remove(11).unwrap());
        // Ids are not reused, even after the highest one was removed.
        assert_eq!(sim.register("newer", "192.0.2.8").unwrap(), 12);
        assert!(sim.set_groups(12, "default,linux").unwrap());
        // Not visible to another connection before commit.
        let other = Connection::open(&path).unwrap();
        let n: i64 = other.query_row("SELECT COUNT(*) FROM agent WHERE id = 12", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        sim.commit().unwrap();
        let (name, status, groups, belongs): (String, String, String, i64) = other
            .query_row(
                "SELECT name, connection_status, `group`, (SELECT COUNT(*) FROM belongs WHERE id_agent = 12) \
                 FROM agent WHERE id = 12",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (name.as_str(), status.as_str(), groups.as_str(), belongs),
            ("newer", "never_connected", "default,linux", 2)
        );
        let key: String =
            other.query_row("SELECT internal_key FROM agent WHERE id = 12", [], |r| r.get(0)).unwrap();
        assert_eq!(key.len(), 64);
        assert!(!sim.remove(0).unwrap(), "the manager row is never removed");
    }

    #[test]
    fn commit_gives_up_after_max_lock_wait_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 10, SchemaFlavor::V4, 5).unwrap();
        // A reader that keeps its read transaction open blocks every commit.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM agent;").unwrap();
        let mut sim = Simulator::open(&path).unwrap();
        sim.set_max_lock_wait(Duration::from_millis(50));
        sim.begin().unwrap();
        sim.rename(1, "renamed-in-a-failed-batch").unwrap();
        let t = Instant::now();
        let err = sim.commit().unwrap_err();
        assert!(err.is_busy(), "{err}");
        assert!(t.elapsed() < Duration::from_secs(1));
        let s = sim.stats();
        assert_eq!(s.failures, 1);
        assert!(s.busy_retries > 0 && s.max_lock_wait >= Duration::from_millis(50), "{s:?}");
        reader.execute_batch("COMMIT").unwrap();
        // Rolled back: nothing half-applied, and the simulator works again.
        let name = |p: &Path| -> String {
            Connection::open(p)
                .unwrap()
                .query_row("SELECT name FROM agent WHERE id = 1", [], |r| r.get(0))
                .unwrap()
        };
        assert_ne!(name(&path), "renamed-in-a-failed-batch");
        sim.rename(1, "renamed-later").unwrap();
        assert_eq!(name(&path), "renamed-later");
    }
}
