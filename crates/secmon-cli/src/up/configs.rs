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
    /// `--secure`: NATS in operator mode with TLS, the API over HTTPS with logins,
    /// an enrolled agent with its own NATS identity, signed events.
    pub secure: bool,
    /// `--mutual-tls`: `init --mutual-tls` on the first secure run. The config files
    /// follow what is on disk (the manager's and the agent's client certificates), so
    /// a reused deployment keeps its mode whatever this flag says.
    pub mutual_tls: bool,
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

    /// What `secmon-manager init` writes (secure mode): `<manager data>/pki`.
    pub fn pki_dir(&self) -> PathBuf {
        self.manager_data_dir().join("pki")
    }

    /// The enrolled agent's NATS creds file (written by `secmon-agent enroll`).
    pub fn agent_creds_path(&self) -> PathBuf {
        self.agent_state_dir().join("nats.creds")
    }

    /// The CA certificate the enrolled agent received.
    pub fn agent_ca_path(&self) -> PathBuf {
        self.agent_state_dir().join("ca.pem")
    }

    /// The agent of the stack has enrolled (secure mode).
    /// The manager's NATS client certificate and key, written by `init --mutual-tls`.
    pub fn manager_client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        let pki = self.pki_dir();
        let (cert, key) = (pki.join("manager-client.pem"), pki.join("manager-client-key.pem"));
        (cert.is_file() && key.is_file()).then_some((cert, key))
    }

    /// The agent's NATS client certificate and key, written by its enrollment into a
    /// mutual-TLS deployment.
    pub fn agent_client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self.agent_state_dir();
        let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
        (cert.is_file() && key.is_file()).then_some((cert, key))
    }

    pub fn agent_enrolled(&self) -> bool {
        self.agent_creds_path().is_file()
            && self.agent_ca_path().is_file()
            && self.agent_state_dir().join("identity.json").is_file()
    }

    /// The API's URL: https in secure mode; a wildcard listen address is reached
    /// through loopback here.
    pub fn api_url(&self) -> String {
        let base = crate::http::api_base(self.api_listen);
        if self.secure { base.replacen("http://", "https://", 1) } else { base }
    }

    /// The API URL agents are told to use (`[security] public_api_url`): on a wildcard
    /// listen address, this host's name (the server certificate holds it).
    pub fn public_api_url(&self) -> String {
        if self.api_listen.ip().is_unspecified()
            && let Some(h) = hostname()
        {
            return format!("https://{h}:{}", self.api_listen.port());
        }
        self.api_url()
    }

    /// The NATS URL enrolled agents get: with the API on a wildcard address (reachable
    /// from other hosts), this host's name, which the server certificate holds.
    pub fn agent_nats_url(&self) -> String {
        if self.api_listen.ip().is_unspecified()
            && let Some(h) = hostname()
            && let Ok(a) = crate::nats_child::NatsAddr::parse(&self.nats_url)
        {
            return format!("tls://{h}:{}", a.port);
        }
        self.nats_url.clone()
    }

    /// The manager config `secmon-manager init` reads (secure mode, first run): only
    /// where the manager keeps its data, since the pki files it names do not exist yet.
    pub fn manager_init_toml(&self) -> String {
        let doc = table([
            ("storage", table([("data_dir", path(&self.manager_data_dir()))])),
            ("log", table([("level", s(&self.log_level))])),
        ]);
        render("secmon-manager", doc)
    }

    /// How often the manager looks for heartbeat timeouts: often enough that a dead
    /// agent is `disconnected` within timeout + one heartbeat interval.
    pub fn check_interval(&self) -> Duration {
        (self.heartbeat_interval / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
            .min(self.heartbeat_timeout)
    }

    pub fn manager_toml(&self) -> String {
        let nats = if self.secure {
            let pki = self.pki_dir();
            let mut t = table([
                ("url", s(&self.nats_url)),
                ("credentials_file", path(&pki.join("manager.creds"))),
                ("tls_ca", path(&pki.join("ca.pem"))),
            ]);
            if let Some((cert, key)) = self.manager_client_cert() {
                insert(&mut t, "tls_cert", path(&cert));
                insert(&mut t, "tls_key", path(&key));
            }
            t
        } else {
            table([("url", s(&self.nats_url))])
        };
        let mut doc = table([
            ("nats", nats),
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
        if self.secure {
            insert(
                &mut doc,
                "security",
                table([
                    ("enabled", Value::Boolean(true)),
                    ("public_api_url", s(self.public_api_url())),
                    ("agent_nats_url", s(self.agent_nats_url())),
                ]),
            );
        }
        render("secmon-manager", doc)
    }

    /// The agent's config. In secure mode it names the creds file and CA once the
    /// agent has enrolled (`secmon-agent enroll` writes them); before, only the URL.
    pub fn agent_toml(&self) -> String {
        let nats = if self.secure && self.agent_enrolled() {
            let mut t = table([
                ("url", s(&self.nats_url)),
                ("credentials_file", path(&self.agent_creds_path())),
                ("tls_ca", path(&self.agent_ca_path())),
            ]);
            if let Some((cert, key)) = self.agent_client_cert() {
                insert(&mut t, "tls_cert", path(&cert));
                insert(&mut t, "tls_key", path(&key));
            }
            t
        } else {
            table([("url", s(&self.nats_url))])
        };
        let doc = table([
            ("nats", nats),
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

fn insert(doc: &mut Value, key: &str, v: Value) {
    if let Value::Table(t) = doc {
        t.insert(key.to_owned(), v);
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h != "localhost")
}

pub fn write_file(p: &Path, text: &str) -> anyhow::Result<()> {
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
            secure: false,
            mutual_tls: false,
        }
    }

    #[test]
    fn secure_manager_config_names_the_pki_files() {
        let d = tempfile::tempdir().unwrap();
        let mut st = settings();
        st.data_dir = d.path().to_owned();
        st.secure = true;
        st.nats_url = "tls://127.0.0.1:4333".into();
        st.api_listen = "127.0.0.1:8443".parse().unwrap();
        let m: Table = toml::from_str(&st.manager_toml()).unwrap();
        let pki = d.path().join("manager/pki");
        assert_eq!(m["nats"]["url"].as_str(), Some("tls://127.0.0.1:4333"));
        assert_eq!(m["nats"]["credentials_file"].as_str(), pki.join("manager.creds").to_str());
        assert_eq!(m["nats"]["tls_ca"].as_str(), pki.join("ca.pem").to_str());
        assert_eq!(m["security"]["enabled"].as_bool(), Some(true));
        assert_eq!(m["security"]["public_api_url"].as_str(), Some("https://127.0.0.1:8443"));
        assert_eq!(m["security"]["agent_nats_url"].as_str(), Some("tls://127.0.0.1:4333"));
        let init: Table = toml::from_str(&st.manager_init_toml()).unwrap();
        assert!(init.get("nats").is_none() && init.get("security").is_none());

        // Before enrollment the agent has no creds to name; after, it has.
        let a: Table = toml::from_str(&st.agent_toml()).unwrap();
        assert!(a["nats"].get("credentials_file").is_none());
        std::fs::create_dir_all(st.agent_state_dir()).unwrap();
        for f in ["nats.creds", "ca.pem", "identity.json"] {
            std::fs::write(st.agent_state_dir().join(f), "x").unwrap();
        }
        let a: Table = toml::from_str(&st.agent_toml()).unwrap();
        assert_eq!(a["nats"]["credentials_file"].as_str(), st.agent_creds_path().to_str());
        assert_eq!(a["nats"]["tls_ca"].as_str(), st.agent_ca_path().to_str());
        assert!(a["nats"].get("tls_cert").is_none() && m["nats"].get("tls_cert").is_none());
        assert!(toml::from_str::<Table>(&settings().manager_toml()).unwrap().get("security").is_none());

        // Mutual TLS (the client certificates on disk): both name theirs.
        std::fs::create_dir_all(&pki).unwrap();
        for f in [pki.join("manager-client.pem"), pki.join("manager-client-key.pem")] {
            std::fs::write(f, "x").unwrap();
        }
        for f in ["client.pem", "client-key.pem"] {
            std::fs::write(st.agent_state_dir().join(f), "x").unwrap();
        }
        let m: Table = toml::from_str(&st.manager_toml()).unwrap();
        assert_eq!(m["nats"]["tls_cert"].as_str(), pki.join("manager-client.pem").to_str());
        assert_eq!(m["nats"]["tls_key"].as_str(), pki.join("manager-client-key.pem").to_str());
        let a: Table = toml::from_str(&st.agent_toml()).unwrap();
        assert_eq!(a["nats"]["tls_cert"].as_str(), st.agent_state_dir().join("client.pem").to_str());
        assert_eq!(a["nats"]["tls_key"].as_str(), st.agent_state_dir().join("client-key.pem").to_str());
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
