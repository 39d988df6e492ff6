//! The manager and agent config files `secmon up` writes into its data dir. Only
//! keys of the documented config contract are written, so the daemons' own
//! defaults apply to everything else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use toml::Value;

/// Everything the two config files depend on.
#[derive(Debug, Clone)]
pub struct StackSettings {
    pub data_dir: PathBuf,
    pub nats_url: String,
    /// `--nats-url` was given: use that server or none.
    pub explicit_nats_url: bool,
    pub api_listen: SocketAddr,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub log_level: String,
    /// The manager's `[rules] dirs` entry (absolute), or none: no detection alerts.
    pub rules_dir: Option<PathBuf>,
}

/// The log files the agent of `secmon up` follows: where Debian/Ubuntu's rsyslog
/// writes sshd's and everything else's lines. A missing file is picked up when it
/// appears, so listing both costs nothing on hosts without them.
pub const FOLLOWED_LOGS: [&str; 2] = ["/var/log/auth.log", "/var/log/syslog"];

impl StackSettings {
    pub fn manager_config_path(&self) -> PathBuf {
        self.data_dir.join("manager.toml")
    }

    pub fn agent_config_path(&self) -> PathBuf {
        self.data_dir.join("agent.toml")
    }

    pub fn manager_data_dir(&self) -> PathBuf {
        self.data_dir.join("manager")
    }

    /// The agent's local event socket: `secmon events --socket <this>`.
    pub fn agent_socket_path(&self) -> PathBuf {
        self.data_dir.join("agent.sock")
    }

    pub fn agent_state_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// How often the manager looks for heartbeat timeouts: often enough that a dead
    /// agent is `disconnected` within timeout + one heartbeat interval.
    pub fn check_interval(&self) -> Duration {
        (self.heartbeat_interval / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
            .min(self.heartbeat_timeout)
    }

    pub fn manager_toml(&self) -> String {
        let doc = table([
            ("nats", table([("url", s(&self.nats_url))])),
            ("api", table([("listen", s(self.api_listen.to_string()))])),
            ("storage", table([("data_dir", path(&self.manager_data_dir()))])),
            (
                "agents",
                table([
                    ("heartbeat_timeout", duration(self.heartbeat_timeout)),
                    ("check_interval", duration(self.check_interval())),
                ]),
            ),
            ("log", table([("level", s(&self.log_level))])),
            ("rules", table([("dirs", Value::Array(self.rules_dir.iter().map(|d| path(d)).collect()))])),
        ]);
        render("secmon-manager", doc)
    }

    pub fn agent_toml(&self) -> String {
        let doc = table([
            ("nats", table([("url", s(&self.nats_url))])),
            (
                "agent",
                table([
                    ("state_dir", path(&self.agent_state_dir())),
                    ("heartbeat_interval", duration(self.heartbeat_interval)),
                ]),
            ),
            ("log", table([("level", s(&self.log_level))])),
            ("socket", table([("path", path(&self.agent_socket_path()))])),
            (
                "watches",
                Value::Array(vec![table([
                    ("path", s("/etc")),
                    ("description", s("system configuration (secmon up)")),
                    ("recursive", Value::Boolean(true)),
                ])]),
            ),
            (
                "logs",
                Value::Array(
                    FOLLOWED_LOGS.iter().map(|p| table([("path", s(*p)), ("format", s("auto"))])).collect(),
                ),
            ),
        ]);
        render("secmon-agent", doc)
    }

    /// Writes both files. The daemons create the directories they name, with the
    /// permissions they want.
    pub fn write(&self) -> anyhow::Result<()> {
        write_file(&self.manager_config_path(), &self.manager_toml())?;
        write_file(&self.agent_config_path(), &self.agent_toml())
    }
}

fn write_file(p: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))
}

fn render(daemon: &str, doc: Value) -> String {
    format!(
        "# {daemon} config written by `secmon up` at every start: edit its flags instead.\n\n{}",
        toml::to_string(&doc).expect("a TOML table always serializes")
    )
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Table(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn path(p: &Path) -> Value {
    s(p.to_string_lossy())
}

fn duration(d: Duration) -> Value {
    s(humantime::format_duration(d).to_string())
}

#[cfg(test)]
mod tests {
    use toml::Table;

    use super::*;

    fn settings() -> StackSettings {
        StackSettings {
            data_dir: "/d \"q\"".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            explicit_nats_url: false,
            api_listen: "127.0.0.1:8080".parse().unwrap(),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(2),
            log_level: "info".into(),
            rules_dir: Some("/src/secmon/rules".into()),
        }
    }

    #[test]
    fn configs_carry_the_contract_keys() {
        let st = settings();
        let m: Table = toml::from_str(&st.manager_toml()).unwrap();
        assert_eq!(m["api"]["listen"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(m["storage"]["data_dir"].as_str(), Some("/d \"q\"/manager"));
        assert_eq!(m["agents"]["heartbeat_timeout"].as_str(), Some("2s"));
        assert_eq!(m["agents"]["check_interval"].as_str(), Some("125ms"));
        let a: Table = toml::from_str(&st.agent_toml()).unwrap();
        assert_eq!(a["nats"]["url"].as_str(), Some("nats://127.0.0.1:4222"));
        assert_eq!(a["agent"]["state_dir"].as_str(), Some("/d \"q\"/agent"));
        assert_eq!(a["agent"]["heartbeat_interval"].as_str(), Some("500ms"));
        assert_eq!(a["log"]["level"].as_str(), Some("info"));
    }

    #[test]
    fn manager_loads_the_rules_dir_and_agent_follows_the_auth_logs() {
        let mut st = settings();
        let m: Table = toml::from_str(&st.manager_toml()).unwrap();
        assert_eq!(m["rules"]["dirs"].as_array().unwrap(), &vec![Value::from("/src/secmon/rules")]);
        let a: Table = toml::from_str(&st.agent_toml()).unwrap();
        let logs: Vec<_> =
            a["logs"].as_array().unwrap().iter().map(|l| l["path"].as_str().unwrap()).collect();
        assert_eq!(logs, ["/var/log/auth.log", "/var/log/syslog"]);
        st.rules_dir = None;
        let m: Table = toml::from_str(&st.manager_toml()).unwrap();
        assert!(m["rules"]["dirs"].as_array().unwrap().is_empty());
    }

    #[test]
    fn check_interval_is_bounded() {
        let mut st = settings();
        st.heartbeat_interval = Duration::from_secs(60);
        assert_eq!(st.check_interval(), Duration::from_secs(1));
        st.heartbeat_interval = Duration::from_millis(100);
        assert_eq!(st.check_interval(), Duration::from_millis(100));
    }
}
