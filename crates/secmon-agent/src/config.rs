//! The agent's configuration file (`agent-config.toml`), its defaults and checks, and
//! which keys a reload can apply without a restart.

use std::path::PathBuf;
use std::time::Duration;

use secmon_config::{ConfigError, Validate};
use secmon_fim::{FimSection, WatchConfig};
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
    /// `[socket]`: the local event socket.
    pub socket: SocketSection,
    /// `[fim]`: how file integrity monitoring runs.
    pub fim: FimSection,
    /// `[log_monitor]`: how the log files listed in `[[logs]]` are followed.
    pub log_monitor: LogMonitorSection,
    /// `[commands]`: admin-configured scripts the `run-script` command may run.
    pub commands: CommandsSection,
    /// `[enrollment]`: enroll with the manager on first start (when not enrolled yet).
    pub enrollment: EnrollmentSection,
    /// `[[watches]]`: the files and trees under file integrity monitoring. Kept last
    /// (with `logs`): an array of tables must follow the plain tables in TOML.
    pub watches: Vec<WatchConfig>,
    /// `[[logs]]`: the log files followed by the log monitor. No entries (or `logs = []`)
    /// means no log monitoring; the written default config lists the usual files
    /// (commented out). Left out of the serialized form while empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogSource>,
}

/// `[enrollment]` section: with `manager` and `token` set and no creds file yet, the
/// agent enrolls (as `secmon-agent enroll` does) before it connects.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentSection {
    /// The manager's API, `https://HOST:PORT`.
    pub manager: String,
    /// Enrollment token (`SE1.<ca fingerprint>.<secret>`); removed from the file once used.
    pub token: String,
    /// SHA-256 fingerprint of the manager's CA; optional, the token carries it.
    pub ca_fingerprint: String,
}

impl EnrollmentSection {
    /// Both `manager` and `token` are set.
    pub fn is_configured(&self) -> bool {
        !self.manager.trim().is_empty() && !self.token.trim().is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let (manager, token) = (self.manager.trim(), self.token.trim());
        // A manager without a token is what enrollment leaves behind (it removes the used token).
        if manager.is_empty() && !token.is_empty() {
            return Err(ConfigError::invalid("enrollment.manager", "must be set with enrollment.token"));
        }
        if !manager.is_empty() {
            crate::enroll::check_manager_url(manager)
                .map_err(|e| ConfigError::invalid("enrollment.manager", e.to_string()))?;
        }
        let from_token = if token.is_empty() {
            None
        } else {
            // The error never quotes the token.
            let t = crate::enroll::EnrollToken::parse(token)
                .map_err(|e| ConfigError::invalid("enrollment.token", e.to_string()))?;
            Some(t.fingerprint().to_owned())
        };
        if !self.ca_fingerprint.trim().is_empty() {
            let fp = crate::enroll::normalize_fingerprint(&self.ca_fingerprint)
                .map_err(|e| ConfigError::invalid("enrollment.ca_fingerprint", e.to_string()))?;
            if from_token.is_some_and(|t| t != fp) {
                return Err(ConfigError::invalid(
                    "enrollment.ca_fingerprint",
                    "differs from the CA fingerprint the token carries",
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for EnrollmentSection {
    // Hand-written so the token never prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentSection")
            .field("manager", &self.manager)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

/// `[commands]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsSection {
    /// False refuses every `run-script`, whatever `scripts` lists.
    pub allow_scripts: bool,
    /// `[[commands.scripts]]`: the only programs `run-script` can run, by name.
    pub scripts: Vec<ScriptConfig>,
}

impl Default for CommandsSection {
    fn default() -> Self {
        Self { allow_scripts: true, scripts: Vec::new() }
    }
}

/// One `[[commands.scripts]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// What `run-script` calls it: `[a-z0-9_-]{1,64}`, not a built-in command's name.
    pub name: String,
    /// Absolute path of an executable regular file not writable by group or others;
    /// run directly, never through a shell.
    pub path: PathBuf,
    /// The arguments, in order: the request must give exactly these many.
    #[serde(default)]
    pub args: Vec<ScriptArg>,
    /// The script's process group is killed after this long (at most 5m).
    #[serde(default = "default_script_timeout", with = "secmon_config::duration")]
    pub timeout: Duration,
    /// Bytes of stdout, and of stderr, kept in the reply (at most 1 MiB each).
    #[serde(default = "default_script_max_output")]
    pub max_output: usize,
}

/// One argument of a script: `pattern` is a regex the whole value must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptArg {
    pub name: String,
    pub pattern: String,
}

fn default_script_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_script_max_output() -> usize {
    64 * 1024
}

const MAX_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_SCRIPT_OUTPUT: usize = 1024 * 1024;

/// `[log_monitor]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMonitorSection {
    /// Lines longer than this are cut to it (and counted).
    pub max_line_bytes: usize,
    /// How often the files are checked for new lines, rotation and truncation.
    #[serde(with = "secmon_config::duration")]
    pub poll_interval: Duration,
    /// Where a file the agent has never read starts: `end` (only new lines) or
    /// `beginning`. Files with a saved position go on from it.
    pub start_at: StartAt,
}

impl Default for LogMonitorSection {
    fn default() -> Self {
        Self { max_line_bytes: 16 * 1024, poll_interval: Duration::from_millis(100), start_at: StartAt::End }
    }
}

/// Where a log file never read before starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    End,
    Beginning,
}

/// One `[[logs]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// Absolute path of the log file; a file that does not exist yet is picked up
    /// when it appears.
    pub path: PathBuf,
    /// How lines are read: `auto` (RFC 5424 or RFC 3164, per line), `syslog3164`,
    /// `syslog5424`, `raw` (no header).
    #[serde(default)]
    pub format: LogFormat,
}

/// The header format of a log file's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Syslog3164,
    Syslog5424,
    Raw,
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

/// `[socket]` section: a Unix socket streaming every spooled event as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketSection {
    /// Socket path; empty means no socket.
    pub path: PathBuf,
    /// Permission bits of the socket file, octal (`"0660"`): connecting needs write
    /// permission.
    pub mode: String,
    /// Group of the socket file: a name or a numeric gid; empty keeps the agent's group.
    pub group: String,
    /// `envelope` (the JSON envelope as published to NATS) or `flat` (the classic
    /// `{timestamp, event_type, path, details}` shape, file and device events only).
    pub format: SocketFormat,
    /// Events a client may fall behind before it loses some (then it gets a drop
    /// notice with the count).
    pub client_buffer: usize,
    /// Clients served at once; one more gets an error line and is closed.
    pub max_clients: usize,
}

impl Default for SocketSection {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            mode: "0660".into(),
            group: String::new(),
            format: SocketFormat::Envelope,
            client_buffer: 4096,
            max_clients: 64,
        }
    }
}

impl SocketSection {
    /// The permission bits of `mode` (checked by validation).
    pub fn mode_bits(&self) -> Result<u32, ConfigError> {
        let m = self.mode.trim();
        let digits = m.strip_prefix("0o").unwrap_or(m);
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => Ok(bits),
            _ => Err(ConfigError::invalid(
                "socket.mode",
                format!("{:?} is not an octal permission like \"0660\"", self.mode),
            )),
        }
    }

    /// The group to give the socket file: None keeps the agent's group.
    pub fn gid(&self) -> Result<Option<u32>, ConfigError> {
        let g = self.group.trim();
        if g.is_empty() {
            return Ok(None);
        }
        if let Ok(gid) = g.parse::<u32>() {
            return Ok(Some(gid));
        }
        match nix::unistd::Group::from_name(g) {
            Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
            Ok(None) => Err(ConfigError::invalid("socket.group", format!("no group named {g:?}"))),
            Err(e) => Err(ConfigError::invalid("socket.group", format!("cannot look up group {g:?}: {e}"))),
        }
    }
}

/// How events are written to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SocketFormat {
    #[default]
    Envelope,
    Flat,
}

impl SocketFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketFormat::Envelope => "envelope",
            SocketFormat::Flat => "flat",
        }
    }
}

/// Longest socket path the kernel accepts (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

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
        if self.local_only() {
            // No NATS: check the other [nats] keys with a placeholder URL.
            let mut nats = self.nats.clone();
            nats.url = "nats://127.0.0.1:4222".into();
            nats.validate()?;
        } else {
            self.nats.validate()?;
        }
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
        let k = &self.socket;
        let path_len = k.path.as_os_str().len();
        if path_len > MAX_SOCKET_PATH {
            return Err(ConfigError::invalid(
                "socket.path",
                format!("{path_len} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}"),
            ));
        }
        if path_len > 0 && k.path.file_name().is_none() {
            return Err(ConfigError::invalid("socket.path", "must name a file"));
        }
        k.mode_bits()?;
        k.gid()?;
        if !(1..=1_000_000).contains(&k.client_buffer) {
            return Err(ConfigError::invalid("socket.client_buffer", "must be between 1 and 1000000"));
        }
        if !(1..=10_000).contains(&k.max_clients) {
            return Err(ConfigError::invalid("socket.max_clients", "must be between 1 and 10000"));
        }
        secmon_fim::config::validate(&self.watches, &self.fim)?;
        self.validate_logs()?;
        self.validate_commands()?;
        self.enrollment.validate()
    }
}

impl AgentConfig {
    fn validate_commands(&self) -> Result<(), ConfigError> {
        use crate::scripts;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.commands.scripts.iter().enumerate() {
            let key = |k: &str| format!("commands.scripts[{i}].{k}");
            if !scripts::is_token(&s.name) {
                return Err(ConfigError::invalid(key("name"), "must be 1 to 64 of a-z, 0-9, _ and -"));
            }
            if crate::commands::KNOWN_COMMANDS.contains(&s.name.as_str()) {
                return Err(ConfigError::invalid(key("name"), format!("{:?} is a built-in command", s.name)));
            }
            if !names.insert(&s.name) {
                return Err(ConfigError::invalid(key("name"), format!("{:?} is configured twice", s.name)));
            }
            scripts::check_script_file(&s.path)
                .map_err(|reason| ConfigError::invalid(key("path"), reason))?;
            for (j, a) in s.args.iter().enumerate() {
                if !scripts::is_token(&a.name) {
                    return Err(ConfigError::invalid(
                        key(&format!("args[{j}].name")),
                        "must be 1 to 64 of a-z, 0-9, _ and -",
                    ));
                }
                if let Err(e) = scripts::compile_pattern(&a.pattern) {
                    return Err(ConfigError::invalid(
                        key(&format!("args[{j}].pattern")),
                        format!("not a valid regex: {e}"),
                    ));
                }
            }
            if s.timeout.is_zero() || s.timeout > MAX_SCRIPT_TIMEOUT {
                return Err(ConfigError::invalid(key("timeout"), "must be more than 0s and at most 5m"));
            }
            if !(1..=MAX_SCRIPT_OUTPUT).contains(&s.max_output) {
                return Err(ConfigError::invalid(key("max_output"), "must be between 1 and 1048576"));
            }
        }
        Ok(())
    }

    fn validate_logs(&self) -> Result<(), ConfigError> {
        let m = &self.log_monitor;
        if !(256..=16 * 1024 * 1024).contains(&m.max_line_bytes) {
            return Err(ConfigError::invalid(
                "log_monitor.max_line_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if m.poll_interval < Duration::from_millis(10) || m.poll_interval > Duration::from_secs(60) {
            return Err(ConfigError::invalid("log_monitor.poll_interval", "must be between 10ms and 60s"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.logs.iter().enumerate() {
            let key = format!("logs[{i}].path");
            if !l.path.is_absolute() {
                return Err(ConfigError::invalid(&key, "must be an absolute path"));
            }
            if l.path.file_name().is_none() {
                return Err(ConfigError::invalid(&key, "must name a file"));
            }
            if !seen.insert(&l.path) {
                return Err(ConfigError::invalid(&key, format!("{} is listed twice", l.path.display())));
            }
        }
        Ok(())
    }

    /// The name the agent registers with: the configured one, or the hostname.
    pub fn effective_name(&self) -> String {
        if self.agent.name.trim().is_empty() {
            crate::host_facts::hostname()
        } else {
            self.agent.name.clone()
        }
    }

    /// True when `[nats] url` is empty: no NATS at all, events go to the socket only.
    pub fn local_only(&self) -> bool {
        self.nats.url.trim().is_empty()
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
    fn watches_fim_and_socket_sections() {
        let c = parse(
            "[[watches]]\npath = \"/etc/ssh\"\ndescription = \"SSH daemon configuration\"\nenabled = true\nrecursive = true\n\n\
             [[watches]]\npath = \"/root/.ssh\"\naccess = true\n\n\
             [fim]\nbackend = \"inotify\"\n\n\
             [socket]\npath = \"/run/secmon/agent.sock\"\nformat = \"flat\"\nmode = \"0640\"\ngroup = \"0\"\n",
        )
        .unwrap();
        assert_eq!(c.watches.len(), 2);
        assert_eq!(c.watches[0].path, PathBuf::from("/etc/ssh"));
        assert_eq!(c.watches[0].description, "SSH daemon configuration");
        assert!(c.watches[0].enabled && c.watches[0].recursive && !c.watches[0].access);
        assert!(c.watches[1].access);
        assert_eq!(c.fim.backend, secmon_fim::BackendChoice::Inotify);
        assert_eq!(c.socket.format, SocketFormat::Flat);
        assert_eq!(c.socket.mode_bits().unwrap(), 0o640);
        assert_eq!(c.socket.gid().unwrap(), Some(0));
        assert_eq!(c.socket.client_buffer, 4096);
        assert_eq!(c.socket.max_clients, 64);
        let d = AgentConfig::default();
        assert_eq!(d.socket.path, PathBuf::new(), "no socket unless configured");
        assert_eq!(d.socket.mode_bits().unwrap(), 0o660);
        assert_eq!(d.socket.gid().unwrap(), None);
        assert!(d.watches.is_empty());
    }

    #[test]
    fn group_names_resolve() {
        let root = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0)).unwrap().unwrap().name;
        let c = parse(&format!("[socket]\ngroup = \"{root}\"\n")).unwrap();
        assert_eq!(c.socket.gid().unwrap(), Some(0));
    }

    #[test]
    fn empty_nats_url_means_local_only() {
        let c = parse("[nats]\nurl = \"\"\n").unwrap();
        assert!(c.local_only());
        assert!(!AgentConfig::default().local_only());
        // The other [nats] keys are still checked.
        let e = parse("[nats]\nurl = \"\"\nsubject_prefix = \"a..b\"\n").unwrap_err().to_string();
        assert!(e.contains("nats.subject_prefix"), "{e}");
    }

    #[test]
    fn env_overrides_reach_the_new_sections() {
        let env: BTreeMap<String, String> = [
            ("SECMON_SOCKET_PATH", "/tmp/x.sock"),
            ("SECMON_SOCKET_CLIENT_BUFFER", "16"),
            ("SECMON_FIM_SCAN_INTERVAL", "0s"),
            ("SECMON_NATS_URL", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c: AgentConfig = secmon_config::from_str_with_env("", Path::new("agent.toml"), &env).unwrap();
        assert_eq!(c.socket.path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.socket.client_buffer, 16);
        assert_eq!(c.fim.scan_interval, Duration::ZERO);
        assert!(c.local_only());
    }

    #[test]
    fn bad_new_values_name_the_key() {
        let long = format!("/{}", "a".repeat(120));
        for (text, key) in [
            ("[socket]\nmode = \"rw\"\n".to_owned(), "socket.mode"),
            ("[socket]\nmode = \"01777\"\n".to_owned(), "socket.mode"),
            ("[socket]\nmode = \"\"\n".to_owned(), "socket.mode"),
            ("[socket]\ngroup = \"no-such-group-xyz\"\n".to_owned(), "socket.group"),
            ("[socket]\nformat = \"xml\"\n".to_owned(), "socket.format"),
            ("[socket]\nclient_buffer = 0\n".to_owned(), "socket.client_buffer"),
            ("[socket]\nmax_clients = 0\n".to_owned(), "socket.max_clients"),
            (format!("[socket]\npath = \"{long}\"\n"), "socket.path"),
            ("[socket]\npath = \"/run/secmon/..\"\n".to_owned(), "socket.path"),
            ("[[watches]]\npath = \"etc\"\n".to_owned(), "watches[0].path"),
            (
                "[[watches]]\npath = \"/etc\"\n[[watches]]\npath = \"/x\"\nignore = [\"[\"]\n".to_owned(),
                "watches[1].ignore",
            ),
            ("[[watches]]\npath = \"/etc\"\nrecursiv = true\n".to_owned(), "recursiv"),
            ("[fim]\nhash_workers = 0\n".to_owned(), "fim.hash_workers"),
            ("[fim]\nbackend = \"kqueue\"\n".to_owned(), "fim.backend"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn watch_changes_need_a_restart_and_change_the_digest() {
        let a = AgentConfig::default();
        let mut b = a.clone();
        b.watches.push(secmon_fim::WatchConfig { path: "/etc".into(), ..Default::default() });
        b.socket.path = "/run/x.sock".into();
        assert_eq!(a.changed_keys(&b), vec!["socket.path", "watches"]);
        assert!(!LIVE_KEYS.contains(&"watches") && !LIVE_KEYS.contains(&"socket.path"));
        assert_ne!(secmon_config::digest(&a), secmon_config::digest(&b));
    }

    #[test]
    fn logs_and_log_monitor_sections() {
        let c = parse(
            "[log_monitor]\nmax_line_bytes = 4096\npoll_interval = \"250ms\"\nstart_at = \"beginning\"\n\n\
             [[logs]]\npath = \"/var/log/auth.log\"\n\n[[logs]]\npath = \"/var/log/app.log\"\nformat = \"raw\"\n",
        )
        .unwrap();
        assert_eq!(c.logs.len(), 2);
        assert_eq!(c.logs[0], LogSource { path: "/var/log/auth.log".into(), format: LogFormat::Auto });
        assert_eq!(c.logs[1].format, LogFormat::Raw);
        assert_eq!(c.log_monitor.max_line_bytes, 4096);
        assert_eq!(c.log_monitor.poll_interval, Duration::from_millis(250));
        assert_eq!(c.log_monitor.start_at, StartAt::Beginning);
        // Off: no entries, or an explicit empty list; the built-in default follows nothing.
        assert!(parse("logs = []\n").unwrap().logs.is_empty());
        assert!(AgentConfig::default().logs.is_empty());
        let d = LogMonitorSection::default();
        assert_eq!(
            (d.max_line_bytes, d.poll_interval, d.start_at),
            (16384, Duration::from_millis(100), StartAt::End)
        );
        for f in ["syslog3164", "syslog5424", "auto"] {
            parse(&format!("[[logs]]\npath = \"/x\"\nformat = \"{f}\"\n")).unwrap();
        }
        let env: BTreeMap<String, String> =
            [("SECMON_LOG_MONITOR_POLL_INTERVAL".to_owned(), "1s".to_owned())].into_iter().collect();
        let c: AgentConfig = secmon_config::from_str_with_env("", Path::new("agent.toml"), &env).unwrap();
        assert_eq!(c.log_monitor.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_log_values_name_the_key() {
        for (text, key) in [
            ("[[logs]]\npath = \"var/log/auth.log\"\n", "logs[0].path"),
            ("[[logs]]\npath = \"/a\"\n[[logs]]\npath = \"/a\"\n", "logs[1].path"),
            ("[[logs]]\npath = \"/\"\n", "logs[0].path"),
            ("[[logs]]\npath = \"/a\"\nformat = \"json\"\n", "format"),
            ("[[logs]]\npth = \"/a\"\n", "pth"),
            ("[log_monitor]\nmax_line_bytes = 10\n", "log_monitor.max_line_bytes"),
            ("[log_monitor]\npoll_interval = \"1ms\"\n", "log_monitor.poll_interval"),
            ("[log_monitor]\nstart_at = \"middle\"\n", "log_monitor.start_at"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn commands_section_defaults_and_needs_a_restart() {
        let d = AgentConfig::default();
        assert!(d.commands.allow_scripts && d.commands.scripts.is_empty());
        let c = parse("[commands]\nallow_scripts = false\n").unwrap();
        assert!(!c.commands.allow_scripts);
        assert_eq!(d.changed_keys(&c), vec!["commands.allow_scripts"]);
        assert!(!LIVE_KEYS.iter().any(|k| k.starts_with("commands")));
        let e = parse("[commands]\nallow_script = false\n").unwrap_err().to_string();
        assert!(e.contains("allow_script"), "{e}");
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
