//! File integrity monitoring inside the agent, on real files: events reach the
//! socket and JetStream, `status` shows FIM, a FIM start failure is reported and the
//! agent runs on, and the agent binary does it all from a config file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::lines::{Lines, seq};
use common::*;
use nix::sys::signal::Signal;
use secmon_agent::{Agent, AgentConfig, AgentHandle, AgentOptions};
use secmon_fim::WatchConfig;
use secmon_proto::{CommandReply, DEFAULT_MAX_EVENT_BYTES, decode};
use secmon_testkit::{ChildGuard, NatsServer};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn watch(path: &Path) -> WatchConfig {
    WatchConfig { path: path.to_owned(), description: "test watch".into(), ..WatchConfig::default() }
}

fn is_created(v: &Value, path: &Path) -> bool {
    v["class"] == "file" && v["activity"] == "created" && v["payload"]["path"] == path.to_str().unwrap()
}

async fn start(cfg: AgentConfig) -> AgentHandle {
    Agent::start(cfg, AgentOptions::default()).await.expect("agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_under_a_watch_reaches_the_socket_and_status_shows_fim() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("before.txt"), "already here").unwrap();
    let mut cfg = local_config(dir.path());
    cfg.watches = vec![watch(&watched)];
    let agent = start(cfg).await;

    let st = agent.status();
    assert!(st["sensors"].as_array().unwrap().contains(&json!("fim")), "{st}");
    let backend = st["fim"]["backend"].as_str().unwrap_or_default().to_owned();
    assert!(["inotify", "fanotify"].contains(&backend.as_str()), "{st}");
    assert_eq!(st["fim"]["watches"], 1, "{st}");

    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_until_clients(&agent, 1).await;
    let file = watched.join("new.txt");
    write_from_another_process(&file, "hello");
    let v = client.until(WAIT, |v| is_created(v, &file)).await;
    assert!(seq(&v).is_some(), "spooled: it has a sequence number: {v}");
    assert_eq!(v["payload"]["event_type"], "FileCreate");
    assert_eq!(v["payload"]["watch"], watched.to_str().unwrap());
    assert_eq!(v["payload"]["watch_description"], "test watch");
    assert_eq!(v["payload"]["backend"], backend.as_str());
    assert_eq!(
        v["payload"]["after"]["hash"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "sha256 of the content"
    );
    assert!(
        eventually(WAIT, || agent.status()["fim"]["events"].as_u64().unwrap_or(0) >= 1).await,
        "{}",
        agent.status()
    );
    agent.shutdown("test").await;
    // FIM stopped before the spool closed: nothing was lost on the way.
    let rest = client.until_eof(WAIT).await;
    assert_eq!(rest.last().unwrap()["activity"], "stopped");
}

/// FIM ignores what the agent's own process does (its hashing reads), and the agent
/// runs inside this test process: the change must come from another process.
fn write_from_another_process(path: &Path, content: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" > \"$2\"")
        .arg("sh")
        .arg(content)
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

async fn wait_until_clients(agent: &AgentHandle, n: u64) {
    assert!(
        eventually(WAIT, || agent.status()["socket"]["clients"] == n).await,
        "never {n} clients: {}",
        agent.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fim_start_failure_is_reported_and_the_agent_runs_on() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // FIM keeps its baseline in <state>/fim: a plain file there makes its start fail.
    std::fs::write(state.join("fim"), "in the way").unwrap();
    let mut cfg = config(&nats.url(), &state);
    cfg.fim.camera_paths.clear();
    cfg.watches = vec![watch(dir.path())];
    let agent = start(cfg).await;

    let st = agent.status();
    assert_eq!(st["fim"]["state"], "failed", "{st}");
    assert!(st["fim"]["error"].as_str().unwrap().contains("fim"), "{st}");
    assert!(!st["sensors"].as_array().unwrap().contains(&json!("fim")), "{st}");
    wait_stream_len(&client, 2, WAIT).await;
    let stored = stored_events(&client).await;
    let err = stored.iter().find(|e| e.envelope.activity == "fim_error").expect("an agent/fim_error event");
    assert_eq!(err.envelope.class, secmon_proto::EventClass::Agent);
    assert_eq!(err.envelope.severity, secmon_proto::Severity::High);
    assert!(err.envelope.payload["detail"].as_str().unwrap().contains("fim"));
    // Still an agent: events flow.
    assert!(agent.emit(secmon_proto::EventClass::Log, "matched", secmon_proto::Severity::Low, json!({})));
    wait_stream_len(&client, 3, WAIT).await;
    agent.shutdown("test").await;
}

const BIN: &str = env!("CARGO_BIN_EXE_secmon-agent");

fn agent_toml(nats_url: &str, state: &Path, sock: &Path, watched: &Path) -> String {
    format!(
        "[agent]\nstate_dir = {state:?}\n\n[nats]\nurl = \"{nats_url}\"\nreconnect_base_delay = \"50ms\"\n\
         reconnect_max_delay = \"300ms\"\n\n[socket]\npath = {sock:?}\n\n[fim]\ncamera_paths = []\n\n\
         [[watches]]\npath = {watched:?}\ndescription = \"test watch\"\nenabled = true\nrecursive = true\n",
        state = state.display().to_string(),
        sock = sock.display().to_string(),
        watched = watched.display().to_string(),
    )
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_reports_a_new_file_on_the_socket_and_to_jetstream() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let watched: PathBuf = dir.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let sock = dir.path().join("agent.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_toml(&nats.url(), &dir.path().join("state"), &sock, &watched)).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = ChildGuard::new(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(eventually(WAIT, || sock.exists()).await, "no socket; log:\n{}", log_of(dir.path()));
    let mut lines = Lines::connect(&sock);

    // The agent's status over NATS shows FIM and its backend.
    let identity: secmon_agent::Identity =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/identity.json")).unwrap()).unwrap();
    let req = json!({"v": 1, "id": Uuid::now_v7(), "command": "status", "args": {}, "issued_at": Utc::now()});
    let subject = format!("secmon.cmd.{}", identity.agent_id);
    let mut status = Value::Null;
    for _ in 0..100 {
        if let Ok(Ok(msg)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(subject.clone(), serde_json::to_vec(&req).unwrap().into()),
        )
        .await
        {
            let reply: CommandReply = decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).unwrap();
            status = reply.result;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backend = status["fim"]["backend"].as_str().unwrap_or_default();
    assert!(["inotify", "fanotify"].contains(&backend), "status: {status}; log:\n{}", log_of(dir.path()));
    assert!(status["sensors"].as_array().unwrap().contains(&json!("fim")), "{status}");
    assert_eq!(status["socket"]["clients"], 1, "{status}");

    let file = watched.join("hello.txt");
    std::fs::write(&file, "hello").unwrap();
    let on_socket = lines.until(WAIT, |v| is_created(v, &file)).await;
    let id = on_socket["id"].as_str().unwrap().to_owned();
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = stored_events(&client).await;
        if let Some(e) = stored.iter().find(|e| e.envelope.id.to_string() == id) {
            assert_eq!(serde_json::to_value(&e.envelope).unwrap(), on_socket);
            assert_eq!(e.subject, format!("secmon.agent.{}.event.file", identity.agent_id));
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the file event never reached SECMON_EVENTS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    agent.signal(Signal::SIGTERM);
    let st = agent.wait_timeout(WAIT).expect("agent exits after SIGTERM");
    assert!(st.success(), "exit {st}; log:\n{}", log_of(dir.path()));
    assert_eq!(lines.until_eof(WAIT).await.last().unwrap()["activity"], "stopped");
    let log = log_of(dir.path());
    assert!(
        log.contains("file integrity monitoring started")
            && log.contains("file integrity monitoring stopped"),
        "{log}"
    );
}

/// Under fanotify, the agent names the process that wrote: the test's own child,
/// by pid, executable and command line, with its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanotify_names_the_child_process_that_wrote() {
    if !secmon_testkit::require_root("fanotify who-data") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let mut cfg = local_config(dir.path());
    cfg.fim.backend = secmon_fim::BackendChoice::Fanotify;
    cfg.watches = vec![watch(&watched)];
    let agent = start(cfg).await;
    assert_eq!(agent.status()["fim"]["backend"], "fanotify", "{}", agent.status());
    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_until_clients(&agent, 1).await;

    let file = watched.join("written-by-child.txt");
    // The child writes, then stays alive so its /proc entry can be compared.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("echo secret > \"$1\"; sleep 10")
        .arg("who-data-writer")
        .arg(&file)
        .spawn()
        .unwrap();
    let pid = child.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let v = client.until(WAIT, |v| is_created(v, &file)).await;
    let _ = child.kill();
    let _ = child.wait();
    let p = &v["payload"]["process"];
    assert_eq!(p["pid"], pid, "{v}");
    assert_eq!(p["exe"], exe.to_str().unwrap(), "{v}");
    assert!(p["cmdline"].as_str().unwrap_or_default().contains("written-by-child.txt"), "{v}");
    assert_eq!(p["uid"], 0, "{v}");
    assert_eq!(p["user"], "root", "{v}");
    assert!(v["payload"]["description"].as_str().unwrap().contains(&format!("pid {pid}")), "{v}");
    agent.shutdown("test").await;
}

/// A character device configured as a camera path: opening it is `CameraAccess`,
/// high, with the process that opened it, through the agent and its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_camera_device_is_reported_with_the_process() {
    if !secmon_testkit::require_root("mknod of a character device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("video7");
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let mut cfg = local_config(dir.path());
    cfg.fim.camera_paths = vec![format!("{}/video*", dir.path().display())];
    let agent = start(cfg).await;
    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_until_clients(&agent, 1).await;

    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$1\"; head -c 16 <&3 >/dev/null; sleep 10")
        .arg("camera-user")
        .arg(&dev)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let v =
        client.until(WAIT, |v| v["class"] == "device" && v["payload"]["path"] == dev.to_str().unwrap()).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["activity"], "accessed", "{v}");
    assert_eq!(v["severity"], "high", "{v}");
    assert_eq!(v["payload"]["event_type"], "CameraAccess", "{v}");
    assert_eq!(v["payload"]["detector"], "camera", "{v}");
    assert_eq!(v["payload"]["process"]["pid"], pid, "{v}");
    agent.shutdown("test").await;
}
