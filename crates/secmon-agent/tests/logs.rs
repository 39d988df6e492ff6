//! Log monitoring inside the agent, on real files in temp dirs, the agent in-process
//! in local-only mode, events read from its socket: decoded lines in order, rotation
//! by rename and by copytruncate without loss or repeat, positions across restarts,
//! partial and overlong lines, and files that cannot be read.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::lines::Lines;
use common::*;
use secmon_agent::config::{LogFormat, LogSource};
use secmon_agent::{Agent, AgentConfig, AgentHandle, AgentOptions};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn source(path: &Path) -> LogSource {
    LogSource { path: path.to_owned(), format: LogFormat::Auto }
}

fn logs_config(dir: &Path, files: &[&Path]) -> AgentConfig {
    let mut cfg = local_config(dir);
    cfg.logs = files.iter().map(|p| source(p)).collect();
    cfg.log_monitor.poll_interval = Duration::from_millis(50);
    cfg
}

async fn start(cfg: AgentConfig) -> (AgentHandle, Lines) {
    let sock = cfg.socket.path.clone();
    let agent = Agent::start(cfg, AgentOptions::default()).await.expect("agent starts");
    let client = Lines::connect(&sock);
    assert!(
        eventually(WAIT, || agent.status()["socket"]["clients"] == 1).await,
        "client not connected: {}",
        agent.status()
    );
    (agent, client)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn numbered(from: usize, to: usize, tag: &str) -> String {
    (from..to).map(|i| format!("Nov 23 21:45:01 web1 app[1]: {tag} line {i}\n")).collect()
}

fn is_log(v: &Value) -> bool {
    v["class"] == "log"
}

/// Stops the agent and returns the messages of every log event the client saw.
async fn stop_and_collect(agent: AgentHandle, mut client: Lines) -> Vec<String> {
    agent.shutdown("test").await;
    client.until_eof(WAIT).await;
    client
        .seen
        .iter()
        .filter(|v| is_log(v))
        .map(|v| v["payload"]["message"].as_str().unwrap().to_owned())
        .collect()
}

fn expected(parts: &[(usize, usize, &str)]) -> Vec<String> {
    parts.iter().flat_map(|(a, b, tag)| (*a..*b).map(move |i| format!("{tag} line {i}"))).collect()
}

/// Waits until the agent has read `n` lines in all.
async fn wait_lines(agent: &AgentHandle, n: u64) {
    assert!(
        eventually(WAIT, || agent.status()["logs"]["lines"].as_u64().unwrap_or(0) >= n).await,
        "never {n} lines: {}",
        agent.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lines_become_decoded_events_in_order_and_status_shows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "Nov 23 21:00:00 web1 sshd[1]: Failed password for old from 192.0.2.1 port 1 ssh2\n");
    let (agent, mut client) = start(logs_config(dir.path(), &[&log])).await;
    let st = agent.status();
    assert!(st["sensors"].as_array().unwrap().contains(&json!("logs")), "{st}");

    append(
        &log,
        "Nov 23 21:45:03 web1 sshd[814]: Failed password for invalid user admin from 203.0.113.5 port 60002 ssh2\n\
         Nov 23 21:46:01 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id\n\
         Nov 23 21:47:01 web1 kernel: something else\n",
    );
    let first = client.until(WAIT, is_log).await;
    assert_eq!(first["activity"], "auth_failed", "the line before the start is not read: {first}");
    assert_eq!(first["severity"], "low");
    let p = &first["payload"];
    assert_eq!(p["path"], log.to_str().unwrap());
    assert_eq!(p["decoder"], "sshd");
    assert_eq!(p["program"], "sshd");
    assert_eq!(p["pid"], 814);
    assert_eq!(p["host"], "web1");
    assert_eq!(p["format"], "rfc3164");
    assert_eq!(
        p["fields"],
        json!({"method": "password", "user": "admin", "invalid_user": true, "src_ip": "203.0.113.5", "src_port": 60002})
    );
    let second = client.until(WAIT, is_log).await;
    assert_eq!(second["activity"], "sudo");
    assert_eq!(second["payload"]["fields"]["command"], "/usr/bin/id");
    assert_eq!(second["payload"]["fields"]["target_user"], "root");
    let third = client.until(WAIT, is_log).await;
    assert_eq!(third["activity"], "line");
    assert_eq!(third["payload"]["message"], "something else");
    assert!(first["seq"].as_u64() < second["seq"].as_u64() && second["seq"].as_u64() < third["seq"].as_u64());

    wait_lines(&agent, 3).await;
    let st = agent.status();
    let file = &st["logs"]["files"][0];
    assert_eq!(file["path"], log.to_str().unwrap(), "{st}");
    assert_eq!(file["lines"], 3, "{st}");
    assert_eq!(file["offset"], std::fs::metadata(&log).unwrap().len(), "{st}");
    assert_eq!(file["inode"], std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap()), "{st}");
    assert_eq!(st["logs"]["cut"], 0);
    assert_eq!(st["logs"]["errors"], 0);
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_while_writing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("syslog");
    append(&log, "");
    let (agent, client) = start(logs_config(dir.path(), &[&log])).await;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                append(&log, &numbered(i, i + 1, "old"));
            }
            std::fs::rename(&log, log.with_extension("1")).unwrap();
            for i in 0..200 {
                append(&log, &numbered(i, i + 1, "new"));
            }
        })
    };
    writer.join().unwrap();
    wait_lines(&agent, 500).await;
    let got = stop_and_collect(agent, client).await;
    assert_eq!(got, expected(&[(0, 300, "old"), (0, 200, "new")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "");
    let (agent, client) = start(logs_config(dir.path(), &[&log])).await;
    append(&log, &numbered(0, 1, "first"));
    wait_lines(&agent, 1).await;
    // As logrotate's copytruncate: copy, truncate in place, the writer goes on.
    append(&log, &numbered(0, 200, "before"));
    std::fs::copy(&log, dir.path().join("auth.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, &numbered(0, 100, "after"));
    wait_lines(&agent, 301).await;
    let got = stop_and_collect(agent, client).await;
    assert_eq!(got, expected(&[(0, 1, "first"), (0, 200, "before"), (0, 100, "after")]));
}

/// Through NATS: lines read at the agent's start come before a socket client could
/// connect, and JetStream keeps them all.
fn nats_logs_config(nats_url: &str, dir: &Path, files: &[&Path]) -> AgentConfig {
    let mut cfg = config(nats_url, &dir.join("state"));
    cfg.fim.camera_paths.clear();
    cfg.logs = files.iter().map(|p| source(p)).collect();
    cfg.log_monitor.poll_interval = Duration::from_millis(50);
    cfg
}

async fn start_nats(cfg: AgentConfig) -> AgentHandle {
    Agent::start(cfg, AgentOptions::default()).await.expect("agent starts")
}

/// The messages of the log events in the stream, in order.
async fn stored_log_messages(client: &async_nats::Client) -> Vec<String> {
    stored_events(client)
        .await
        .into_iter()
        .filter(|e| e.envelope.class == secmon_proto::EventClass::Log)
        .map(|e| e.envelope.payload["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_exactly_the_lines_written_while_down() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "");
    let cfg = nats_logs_config(&nats.url(), dir.path(), &[&log]);
    let agent = start_nats(cfg.clone()).await;
    append(&log, &numbered(0, 3, "run1"));
    wait_lines(&agent, 3).await;
    agent.shutdown("test").await;
    let saved = std::fs::read_to_string(dir.path().join("state/logs/positions.json")).unwrap();
    assert!(saved.contains("auth.log"), "{saved}");

    append(&log, &numbered(0, 4, "down"));
    let agent = start_nats(cfg).await;
    wait_lines(&agent, 4).await;
    append(&log, &numbered(0, 2, "run2"));
    wait_lines(&agent, 6).await;
    agent.shutdown("test").await;
    assert_eq!(
        stored_log_messages(&client).await,
        expected(&[(0, 3, "run1"), (0, 4, "down"), (0, 2, "run2")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_while_down_finishes_the_old_file_first() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, &numbered(0, 1, "seen"));
    let mut cfg = nats_logs_config(&nats.url(), dir.path(), &[&log]);
    cfg.log_monitor.start_at = secmon_agent::config::StartAt::Beginning;
    let agent = start_nats(cfg.clone()).await;
    wait_lines(&agent, 1).await;
    agent.shutdown("test").await;

    append(&log, &numbered(0, 2, "old"));
    std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
    append(&log, &numbered(0, 3, "new"));
    let agent = start_nats(cfg).await;
    wait_lines(&agent, 5).await;
    agent.shutdown("test").await;
    assert_eq!(stored_log_messages(&client).await, expected(&[(0, 1, "seen"), (0, 2, "old"), (0, 3, "new")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "");
    let (agent, mut client) = start(logs_config(dir.path(), &[&log])).await;
    append(&log, "Nov 23 21:45:01 web1 app[1]: hello ");
    // Several polls go by (the file is open: it has an offset) without a line.
    assert!(
        eventually(WAIT, || agent.status()["logs"]["files"][0]["offset"] == 0).await,
        "{}",
        agent.status()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(agent.status()["logs"]["lines"], 0, "{}", agent.status());
    append(&log, "world\n");
    let v = client.until(WAIT, is_log).await;
    assert_eq!(v["payload"]["message"], "hello world");
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_line_is_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let (agent, mut client) = start(logs_config(dir.path(), &[&log])).await;
    let mut junk: Vec<u8> = (0..1024 * 1024).map(|i| b"ab\xffc"[i % 4]).collect();
    junk.push(b'\n');
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&junk).unwrap();
    append(&log, "after\n");
    let cut = client.until(WAIT, is_log).await;
    let raw = cut["payload"]["raw"].as_str().unwrap();
    assert!(raw.starts_with("ab\u{fffd}c"), "lossy UTF-8");
    // 16 KiB of bytes, each invalid byte (1 of 4) replaced by a 3-byte character.
    assert_eq!(raw.chars().count(), 16 * 1024);
    assert_eq!(cut["payload"]["format"], "raw");
    let after = client.until(WAIT, is_log).await;
    assert_eq!(after["payload"]["raw"], "after", "the rest of the long line is dropped, not a line");
    wait_lines(&agent, 2).await;
    assert_eq!(agent.status()["logs"]["cut"], 1, "{}", agent.status());
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_path_is_an_error_in_status_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_file = dir.path().join("a-directory");
    std::fs::create_dir(&not_a_file).unwrap();
    let log = dir.path().join("auth.log");
    let later = dir.path().join("later.log");
    append(&log, "");
    let (agent, mut client) = start(logs_config(dir.path(), &[&not_a_file, &log, &later])).await;
    assert!(
        eventually(WAIT, || agent.status()["logs"]["errors"].as_u64().unwrap_or(0) >= 1).await,
        "{}",
        agent.status()
    );
    let st = agent.status();
    let err = st["logs"]["files"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("not a regular file"), "{st}");
    assert_eq!(st["logs"]["files"][2]["error"], Value::Null, "a missing file is not an error: {st}");

    append(&log, "Nov 23 21:45:01 web1 app[1]: still working\n");
    let v = client.until(WAIT, is_log).await;
    assert_eq!(v["payload"]["message"], "still working");
    // A file that appears later is read from its start.
    append(&later, "Nov 23 21:45:02 web1 app[1]: late file\n");
    let v = client.until(WAIT, is_log).await;
    assert_eq!(v["payload"]["path"], later.to_str().unwrap());
    assert_eq!(v["payload"]["message"], "late file");
    assert_eq!(agent.status()["logs"]["errors"], 1, "logged and counted once, retried quietly");
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_logs_configured_means_no_log_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _client) = start(local_config(dir.path())).await;
    let st = agent.status();
    assert!(!st["sensors"].as_array().unwrap().contains(&json!("logs")), "{st}");
    assert_eq!(st["logs"], Value::Null, "{st}");
    assert!(!dir.path().join("state/logs").exists());
    agent.shutdown("test").await;
}
