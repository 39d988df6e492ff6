//! The real `secmon-client` binary against a real agent's socket: pretty and `--json`
//! output until the agent stops, and clear failures when it cannot connect.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use secmon_agent::{Agent, AgentConfig, AgentHandle, AgentOptions};
use secmon_proto::{DEFAULT_MAX_EVENT_BYTES, Envelope, EventClass, Severity, decode};
use secmon_testkit::ChildGuard;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_secmon-client");
const WAIT: Duration = Duration::from_secs(20);

/// A local-only agent (no NATS) with its socket at `<dir>/agent.sock`.
async fn agent(dir: &Path) -> AgentHandle {
    let mut c = AgentConfig::default();
    c.agent.state_dir = dir.join("state");
    c.nats.url = String::new();
    c.socket.path = dir.join("agent.sock");
    c.fim.camera_paths.clear();
    Agent::start(c, AgentOptions::default()).await.expect("agent starts")
}

async fn wait_clients(agent: &AgentHandle, n: u64) {
    let end = tokio::time::Instant::now() + WAIT;
    while agent.status()["socket"]["clients"] != n {
        assert!(tokio::time::Instant::now() < end, "never {n} clients: {}", agent.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_client(args: &[&str]) -> ChildGuard {
    ChildGuard::new(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn secmon-client"),
    )
}

/// Waits for the exit; returns the status and stdout.
fn finish(mut child: ChildGuard) -> (std::process::ExitStatus, String, String) {
    let mut out = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut err = child.0.as_mut().unwrap().stderr.take().unwrap();
    let status = child.wait_timeout(WAIT).expect("secmon-client exits when the agent closes the socket");
    let (mut o, mut e) = (String::new(), String::new());
    out.read_to_string(&mut o).unwrap();
    err.read_to_string(&mut e).unwrap();
    (status, o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_events_pretty_or_as_json_and_exits_0_when_the_agent_stops() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path()).await;
    let sock = dir.path().join("agent.sock");
    let pretty = spawn_client(&[sock.to_str().unwrap()]);
    let raw = spawn_client(&["--json", sock.to_str().unwrap()]);
    wait_clients(&agent, 2).await;

    let first = agent.last_seq() + 1;
    let renamed = json!({
        "path": "/etc/ssh/sshd_config", "old_path": "/etc/ssh/sshd_config.new", "kind": "file",
        "watch": "/etc/ssh", "event_type": "FileModify", "description": "sshd_config replaced",
        "source": "realtime", "backend": "fanotify",
        "process": {"pid": 4242, "name": "vim", "user": "root"},
    });
    assert!(agent.emit(EventClass::File, "renamed", Severity::High, renamed));
    assert!(agent.emit(EventClass::Process, "started", Severity::Info, json!({"pid": 1})));
    agent.shutdown("test").await;

    let (status, out, err) = tokio::task::spawn_blocking(move || finish(pretty)).await.unwrap();
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("HIGH")
            && lines[0].contains("file/renamed")
            && lines[0]
                .contains("/etc/ssh/sshd_config.new → /etc/ssh/sshd_config  by vim (pid 4242, user root)")
            && lines[0].ends_with(&format!("#{first}")),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("process/started") && lines[1].contains(r#"{"pid":1}"#), "{}", lines[1]);
    assert!(lines[2].contains("agent/stopped") && lines[2].contains("agent stopped (test)"), "{}", lines[2]);
    // Local time, to the millisecond, first.
    let stamp = &lines[0][..23];
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f").expect("a local time first");

    let (status, out, err) = tokio::task::spawn_blocking(move || finish(raw)).await.unwrap();
    assert!(status.success(), "{status}: {err}");
    let envelopes: Vec<Envelope> = out
        .lines()
        .map(|l| decode(l.as_bytes(), DEFAULT_MAX_EVENT_BYTES).expect("an envelope per line"))
        .collect();
    let seqs: Vec<u64> = envelopes.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [first, first + 1, first + 2]);
    assert_eq!(envelopes[0].payload["old_path"], "/etc/ssh/sshd_config.new");
    assert_eq!(envelopes[2].activity, "stopped");
    // Unchanged: re-encoding gives the same bytes.
    let line0 = out.lines().next().unwrap();
    assert_eq!(serde_json::to_string(&envelopes[0]).unwrap(), line0);
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run secmon-client")
}

fn fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr does not say {needle:?}: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn cannot_connect_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    fails_with(&run(&[missing.to_str().unwrap()]), &format!("no socket at {}", missing.display()));

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    fails_with(&run(&[file.to_str().unwrap()]), "is not a socket");

    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    fails_with(&run(&[stale.to_str().unwrap()]), "nobody is listening");

    let out = run(&["--jsn", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --jsn"));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: secmon-client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_says_so() {
    if !secmon_testkit::require_root("permission_denied_says_so") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = agent(dir.path()).await; // socket mode 0660, group root
    let sock = dir.path().join("agent.sock");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).arg(&sock).uid(65534).gid(65534).output().expect("run secmon-client as nobody")
    })
    .await
    .unwrap();
    fails_with(&out, "permission denied");
    agent.shutdown("test").await;
}
