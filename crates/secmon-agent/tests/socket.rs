//! The local event socket of a real agent, with real Unix socket clients: many
//! clients, a slow one and its drop notice, the client limit, file mode and group,
//! stale and busy sockets, the flat format, local-only mode, connected mode, and
//! `socat | jq` as real processes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lines::{self, Lines, is_drop_notice, seq};
use common::*;
use secmon_agent::socket::SocketError;
use secmon_agent::{Agent, AgentError, AgentHandle, AgentOptions};
use secmon_proto::payload::{FileActivity, FileKind, FileState};
use secmon_proto::{EventClass, Severity};
use secmon_testkit::{ChildGuard, NatsServer};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn start(cfg: secmon_agent::AgentConfig) -> AgentHandle {
    Agent::start(cfg, AgentOptions::default()).await.expect("agent starts")
}

async fn wait_status(agent: &AgentHandle, what: &str, mut cond: impl FnMut(&Value) -> bool) {
    let ok = eventually(WAIT, || cond(&agent.status())).await;
    assert!(ok, "status never showed {what}: {}", agent.status());
}

fn padded(i: u64) -> Value {
    json!({"i": i, "pad": "x".repeat(1000)})
}

/// Emits one event; the channel is never expected to be full here.
fn emit(agent: &AgentHandle, i: u64) {
    assert!(agent.emit(EventClass::Process, "started", Severity::Info, padded(i)), "channel full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_clients_get_every_event_in_order_and_a_slow_one_a_counted_drop_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.socket.client_buffer = 64;
    let agent = start(cfg).await;
    let path = dir.path().join("agent.sock");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "default socket mode");

    let mut fast = [Lines::connect(&path), Lines::connect(&path)];
    let slow = lines::connect(&path); // Connected, reading nothing yet.
    wait_status(&agent, "3 clients", |s| s["socket"]["clients"] == 3).await;

    // Lock-step with the fast clients, so they never fall behind; the slow one, which
    // reads nothing, overflows its socket buffer and then its client_buffer.
    // Rounds go on until the slow one has lost events (how many fit in its socket
    // buffer depends on the kernel), then a few more.
    let first = agent.last_seq() + 1;
    let per_round = 16;
    let mut rounds = 0;
    let mut extra = 20;
    while extra > 0 {
        for i in 0..per_round {
            emit(&agent, rounds * per_round + i);
        }
        rounds += 1;
        let want = first + rounds * per_round - 1;
        for f in &mut fast {
            f.until(WAIT, |v| seq(v) == Some(want)).await;
        }
        if agent.status()["socket"]["dropped"].as_u64().unwrap() > 0 {
            extra -= 1;
        }
        assert!(rounds < 20_000, "the slow client never lost an event: {}", agent.status());
    }
    let last = first + rounds * per_round - 1;
    // The agent was never held up: every event spooled, none dropped.
    let st = agent.status();
    assert_eq!(st["last_seq"], last, "{st}");
    assert_eq!(st["queues"]["channel_dropped"], 0, "{st}");
    assert_eq!(st["queues"]["spool_dropped"], 0, "{st}");
    for f in &fast {
        let seqs: Vec<u64> = f.seen.iter().map(|v| seq(v).expect("only events")).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "a fast client missed or reordered events");
    }
    assert!(st["socket"]["dropped"].as_u64().unwrap() > 0, "the slow client lost nothing yet: {st}");

    // The slow client reads now: what fit in its buffers, one drop notice with the
    // count, then the events after the gap, in order.
    let mut slow = Lines::read(slow);
    let mut expected = first;
    let mut lost_total = 0;
    let mut notices = 0;
    while expected <= last {
        let v = slow.next(WAIT).await.expect("slow client still connected");
        if is_drop_notice(&v) {
            assert_eq!(v["class"], "agent");
            assert_eq!(v["severity"], "medium");
            assert!(v["time"].is_string());
            let lost = v["payload"]["lost"].as_u64().unwrap();
            assert!(lost > 0);
            expected += lost;
            lost_total += lost;
            notices += 1;
        } else {
            assert_eq!(seq(&v), Some(expected), "after {lost_total} lost");
            expected += 1;
        }
    }
    assert_eq!(expected, last + 1, "the notice counts exactly the events skipped");
    assert!(notices >= 1 && lost_total > 0);
    assert_eq!(agent.status()["socket"]["dropped"], lost_total, "status counts the drops");

    // Caught up: fresh events arrive as they happen.
    for i in 0..3 {
        emit(&agent, i);
    }
    for s in last + 1..=last + 3 {
        let v = slow.next(WAIT).await.unwrap();
        assert_eq!(seq(&v), Some(s));
    }

    // Clients leave: the count goes back down.
    let [a, b] = fast;
    a.close();
    wait_status(&agent, "2 clients", |s| s["socket"]["clients"] == 2).await;
    b.close();
    slow.close();
    wait_status(&agent, "no clients", |s| s["socket"]["clients"] == 0).await;
    agent.shutdown("test").await;
    assert!(!dir.path().join("agent.sock").exists(), "the socket file is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_clients_get_an_error_line_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.socket.max_clients = 2;
    let agent = start(cfg).await;
    let path = dir.path().join("agent.sock");
    let mut a = Lines::connect(&path);
    let _b = Lines::connect(&path);
    wait_status(&agent, "2 clients", |s| s["socket"]["clients"] == 2).await;

    let mut third = Lines::connect(&path);
    let err = third.next(WAIT).await.expect("an error line");
    assert!(err["error"].as_str().unwrap().contains("at most 2"), "{err}");
    assert!(third.next(WAIT).await.is_none(), "then closed");
    wait_status(&agent, "1 refused", |s| s["socket"]["refused"] == 1).await;
    assert_eq!(agent.status()["socket"]["clients"], 2);

    // The served clients are unaffected.
    emit(&agent, 1);
    let v = a.next(WAIT).await.unwrap();
    assert_eq!(v["class"], "process");
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_group_are_applied_stale_sockets_replaced_busy_ones_refused() {
    if !secmon_testkit::require_root("mode_and_group_are_applied") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/secmon/agent.sock");
    // A stale socket, as a crashed agent leaves it.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let mut cfg = local_config(dir.path());
    cfg.socket.path = path.clone();
    cfg.socket.mode = "0600".into();
    cfg.socket.group = "4242".into();
    let agent = start(cfg.clone()).await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.gid(), 4242);
    let mut client = Lines::connect(&path);

    // A second agent (own state dir) on the same socket fails clearly, and the first
    // one keeps serving.
    let mut other = cfg.clone();
    other.agent.state_dir = dir.path().join("state2");
    match Agent::start(other, AgentOptions::default()).await {
        Err(AgentError::Socket(e @ SocketError::InUse { .. })) => {
            assert!(e.to_string().contains("another agent is already listening"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second agent started on a socket in use"),
    }
    emit(&agent, 1);
    assert_eq!(client.next(WAIT).await.unwrap()["class"], "process");
    agent.shutdown("test").await;
    assert!(client.until_eof(WAIT).await.iter().all(|v| v["class"] == "agent"), "then EOF");

    // A named group; a path that is not a socket is left alone.
    let (name, gid) = some_group();
    let mut named = cfg.clone();
    named.socket.group = name;
    let agent = start(named).await;
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
    agent.shutdown("test").await;
    std::fs::write(&path, "not a socket").unwrap();
    match Agent::start(cfg, AgentOptions::default()).await {
        Err(AgentError::Socket(SocketError::NotASocket { .. })) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started over a regular file"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

/// A group other than root's, by name.
fn some_group() -> (String, u32) {
    for gid in [100, 1, 2, 3, 4] {
        if let Ok(Some(g)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
            return (g.name, gid);
        }
    }
    panic!("no group with gid 100, 1, 2, 3 or 4 on this host");
}

fn file_activity(path: &str) -> FileActivity {
    FileActivity {
        path: path.into(),
        old_path: None,
        kind: FileKind::File,
        watch: "/etc".into(),
        watch_description: "System configuration".into(),
        event_type: "FileCreate".into(),
        detector: None,
        description: format!("{path} created"),
        before: None,
        after: Some(FileState {
            kind: FileKind::File,
            size: 5,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: 1.0,
            ctime: 1.0,
            inode: 7,
            hash: Some("abc".into()),
            hash_algo: Some("sha256".into()),
            hash_skipped: None,
            target: None,
        }),
        changes: Vec::new(),
        diff: None,
        diff_truncated: false,
        process: None,
        source: "realtime".into(),
        backend: "inotify".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_format_shows_file_events_only_in_the_classic_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.socket.format = secmon_agent::config::SocketFormat::Flat;
    let agent = start(cfg).await;
    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_status(&agent, "1 client", |s| s["socket"]["clients"] == 1).await;
    assert_eq!(agent.status()["socket"]["format"], "flat");

    // A process event has no flat form; the file event that follows does.
    let base = agent.last_seq();
    emit(&agent, 1);
    let payload = serde_json::to_value(file_activity("/etc/flat-test")).unwrap();
    assert!(agent.emit(EventClass::File, "created", Severity::Medium, payload));
    let v = client.next(WAIT).await.unwrap();
    assert_eq!(v["event_type"], json!({"type": "FileCreate"}), "{v}");
    assert_eq!(v["path"], "/etc/flat-test");
    assert_eq!(v["details"]["severity"], "Medium");
    assert_eq!(v["details"]["description"], "/etc/flat-test created");
    assert_eq!(v["details"]["metadata"]["hash_after"], "abc");
    assert_eq!(v["details"]["metadata"]["seq"], base + 2);
    assert_eq!(v["details"]["metadata"]["agent_id"], agent.agent_id().as_str());
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).expect("RFC 3339 timestamp");
    agent.shutdown("test").await;
    // agent/stopped has no flat form: nothing else came.
    assert_eq!(client.until_eof(WAIT).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_only_mode_numbers_events_streams_them_and_keeps_the_spool_drained() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = local_config(dir.path());
    cfg.spool.segment_bytes = 64 * 1024;
    cfg.spool.max_bytes = 1024 * 1024;
    let agent = start(cfg.clone()).await;
    let st = agent.status();
    assert_eq!(st["nats"], json!({"connected": false, "local_only": true}), "{st}");
    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_status(&agent, "1 client", |s| s["socket"]["clients"] == 1).await;

    // Ten times what the spool holds: without draining it would fill and drop.
    let base = agent.last_seq();
    let mut prev = 0;
    for i in 0..10_000u64 {
        emit(&agent, i);
        if i % 500 == 499 {
            let want = base + i + 1;
            client.until(WAIT, |v| seq(v) == Some(want)).await;
        }
    }
    let end = client.seen.last().unwrap().clone();
    assert_eq!(end["payload"]["i"], 9_999);
    for v in &client.seen {
        let s = seq(v).expect("an event with a seq");
        assert!(s > prev, "seq {s} after {prev}");
        prev = s;
        assert_eq!(v["agent_id"], agent.agent_id().as_str());
        assert!(v["id"].is_string());
    }
    assert_eq!(seq(&end), Some(agent.last_seq()));
    wait_status(&agent, "a drained spool", |s| s["queues"]["spool_depth"] == 0).await;
    let st = agent.status();
    assert_eq!(st["queues"]["spool_dropped"], 0, "{st}");
    assert!(st["queues"]["spool_bytes"].as_u64().unwrap() <= 2 * 64 * 1024, "{st}");
    let last = agent.last_seq();
    agent.shutdown("test").await;
    let rest = client.until_eof(WAIT).await;
    assert_eq!(rest.last().map(|v| v["activity"].clone()), Some(json!("stopped")));

    // Numbering goes on after a restart.
    let agent = start(cfg).await;
    let mut client = Lines::connect(&dir.path().join("agent.sock"));
    wait_status(&agent, "1 client", |s| s["socket"]["clients"] == 1).await;
    emit(&agent, 1);
    let v = client.next(WAIT).await.unwrap();
    assert_eq!(seq(&v), Some(last + 3), "stopped = last + 1, started = last + 2");
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_mode_sends_the_same_event_to_nats_and_the_socket() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&nats.url(), &dir.path().join("state"));
    cfg.socket.path = dir.path().join("agent.sock");
    cfg.fim.camera_paths.clear();
    let agent = start(cfg).await;
    assert_eq!(agent.status()["nats"]["local_only"], false);
    let mut socket = Lines::connect(&dir.path().join("agent.sock"));
    wait_status(&agent, "1 client", |s| s["socket"]["clients"] == 1).await;

    emit(&agent, 42);
    let on_socket = socket.next(WAIT).await.unwrap();
    wait_stream_len(&client, 2, WAIT).await; // started, then ours
    let stored = stored_events(&client).await;
    let ours = &stored.last().unwrap().envelope;
    assert_eq!(serde_json::to_value(ours).unwrap(), on_socket, "the socket shows the published envelope");
    assert_eq!(ours.payload["i"], 42);
    agent.shutdown("test").await;
}

/// Fails under CI when a tool is missing; elsewhere says so and returns false.
fn have(tool: &str) -> bool {
    let found =
        Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(
            !secmon_testkit::in_ci(),
            "{tool} is not installed and CI=true: install it (scripts/lib.sh does)"
        );
        eprintln!("SKIPPED socat_pipe_into_jq: {tool} not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socat_piped_into_jq_shows_the_events() {
    if !(have("socat") && have("jq")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = start(local_config(dir.path())).await;
    let path = dir.path().join("agent.sock");
    let mut socat = ChildGuard::new(
        Command::new("socat")
            .arg(format!("UNIX-CONNECT:{}", path.display()))
            .arg("-")
            // stdin stays open (as a terminal's would), else socat half-closes and quits.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn socat"),
    );
    let socat_out = socat.0.as_mut().unwrap().stdout.take().unwrap();
    let mut jq = ChildGuard::new(
        // --unbuffered: jq block-buffers a pipe; in a terminal it prints each line anyway.
        Command::new("jq")
            .args(["-c", "--unbuffered", "."])
            .stdin(socat_out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn jq"),
    );
    let jq_out = jq.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(jq_out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    wait_status(&agent, "socat connected", |s| s["socket"]["clients"] == 1).await;
    for i in 0..3 {
        assert!(agent.emit(EventClass::Log, "matched", Severity::Low, json!({"n": i})));
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let line =
            tokio::time::timeout(WAIT, rx.recv()).await.expect("jq printed within the deadline").unwrap();
        let v: Value = serde_json::from_str(&line).expect("jq -c prints JSON");
        assert_eq!(line, serde_json::to_string(&v).unwrap(), "one compact object per line");
        got.push(v);
    }
    for (i, v) in got.iter().enumerate() {
        assert_eq!((v["class"].as_str(), v["payload"]["n"].as_u64()), (Some("log"), Some(i as u64)));
    }
    // The agent stopping ends both processes cleanly.
    agent.shutdown("test").await;
    let st = socat.wait_timeout(WAIT).expect("socat exits when the agent closes the socket");
    assert!(st.success(), "socat: {st}");
    let st = jq.wait_timeout(WAIT).expect("jq exits at the end of its input");
    assert!(st.success(), "jq: {st}");
}
