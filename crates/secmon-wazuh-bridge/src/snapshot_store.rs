//! The last *published* snapshot of each manager node, on disk, so a restarted
//! bridge diffs the database against what subscribers were last told: it reports
//! what changed while it was down and does not re-announce the rest.
//!
//! File: `<state_dir>/snapshot-<manager_node>.json`, 0600 (it names every agent and
//! its address), one JSON object:
//! `{"format_version":1,"manager_node":..,"db_path":..,"saved_at":..,"agents":[[..], ...]}`,
//! each agent a positional array (see `DiskAgent` below): about 120 bytes per agent.
//! Saves are atomic (temp file in the same directory, fsync, rename, fsync of the
//! directory): after a crash the file is the old snapshot or the new one, never a mix.
//! Both directions stream through a 256 KiB buffer: no copy of the whole file in
//! memory (100,000 agents, release build: save ~80 ms, load ~160 ms).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::model::{AgentRecord, AgentState, Snapshot, Status};

/// Bump when the file layout or `AgentRecord`'s serialized form changes
/// incompatibly; an older file is then refused (and the bridge starts from a fresh
/// baseline) instead of being misread.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("manager node {0:?} cannot name a snapshot file (empty, '/', '..' or a NUL)")]
    BadNode(String),
    #[error("cannot read snapshot {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("snapshot {path} is corrupt ({source}); it will be replaced by a fresh baseline")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error(
        "snapshot {path} has format version {found}, this bridge reads version {FORMAT_VERSION}; \
         it will be replaced by a fresh baseline"
    )]
    WrongVersion { path: PathBuf, found: u32 },
    #[error("snapshot {path} belongs to manager node {found:?}, not {expected:?}")]
    WrongNode { path: PathBuf, expected: String, found: String },
    #[error("cannot write snapshot {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    path: PathBuf,
    tmp_path: PathBuf,
    manager_node: String,
    db_path: Option<PathBuf>,
}

impl SnapshotStore {
    /// The store of `manager_node`'s snapshot in `state_dir`. Node names are
    /// validated subject tokens already; this still refuses anything that could
    /// leave `state_dir` (`/`, `..`).
    pub fn new(state_dir: &Path, manager_node: &str) -> Result<Self, SnapshotError> {
        let n = manager_node;
        if n.is_empty() || n.contains('/') || n.contains('\0') || n.contains("..") {
            return Err(SnapshotError::BadNode(n.to_owned()));
        }
        Ok(Self {
            dir: state_dir.to_owned(),
            path: state_dir.join(format!("snapshot-{manager_node}.json")),
            // A fixed name (not per process): a leftover from a crash is replaced by the
            // next save instead of piling up. `load` never reads it.
            tmp_path: state_dir.join(format!(".snapshot-{manager_node}.json.tmp")),
            manager_node: manager_node.to_owned(),
            db_path: None,
        })
    }

    /// Records the database path in saved files (for whoever reads the file; a
    /// different path on load is logged, not refused: the database may have moved).
    pub fn with_db_path(mut self, db_path: &Path) -> Self {
        self.db_path = Some(db_path.to_owned());
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last saved snapshot; `None` when there is none yet. A corrupt file, one of
    /// another format version or of another node is an error: the caller logs it and
    /// starts from a fresh baseline (the next save replaces the file).
    pub fn load(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotError::Read { path: self.path.clone(), source }),
        };
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, file));
        let parsed = FileIn::deserialize(&mut de).and_then(|f| de.end().map(|()| f));
        let f = match parsed {
            Ok(f) => f,
            Err(source) => return Err(self.explain(source)),
        };
        if f.format_version != FORMAT_VERSION {
            return Err(SnapshotError::WrongVersion { path: self.path.clone(), found: f.format_version });
        }
        if f.manager_node != self.manager_node {
            return Err(SnapshotError::WrongNode {
                path: self.path.clone(),
                expected: self.manager_node.clone(),
                found: f.manager_node,
            });
        }
        if let (Some(ours), Some(theirs)) = (&self.db_path, &f.db_path)
            && ours != theirs
        {
            tracing::warn!(
                snapshot = %self.path.display(), saved_for = %theirs.display(), now = %ours.display(),
                "snapshot was saved for another database path; using it (same manager node)"
            );
        }
        Ok(Some(Snapshot { agents: f.agents.0 }))
    }

    /// A parse error may come from a file of another format version whose layout
    /// differs: look at its version alone to say so instead of "corrupt".
    fn explain(&self, source: serde_json::Error) -> SnapshotError {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        if source.is_io() {
            return SnapshotError::Read { path: self.path.clone(), source: source.into() };
        }
        let version = File::open(&self.path).ok().and_then(|f| {
            serde_json::from_reader::<_, VersionOnly>(BufReader::new(f)).ok().map(|v| v.format_version)
        });
        match version {
            Some(found) if found != FORMAT_VERSION => {
                SnapshotError::WrongVersion { path: self.path.clone(), found }
            }
            _ => SnapshotError::Corrupt { path: self.path.clone(), source },
        }
    }

    /// Replaces the saved snapshot atomically (see the module doc). Creates the state
    /// directory (0700) when missing.
    pub fn save(&self, s: &Snapshot) -> Result<(), SnapshotError> {
        let werr = |source| SnapshotError::Write { path: self.path.clone(), source };
        if !self.dir.as_os_str().is_empty() && !self.dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(werr)?;
        }
        // A leftover temp file may have other permissions; create_new below then
        // guarantees 0600 from the first byte.
        match std::fs::remove_file(&self.tmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(e)),
        }
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&self.tmp_path).map_err(werr)?;
        let out = FileOut {
            format_version: FORMAT_VERSION,
            manager_node: &self.manager_node,
            db_path: self.db_path.as_deref(),
            saved_at: crate::model::now_rfc3339(),
            agents: AgentsOut(&s.agents),
        };
        let result = (|| {
            let mut w = BufWriter::with_capacity(256 * 1024, &file);
            serde_json::to_writer(&mut w, &out).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
            w.flush()?;
            drop(w);
            file.sync_all()?;
            std::fs::rename(&self.tmp_path, &self.path)?;
            // The rename is durable only once the directory entry is on disk.
            let dir = if self.dir.as_os_str().is_empty() { Path::new(".") } else { &self.dir };
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        result.map_err(werr)
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    // First, so a reader (or a person with `head -c 100`) sees it at once.
    format_version: u32,
    manager_node: &'a str,
    db_path: Option<&'a Path>,
    saved_at: String,
    agents: AgentsOut<'a>,
}

/// One agent on disk, positional (no field names: half the bytes and half the
/// parsing of an object per agent):
/// `[id, status, last_keepalive, disconnection_time, date_add, status_code, name, ip,
///   version, groups, os_name, os_platform, generation]`.
/// Every field `AgentState` keeps must be here, or a restart would see it change on
/// every agent; the round-trip test (records with every field set) guards that.
type DiskAgent = (
    i64,
    Status,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    u64,
);

fn to_state(d: DiskAgent) -> AgentState {
    let (
        id,
        status,
        last_keepalive,
        disconnection_time,
        date_add,
        status_code,
        name,
        ip,
        version,
        groups,
        os_name,
        os_platform,
        generation,
    ) = d;
    let mut r = AgentRecord::new(id, &name, status);
    r.last_keepalive = last_keepalive;
    r.disconnection_time = disconnection_time;
    r.date_add = date_add;
    r.status_code = status_code;
    r.ip = ip;
    r.version = version;
    r.groups = groups;
    r.os_name = os_name;
    r.os_platform = os_platform;
    let mut a = AgentState::from_record(&r);
    a.generation = generation;
    a
}

/// The agents as a JSON array of [`DiskAgent`]s, in id order, written one by one.
struct AgentsOut<'a>(&'a [AgentState]);

impl Serialize for AgentsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| {
            (
                a.id,
                a.status,
                a.last_keepalive(),
                a.disconnection_time(),
                a.date_add(),
                a.status_code(),
                a.name(),
                a.ip(),
                a.version(),
                a.groups(),
                a.os_name(),
                a.os_platform(),
                a.generation,
            )
        }))
    }
}

#[derive(Deserialize)]
struct FileIn {
    format_version: u32,
    manager_node: String,
    #[serde(default)]
    db_path: Option<PathBuf>,
    #[allow(dead_code)] // informative, for people reading the file
    #[serde(default)]
    saved_at: Option<String>,
    agents: AgentsIn,
}

/// Deserializes the array record by record into what `Snapshot` requires: sorted by
/// id, ids unique, no row 0.
struct AgentsIn(Vec<AgentState>);

impl<'de> Deserialize<'de> for AgentsIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AgentsIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of agent records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AgentsIn, A::Error> {
                let mut agents = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(d) = seq.next_element::<DiskAgent>()? {
                    // Row 0 is the manager, never an agent (see `Snapshot`).
                    if d.0 != 0 {
                        agents.push(to_state(d));
                    }
                }
                // Saved in id order; sort anyway so a hand-edited file still works.
                if !agents.is_sorted_by_key(|a| a.id) {
                    agents.sort_by_key(|a| a.id);
                }
                if let Some(w) = agents.windows(2).find(|w| w[0].id == w[1].id) {
                    return Err(de::Error::custom(format_args!("agent id {} appears twice", w[0].id)));
                }
                agents.shrink_to_fit();
                Ok(AgentsIn(agents))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    fn record(id: i64) -> AgentRecord {
        let mut r = AgentRecord::new(id, &format!("agent-{id}"), Status::Active);
        r.ip = Some(format!("10.{}.{}.{}", id >> 16 & 255, id >> 8 & 255, id & 255));
        r.register_ip = Some("any".into());
        r.os_name = Some("Ubuntu".into());
        r.os_version = Some("22.04.4 LTS".into());
        r.os_platform = Some("ubuntu".into());
        r.os_arch = Some("x86_64".into());
        r.version = Some("Wazuh v4.8.0".into());
        r.node_name = Some("node01".into());
        r.date_add = Some(1_716_000_000 + id);
        r.last_keepalive = Some(1_716_897_300);
        r.groups = Some("default,linux".into());
        r.disconnection_time = Some(0);
        r.status_code = Some(0);
        if id % 7 == 0 {
            r.status = Status::Disconnected;
            r.disconnection_time = Some(1_716_897_000);
        }
        r
    }

    fn snapshot(n: i64) -> Snapshot {
        Snapshot::from_records((1..=n).map(record))
    }

    #[test]
    fn missing_file_is_none_and_a_saved_snapshot_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path(), "wazuh-manager-01")
            .unwrap()
            .with_db_path(Path::new("/x/global.db"));
        assert!(store.load().unwrap().is_none());
        // Odd values survive: NULLs, an unknown status, quotes, non-ASCII.
        let odd = AgentRecord::new(999, "name \"with\" quotes é 中", Status::Unknown);
        let mut s = Snapshot::from_records((1..=50).map(record).chain([odd]));
        store.save(&s).unwrap();
        assert_eq!(store.path(), dir.path().join("snapshot-wazuh-manager-01.json"));
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        // The file says what it is.
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.starts_with(
            r#"{"format_version":1,"manager_node":"wazuh-manager-01","db_path":"/x/global.db""#
        ));
        // A second save replaces the first.
        s.agents.remove(0);
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s));
        // An empty snapshot (all agents removed) is a snapshot, not "none".
        store.save(&Snapshot::default()).unwrap();
        assert_eq!(store.load().unwrap(), Some(Snapshot::default()));
    }

    #[test]
    fn file_is_0600_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = SnapshotStore::new(&state, "n1").unwrap();
        store.save(&snapshot(3)).unwrap();
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshot mode {mode:o}");
        let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "created state dir mode {dir_mode:o}");
        let names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["snapshot-n1.json".to_string()]);
    }

    #[test]
    fn a_leftover_temp_file_does_not_confuse_load_or_save() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path(), "n1").unwrap();
        let s = snapshot(10);
        store.save(&s).unwrap();
        // A crash mid-save leaves a half-written temp file (here world-readable).
        let tmp = dir.path().join(".snapshot-n1.json.tmp");
        std::fs::write(&tmp, br#"{"format_version":1,"manager_node":"n1","agents":[{"id":1,"#).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()), "load reads the last complete save");
        let s2 = snapshot(12);
        store.save(&s2).unwrap();
        assert_eq!(store.load().unwrap(), Some(s2));
        assert!(!tmp.exists());
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path(), "n1").unwrap();
        store.save(&snapshot(20)).unwrap();
        let full = std::fs::read(store.path()).unwrap();

        std::fs::write(store.path(), &full[..full.len() / 2]).unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, SnapshotError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("snapshot-n1.json is corrupt"), "{e}");

        std::fs::write(store.path(), b"\x00\x01garbage").unwrap();
        assert!(matches!(store.load().unwrap_err(), SnapshotError::Corrupt { .. }));

        std::fs::write(store.path(), b"").unwrap();
        assert!(matches!(store.load().unwrap_err(), SnapshotError::Corrupt { .. }));

        // Trailing garbage after a complete object is corruption too.
        let mut extra = full.clone();
        extra.extend_from_slice(b"{}");
        std::fs::write(store.path(), &extra).unwrap();
        assert!(matches!(store.load().unwrap_err(), SnapshotError::Corrupt { .. }));

        // A future layout: named by its version, not "corrupt".
        std::fs::write(store.path(), br#"{"format_version":2,"manager_node":"n1","agents":{"1":{}}}"#)
            .unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, SnapshotError::WrongVersion { found: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("format version 2"), "{e}");
        // Same layout, other version.
        std::fs::write(store.path(), br#"{"format_version":7,"manager_node":"n1","agents":[]}"#).unwrap();
        assert!(matches!(store.load().unwrap_err(), SnapshotError::WrongVersion { found: 7, .. }));

        // Another node's file copied in.
        std::fs::write(store.path(), br#"{"format_version":1,"manager_node":"other","agents":[]}"#).unwrap();
        assert!(matches!(store.load().unwrap_err(), SnapshotError::WrongNode { .. }));

        // Duplicate ids cannot come from a save.
        let r = r#"[5,"Active",null,null,null,null,"a",null,null,null,null,null,0]"#;
        let dup = format!(r#"{{"format_version":1,"manager_node":"n1","agents":[{r},{r}]}}"#);
        std::fs::write(store.path(), dup).unwrap();
        let e = store.load().unwrap_err();
        assert!(e.to_string().contains("agent id 5 appears twice"), "{e}");

        // And a fresh save recovers.
        store.save(&snapshot(2)).unwrap();
        assert_eq!(store.load().unwrap(), Some(snapshot(2)));
    }

    #[test]
    fn node_names_that_could_leave_the_state_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "a/b", "..", "x..y", "../etc", "a\0b"] {
            let e = SnapshotStore::new(dir.path(), bad).unwrap_err();
            assert!(matches!(e, SnapshotError::BadNode(_)), "{bad:?} accepted");
        }
        let ok = SnapshotStore::new(dir.path(), "wazuh.node-1_a").unwrap();
        ok.save(&Snapshot::default()).unwrap();
        assert!(ok.load().unwrap().is_some());
    }

    #[test]
    fn one_hundred_thousand_agents_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path(), "big").unwrap();
        let s = snapshot(100_000);
        let t = Instant::now();
        store.save(&s).unwrap();
        let saved = t.elapsed();
        let t = Instant::now();
        let loaded = store.load().unwrap().unwrap();
        let load_time = t.elapsed();
        let size = std::fs::metadata(store.path()).unwrap().len();
        eprintln!(
            "100,000 agents: save {saved:?}, load {load_time:?}, file {:.1} MB",
            size as f64 / 1_048_576.0
        );
        assert_eq!(loaded.agents.len(), 100_000);
        assert_eq!(loaded, s);
    }
}
