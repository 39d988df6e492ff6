//! Creates a `global.db` with Wazuh's schema (newest 4.x, or 5.x) and N agents, for
//! demos, tests and benchmarks.
//!
//! The 4.x schema follows wazuh-db's `schema_global.sql` (db_version 7): the `agent`
//! table with its CHECK constraints and defaults, indexes on name, ip and group_hash,
//! the labels / info / group / belongs / metadata tables, and row 0 for the manager.
//! The 5.x schema drops os_codename, os_build, os_uname, config_sum, merged_sum,
//! manager_host, node_name and group_config_status, adds os_type, and has no row 0.
//! Each agent gets a random `internal_key`, so tests can prove the bridge never leaks it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use crate::db::{DbError, MAX_EPOCH, SchemaFlavor};
use crate::model::Status;

const AGENT_V4: &str = r#"
CREATE TABLE IF NOT EXISTS agent (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    ip TEXT,
    register_ip TEXT,
    internal_key TEXT,
    os_name TEXT,
    os_version TEXT,
    os_major TEXT,
    os_minor TEXT,
    os_codename TEXT,
    os_build TEXT,
    os_platform TEXT,
    os_uname TEXT,
    os_arch TEXT,
    version TEXT,
    config_sum TEXT,
    merged_sum TEXT,
    manager_host TEXT,
    node_name TEXT DEFAULT 'unknown',
    date_add INTEGER NOT NULL,
    last_keepalive INTEGER,
    `group` TEXT DEFAULT 'default',
    group_hash TEXT DEFAULT NULL,
    group_sync_status TEXT NOT NULL CHECK (group_sync_status IN ('synced', 'syncreq')) DEFAULT 'synced',
    sync_status TEXT NOT NULL CHECK (sync_status IN ('synced', 'syncreq', 'syncreq_status', 'syncreq_keepalive')) DEFAULT 'synced',
    connection_status TEXT NOT NULL CHECK (connection_status IN ('pending', 'never_connected', 'active', 'disconnected')) DEFAULT 'never_connected',
    disconnection_time INTEGER DEFAULT 0,
    group_config_status TEXT NOT NULL CHECK (group_config_status IN ('synced', 'not synced')) DEFAULT 'not synced',
    status_code INTEGER DEFAULT 0
);
"#;

const AGENT_V5: &str = r#"
CREATE TABLE IF NOT EXISTS agent (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    ip TEXT,
    register_ip TEXT,
    internal_key TEXT,
    os_name TEXT,
    os_version TEXT,
    os_major TEXT,
    os_minor TEXT,
    os_type TEXT,
    os_platform TEXT,
    os_arch TEXT,
    version TEXT,
    date_add INTEGER NOT NULL,
    last_keepalive INTEGER,
    `group` TEXT DEFAULT 'default',
    group_hash TEXT DEFAULT NULL,
    group_sync_status TEXT NOT NULL CHECK (group_sync_status IN ('synced', 'syncreq')) DEFAULT 'synced',
    sync_status TEXT NOT NULL CHECK (sync_status IN ('synced', 'syncreq', 'syncreq_status', 'syncreq_keepalive')) DEFAULT 'synced',
    connection_status TEXT NOT NULL CHECK (connection_status IN ('pending', 'never_connected', 'active', 'disconnected')) DEFAULT 'never_connected',
    disconnection_time INTEGER DEFAULT 0,
    status_code INTEGER DEFAULT 0
);
"#;

/// Indexes and the other tables, the same in both flavors.
const COMMON: &str = r#"
CREATE INDEX IF NOT EXISTS agent_name ON agent (name);
CREATE INDEX IF NOT EXISTS agent_ip ON agent (ip);
CREATE INDEX IF NOT EXISTS agent_group_hash ON agent (group_hash);

CREATE TABLE IF NOT EXISTS labels (
    id INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, key)
);

CREATE TABLE IF NOT EXISTS info (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE IF NOT EXISTS `group` (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    UNIQUE (name)
);
CREATE INDEX IF NOT EXISTS group_name ON `group` (name);

CREATE TABLE IF NOT EXISTS belongs (
    id_agent INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    id_group INTEGER REFERENCES `group` (id) ON DELETE CASCADE,
    priority INTEGER NOT NULL DEFAULT 0,
    UNIQUE (id_agent, priority),
    PRIMARY KEY (id_agent, id_group)
);
CREATE INDEX IF NOT EXISTS belongs_id_agent ON belongs (id_agent);
CREATE INDEX IF NOT EXISTS belongs_id_group ON belongs (id_group);

CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT
);
"#;

/// Group names the fixture and the simulator assign (every agent is in `default`).
pub const GROUPS: &[&str] = &["default", "linux", "windows", "webservers", "databases", "pci", "dmz", "k8s"];

/// Agent versions the fixture and the simulator use.
pub const VERSIONS: &[&str] =
    &["Wazuh v4.7.5", "Wazuh v4.8.2", "Wazuh v4.9.1", "Wazuh v4.10.0", "Wazuh v4.11.2"];

/// (os_name, os_version, major, minor, codename, build, platform, arch, os_type, host prefix)
type Os = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
const OSES: &[Os] = &[
    ("Ubuntu", "22.04.4 LTS", "22", "04", "Jammy Jellyfish", "", "ubuntu", "x86_64", "linux", "web"),
    ("Ubuntu", "24.04.1 LTS", "24", "04", "Noble Numbat", "", "ubuntu", "x86_64", "linux", "k8s-node"),
    ("Red Hat Enterprise Linux", "9.4", "9", "4", "Plow", "", "rhel", "x86_64", "linux", "db"),
    ("CentOS Stream", "9", "9", "", "", "", "centos", "x86_64", "linux", "app"),
    ("Debian GNU/Linux", "12", "12", "", "bookworm", "", "debian", "aarch64", "linux", "edge"),
    (
        "Microsoft Windows Server 2022 Datacenter",
        "10.0.20348.2582",
        "10",
        "0",
        "",
        "20348.2582",
        "windows",
        "x86_64",
        "windows",
        "win-srv",
    ),
    (
        "Microsoft Windows 11 Pro",
        "10.0.22631.3880",
        "10",
        "0",
        "",
        "22631.3880",
        "windows",
        "x86_64",
        "windows",
        "win-ws",
    ),
    ("macOS", "14.5", "14", "5", "Sonoma", "23F79", "darwin", "arm64", "macos", "mac"),
];

pub(crate) fn now_epoch() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Wazuh's `group_hash`: a short hex digest of the comma-separated group list.
pub(crate) fn group_hash(groups: &str) -> String {
    hex::encode(&Sha256::digest(groups.as_bytes())[..4])
}

/// A random agent key as `client.keys` holds it: 64 hex characters.
pub(crate) fn random_key(rng: &mut impl Rng) -> String {
    let bytes: [u8; 32] = rng.random();
    hex::encode(bytes)
}

/// A random group list: `default` plus up to two others, comma-separated.
pub(crate) fn random_groups(rng: &mut impl Rng) -> String {
    let mut groups = vec![GROUPS[0]];
    for _ in 0..rng.random_range(0..3) {
        let g = GROUPS[rng.random_range(1..GROUPS.len())];
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups.join(",")
}

/// A unique IPv4 address for agent `id` (10.0.0.0/8 holds 16 million); the fixture
/// and the simulator's registrations use it.
pub fn agent_ip(id: i64) -> String {
    format!("10.{}.{}.{}", (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff)
}

/// Creates `path` (refusing to overwrite anything) with the schema of `flavor` and
/// `agents` agents (ids 1..=agents) in a mix of statuses, chosen by `seed`.
///
/// Built in a temporary file beside `path` and renamed into place, so a watcher never
/// sees a half-built database.
pub fn create_fixture(path: &Path, agents: usize, flavor: SchemaFlavor, seed: u64) -> Result<(), DbError> {
    if path.exists() {
        return Err(DbError::AlreadyExists { path: path.to_owned() });
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".fixture-tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let result = build(&tmp, agents, flavor, seed);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Refuse to replace a file created meanwhile: hard-link then unlink is atomic
    // and fails if `path` exists (a rename would silently overwrite it).
    let linked = match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(DbError::AlreadyExists { path: path.to_owned() })
        }
        // A file system without hard links: fall back to a (checked) rename.
        Err(_) if !path.exists() => {
            std::fs::rename(&tmp, path).map_err(|e| DbError::io(path, "create fixture", e))
        }
        Err(e) => Err(DbError::io(path, "create fixture", e)),
        Ok(()) => Ok(()),
    };
    let _ = std::fs::remove_file(&tmp);
    linked
}

fn build(path: &Path, agents: usize, flavor: SchemaFlavor, seed: u64) -> Result<(), DbError> {
    let err = |what| move |e| DbError::sqlite(path, what, e);
    let mut conn = Connection::open(path).map_err(err("create"))?;
    // wazuh-db's journal: a rollback journal, deleted at commit (not WAL).
    let mode: String =
        conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).map_err(err("journal mode"))?;
    debug_assert_eq!(mode, "delete");
    conn.execute_batch("PRAGMA foreign_keys=ON;").map_err(err("pragma"))?;
    let schema = match flavor {
        SchemaFlavor::V4 => AGENT_V4,
        SchemaFlavor::V5 => AGENT_V5,
    };
    let now = now_epoch();
    let mut rng = StdRng::seed_from_u64(seed);
    let tx = conn.transaction().map_err(err("begin"))?;
    tx.execute_batch(schema).map_err(err("create agent table"))?;
    tx.execute_batch(COMMON).map_err(err("create tables"))?;
    match flavor {
        SchemaFlavor::V4 => {
            // The manager itself, as wazuh-db creates it.
            tx.execute(
                "INSERT INTO agent (id, ip, register_ip, name, date_add, last_keepalive, `group`, connection_status, \
                 node_name, version, os_name, os_platform, os_arch, manager_host) \
                 VALUES (0, '127.0.0.1', '127.0.0.1', 'localhost', ?1, ?2, NULL, 'active', 'node01', \
                 'Wazuh v4.11.2', 'Ubuntu', 'ubuntu', 'x86_64', 'wazuh-manager-01')",
                params![now, MAX_EPOCH],
            )
            .map_err(err("insert manager row"))?;
            tx.execute("INSERT INTO metadata (key, value) VALUES ('db_version', '7')", [])
                .map_err(err("metadata"))?;
        }
        SchemaFlavor::V5 => {
            tx.execute_batch("PRAGMA user_version = 1;").map_err(err("user_version"))?;
        }
    }
    for (i, g) in GROUPS.iter().enumerate() {
        tx.execute("INSERT INTO `group` (id, name) VALUES (?1, ?2)", params![i as i64 + 1, g])
            .map_err(err("insert group"))?;
    }
    {
        let sql = match flavor {
            SchemaFlavor::V4 => {
                "INSERT INTO agent (id, name, ip, register_ip, internal_key, os_name, os_version, os_major, \
                 os_minor, os_codename, os_build, os_platform, os_uname, os_arch, version, config_sum, merged_sum, \
                 manager_host, node_name, date_add, last_keepalive, `group`, group_hash, group_sync_status, \
                 sync_status, connection_status, disconnection_time, group_config_status, status_code) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                 'wazuh-manager-01', 'node01', ?18, ?19, ?20, ?21, 'synced', 'synced', ?22, ?23, 'synced', ?24)"
            }
            SchemaFlavor::V5 => {
                "INSERT INTO agent (id, name, ip, register_ip, internal_key, os_name, os_version, os_major, \
                 os_minor, os_type, os_platform, os_arch, version, date_add, last_keepalive, `group`, group_hash, \
                 group_sync_status, sync_status, connection_status, disconnection_time, status_code) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                 'synced', 'synced', ?18, ?19, ?20)"
            }
        };
        let mut insert = tx.prepare(sql).map_err(err("prepare insert"))?;
        let mut belongs =
            tx.prepare("INSERT INTO belongs (id_agent, id_group, priority) SELECT ?1, id, ?3 FROM `group` WHERE name = ?2")
                .map_err(err("prepare belongs"))?;
        for n in 1..=agents as i64 {
            let os = OSES[rng.random_range(0..OSES.len())];
            let (os_name, os_version, major, minor, codename, os_build, platform, arch, os_type, prefix) = os;
            let name = format!("{prefix}-{n:06}");
            let ip = agent_ip(n);
            let register_ip = if rng.random_bool(0.7) { "any".to_owned() } else { ip.clone() };
            let key = random_key(&mut rng);
            let version = VERSIONS[rng.random_range(0..VERSIONS.len())];
            let groups = random_groups(&mut rng);
            let hash = group_hash(&groups);
            let date_add = now - rng.random_range(86_400..86_400 * 365);
            // Mostly active, some disconnected, a few never connected or pending.
            let roll: f64 = rng.random();
            let status = match roll {
                r if r < 0.80 => Status::Active,
                r if r < 0.92 => Status::Disconnected,
                r if r < 0.97 => Status::NeverConnected,
                _ => Status::Pending,
            };
            let (keepalive, disconnection_time, status_code): (Option<i64>, i64, i64) = match status {
                Status::Active => (Some(now - rng.random_range(0..60)), 0, 0),
                Status::Pending => (Some(now - rng.random_range(0..30)), 0, 0),
                Status::Disconnected => {
                    let since = now - rng.random_range(60..86_400 * 7);
                    // 4: no keepalive (lost); 3: the agent announced its shutdown.
                    let code = if rng.random_bool(0.8) { 4 } else { 3 };
                    (Some(since - rng.random_range(600..1200)), since, code)
                }
                _ => (None, 0, 0),
            };
            let never = status == Status::NeverConnected;
            // A never-connected agent has sent nothing: no OS or version yet.
            let opt = |s: &'static str| if never || s.is_empty() { None } else { Some(s) };
            match flavor {
                SchemaFlavor::V4 => {
                    let uname = (!never).then(|| format!("Linux |{name} |6.8.0-45-generic |#45 SMP |{arch}"));
                    let config_sum = (!never).then(|| random_hex(&mut rng, 16));
                    let merged_sum = (!never).then(|| random_hex(&mut rng, 16));
                    insert
                        .execute(params![
                            n,
                            name,
                            ip,
                            register_ip,
                            key,
                            opt(os_name),
                            opt(os_version),
                            opt(major),
                            opt(minor),
                            opt(codename),
                            opt(os_build),
                            opt(platform),
                            uname,
                            opt(arch),
                            opt(version),
                            config_sum,
                            merged_sum,
                            date_add,
                            keepalive,
                            groups,
                            hash,
                            status.db_value(),
                            disconnection_time,
                            status_code
                        ])
                        .map_err(err("insert agent"))?;
                }
                SchemaFlavor::V5 => {
                    insert
                        .execute(params![
                            n,
                            name,
                            ip,
                            register_ip,
                            key,
                            opt(os_name),
                            opt(os_version),
                            opt(major),
                            opt(minor),
                            opt(os_type),
                            opt(platform),
                            opt(arch),
                            opt(version),
                            date_add,
                            keepalive,
                            groups,
                            hash,
                            status.db_value(),
                            disconnection_time,
                            status_code
                        ])
                        .map_err(err("insert agent"))?;
                }
            }
            for (priority, g) in groups.split(',').enumerate() {
                belongs.execute(params![n, g, priority as i64]).map_err(err("insert belongs"))?;
            }
        }
    }
    tx.commit().map_err(err("commit"))?;
    Ok(())
}

fn random_hex(rng: &mut impl Rng, bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
    hex::encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::agent_columns;

    fn open(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    #[test]
    fn v4_has_wazuh_schema_and_manager_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 50, SchemaFlavor::V4, 7).unwrap();
        let c = open(&path);
        let cols = agent_columns(&c).unwrap();
        for col in [
            "internal_key",
            "os_codename",
            "node_name",
            "group_hash",
            "group_config_status",
            "disconnection_time",
            "status_code",
        ] {
            assert!(cols.iter().any(|c| c == col), "missing {col}: {cols:?}");
        }
        assert!(!cols.iter().any(|c| c == "os_type"));
        let (name, ka): (String, i64) = c
            .query_row("SELECT name, last_keepalive FROM agent WHERE id = 0", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), ka), ("localhost", MAX_EPOCH));
        let n: i64 = c.query_row("SELECT COUNT(*) FROM agent WHERE id > 0", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 50);
        let v: String =
            c.query_row("SELECT value FROM metadata WHERE key = 'db_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "7");
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        let idx: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'agent' AND sql IS NOT NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(idx.len(), 3, "{idx:?}");
        // The CHECK constraint is real: wazuh-db could not write an unknown status.
        assert!(c.execute("UPDATE agent SET connection_status = 'bogus' WHERE id = 1", []).is_err());
        // belongs mirrors the group column.
        let belongs: i64 = c.query_row("SELECT COUNT(*) FROM belongs", [], |r| r.get(0)).unwrap();
        assert!(belongs >= 50);
    }

    #[test]
    fn v5_has_no_manager_row_and_os_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 20, SchemaFlavor::V5, 7).unwrap();
        let c = open(&path);
        let cols = agent_columns(&c).unwrap();
        assert!(cols.iter().any(|c| c == "os_type"));
        for gone in [
            "os_codename",
            "os_build",
            "os_uname",
            "config_sum",
            "merged_sum",
            "manager_host",
            "node_name",
            "group_config_status",
        ] {
            assert!(!cols.iter().any(|c| c == gone), "{gone} still there");
        }
        let n0: i64 = c.query_row("SELECT COUNT(*) FROM agent WHERE id = 0", [], |r| r.get(0)).unwrap();
        assert_eq!(n0, 0);
        let n: i64 = c.query_row("SELECT COUNT(*) FROM agent", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 20);
    }

    #[test]
    fn statuses_are_mixed_and_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global.db");
        create_fixture(&path, 2000, SchemaFlavor::V4, 3).unwrap();
        let c = open(&path);
        let count = |s: &str| -> i64 {
            c.query_row("SELECT COUNT(*) FROM agent WHERE id > 0 AND connection_status = ?1", [s], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let (a, d, nc, p) =
            (count("active"), count("disconnected"), count("never_connected"), count("pending"));
        assert_eq!(a + d + nc + p, 2000);
        assert!(a > 1400 && d > 100 && nc > 40 && p > 10, "{a} {d} {nc} {p}");
        let bad: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM agent WHERE id > 0 AND ((connection_status = 'disconnected') != (disconnection_time > 0) \
                 OR (connection_status = 'never_connected') != (last_keepalive IS NULL))",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad, 0, "disconnection_time / last_keepalive disagree with the status");
        let keys: i64 = c
            .query_row(
                "SELECT COUNT(DISTINCT internal_key) FROM agent WHERE length(internal_key) = 64",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys, 2000);
    }

    #[test]
    fn same_seed_same_agents_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        create_fixture(&a, 100, SchemaFlavor::V4, 11).unwrap();
        create_fixture(&b, 100, SchemaFlavor::V4, 11).unwrap();
        let dump = |p: &Path| -> Vec<(i64, String, String, String)> {
            open(p)
                .prepare("SELECT id, name, connection_status, internal_key FROM agent ORDER BY id")
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Option<String>>(3)?.unwrap_or_default()))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(dump(&a), dump(&b));
        let before = std::fs::read(&a).unwrap();
        let err = create_fixture(&a, 10, SchemaFlavor::V5, 1).unwrap_err();
        assert!(matches!(err, DbError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("a.db"), "{err}");
        assert_eq!(std::fs::read(&a).unwrap(), before);
    }
}
