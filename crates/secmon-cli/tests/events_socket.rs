//! `secmon events --socket PATH` against a real agent's local socket: pretty and
//! `--json` output until the agent stops, and a clear failure without a socket.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use secmon_agent::{Agent, AgentConfig, AgentOptions};
use secmon_proto::{EventClass, Severity};
use secmon_testkit::ChildGuard;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn secmon(args: &[&str]) -> ChildGuard {
    ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_secmon"))
            .args(args)
            .env_remove("SECMON_API")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn secmon"),
    )
}

fn finish(mut child: ChildGuard) -> (std::process::ExitStatus, String, String) {
    let mut out = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut err = child.0.as_mut().unwrap().stderr.take().unwrap();
    let status = child.wait_timeout(WAIT).expect("secmon exits when the agent closes the socket");
    let (mut o, mut e) = (String::new(), String::new());
    out.read_to_string(&mut o).unwrap();
    err.read_to_string(&mut e).unwrap();
    (status, o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_socket_prints_the_agents_events_pretty_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::default();
    cfg.agent.state_dir = dir.path().join("state");
    cfg.nats.url = String::new();
    cfg.socket.path = dir.path().join("agent.sock");
    cfg.fim.camera_paths.clear();
    let agent = Agent::start(cfg, AgentOptions::default()).await.unwrap();
    let sock = dir.path().join("agent.sock");
    let sock = sock.to_str().unwrap();
    let pretty = secmon(&["events", "--socket", sock]);
    let raw = secmon(&["events", "--socket", sock, "--json"]);
    let end = tokio::time::Instant::now() + WAIT;
    while agent.status()["socket"]["clients"] != 2 {
        assert!(tokio::time::Instant::now() < end, "clients never connected: {}", agent.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = agent.last_seq() + 1;
    let created = json!({"path": "/srv/www/index.html", "kind": "file", "watch": "/srv/www",
                         "event_type": "FileCreate", "description": "index.html created",
                         "source": "realtime", "backend": "inotify"});
    assert!(agent.emit(EventClass::File, "created", Severity::Low, created));
    agent.shutdown("test").await;

    let (status, out, err) = tokio::task::spawn_blocking(move || finish(pretty)).await.unwrap();
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("LOW")
            && lines[0].contains("file/created")
            && lines[0].contains("/srv/www/index.html"),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(&format!("#{first}")), "{}", lines[0]);
    assert!(lines[1].contains("agent stopped (test)"), "{}", lines[1]);

    let (status, out, err) = tokio::task::spawn_blocking(move || finish(raw)).await.unwrap();
    assert!(status.success(), "{status}: {err}");
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(events[0]["seq"], first);
    assert_eq!(events[0]["payload"]["path"], "/srv/www/index.html");
    assert_eq!(events[1]["activity"], "stopped");
}

#[test]
fn events_socket_without_a_socket_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["events", "--socket", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("no socket at {}", missing.display())), "{stderr}");
    // The socket and the manager's filters do not mix.
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["events", "--socket", missing.to_str().unwrap(), "--class", "file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
