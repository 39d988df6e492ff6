//! Enrolled agent keys (`agent_keys` in security.db) and the in-memory map agent id →
//! public NKey that ingest verifies signatures against. A revoked key stays in the
//! table (its `revoked_at` feeds the account's revocation list) but leaves the map.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use secmon_proto::AgentId;
use serde::Serialize;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agent_keys (
    agent_id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    name TEXT NOT NULL,
    groups TEXT NOT NULL,
    labels TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    token_id TEXT NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS agent_keys_public_key ON agent_keys (public_key);";

/// One enrolled agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentKey {
    pub agent_id: AgentId,
    pub public_key: String,
    pub name: String,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: DateTime<Utc>,
    pub token_id: String,
    /// Unix seconds of the revocation.
    pub revoked_at: Option<i64>,
}

/// Inserts an enrolled agent (inside the enrollment's transaction).
pub fn insert(conn: &Connection, k: &AgentKey) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO agent_keys (agent_id, public_key, name, groups, labels, enrolled_at, token_id, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
        params![
            k.agent_id.as_str(),
            k.public_key,
            k.name,
            serde_json::to_string(&k.groups).unwrap_or_default(),
            serde_json::to_string(&k.labels).unwrap_or_default(),
            k.enrolled_at.to_rfc3339(),
            k.token_id,
        ],
    )?;
    Ok(())
}

/// Agent id → public key of every agent not revoked.
pub fn load_active(conn: &Connection) -> rusqlite::Result<HashMap<AgentId, String>> {
    let mut st = conn.prepare("SELECT agent_id, public_key FROM agent_keys WHERE revoked_at IS NULL")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = HashMap::new();
    for r in rows {
        let (id, key) = r?;
        // Ids were checked at enrollment; a row edited by hand is skipped.
        if let Ok(id) = AgentId::new(id) {
            out.insert(id, key);
        }
    }
    Ok(out)
}

/// Revoked public key → unix seconds of the revocation: the account's revocation list.
pub fn revocations(conn: &Connection) -> rusqlite::Result<BTreeMap<String, i64>> {
    let mut st =
        conn.prepare("SELECT public_key, revoked_at FROM agent_keys WHERE revoked_at IS NOT NULL")?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// Marks the agent's key revoked at `at` (unix seconds); returns its public key, or
/// `None` when the agent never enrolled. Revoking twice keeps the first time.
pub fn revoke(conn: &Connection, agent: &AgentId, at: i64) -> rusqlite::Result<Option<String>> {
    conn.execute(
        "UPDATE agent_keys SET revoked_at = ?2 WHERE agent_id = ?1 AND revoked_at IS NULL",
        params![agent.as_str(), at],
    )?;
    conn.query_row("SELECT public_key FROM agent_keys WHERE agent_id = ?1", [agent.as_str()], |r| r.get(0))
        .optional()
}

/// One entry of [`AgentKeys`]: the public key as enrolled and, decoded once at
/// insertion, the key ingest verifies with (`None` when the text does not decode:
/// verification then reports `bad_key` as it would from the text).
#[derive(Clone)]
pub struct EnrolledKey {
    pub public_key: String,
    pub verifier: Option<Arc<secmon_proto::signing::PublicKey>>,
}

impl EnrolledKey {
    fn new(public_key: String) -> Self {
        let verifier = secmon_proto::signing::verifying_key(&public_key).ok().map(Arc::new);
        Self { public_key, verifier }
    }
}

/// The shared map of enrolled, non-revoked keys. Cheap to clone.
#[derive(Clone, Default)]
pub struct AgentKeys(Arc<RwLock<HashMap<AgentId, EnrolledKey>>>);

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys").field("agents", &self.len()).finish()
    }
}

impl AgentKeys {
    pub fn new(map: HashMap<AgentId, String>) -> Self {
        let map = map.into_iter().map(|(id, key)| (id, EnrolledKey::new(key))).collect();
        Self(Arc::new(RwLock::new(map)))
    }

    /// The enrolled public key of an agent.
    pub fn get(&self, agent: &AgentId) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(agent).map(|k| k.public_key.clone())
    }

    /// The enrolled key of an agent with its decoded form.
    pub fn get_enrolled(&self, agent: &AgentId) -> Option<EnrolledKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(agent).cloned()
    }

    pub fn insert(&self, agent: AgentId, public_key: String) {
        let key = EnrolledKey::new(public_key);
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(agent, key);
    }

    pub fn remove(&self, agent: &AgentId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(agent);
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
