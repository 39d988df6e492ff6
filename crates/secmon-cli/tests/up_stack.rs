//! `secmon up` end to end, as a user runs it: the real binary, the real manager and
//! agent binaries, real nats-server processes, the REST API over a real socket.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use secmon_testkit::{ChildGuard, NatsServer, NatsServerOptions, free_port, wait_until, workspace_bin};
use serde_json::{Value, json};

const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(2);

/// A running `secmon up`, its data dir, API base URL and output file.
struct Up {
    child: ChildGuard,
    data: tempfile::TempDir,
    api: String,
    log: PathBuf,
}

impl Up {
    fn start(nats_url: &str) -> Self {
        Self::start_with(&["--nats-url", nats_url])
    }

    fn start_with(nats_args: &[&str]) -> Self {
        // The daemons are found next to `secmon`; make sure they were built.
        workspace_bin("secmon-manager");
        workspace_bin("secmon-agent");
        let data = tempfile::Builder::new().prefix("secmon-up-").tempdir().unwrap();
        let port = free_port();
        let log = data.path().join("up.out");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secmon"))
            .arg("up")
            .arg("--data-dir")
            .arg(data.path().join("stack"))
            .args(nats_args)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--heartbeat-interval")
            .arg("500ms")
            .arg("--heartbeat-timeout")
            .arg("2s")
            // From the repository root, as scripts/up runs it: the default `./rules`
            // is the rule pack.
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn secmon up");
        Self { child: ChildGuard::new(child), data, api: format!("http://127.0.0.1:{port}"), log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stack_dir(&self) -> PathBuf {
        self.data.path().join("stack")
    }

    fn pids(&self) -> Value {
        let text = std::fs::read_to_string(self.stack_dir().join("pids.json"))
            .unwrap_or_else(|e| panic!("pids.json: {e}\n{}", self.output()));
        serde_json::from_str(&text).unwrap()
    }

    fn pid(&self, name: &str) -> i32 {
        self.pids()[name].as_i64().unwrap_or_else(|| panic!("no {name} pid in {}", self.pids())) as i32
    }

    fn agents(&self) -> Vec<Value> {
        http_get(&format!("{}/api/agents", self.api))
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// SIGINT, as Ctrl-C in a terminal, and the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        self.child.signal(Signal::SIGINT);
        self.child
            .wait_timeout(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("secmon up did not exit after SIGINT:\n{}", self.output()))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn http() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build(),
    )
}

fn http_get(url: &str) -> Option<Value> {
    let mut r = http().get(url).call().ok()?;
    if r.status() != 200 {
        return None;
    }
    r.body_mut().read_json().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes; it only waits for its parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn status_of(agents: &[Value]) -> Vec<&str> {
    agents.iter().map(|a| a["status"].as_str().unwrap_or("?")).collect()
}

#[test]
fn up_brings_the_stack_up_and_tracks_and_stops_it() {
    let nats = NatsServer::start();
    let t0 = Instant::now();
    let mut up = Up::start(&nats.url());

    // The local agent shows up `active` within 5 s of the command.
    let mut agents = Vec::new();
    let active = wait_until(Duration::from_secs(5), || {
        agents = up.agents();
        agents.len() == 1 && agents[0]["status"] == "active"
    });
    assert!(active, "no single active agent after {:?}: {agents:#?}\n{}", t0.elapsed(), up.output());
    let id = agents[0]["id"].as_str().unwrap().to_owned();
    // We used the server we were given, so started none.
    assert!(up.pids()["nats"].is_null(), "{}", up.pids());

    // Started from the repository root, the manager runs the shipped rule pack.
    let rules = http_get(&format!("{}/api/rules", up.api)).expect("GET /api/rules");
    let pack = workspace_root().join("rules");
    assert_eq!(rules["dirs"], json!([pack.to_str().unwrap()]), "{rules:#}");
    let ids: Vec<&str> = rules["rules"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert!(ids.contains(&"2a490c5f-4390-4c2a-8fcd-d6a331e88aa0"), "no ssh_brute_force rule: {rules:#}");
    assert!(rules["problems"].as_array().unwrap().is_empty(), "{rules:#}");
    let out = up.output();
    assert!(out.contains(&format!("loaded from {}", pack.display())), "{out}");
    assert!(out.contains("/var/log/auth.log"), "{out}");

    // A ping round trip through the API.
    let mut resp = http()
        .post(&format!("{}/api/agents/{id}/command", up.api))
        .send_json(json!({"command": "ping"}))
        .expect("POST command");
    let status = resp.status();
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");

    // A crashed agent is `disconnected` within timeout + one interval (+ polling
    // and scheduling margin).
    let manager = up.pid("manager");
    let agent = up.pid("agent");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let limit = TIMEOUT + INTERVAL + Duration::from_millis(700);
    let disconnected = wait_until(limit, || {
        agents = up.agents();
        status_of(&agents) == ["disconnected"]
    });
    assert!(
        disconnected,
        "agent not disconnected {:?} after SIGKILL: {agents:#?}\n{}",
        killed.elapsed(),
        up.output()
    );
    // The rest of the stack keeps running.
    assert!(alive(manager), "manager died with the agent:\n{}", up.output());
    assert!(http_get(&format!("{}/api/health", up.api)).is_some());

    // Ctrl-C: clean exit, nothing left behind.
    let st = up.interrupt();
    assert!(st.success(), "secmon up exited with {st}:\n{}", up.output());
    assert!(!alive(manager), "manager {manager} still running after secmon up exited");
    assert!(!up.stack_dir().join("pids.json").exists(), "pids.json left behind");
    assert!(nats_answers(nats.port()), "secmon up must not stop a NATS server it did not start");
}

#[test]
fn up_starts_and_stops_its_own_nats_server_when_none_answers() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut up = Up::start(&url);

    let mut agents = Vec::new();
    let active = wait_until(Duration::from_secs(15), || {
        agents = up.agents();
        status_of(&agents) == ["active"]
    });
    assert!(active, "no active agent: {agents:#?}\n{}", up.output());
    let nats = up.pid("nats");
    let (manager, agent) = (up.pid("manager"), up.pid("agent"));
    assert!(alive(nats) && nats_answers(port), "no NATS server of ours at {url}:\n{}", up.output());
    assert!(up.stack_dir().join("nats").is_dir(), "JetStream store not in the data dir");

    let st = up.interrupt();
    assert!(st.success(), "secmon up exited with {st}:\n{}", up.output());
    for (name, pid) in [("agent", agent), ("manager", manager), ("nats-server", nats)] {
        assert!(!alive(pid), "{name} ({pid}) still running after secmon up exited");
    }
    assert!(!nats_answers(port), "NATS still answers at {url}");
    // Stopped in order: the agent before the manager before NATS.
    let out = up.output();
    let pos = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s:?} not in output:\n{out}"));
    assert!(pos("stopped agent") < pos("stopped manager"), "{out}");
    assert!(pos("stopped manager") < pos("stopped nats-server"), "{out}");
}

#[test]
fn up_stops_the_rest_and_fails_when_the_manager_dies() {
    let nats = NatsServer::start();
    let mut up = Up::start(&nats.url());
    let started = wait_until(Duration::from_secs(15), || up.output().contains("secmon is up"));
    assert!(started, "stack not up:\n{}", up.output());
    let agent = up.pid("agent");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.pid("manager")), Signal::SIGKILL).unwrap();
    let st = up.child.wait_timeout(Duration::from_secs(20)).expect("secmon up should stop");
    assert!(!st.success(), "exit status {st}:\n{}", up.output());
    assert!(!alive(agent), "agent left running");
    let out = up.output();
    assert!(out.contains("secmon-manager exited unexpectedly"), "{out}");
}

/// Without --nats-url, a server at the default address that cannot serve us (the
/// Debian package's service runs without JetStream) does not stop the quick start:
/// we run our own on the next free port.
#[test]
fn up_without_nats_url_runs_its_own_server_next_to_an_unusable_default() {
    let plain = NatsServer::start_with(NatsServerOptions { jetstream: false, ..Default::default() });
    let mut up = Up::start_with(&["--default-nats-url", &plain.url()]);
    let active = wait_until(Duration::from_secs(15), || status_of(&up.agents()) == ["active"]);
    let out = up.output();
    assert!(active, "no active agent:\n{out}");
    assert!(out.contains("JetStream off") && out.contains("of our own on port"), "{out}");
    let nats = up.pid("nats");
    assert!(alive(nats));
    let st = up.interrupt();
    assert!(st.success(), "secmon up exited with {st}:\n{}", up.output());
    assert!(!alive(nats), "our nats-server left running");
    assert!(nats_answers(plain.port()), "the other server must be left alone");
}

#[test]
fn up_refuses_a_nats_server_without_jetstream() {
    let nats = NatsServer::start_with(NatsServerOptions { jetstream: false, ..Default::default() });
    let mut up = Up::start(&nats.url());
    let st = up.child.wait_timeout(Duration::from_secs(20)).expect("secmon up should stop at once");
    assert!(!st.success());
    let out = up.output();
    assert!(out.contains("JetStream off") && out.contains("-js"), "{out}");
    assert!(!up.stack_dir().join("manager.toml").exists(), "started anyway:\n{out}");
}

#[test]
fn up_refuses_a_rules_dir_that_does_not_exist() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .arg("up")
        .arg("--data-dir")
        .arg(data.path().join("stack"))
        .args(["--rules", "/nonexistent/secmon-rules"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rules /nonexistent/secmon-rules"), "{err}");
    assert!(!data.path().join("stack").exists(), "started anyway");
}

fn nats_answers(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}
