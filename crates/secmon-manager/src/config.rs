//! The manager's configuration (`manager-config.toml`). The struct is the schema:
//! its `Default` gives every default, and `secmon_config::load` types the
//! `SECMON_<SECTION>_<KEY>` overrides after it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secmon_config::{ConfigError, Validate};
use secmon_nats::NatsConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// `[nats]`: where the fabric is and how to reconnect.
    pub nats: NatsConfig,
    /// `[api]`: the REST API listener.
    pub api: ApiConfig,
    /// `[storage]`: where the embedded database lives.
    pub storage: StorageConfig,
    /// `[agents]`: fleet lifecycle timing.
    pub agents: AgentsConfig,
    /// `[ingest]`: the JetStream events stream and the manager's consumer.
    pub ingest: IngestConfig,
    /// `[alerts]`: alert aggregation.
    pub alerts: AlertsConfig,
    /// `[rules]`: the Sigma rules evaluated over stored events.
    pub rules: RulesConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[security]`: secure mode (authentication, enrollment, signed events).
    pub security: SecurityConfig,
}

/// `[security]`. Off (the default) is the local development mode: no API
/// authentication, no enrollment, unsigned events accepted; the manager says so
/// loudly in its log. `secmon up --secure` and production deployments turn it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Secure mode: the API requires authentication and serves HTTPS, agents enroll,
    /// events must be signed.
    pub enabled: bool,
    /// Directory written by `secmon-manager init` [default: <storage.data_dir>/pki].
    pub pki_dir: Option<PathBuf>,
    /// Reject (and alert on) events that are unsigned or whose signature does not
    /// match the agent's enrolled key. Only in secure mode.
    pub require_signatures: bool,
    /// Lifetime of the bearer token `POST /api/login` gives.
    #[serde(with = "secmon_config::duration")]
    pub session_ttl: Duration,
    /// Failed logins of one user (or from one address) before it is locked out.
    pub login_max_failures: u32,
    /// How long a lockout lasts.
    #[serde(with = "secmon_config::duration")]
    pub lockout: Duration,
    /// Serve the API over plain HTTP on a non-loopback address (not recommended).
    pub allow_plain_http: bool,
    /// The API's URL as agents reach it (written into downloaded agent configs)
    /// [default: https://<api.listen>].
    pub public_api_url: String,
    /// The NATS URL given to enrolled agents [default: nats.url].
    pub agent_nats_url: String,
    /// Agent commands each role may send; admins may send every command.
    pub commands: RoleCommands,
}

/// `[security.commands]`: per-role command allowlists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleCommands {
    /// Read-only commands by default.
    pub analyst: Vec<String>,
    pub readonly: Vec<String>,
}

impl Default for RoleCommands {
    fn default() -> Self {
        Self { analyst: vec!["ping".into(), "status".into()], readonly: Vec::new() }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            pki_dir: None,
            require_signatures: true,
            session_ttl: Duration::from_secs(3600),
            login_max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            allow_plain_http: false,
            public_api_url: String::new(),
            agent_nats_url: String::new(),
            commands: RoleCommands::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A match of the same rule, agent and key within this window of an alert that
    /// is not closed raises that alert's count instead of making a new alert.
    #[serde(with = "secmon_config::duration")]
    pub dedup_window: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { dedup_window: Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directories searched (recursively) for Sigma rules (`*.yml`, `*.yaml`).
    /// Empty (the default): no rules, no detection alerts.
    pub dirs: Vec<PathBuf>,
    /// How often the rule files are checked for changes (then reloaded, as on
    /// SIGHUP).
    #[serde(with = "secmon_config::duration")]
    pub watch_interval: Duration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self { dirs: Vec::new(), watch_interval: Duration::from_secs(2) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the REST API listens on (`IP:PORT`; port 0 picks a free port).
    pub listen: String,
    /// How long `POST /api/agents/{id}/command` waits for the agent's reply.
    #[serde(with = "secmon_config::duration")]
    pub command_timeout: Duration,
    /// HTTPS certificate (PEM) [secure mode default: <pki_dir>/server.pem].
    pub tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM, 0600) [secure mode default: <pki_dir>/server-key.pem].
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            command_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding `secmon.db` (SQLite, WAL); created when missing.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("/var/lib/secmon-manager") }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// An agent silent for longer than this becomes `disconnected`. Keep it a few
    /// heartbeat intervals long so one lost heartbeat does not flap the status.
    #[serde(with = "secmon_config::duration")]
    pub heartbeat_timeout: Duration,
    /// How often the manager looks for agents past their heartbeat timeout; a dead
    /// agent is seen within `heartbeat_timeout + check_interval`.
    #[serde(with = "secmon_config::duration")]
    pub check_interval: Duration,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self { heartbeat_timeout: Duration::from_secs(15), check_interval: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Durable consumer name. Managers sharing a name share the load: each event
    /// goes to one of them.
    pub consumer: String,
    /// Events fetched and stored per database transaction.
    pub batch_size: usize,
    /// Events larger than this are rejected (`oversize`) and dropped.
    pub max_event_bytes: usize,
    /// How long the events stream keeps events (stream retention).
    #[serde(with = "secmon_config::duration")]
    pub max_age: Duration,
    /// Size limit of the events stream in bytes, oldest dropped first; 0 = only
    /// `max_age` and the server's limits apply.
    pub max_bytes: u64,
    /// Window in which JetStream drops a republished event with the same id.
    #[serde(with = "secmon_config::duration")]
    pub duplicate_window: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            consumer: "secmon-manager".into(),
            batch_size: 500,
            max_event_bytes: secmon_proto::DEFAULT_MAX_EVENT_BYTES,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter (`info`, `secmon_manager=debug,info`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

impl ManagerConfig {
    /// The directory `secmon-manager init` wrote ([security] pki_dir or <data_dir>/pki).
    pub fn pki_dir(&self) -> PathBuf {
        self.security.pki_dir.clone().unwrap_or_else(|| self.storage.data_dir.join("pki"))
    }

    /// `[api] listen` as an address (checked by [`Validate`]).
    pub fn api_listen(&self) -> SocketAddr {
        self.api.listen.parse().expect("api.listen validated at load")
    }
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() { Err(ConfigError::invalid(key, "must be greater than zero")) } else { Ok(()) }
}

impl Validate for ManagerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.nats.validate()?;
        self.api.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid("api.listen", format!("{:?} is not IP:PORT: {e}", self.api.listen))
        })?;
        positive("api.command_timeout", self.api.command_timeout)?;
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.data_dir", "must not be empty"));
        }
        positive("agents.heartbeat_timeout", self.agents.heartbeat_timeout)?;
        positive("agents.check_interval", self.agents.check_interval)?;
        if self.agents.check_interval > self.agents.heartbeat_timeout {
            return Err(ConfigError::invalid(
                "agents.check_interval",
                "must not be longer than agents.heartbeat_timeout",
            ));
        }
        let c = &self.ingest.consumer;
        if c.is_empty()
            || c.len() > 64
            || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                "ingest.consumer",
                format!("{c:?} is not a consumer name: 1 to 64 characters of [A-Za-z0-9_-]"),
            ));
        }
        if !(1..=10_000).contains(&self.ingest.batch_size) {
            return Err(ConfigError::invalid("ingest.batch_size", "must be between 1 and 10000"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.ingest.max_event_bytes) {
            return Err(ConfigError::invalid("ingest.max_event_bytes", "must be between 1024 and 67108864"));
        }
        positive("ingest.max_age", self.ingest.max_age)?;
        if i64::try_from(self.ingest.max_bytes).is_err() {
            return Err(ConfigError::invalid("ingest.max_bytes", "too large"));
        }
        positive("ingest.duplicate_window", self.ingest.duplicate_window)?;
        if self.ingest.duplicate_window > self.ingest.max_age {
            return Err(ConfigError::invalid(
                "ingest.duplicate_window",
                "must not be longer than ingest.max_age",
            ));
        }
        positive("alerts.dedup_window", self.alerts.dedup_window)?;
        if self.alerts.dedup_window > Duration::from_secs(30 * 24 * 3600) {
            return Err(ConfigError::invalid("alerts.dedup_window", "must not be longer than 30d"));
        }
        if self.rules.dirs.iter().any(|d| d.as_os_str().is_empty()) {
            return Err(ConfigError::invalid("rules.dirs", "must not contain an empty path"));
        }
        positive("rules.watch_interval", self.rules.watch_interval)?;
        positive("security.session_ttl", self.security.session_ttl)?;
        positive("security.lockout", self.security.lockout)?;
        if self.security.login_max_failures == 0 {
            return Err(ConfigError::invalid("security.login_max_failures", "must be at least 1"));
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err(ConfigError::invalid("api.tls_key", "api.tls_cert and api.tls_key go together"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::invalid("log.level", format!("{:?} is not a log filter: {e}", self.log.level))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/manager-config.toml")
    }

    #[test]
    fn example_config_loads_and_matches_the_defaults() {
        let cfg: ManagerConfig =
            secmon_config::load_with_env(Some(&example_path()), &BTreeMap::new()).expect("example loads");
        // The example documents the defaults; only the data dir differs, so it runs
        // as an unprivileged user from the repository.
        let expected = ManagerConfig {
            storage: StorageConfig { data_dir: PathBuf::from("./data/manager") },
            ..ManagerConfig::default()
        };
        assert_eq!(cfg, expected);
    }

    #[test]
    fn env_overrides_and_durations() {
        let env: BTreeMap<String, String> = [
            ("SECMON_API_LISTEN", "127.0.0.1:0"),
            ("SECMON_AGENTS_HEARTBEAT_TIMEOUT", "3s"),
            ("SECMON_INGEST_BATCH_SIZE", "100"),
            ("SECMON_STORAGE_DATA_DIR", "/tmp/x"),
            ("SECMON_NATS_URL", "nats://127.0.0.1:1"),
            ("SECMON_RULES_DIRS", r#"["/srv/rules", "/etc/secmon/rules"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cfg: ManagerConfig = secmon_config::load_with_env(None, &env).unwrap();
        assert_eq!(cfg.api_listen().port(), 0);
        assert_eq!(cfg.agents.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(cfg.ingest.batch_size, 100);
        assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:1");
        assert_eq!(cfg.ingest.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(cfg.rules.dirs, [PathBuf::from("/srv/rules"), PathBuf::from("/etc/secmon/rules")]);
        assert_eq!(cfg.rules.watch_interval, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("[api]\nlisten = \"localhost\"\n", "api.listen"),
            ("[agents]\nheartbeat_timeout = \"0s\"\n", "agents.heartbeat_timeout"),
            ("[agents]\nheartbeat_timeout = \"1s\"\ncheck_interval = \"2s\"\n", "agents.check_interval"),
            ("[agents]\nheartbeat_timeout = \"soon\"\n", "agents.heartbeat_timeout"),
            ("[ingest]\nconsumer = \"a.b\"\n", "ingest.consumer"),
            ("[ingest]\nbatch_size = 0\n", "ingest.batch_size"),
            ("[ingest]\nmax_event_bytes = 10\n", "ingest.max_event_bytes"),
            ("[log]\nlevel = \"=bogus=\"\n", "log.level"),
            ("[alerts]\ndedup_window = \"0s\"\n", "alerts.dedup_window"),
            ("[alerts]\ndedup_window = \"60d\"\n", "alerts.dedup_window"),
            ("[rules]\ndirs = [\"\"]\n", "rules.dirs"),
            ("[rules]\nwatch_interval = \"0s\"\n", "rules.watch_interval"),
            ("[storage]\ndata_dri = \"x\"\n", "data_dri"),
            ("[nats]\nurl = \"http://x\"\n", "nats.url"),
        ];
        for (text, key) in cases {
            let e = secmon_config::from_str_with_env::<ManagerConfig>(
                text,
                Path::new("m.toml"),
                &BTreeMap::new(),
            )
            .expect_err(text)
            .to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
