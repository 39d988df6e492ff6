//! The agent's configuration file (`agent-config.toml`), its defaults and checks, and
//! which keys a reload can apply without a restart.

use std::path::PathBuf;
use std::time::Duration;

use secmon_config::{ConfigError, Validate};
use secmon_nats::NatsConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole agent configuration. Every section and key has a default, so an empty
/// file (or none) is a valid configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `[agent]`: identity, state and heartbeat cadence.
    pub agent: AgentSection,
    /// `[nats]`: how to reach the NATS server(s).
    pub nats: NatsConfig,
    /// `[spool]`: the on-disk queue that holds events until JetStream acknowledges them.
    pub spool: SpoolSection,
    /// `[log]`: log verbosity.
    pub log: LogSection,
}

/// `[agent]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Display name sent at registration; empty means this host's name.
    pub name: String,
    /// Directory for the identity, the spool and the lock file (created 0700).
    pub state_dir: PathBuf,
    /// Time between heartbeats; the manager judges liveness by it. Live-reloadable.
    #[serde(with = "secmon_config::duration")]
    pub heartbeat_interval: Duration,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            state_dir: PathBuf::from("/var/lib/secmon-agent"),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// `[spool]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Upper bound of the spool on disk, in bytes; when it is full, new events are
    /// dropped, counted, and reported by an `agent`/`event_loss` event.
    pub max_bytes: u64,
    /// Size at which a spool segment file is closed and a new one started; fully
    /// published segments are deleted, so this is also the granularity of freeing.
    pub segment_bytes: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024 * 1024, segment_bytes: 8 * 1024 * 1024 }
    }
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter (`info`, `debug`, `secmon_agent=debug,info`); `RUST_LOG`
    /// overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// Smallest segment size accepted: below it, per-file overhead dominates.
const MIN_SEGMENT_BYTES: u64 = 4096;

impl Validate for AgentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.agent;
        if a.name.len() > 255 || a.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "agent.name",
                "must be at most 255 bytes without control characters",
            ));
        }
        if a.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("agent.state_dir", "must not be empty"));
        }
        if a.heartbeat_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid("agent.heartbeat_interval", "must be at least 10ms"));
        }
        self.nats.validate()?;
        let s = &self.spool;
        if s.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(ConfigError::invalid(
                "spool.segment_bytes",
                format!("must be at least {MIN_SEGMENT_BYTES}"),
            ));
        }
        if s.max_bytes < 2 * s.segment_bytes {
            return Err(ConfigError::invalid(
                "spool.max_bytes",
                format!("must be at least twice spool.segment_bytes ({})", s.segment_bytes),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", format!("not a valid filter: {e}")));
        }
        Ok(())
    }
}

impl AgentConfig {
    /// The name the agent registers with: the configured one, or the hostname.
    pub fn effective_name(&self) -> String {
        if self.agent.name.trim().is_empty() {
            crate::host_facts::hostname()
        } else {
            self.agent.name.clone()
        }
    }

    /// Dotted keys (`agent.heartbeat_interval`) whose values differ between `self`
    /// and `other`, sorted.
    pub fn changed_keys(&self, other: &AgentConfig) -> Vec<String> {
        let (a, b) = (flatten(self), flatten(other));
        let mut keys: Vec<String> =
            a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Keys a reload applies to the running agent; every other changed key needs a restart.
/// `log.level` is live only when the binary installed a log-level hook.
pub const LIVE_KEYS: &[&str] = &["agent.heartbeat_interval", "log.level"];

fn flatten(cfg: &AgentConfig) -> std::collections::BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", &serde_json::to_value(cfg).unwrap_or(Value::Null), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        secmon_config::from_str_with_env(text, Path::new("agent.toml"), &BTreeMap::new())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.spool.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.log.level, "info");
        assert!(!c.effective_name().is_empty());
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[agent]\nheartbeat_interval = \"0s\"\n", "agent.heartbeat_interval"),
            ("[agent]\nheartbeat_interval = \"often\"\n", "agent.heartbeat_interval"),
            ("[agent]\nstate_dir = \"\"\n", "agent.state_dir"),
            ("[spool]\nsegment_bytes = 10\n", "spool.segment_bytes"),
            ("[spool]\nmax_bytes = 4096\n", "spool.max_bytes"),
            ("[log]\nlevel = \"[[[\"\n", "log.level"),
            ("[nats]\nurl = \"http://x\"\n", "nats.url"),
            ("[agent]\nnmae = \"x\"\n", "nmae"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn changed_keys_lists_dotted_keys() {
        let a = AgentConfig::default();
        let mut b = a.clone();
        b.agent.heartbeat_interval = Duration::from_secs(1);
        b.nats.url = "nats://10.0.0.1:4222".into();
        assert_eq!(a.changed_keys(&b), vec!["agent.heartbeat_interval", "nats.url"]);
        assert!(a.changed_keys(&a).is_empty());
    }
}
