//! The `secmon-agent` binary: the example config runs, signals stop it cleanly with a
//! shutdown notice, SIGHUP reloads, and a bad config fails at start naming the key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;
use secmon_proto::{DEFAULT_MAX_EVENT_BYTES, ShutdownNotice, decode};
use secmon_testkit::{ChildGuard, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_secmon-agent");

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent-config.toml")
}

/// Starts the binary with stderr in `<dir>/agent.log`.
fn spawn(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> ChildGuard {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard::new(cmd.spawn().expect("spawn secmon-agent"))
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

async fn next_notice(sub: &mut async_nats::Subscriber, dir: &Path) -> ShutdownNotice {
    let msg = tokio::time::timeout(Duration::from_secs(8), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no shutdown notice; agent log:\n{}", log_of(dir)))
        .unwrap();
    decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("notice decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_config_runs_and_sigterm_stops_with_a_shutdown_notice() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let regs = spawn_accepting_registrar(client.clone());
    let mut notices = client.subscribe("secmon.agent.*.shutdown").await.unwrap();
    let mut heartbeats = client.subscribe("secmon.agent.*.heartbeat").await.unwrap();
    client.flush().await.unwrap();

    // The example as shipped; only the NATS URL points at the test server.
    let dir = tempfile::tempdir().unwrap();
    let config = example_config();
    let mut agent =
        spawn(&["--config", config.to_str().unwrap()], dir.path(), &[("SECMON_NATS_URL", &nats.url())]);
    tokio::time::timeout(Duration::from_secs(10), heartbeats.next())
        .await
        .unwrap_or_else(|_| panic!("no heartbeat; agent log:\n{}", log_of(dir.path())));
    let identity: secmon_agent::Identity =
        serde_json::from_slice(&std::fs::read(dir.path().join("secmon-agent-state/identity.json")).unwrap())
            .unwrap();
    let reg = regs.lock().unwrap()[0].clone();
    assert_eq!(reg.agent_id, identity.agent_id);
    assert_eq!(reg.heartbeat_interval_ms, 5000, "the example's default");
    wait_stream_len(&client, 1, Duration::from_secs(10)).await;

    agent.signal(Signal::SIGTERM);
    let notice = next_notice(&mut notices, dir.path()).await;
    assert_eq!(notice.agent_id, identity.agent_id);
    assert_eq!(notice.reason, "SIGTERM");
    let status = agent.wait_timeout(Duration::from_secs(20)).expect("agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}; log:\n{}", log_of(dir.path()));
    // Everything (started, FIM's baseline notice, stopped) published before the notice.
    let stored = stored_events(&client).await;
    assert_eq!(notice.last_seq, stored.len() as u64, "log:\n{}", log_of(dir.path()));
    assert_eq!(stored.first().unwrap().envelope.activity, "started");
    assert_eq!(stored.last().unwrap().envelope.activity, "stopped");
    assert!(!dir.path().join("secmon-agent.sock").exists(), "the example's socket is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_and_sigint_stops() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    let regs = spawn_accepting_registrar(client.clone());
    let mut notices = client.subscribe("secmon.agent.*.shutdown").await.unwrap();
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config_toml(&nats.url(), &dir.path().join("state"), "200ms")).unwrap();
    let mut agent = spawn(&["--config", path.to_str().unwrap()], dir.path(), &[]);
    assert!(
        eventually(Duration::from_secs(10), || !regs.lock().unwrap().is_empty()).await,
        "no registration; log:\n{}",
        log_of(dir.path())
    );
    assert_eq!(regs.lock().unwrap()[0].heartbeat_interval_ms, 200);

    // The new interval applies at once, and the agent tells the manager by registering again.
    std::fs::write(&path, config_toml(&nats.url(), &dir.path().join("state"), "300ms")).unwrap();
    agent.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || regs
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.heartbeat_interval_ms == 300))
        .await,
        "no re-registration with the reloaded interval; log:\n{}",
        log_of(dir.path())
    );

    agent.signal(Signal::SIGINT);
    assert_eq!(next_notice(&mut notices, dir.path()).await.reason, "SIGINT");
    let status = agent.wait_timeout(Duration::from_secs(10)).expect("agent exits after SIGINT");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[agent]\nheartbeat_interval = \"soon\"\n", "agent.heartbeat_interval"),
        ("[nats]\nurll = \"nats://x\"\n", "urll"),
        ("[spool]\nsegment_bytes = 1\n", "spool.segment_bytes"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).arg("--config").arg(&path).env_remove("RUST_LOG").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(
            stderr.contains(key) && stderr.contains("bad.toml"),
            "{text:?}: stderr does not name {key}:\n{stderr}"
        );
    }
    // A missing config that cannot be written (its "directory" is a file).
    std::fs::write(dir.path().join("file"), "").unwrap();
    let path = dir.path().join("file/agent.toml");
    let out = Command::new(BIN).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(path.to_str().unwrap()) && stderr.contains("--config"), "{stderr}");
}

#[test]
fn default_config_path_is_documented() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/etc/secmon/agent.toml"));
}

/// A missing config file is written from the template and used. The template's
/// paths are production ones; the test points them at temp dirs through SECMON_*
/// overrides (its watches stay the real system paths, read-only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_is_written_from_the_template_and_used() {
    if !secmon_testkit::require_root("a_missing_config_is_written_from_the_template_and_used") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/secmon/agent.toml");
    let sock = dir.path().join("agent.sock");
    let state = dir.path().join("state");
    let mut agent = spawn(
        &["--config", path.to_str().unwrap()],
        dir.path(),
        &[
            ("SECMON_NATS_URL", ""),
            ("SECMON_AGENT_STATE_DIR", state.to_str().unwrap()),
            ("SECMON_SOCKET_PATH", sock.to_str().unwrap()),
        ],
    );
    assert!(
        eventually(Duration::from_secs(20), || sock.exists()).await,
        "the socket never appeared; log:\n{}",
        log_of(dir.path())
    );
    let written = std::fs::read_to_string(&path).expect("the config was written");
    assert_eq!(written, secmon_agent::default_config::TEMPLATE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(state.join("identity.json").exists(), "the state dir override applies");
    let log = log_of(dir.path());
    assert!(log.contains("wrote the default configuration"), "{log}");
    assert!(log.contains("LOCAL-ONLY MODE"), "{log}");

    agent.signal(Signal::SIGTERM);
    let status = agent.wait_timeout(Duration::from_secs(30)).expect("agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}; log:\n{}", log_of(dir.path()));
}
