//! Detection end to end, as a user sees it: a real agent following a real log file
//! and watching a real directory, a real manager loaded with the shipped rule pack
//! (`rules/`), a real nats-server; the alerts are read from `GET /api/alerts`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secmon_agent::config::{AgentConfig, LogFormat, LogSource, StartAt};
use secmon_agent::{Agent, AgentHandle, AgentOptions};
use secmon_fim::WatchConfig;
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_proto::AgentStatus;
use secmon_testkit::NatsServer;
use serde_json::Value;

/// `id` of rules/ssh/ssh_brute_force.yml.
const BRUTE_FORCE_ID: &str = "2a490c5f-4390-4c2a-8fcd-d6a331e88aa0";
/// `id` of rules/file/ssh_authorized_keys_changed.yml.
const AUTHORIZED_KEYS_ID: &str = "1e02b6c6-1611-42d4-820c-5ecad5995dfa";
/// The issue's check: an alert is visible in the API within 1 s of its last event.
const ALERT_LATENCY: Duration = Duration::from_secs(1);
/// Generous: the CI machine is slow, and the agent must first be seen active.
const DEADLINE: Duration = Duration::from_secs(20);

fn rules_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    assert!(d.join("ssh/ssh_brute_force.yml").is_file(), "rule pack not found at {}", d.display());
    d.canonicalize().unwrap()
}

/// A running manager (with the rule pack) and agent (following `auth.log`, watching
/// `home/`), both under one temp dir.
struct Stack {
    _nats: NatsServer,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    manager: ManagerHandle,
    agent: Option<AgentHandle>,
}

impl Stack {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("home/alice/.ssh")).unwrap();
        std::fs::write(root.join("home/alice/.ssh/authorized_keys"), "ssh-ed25519 AAAAold alice@laptop\n")
            .unwrap();
        // Empty, and read from the beginning: no line is missed however late the
        // log monitor opens it.
        std::fs::write(root.join("auth.log"), "").unwrap();

        let mut m = ManagerConfig::default();
        m.nats.url = nats.url();
        m.api.listen = "127.0.0.1:0".into();
        m.storage.data_dir = root.join("manager");
        m.agents.heartbeat_timeout = Duration::from_secs(5);
        m.agents.check_interval = Duration::from_millis(200);
        m.rules.dirs = vec![rules_dir()];
        let manager = Manager::start(m).await.unwrap();

        let mut a = AgentConfig::default();
        a.nats.url = nats.url();
        a.agent.name = "e2e-detect".into();
        a.agent.state_dir = root.join("agent");
        a.agent.heartbeat_interval = Duration::from_millis(500);
        a.log_monitor.start_at = StartAt::Beginning;
        a.logs = vec![LogSource { path: root.join("auth.log"), format: LogFormat::Syslog3164 }];
        a.watches = vec![WatchConfig {
            path: root.join("home"),
            description: "home directories (e2e)".into(),
            ..Default::default()
        }];
        let agent = Agent::start(a, AgentOptions::default()).await.unwrap();

        let s = Self { _nats: nats, _tmp: tmp, root, manager, agent: Some(agent) };
        let id = s.agent().agent_id().clone();
        let end = Instant::now() + DEADLINE;
        while s.manager.registry().status(&id) != Some(AgentStatus::Active) {
            assert!(Instant::now() < end, "agent not active within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rules = s.get("/api/rules").await;
        assert!(
            rules.to_string().contains(BRUTE_FORCE_ID) && rules.to_string().contains(AUTHORIZED_KEYS_ID),
            "rule pack not loaded: {rules}"
        );
        s
    }

    fn agent(&self) -> &AgentHandle {
        self.agent.as_ref().unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.manager.api_addr());
        tokio::task::spawn_blocking(move || {
            let mut r = ureq::get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
            r.body_mut().read_json::<Value>().unwrap()
        })
        .await
        .unwrap()
    }

    /// The alerts of `rule`, as listed by the API.
    async fn alerts(&self, rule: &str) -> Vec<Value> {
        self.get(&format!("/api/alerts?rule={rule}")).await["items"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the alerts of `rule` every 20 ms until one satisfies `want`; returns it
    /// and how long that took.
    async fn wait_alert(&self, rule: &str, want: impl Fn(&Value) -> bool) -> (Value, Duration) {
        let t0 = Instant::now();
        let mut last = vec![];
        loop {
            last = self.alerts(rule).await;
            if let Some(a) = last.iter().find(|a| want(a)) {
                return (a.clone(), t0.elapsed());
            }
            assert!(t0.elapsed() < DEADLINE, "no alert of {rule} within {DEADLINE:?}; last: {last:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        self.agent.take().unwrap().shutdown("test done").await;
        self.manager.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sshd_failures_in_the_tailed_log_raise_a_brute_force_alert_within_a_second() {
    let s = Stack::start().await;
    let id = s.agent().agent_id().clone();
    let mut log = std::fs::OpenOptions::new().append(true).open(s.root.join("auth.log")).unwrap();
    // Four failures from another source first: below the threshold, no alert.
    for i in 0..4 {
        writeln!(
            log,
            "Nov 23 21:44:5{i} web1 sshd[80{i}]: Failed password for root from 198.51.100.7 port 5000{i} ssh2"
        )
        .unwrap();
    }
    log.flush().unwrap();
    let mut last_write = Instant::now();
    for i in 0..5 {
        // Apart in time, as a real attacker's attempts are.
        tokio::time::sleep(Duration::from_millis(30)).await;
        writeln!(
            log,
            "Nov 23 21:45:0{i} web1 sshd[{}]: Failed password for invalid user admin from 203.0.113.9 port 4242 ssh2",
            900 + i
        )
        .unwrap();
        log.flush().unwrap();
        last_write = Instant::now();
    }
    let (alert, _) = s
        .wait_alert(BRUTE_FORCE_ID, |a| a["key"].as_str().unwrap_or("").contains("src_ip=203.0.113.9"))
        .await;
    let latency = last_write.elapsed();
    println!("brute-force alert listed {latency:?} after the last line was appended");
    assert_eq!(alert["title"], "SSH brute force from one source", "{alert:#}");
    assert_eq!(alert["severity"], "high", "{alert:#}");
    assert_eq!(alert["agent_id"], id.as_str(), "{alert:#}");
    assert_eq!(alert["status"], "open", "{alert:#}");
    assert!(alert["event_count"].as_u64().unwrap_or(0) >= 5, "{alert:#}");
    assert!(
        latency < ALERT_LATENCY,
        "alert listed {latency:?} after the last line (want < {ALERT_LATENCY:?})"
    );
    // The four earlier failures (same file, so read before the alert's) raised nothing.
    let all = s.alerts(BRUTE_FORCE_ID).await;
    assert!(all.iter().all(|a| a["key"] != "src_ip=198.51.100.7"), "alert below the threshold: {all:#?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_authorized_keys_file_raises_a_critical_alert_for_the_agent() {
    let s = Stack::start().await;
    let id = s.agent().agent_id().clone();
    let keys = s.root.join("home/alice/.ssh/authorized_keys");
    // Another process writes, as an intruder would: a fanotify backend ignores the
    // agent's own pid, which is this test process.
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"echo 'ssh-ed25519 AAAAintruder evil@host' >> "$1""#)
        .arg("sh")
        .arg(&keys)
        .status()
        .unwrap();
    assert!(st.success());
    let (alert, took) = s.wait_alert(AUTHORIZED_KEYS_ID, |_| true).await;
    println!("authorized_keys alert listed {took:?} after the write");
    assert_eq!(alert["title"], "SSH authorized_keys changed", "{alert:#}");
    assert_eq!(alert["severity"], "critical", "{alert:#}");
    assert_eq!(alert["agent_id"], id.as_str(), "{alert:#}");
    // Its triggering event is the agent's file event for that path.
    let events = s.get(&format!("/api/events?agent={id}&class=file&limit=1000")).await;
    let trigger = alert["event_ids"][0].as_str().expect("a triggering event id");
    let event = events["items"].as_array().unwrap().iter().find(|e| e["id"] == trigger);
    let event = event.unwrap_or_else(|| panic!("event {trigger} not listed: {events:#}"));
    assert_eq!(event["payload"]["path"], keys.to_str().unwrap(), "{event:#}");
    s.shutdown().await;
}
