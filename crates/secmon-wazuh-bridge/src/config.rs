//! `secmon-wazuh-bridge --config FILE`: YAML (as Wazuh users write it) or TOML, with
//! `SECMON_<SECTION>_<KEY>` environment overrides (`SECMON_WAZUH_POLL_INTERVAL=2s`)
//! and CLI flags on top. Errors name the key.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use secmon_config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// The first (often only) Wazuh manager node.
    pub wazuh: SourceConfig,
    /// More manager nodes served by the same process.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceConfig>,
    pub nats: NatsSection,
    pub publish: PublishConfig,
    pub security: SecurityConfig,
    pub monitoring: MonitoringConfig,
    pub flapping: FlappingConfig,
    pub state: StateConfig,
}

/// One Wazuh manager node's `global.db`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub db_path: PathBuf,
    /// Safety-net full read; changes are normally seen at once through file
    /// notifications and `PRAGMA data_version`.
    #[serde(with = "secmon_config::duration")]
    pub poll_interval: Duration,
    /// Names this node in subjects and messages (`wazuh.manager.<node>.heartbeat`).
    pub manager_node: String,
    /// How long one read waits for wazuh-db's write lock before giving up (and
    /// retrying next cycle). Reads themselves take milliseconds.
    #[serde(with = "secmon_config::duration")]
    pub busy_timeout: Duration,
    /// Watch the database and its journal with inotify.
    pub notify: bool,
    /// How often `PRAGMA data_version` is checked between notifications (cheap:
    /// no rows are read unless it changed).
    #[serde(with = "secmon_config::duration")]
    pub check_interval: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            db_path: "/var/ossec/queue/db/global.db".into(),
            poll_interval: Duration::from_secs(5),
            manager_node: "wazuh-manager".into(),
            busy_timeout: Duration::from_secs(1),
            notify: true,
            check_interval: Duration::from_millis(250),
        }
    }
}

/// `nats:` as the issue (and Wazuh-side tooling) spells it; mapped onto
/// `secmon_nats::NatsConfig`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub url: String,
    /// JWT + NKey seed creds file (`nsc` / `secmon-manager init` format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Refuse a plain connection (implied by tls_ca, tls_cert or a `tls://` URL).
    pub tls_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub subject_prefix: String,
    /// Reconnect attempts of one client before the publisher opens its breaker and
    /// starts a fresh connection after the cooldown (0: unlimited). The bridge never
    /// gives up on NATS.
    pub max_reconnects: usize,
    /// First reconnect delay; doubles per attempt (with jitter) up to 30 s.
    #[serde(with = "secmon_config::duration")]
    pub reconnect_delay: Duration,
    #[serde(with = "secmon_config::duration")]
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for NatsSection {
    // Never print the password or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSection")
            .field("url", &self.url)
            .field("credentials_file", &self.credentials_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_ca", &self.tls_ca)
            .field("tls_required", &self.tls_required)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("subject_prefix", &self.subject_prefix)
            .field("max_reconnects", &self.max_reconnects)
            .field("reconnect_delay", &self.reconnect_delay)
            .finish()
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: "nats://localhost:4222".into(),
            credentials_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_required: false,
            user: None,
            password: None,
            token: None,
            subject_prefix: "wazuh".into(),
            max_reconnects: 10,
            reconnect_delay: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether to publish through JetStream (acks, deduplication by event id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JetStreamMode {
    /// JetStream when a stream covers the subjects (or `create_stream`), else core.
    Auto,
    /// JetStream required: waits (queueing) until a stream covers the subjects.
    On,
    /// Core NATS publish + flush.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    pub jetstream: JetStreamMode,
    /// Create (or update) a stream named `stream_name` over `<prefix>.>`.
    pub create_stream: bool,
    pub stream_name: String,
    #[serde(with = "secmon_config::duration")]
    pub stream_max_age: Duration,
    /// JetStream's deduplication window: an event id published twice within it is
    /// stored once.
    #[serde(with = "secmon_config::duration")]
    pub duplicate_window: Duration,
    #[serde(with = "secmon_config::duration")]
    pub ack_timeout: Duration,
    /// Messages waiting for NATS; when full, poll cycles wait (counted) and their
    /// changes are published later as the net change.
    pub queue_capacity: usize,
    /// Publishes in flight at once (acks awaited in order).
    pub max_in_flight: usize,
    /// Retry backoff cap.
    #[serde(with = "secmon_config::duration")]
    pub retry_max_delay: Duration,
    /// Consecutive failures that open the NATS breaker.
    pub breaker_threshold: u32,
    #[serde(with = "secmon_config::duration")]
    pub breaker_cooldown: Duration,
    /// Publish each cycle's events as one batch on `<prefix>.security.agent_events`.
    pub batches: bool,
    /// Events per batch message (bigger cycles are split).
    pub batch_max_events: usize,
    /// zstd-compress batch payloads (header `Content-Encoding: zstd`).
    pub compress_batches: bool,
    #[serde(with = "secmon_config::duration")]
    pub heartbeat_interval: Duration,
    /// Publish a `registered` event for every agent on the very first run (no
    /// snapshot yet). Off: the first run only records the baseline.
    pub announce_initial: bool,
    /// How long shutdown waits for in-flight and queued publishes.
    #[serde(with = "secmon_config::duration")]
    pub drain_timeout: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            jetstream: JetStreamMode::Auto,
            create_stream: false,
            stream_name: "WAZUH".into(),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(3600),
            ack_timeout: Duration::from_secs(5),
            queue_capacity: 100_000,
            max_in_flight: 256,
            retry_max_delay: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            batches: true,
            batch_max_events: 1000,
            compress_batches: false,
            heartbeat_interval: Duration::from_secs(30),
            announce_initial: false,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionAlgorithm {
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// HMAC-SHA256 key (hex or base64 text, at least 32 bytes). Default
    /// `<state.dir>/signing.key`, generated (0600) on first start when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_path: Option<PathBuf>,
    pub encrypt_messages: bool,
    /// 32-byte key (hex or base64 text); required when `encrypt_messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_path: Option<PathBuf>,
    pub encryption_algorithm: EncryptionAlgorithm,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            signing_key_path: None,
            encrypt_messages: false,
            encryption_key_path: None,
            encryption_algorithm: EncryptionAlgorithm::ChaCha20Poly1305,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enable_metrics: bool,
    /// `/metrics` and `/health`; 0 picks a free port (logged).
    pub metrics_port: u16,
    pub metrics_bind: String,
    /// `trace`, `debug`, `info`, `warn`, `error` or a tracing filter.
    pub log_level: String,
    /// `json` (structured, with a correlation id per cycle) or `text`.
    pub log_format: String,
    /// Append-only audit log of every published message. Default `<state.dir>/audit.jsonl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enable_metrics: true,
            metrics_port: 9090,
            metrics_bind: "127.0.0.1".into(),
            log_level: "info".into(),
            log_format: "json".into(),
            audit_log: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    pub enabled: bool,
    /// More than this many status transitions within `window` is flapping.
    pub threshold: u32,
    #[serde(with = "secmon_config::duration")]
    pub window: Duration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self { enabled: true, threshold: 5, window: Duration::from_secs(600) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Snapshots (one per manager node), the generated signing key, the audit log.
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: "/var/lib/secmon-wazuh-bridge".into() }
    }
}

impl BridgeConfig {
    /// Every source: `wazuh` first, then `sources`.
    pub fn all_sources(&self) -> Vec<SourceConfig> {
        std::iter::once(self.wazuh.clone()).chain(self.sources.iter().cloned()).collect()
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.security.signing_key_path.clone().unwrap_or_else(|| self.state.dir.join("signing.key"))
    }

    pub fn audit_log_path(&self) -> PathBuf {
        self.monitoring.audit_log.clone().unwrap_or_else(|| self.state.dir.join("audit.jsonl"))
    }

    /// The shared NATS connection settings.
    pub fn nats_config(&self) -> secmon_nats::NatsConfig {
        let n = &self.nats;
        secmon_nats::NatsConfig {
            url: n.url.clone(),
            subject_prefix: n.subject_prefix.clone(),
            reconnect_base_delay: n.reconnect_delay,
            reconnect_max_delay: n.reconnect_delay.max(Duration::from_secs(30)),
            connect_timeout: n.connect_timeout,
            credentials_file: n.credentials_file.clone(),
            tls_ca: n.tls_ca.clone(),
            tls_cert: n.tls_cert.clone(),
            tls_key: n.tls_key.clone(),
            tls_required: n.tls_required,
            user: n.user.clone(),
            password: n.password.clone(),
            token: n.token.clone(),
            ..Default::default()
        }
    }
}

/// A subject token must not be empty or hold `.`, `*`, `>` or whitespace.
pub fn valid_subject_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.chars().any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}

impl Validate for BridgeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut nodes = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (i, s) in self.all_sources().iter().enumerate() {
            let key = |k: &str| if i == 0 { format!("wazuh.{k}") } else { format!("sources[{}].{k}", i - 1) };
            if s.db_path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(key("db_path"), "must not be empty"));
            }
            if !valid_subject_token(&s.manager_node) {
                return Err(ConfigError::invalid(
                    key("manager_node"),
                    format!("{:?} cannot be a subject token (no dots, spaces, * or >)", s.manager_node),
                ));
            }
            if s.poll_interval < Duration::from_millis(100) {
                return Err(ConfigError::invalid(key("poll_interval"), "must be at least 100ms"));
            }
            if s.check_interval.is_zero() {
                return Err(ConfigError::invalid(key("check_interval"), "must be greater than zero"));
            }
            if !nodes.insert(s.manager_node.clone()) {
                return Err(ConfigError::invalid(key("manager_node"), "used by two sources"));
            }
            if !paths.insert(s.db_path.clone()) {
                return Err(ConfigError::invalid(key("db_path"), "used by two sources"));
            }
        }
        let nats = self.nats_config();
        nats.validate()?;
        let p = &self.publish;
        if p.queue_capacity == 0 {
            return Err(ConfigError::invalid("publish.queue_capacity", "must be greater than zero"));
        }
        if p.max_in_flight == 0 {
            return Err(ConfigError::invalid("publish.max_in_flight", "must be greater than zero"));
        }
        if p.batch_max_events == 0 {
            return Err(ConfigError::invalid("publish.batch_max_events", "must be greater than zero"));
        }
        if p.heartbeat_interval.is_zero() {
            return Err(ConfigError::invalid("publish.heartbeat_interval", "must be greater than zero"));
        }
        if !valid_subject_token(&p.stream_name) {
            return Err(ConfigError::invalid("publish.stream_name", "not a valid stream name"));
        }
        if self.security.encrypt_messages && self.security.encryption_key_path.is_none() {
            return Err(ConfigError::invalid(
                "security.encryption_key_path",
                "required when security.encrypt_messages is true",
            ));
        }
        if self.flapping.enabled && (self.flapping.threshold == 0 || self.flapping.window.is_zero()) {
            return Err(ConfigError::invalid(
                "flapping.threshold",
                "threshold and window must be greater than zero",
            ));
        }
        if !["json", "text"].contains(&self.monitoring.log_format.as_str()) {
            return Err(ConfigError::invalid("monitoring.log_format", "must be json or text"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn load(text: &str, name: &str, env: &[(&str, &str)]) -> Result<BridgeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        secmon_config::load_with_env(Some(&p), &env)
    }

    #[test]
    fn the_shipped_example_loads_and_differs_from_the_defaults_only_in_the_node_name() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/wazuh-bridge.yaml");
        let c: BridgeConfig = secmon_config::load_with_env(Some(&p), &BTreeMap::new()).unwrap();
        let mut d = BridgeConfig::default();
        d.wazuh.manager_node = "wazuh-manager-01".into();
        assert_eq!(c, d);
    }

    #[test]
    fn yaml_as_in_the_issue_toml_env_and_several_sources() {
        let c = load(
            "wazuh: { db_path: \"/var/ossec/queue/db/global.db\", poll_interval: \"5s\", manager_node: \"wazuh-manager-01\" }\n\
             nats: { url: \"nats://localhost:4222\", subject_prefix: \"wazuh\", max_reconnects: 10, reconnect_delay: \"2s\" }\n\
             security: { encrypt_messages: false }\n\
             monitoring: { enable_metrics: true, metrics_port: 9090, log_level: \"info\" }\n\
             sources:\n  - { db_path: /b/global.db, manager_node: node-b }\n",
            "b.yaml",
            &[("SECMON_WAZUH_POLL_INTERVAL", "2s"), ("SECMON_MONITORING_METRICS_PORT", "9191")],
        )
        .unwrap();
        assert_eq!(c.wazuh.poll_interval, Duration::from_secs(2));
        assert_eq!(c.monitoring.metrics_port, 9191);
        let nodes: Vec<_> = c.all_sources().into_iter().map(|s| s.manager_node).collect();
        assert_eq!(nodes, vec!["wazuh-manager-01", "node-b"]);
        let t = load("[wazuh]\nmanager_node = \"t\"\n[publish]\ncompress_batches = true\n", "b.toml", &[])
            .unwrap();
        assert!(t.publish.compress_batches);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("wazuh: { manager_node: \"a.b\" }\n", "wazuh.manager_node"),
            ("wazuh: { poll_interval: 10ms }\n", "wazuh.poll_interval"),
            ("sources: [ { manager_node: wazuh-manager } ]\n", "sources[0].manager_node"),
            ("security: { encrypt_messages: true }\n", "security.encryption_key_path"),
            ("publish: { queue_capacity: 0 }\n", "publish.queue_capacity"),
            ("nats: { url: \"http://x\" }\n", "nats.url"),
            ("monitoring: { log_format: xml }\n", "monitoring.log_format"),
            ("publish: { jetstream: maybe }\n", "publish.jetstream"),
            ("wazuh: { db_pth: x }\n", "db_pth"),
        ];
        for (text, key) in cases {
            let e = load(text, "c.yaml", &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn debug_never_shows_the_password_or_token() {
        let mut c = BridgeConfig::default();
        c.nats.password = Some("hunter2".into());
        c.nats.token = Some("s3cr3t".into());
        let d = format!("{c:?} {:?}", c.nats_config());
        assert!(!d.contains("hunter2") && !d.contains("s3cr3t"), "{d}");
    }
}
