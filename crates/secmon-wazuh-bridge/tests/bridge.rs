//! The real `secmon-wazuh-bridge` binary against a real nats-server and a real
//! global.db written concurrently by the simulator (as wazuh-db would): changes
//! published signed within moments (not the poll interval), restart, NATS killed
//! mid-stream, JetStream deduplication, 5.x schema, flapping, encryption, hostile
//! rows, the writer never blocked, health/metrics, bad configs.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use secmon_testkit::{ChildGuard, NatsServer, free_port, wait_until};
use secmon_wazuh_bridge::db::SchemaFlavor;
use secmon_wazuh_bridge::fixture::create_fixture;
use secmon_wazuh_bridge::keys;
use secmon_wazuh_bridge::model::Status;
use secmon_wazuh_bridge::simulator::{SimOptions, Simulator};
use secmon_wazuh_bridge::wire::Decoder;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_secmon-wazuh-bridge");

struct Harness {
    dir: tempfile::TempDir,
    nats: NatsServer,
    db: PathBuf,
    metrics_port: u16,
    extra: String,
    /// Inserted into the `publish:` map (`, queue_capacity: 8`).
    publish_extra: String,
    bridge: Option<ChildGuard>,
}

impl Harness {
    fn new(agents: usize, flavor: SchemaFlavor, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("global.db");
        create_fixture(&db, agents, flavor, 42).unwrap();
        Self {
            dir,
            nats: NatsServer::start(),
            db,
            metrics_port: free_port(),
            extra: extra.into(),
            publish_extra: String::new(),
            bridge: None,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Poll interval 60 s: anything seen sooner came from notifications / checks.
    fn config(&self) -> PathBuf {
        let p = self.dir.path().join("bridge.yaml");
        let text = format!(
            "wazuh: {{ db_path: {:?}, poll_interval: 60s, manager_node: wazuh-manager-01 }}\n\
             nats: {{ url: {:?}, reconnect_delay: 100ms }}\n\
             publish: {{ create_stream: true, heartbeat_interval: 1s, retry_max_delay: 500ms, breaker_cooldown: 300ms, drain_timeout: 5s{} }}\n\
             monitoring: {{ metrics_port: {}, log_level: debug }}\n\
             state: {{ dir: {:?} }}\n{}",
            self.db,
            self.nats.url(),
            self.publish_extra,
            self.metrics_port,
            self.state(),
            self.extra
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bridge.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.bridge = Some(ChildGuard::new(child));
        let ok = wait_until(Duration::from_secs(20), || {
            self.health().is_some_and(|h| h["status"] == "ok" && !h["sources"][0]["last_poll"].is_null())
        });
        assert!(ok, "bridge not healthy: {:?}\n{}", self.health(), self.log());
    }

    /// SIGTERM and wait: a graceful stop.
    fn stop(&mut self) {
        let mut b = self.bridge.take().expect("running");
        b.signal(nix::sys::signal::Signal::SIGTERM);
        let st = b.wait_timeout(Duration::from_secs(15)).expect("bridge did not stop on SIGTERM");
        assert!(st.success(), "exit {st:?}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    fn health(&self) -> Option<Value> {
        http_get(self.metrics_port, "/health").and_then(|b| serde_json::from_str(&b).ok())
    }

    fn decoder(&self) -> Decoder {
        let key = keys::load_key(&self.state().join("signing.key"), 32).unwrap();
        Decoder::new(vec![key], None)
    }

    fn sim(&self) -> Simulator {
        Simulator::open(&self.db).unwrap()
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// Every message in the bridge's stream: (subject, decoded and verified JSON).
/// Nothing while the bridge has not created the stream yet (NATS killed right after
/// the bridge connected: it creates the stream on its next connection).
async fn stored(url: &str, dec: &Decoder) -> Vec<(String, Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = match js.get_stream("WAZUH").await {
        Ok(s) => s,
        Err(e) if e.to_string().contains("stream not found") => return Vec::new(),
        Err(e) => panic!("cannot read the stream: {e}"),
    };
    let info = stream.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else { continue };
        let v = dec
            .decode(&m.payload)
            .unwrap_or_else(|e| panic!("message {seq} on {} does not verify: {e}", m.subject));
        out.push((m.subject.to_string(), v));
    }
    out
}

fn status_events(msgs: &[(String, Value)]) -> Vec<&Value> {
    msgs.iter().filter(|(s, _)| s.ends_with(".status")).map(|(_, v)| v).collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

#[test]
fn changes_are_published_signed_within_moments_on_every_subject() {
    let mut h = Harness::new(200, SchemaFlavor::V4, "");
    h.start();
    let rt = rt();
    let _guard = rt.enter();
    let client = rt.block_on(async_nats::connect(h.nats.url())).unwrap();
    let mut sub = rt.block_on(client.subscribe("wazuh.>")).unwrap();
    rt.block_on(client.flush()).unwrap();

    let mut sim = h.sim();
    sim.set_status(5, Status::Active).unwrap();
    sim.set_status(6, Status::Active).unwrap();
    // One wazuh-db-like batch with several kinds of change.
    sim.begin().unwrap();
    sim.set_status(5, Status::Disconnected).unwrap();
    sim.set_ip(9, "192.168.7.9").unwrap();
    let new_id = sim.register("new-host", "10.9.9.9").unwrap();
    sim.remove(7).unwrap();
    sim.commit().unwrap();
    let committed = Instant::now();

    let dec = h.decoder();
    let mut got: Vec<(String, Value)> = Vec::new();
    let want_batches = 1;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        use futures::StreamExt;
        while Instant::now() < deadline {
            let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await else {
                continue;
            };
            let v = dec.decode(&m.payload).expect("every message verifies");
            got.push((m.subject.to_string(), v));
            let batches = got
                .iter()
                .filter(|(s, v)| s.ends_with("agent_events") && v["events"].as_array().unwrap().len() >= 4)
                .count();
            if batches >= want_batches {
                break;
            }
        }
    });
    let elapsed = committed.elapsed();
    // Seen through notifications, long before the 60 s poll.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let find = |subject: &str| got.iter().find(|(s, _)| s == subject).map(|(_, v)| v.clone());
    let e5 = find("wazuh.agent.005.status").unwrap_or_else(|| panic!("no event for 005: {got:#?}"));
    assert_eq!(e5["kind"], "status_change");
    assert_eq!(e5["previous_status"], "Active");
    assert_eq!(e5["current_status"], "Disconnected");
    assert_eq!(e5["agent_id"], "005");
    assert_eq!(e5["manager_node"], "wazuh-manager-01");
    assert_eq!(e5["schema_version"], 1);
    assert!(
        e5["event_id"].as_str().unwrap().starts_with("evt_005_")
            && e5["event_id"].as_str().unwrap().contains("_status_change_")
    );
    assert!(e5["last_keepalive"].as_str().unwrap().ends_with('Z'));
    assert_eq!(e5["signature"]["alg"], "hmac-sha256");
    assert!(find("wazuh.agent.005.disconnected").is_some(), "disconnected subject");
    let e9 = find("wazuh.agent.009.status").unwrap();
    assert_eq!(e9["kind"], "updated");
    assert_eq!(e9["ip_address"], "192.168.7.9");
    assert!(
        e9["changes"].as_array().unwrap().iter().any(|c| c["field"] == "ip" && c["current"] == "192.168.7.9")
    );
    let reg = find(&format!("wazuh.agent.{new_id:03}.status")).unwrap();
    assert_eq!(reg["kind"], "registered");
    assert_eq!(reg["agent_name"], "new-host");
    let rem = find("wazuh.agent.007.status").unwrap();
    assert_eq!(rem["kind"], "removed");
    let batch = got
        .iter()
        .find(|(s, v)| s == "wazuh.security.agent_events" && v["events"].as_array().unwrap().len() >= 4)
        .unwrap();
    assert!(batch.1["batch_id"].as_str().unwrap().starts_with("batch_wazuh-manager-01_"));
    assert_eq!(batch.1["summary"]["total_agents"], 200);
    assert!(batch.1["summary"]["changes_detected"].as_u64().unwrap() >= 4);
    // Heartbeats flow, with counts.
    let ok = wait_until(Duration::from_secs(5), || {
        rt.block_on(async {
            use futures::StreamExt;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
                if m.subject.as_str() == "wazuh.manager.wazuh-manager-01.heartbeat" {
                    let v = dec.decode(&m.payload).unwrap();
                    assert_eq!(v["agents"]["total_agents"], 200);
                    assert_eq!(v["schema"], "4.x");
                    return true;
                }
            }
            false
        })
    });
    assert!(ok, "no heartbeat");
    // The verify subcommand, on a message as a subscriber saved it, and tampered.
    let saved = h.dir.path().join("e5.json");
    std::fs::write(&saved, serde_json::to_vec(&e5).unwrap()).unwrap();
    let verify = |file: &std::path::Path| {
        Command::new(BIN)
            .arg("verify")
            .arg("--key")
            .arg(h.state().join("signing.key"))
            .arg(file)
            .output()
            .unwrap()
    };
    let ok = verify(&saved);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("signature ok"));
    let mut forged = e5.clone();
    forged["current_status"] = "Active".into();
    std::fs::write(&saved, serde_json::to_vec(&forged).unwrap()).unwrap();
    assert!(!verify(&saved).status.success(), "a forged message verified");
    // The agents' secret keys never leave the database.
    let conn = rusqlite::Connection::open(&h.db).unwrap();
    let secret: String =
        conn.query_row("SELECT internal_key FROM agent WHERE id = 5", [], |r| r.get(0)).unwrap();
    for (_, v) in &got {
        assert!(!v.to_string().contains(&secret), "internal_key leaked");
    }
    assert!(!h.log().contains(&secret), "internal_key in the log");
    // Audit log: one line per published message, with its digest.
    let audit = std::fs::read_to_string(h.state().join("audit.jsonl")).unwrap();
    assert!(audit.lines().any(|l| l.contains(e5["event_id"].as_str().unwrap())), "{audit}");
    // Metrics.
    let m = http_get(h.metrics_port, "/metrics").unwrap();
    assert!(
        m.contains("secmon_wazuh_bridge_agents{manager_node=\"wazuh-manager-01\",status=\"Disconnected\"}"),
        "{m}"
    );
    assert!(m.contains("secmon_wazuh_bridge_publish_latency_seconds_count"));
    // The JSON log carries the cycle's correlation id.
    assert!(
        h.log().lines().any(|l| l.contains("\"cycle_id\"") && l.contains("changes detected")),
        "{}",
        h.log()
    );
    h.stop();
}

#[test]
fn a_restarted_bridge_reports_what_changed_while_it_was_down_and_nothing_else() {
    let mut h = Harness::new(100, SchemaFlavor::V4, "");
    h.start();
    h.stop();
    let mut sim = h.sim();
    sim.set_status(3, Status::Active).unwrap();
    sim.set_status(3, Status::Disconnected).unwrap();
    sim.set_version(4, "Wazuh v4.9.0").unwrap();
    h.start();
    let rt = rt();
    let dec = h.decoder();
    let ok = wait_until(Duration::from_secs(10), || {
        status_events(&rt.block_on(stored(&h.nats.url(), &dec))).len() >= 2
    });
    assert!(ok, "{}", h.log());
    // Give it time to (wrongly) announce more.
    std::thread::sleep(Duration::from_millis(1500));
    let msgs = rt.block_on(stored(&h.nats.url(), &dec));
    let ev = status_events(&msgs);
    let ids: Vec<&str> = ev.iter().map(|v| v["agent_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["003", "004"], "{ev:#?}");
    assert_eq!(ev[0]["current_status"], "Disconnected");
    assert_eq!(ev[1]["version"], "Wazuh v4.9.0");
    h.stop();
    // And a third start with nothing changed announces nothing.
    h.start();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_events(&rt.block_on(stored(&h.nats.url(), &dec))).len(), 2);
    h.stop();
}

#[test]
fn a_change_derived_again_after_a_crash_is_stored_once() {
    let mut h = Harness::new(50, SchemaFlavor::V4, "");
    h.start();
    h.stop();
    let snap = std::fs::read_dir(h.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("snapshot"))
        .unwrap();
    let before = std::fs::read(&snap).unwrap();
    h.sim().set_status(8, Status::Pending).unwrap();
    h.start();
    let rt = rt();
    let dec = h.decoder();
    assert!(wait_until(Duration::from_secs(10), || status_events(&rt.block_on(stored(&h.nats.url(), &dec)))
        .len()
        == 1));
    h.stop();
    // As if the bridge had died after publishing but before saving its snapshot.
    std::fs::write(&snap, before).unwrap();
    h.start();
    let audit = || std::fs::read_to_string(h.state().join("audit.jsonl")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || audit().matches("wazuh.agent.008.status").count() == 2),
        "published again: {}",
        audit()
    );
    let ev =
        status_events(&rt.block_on(stored(&h.nats.url(), &dec))).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(ev.len(), 1, "JetStream deduplicated by event id: {ev:#?}");
    h.stop();
}

#[test]
fn nats_killed_and_restarted_mid_stream_loses_no_change() {
    // Flapping would (rightly) hold back some transitions of this busy simulator.
    let mut h = Harness::new(300, SchemaFlavor::V4, "flapping: { enabled: false }\n");
    h.start();
    let stop = Arc::new(AtomicBool::new(false));
    let db = h.db.clone();
    let log = h.dir.path().join("changes.jsonl");
    let opts = SimOptions {
        commit_interval: Duration::from_millis(100),
        changes_per_commit: 4,
        seed: 9,
        log: Some(log.clone()),
        ..Default::default()
    };
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || Simulator::open(&db).unwrap().run(&opts, &s2).unwrap());
    std::thread::sleep(Duration::from_secs(2));
    h.nats.kill();
    std::thread::sleep(Duration::from_secs(3));
    h.nats.restart();
    std::thread::sleep(Duration::from_secs(2));
    h.nats.kill();
    std::thread::sleep(Duration::from_secs(1));
    h.nats.restart();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let stats = writer.join().unwrap();
    assert_eq!(stats.failures, 0, "{stats:?}");
    // The final state of every agent, as published, is the database's.
    let conn = rusqlite::Connection::open(&h.db).unwrap();
    let mut q = conn.prepare("SELECT id, connection_status, ip FROM agent WHERE id > 0").unwrap();
    let truth: std::collections::BTreeMap<String, (String, Option<String>)> = q
        .query_map([], |r| {
            Ok((
                format!("{:03}", r.get::<_, i64>(0)?),
                (r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rt = rt();
    let dec = h.decoder();
    let initial: std::collections::BTreeMap<String, String> = {
        // The fixture's statuses (same seed) are the baseline the events start from.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.db");
        create_fixture(&p, 300, SchemaFlavor::V4, 42).unwrap();
        let c = rusqlite::Connection::open(&p).unwrap();
        let mut q = c.prepare("SELECT id, connection_status FROM agent WHERE id > 0").unwrap();
        q.query_map([], |r| Ok((format!("{:03}", r.get::<_, i64>(0)?), r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let check = || {
        let msgs = rt.block_on(stored(&h.nats.url(), &dec));
        let mut last: std::collections::BTreeMap<String, Option<String>> =
            initial.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        for v in status_events(&msgs) {
            let id = v["agent_id"].as_str().unwrap().to_owned();
            let st = match v["kind"].as_str().unwrap() {
                "removed" => None,
                _ => Some(
                    match v["current_status"].as_str().unwrap() {
                        "Active" => "active",
                        "Disconnected" => "disconnected",
                        "NeverConnected" => "never_connected",
                        "Pending" => "pending",
                        other => other,
                    }
                    .to_owned(),
                ),
            };
            last.insert(id, st);
        }
        last.retain(|_, v| v.is_some());
        let published: std::collections::BTreeMap<String, String> =
            last.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        let truth_st: std::collections::BTreeMap<String, String> =
            truth.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        let differ: Vec<_> = truth_st
            .iter()
            .filter(|(k, v)| published.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: db {v}, published {:?}", published.get(k)))
            .chain(published.keys().filter(|k| !truth_st.contains_key(*k)).map(|k| format!("{k}: not in db")))
            .collect();
        (published == truth_st, differ, truth_st.len())
    };
    let ok = wait_until(Duration::from_secs(20), || check().0);
    assert!(ok, "published state differs from the database: {:?}\n{}", check(), h.log());
    let changes = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(changes > 50, "the simulator made {changes} changes");
    h.stop();
}

#[test]
fn a_5x_schema_is_read_and_reported() {
    let mut h = Harness::new(40, SchemaFlavor::V5, "");
    h.sim().set_status(1, Status::Active).unwrap();
    h.start();
    assert_eq!(h.health().unwrap()["sources"][0]["schema"], "5.x");
    h.sim().set_status(1, Status::Disconnected).unwrap();
    let id = h.sim().register("five", "10.5.5.5").unwrap();
    let rt = rt();
    let dec = h.decoder();
    assert!(
        wait_until(Duration::from_secs(10), || status_events(&rt.block_on(stored(&h.nats.url(), &dec)))
            .len()
            >= 2),
        "{}",
        h.log()
    );
    let msgs = rt.block_on(stored(&h.nats.url(), &dec));
    let ev = status_events(&msgs);
    assert!(ev.iter().any(|v| v["agent_id"] == "001" && v["current_status"] == "Disconnected"), "{ev:#?}");
    assert!(ev.iter().any(|v| v["agent_id"] == format!("{id:03}") && v["kind"] == "registered"), "{ev:#?}");
    h.stop();
}

#[test]
fn the_bridge_never_holds_the_lock_long_enough_to_fail_the_writer() {
    let mut h = Harness::new(10_000, SchemaFlavor::V4, "");
    h.start();
    let stop = Arc::new(AtomicBool::new(false));
    let db = h.db.clone();
    let opts = SimOptions {
        commit_interval: Duration::from_millis(30),
        changes_per_commit: 10,
        keepalive_share: 0.3,
        seed: 3,
        ..Default::default()
    };
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut sim = Simulator::open(&db).unwrap();
        sim.set_max_lock_wait(Duration::from_secs(1));
        sim.run(&opts, &s2).unwrap()
    });
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    let stats = writer.join().unwrap();
    eprintln!("writer: {stats:?}");
    assert!(stats.commits > 10, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert!(stats.max_lock_wait < Duration::from_millis(100), "{stats:?}");
    let m = http_get(h.metrics_port, "/metrics").unwrap();
    let polls: f64 = m
        .lines()
        .find(|l| l.starts_with("secmon_wazuh_bridge_polls_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // Debug builds read 10,000 rows in a few hundred ms: a handful of reads
    // overlapping hundreds of commits is the point.
    assert!(polls > 3.0, "the bridge read {polls} times while the writer ran");
    h.stop();
}

#[test]
fn a_flapping_agent_gives_one_flapping_event_then_a_summary() {
    let mut h = Harness::new(20, SchemaFlavor::V4, "flapping: { threshold: 3, window: 2s }\n");
    let mut sim = h.sim();
    sim.set_status(11, Status::Active).unwrap();
    h.start();
    let rt = rt();
    let dec = h.decoder();
    let count = |kind: &str| {
        status_events(&rt.block_on(stored(&h.nats.url(), &dec))).iter().filter(|v| v["kind"] == kind).count()
    };
    for i in 0..8 {
        let st = if i % 2 == 0 { Status::Disconnected } else { Status::Active };
        sim.set_status(11, st).unwrap();
        // Each transition its own commit, seen in its own cycle.
        let want = (i + 1).min(3);
        wait_until(Duration::from_secs(3), || count("status_change") + count("flapping") >= want);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(wait_until(Duration::from_secs(4), || count("flapping_ended") == 1), "{}", h.log());
    let msgs = rt.block_on(stored(&h.nats.url(), &dec));
    let ev = status_events(&msgs);
    assert_eq!(ev.iter().filter(|v| v["kind"] == "status_change").count(), 3, "{ev:#?}");
    assert_eq!(ev.iter().filter(|v| v["kind"] == "flapping").count(), 1);
    let end = ev.iter().find(|v| v["kind"] == "flapping_ended").unwrap();
    assert_eq!(end["flapping"]["suppressed"], 4, "{end:#}");
    assert_eq!(end["current_status"], "Active");
    h.stop();
}

#[test]
fn encrypted_and_compressed_messages_decode_with_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("enc.key");
    std::fs::write(&key_path, hex::encode([7u8; 32])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "security: {{ encrypt_messages: true, encryption_key_path: {key_path:?}, encryption_algorithm: aes-256-gcm }}\n"
    );
    let mut h = Harness::new(30, SchemaFlavor::V4, &extra);
    h.publish_extra = ", compress_batches: true".into();
    h.start();
    h.sim().set_status(4, Status::Disconnected).unwrap();
    let rt = rt();
    let key = keys::load_key(&h.state().join("signing.key"), 32).unwrap();
    let enc_key = keys::load_key(&key_path, 32).unwrap();
    let cipher = secmon_wazuh_bridge::crypto::Cipher::new(
        secmon_wazuh_bridge::config::EncryptionAlgorithm::Aes256Gcm,
        &enc_key,
    )
    .unwrap();
    let dec = Decoder::new(vec![key], Some(cipher));
    assert!(wait_until(Duration::from_secs(10), || !status_events(
        &rt.block_on(stored(&h.nats.url(), &dec))
    )
    .is_empty()));
    // Without the encryption key nothing reads.
    let client = rt.block_on(async_nats::connect(h.nats.url())).unwrap();
    let js = jetstream::new(client);
    let raw = rt.block_on(async {
        let s = js.get_stream("WAZUH").await.unwrap();
        s.get_raw_message(1).await.unwrap()
    });
    let text = String::from_utf8_lossy(&raw.payload);
    assert!(text.contains("ciphertext") && !text.contains("agent_name"), "{text}");
    // The batch was compressed (then encrypted), and says so.
    let batch = rt.block_on(async {
        let s = js.get_stream("WAZUH").await.unwrap();
        s.get_last_raw_message_by_subject("wazuh.security.agent_events").await.unwrap()
    });
    let enc = batch.headers.get("Content-Encoding").map(|v| v.to_string());
    assert_eq!(enc.as_deref(), Some("zstd"));
    let v = dec.decode(&batch.payload).unwrap();
    assert!(v["events"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    // The decrypt helper, as a user runs it.
    let f = dir.path().join("msg.bin");
    std::fs::write(&f, &raw.payload).unwrap();
    let out = Command::new(BIN)
        .args(["decrypt", "--encryption-key"])
        .arg(&key_path)
        .args(["--algorithm", "aes-256-gcm"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plain.get("signature").is_some(), "{plain}");
    h.stop();
}

#[test]
fn hostile_rows_do_not_break_the_bridge() {
    let mut h = Harness::new(10, SchemaFlavor::V4, "");
    h.start();
    let conn = rusqlite::Connection::open(&h.db).unwrap();
    conn.busy_timeout(Duration::from_secs(2)).unwrap();
    let huge = "x".repeat(5 * 1024 * 1024);
    conn.execute(
        "INSERT INTO agent (id, name, ip, date_add, last_keepalive, connection_status, `group`, version) \
         VALUES (500, ?1, X'FFFE00', 'not a time', -5, 'active', ?2, 12345)",
        rusqlite::params![format!("evil\u{1b}[31m\n{huge}"), huge],
    )
    .unwrap();
    conn.execute("UPDATE agent SET name = NULL WHERE id = 3", []).ok();
    let rt = rt();
    let dec = h.decoder();
    assert!(
        wait_until(Duration::from_secs(10), || status_events(&rt.block_on(stored(&h.nats.url(), &dec)))
            .iter()
            .any(|v| v["agent_id"] == "500")),
        "{}",
        h.log()
    );
    let msgs = rt.block_on(stored(&h.nats.url(), &dec));
    let ev = status_events(&msgs).into_iter().find(|v| v["agent_id"] == "500").unwrap().clone();
    let name = ev["agent_name"].as_str().unwrap();
    assert!(name.len() <= 1024 && name.starts_with("evil") && !name.contains('\u{1b}'), "{name:.80}");
    assert_eq!(ev["current_status"], "Active");
    assert!(ev["last_keepalive"].is_null(), "a negative time is not a time");
    assert!(h.health().unwrap()["status"] == "ok");
    h.stop();
}

#[test]
fn bad_configs_and_open_key_files_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "wazuh: { poll_interval: soon }\n").unwrap();
    let out = Command::new(BIN).arg("--config").arg(&cfg).arg("check-config").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wazuh.poll_interval"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TOML works too, and env overrides apply, and passwords are not printed.
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "[wazuh]\nmanager_node = \"n1\"\n[nats]\npassword = \"hunter2\"\nuser = \"u\"\n")
        .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&toml)
        .arg("check-config")
        .env("SECMON_WAZUH_POLL_INTERVAL", "2s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("poll_interval = \"2s\"") && text.contains("n1"), "{text}");
    assert!(!text.contains("hunter2"));
    // A signing key others can read is refused at start.
    let key = dir.path().join("sign.key");
    std::fs::write(&key, hex::encode([1u8; 32])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&cfg, format!("security: {{ signing_key_path: {key:?} }}\nstate: {{ dir: {:?} }}\nmonitoring: {{ enable_metrics: false }}\n", dir.path().join("st"))).unwrap();
    let out = Command::new(BIN).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_full_publish_queue_defers_reading_and_nothing_is_lost() {
    let mut h = Harness::new(60, SchemaFlavor::V4, "flapping: { enabled: false }\n");
    h.publish_extra = ", queue_capacity: 6, batches: false".into();
    h.start();
    h.nats.kill();
    let mut sim = h.sim();
    let statuses = || -> std::collections::BTreeMap<String, String> {
        let c = rusqlite::Connection::open(&h.db).unwrap();
        let mut q = c.prepare("SELECT id, connection_status FROM agent WHERE id BETWEEN 1 AND 16").unwrap();
        q.query_map([], |r| Ok((format!("{:03}", r.get::<_, i64>(0)?), r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = statuses();
    // Eight commits of two status changes each while NATS is down: more than the
    // queue holds.
    for round in 0..8 {
        sim.begin().unwrap();
        for k in 0..2 {
            let id = 1 + round * 2 + k;
            let st = if round % 2 == 0 { Status::Pending } else { Status::Disconnected };
            sim.set_status(id, st).unwrap();
        }
        sim.commit().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // What the subscribers must learn: every agent whose status moved.
    let title = |s: &str| match s {
        "pending" => "Pending",
        "disconnected" => "Disconnected",
        other => panic!("unexpected {other}"),
    };
    let want: std::collections::BTreeMap<String, String> = statuses()
        .into_iter()
        .filter(|(k, v)| before.get(k) != Some(v))
        .map(|(k, v)| (k, title(&v).to_owned()))
        .collect();
    assert!(want.len() >= 8, "{want:?}");
    let overflow = || {
        http_get(h.metrics_port, "/metrics")
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("secmon_wazuh_bridge_queue_overflow_total"))
                    .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            })
            .unwrap_or(0.0)
    };
    assert!(overflow() > 0.0, "no deferred cycle counted");
    let health = h.health().unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    h.nats.restart();
    let rt = rt();
    let dec = h.decoder();
    let published = || {
        let mut last = std::collections::BTreeMap::new();
        for v in status_events(&rt.block_on(stored(&h.nats.url(), &dec))) {
            last.insert(
                v["agent_id"].as_str().unwrap().to_owned(),
                v["current_status"].as_str().unwrap().to_owned(),
            );
        }
        last
    };
    let ok = wait_until(Duration::from_secs(20), || want.iter().all(|(k, v)| published().get(k) == Some(v)));
    assert!(
        ok,
        "want {want:?}\npublished {:?}\naudit:\n{}\n{}",
        published(),
        std::fs::read_to_string(h.state().join("audit.jsonl")).unwrap_or_default(),
        h.log()
    );
    h.stop();
}

#[test]
fn two_wazuh_nodes_in_one_process_and_a_database_that_appears_late() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b/global.db"));
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    create_fixture(&a, 20, SchemaFlavor::V4, 1).unwrap();
    let port = free_port();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wazuh: {{ db_path: {a:?}, manager_node: node-a, poll_interval: 1s }}\n\
             sources:\n  - {{ db_path: {b:?}, manager_node: node-b, poll_interval: 1s }}\n\
             nats: {{ url: {:?} }}\n\
             publish: {{ create_stream: true, heartbeat_interval: 1s }}\n\
             monitoring: {{ metrics_port: {port} }}\n\
             state: {{ dir: {:?} }}\n",
            nats.url(),
            dir.path().join("state")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("bridge.log")).unwrap();
    let mut bridge =
        ChildGuard::new(Command::new(BIN).arg("--config").arg(&cfg).stderr(log).spawn().unwrap());
    let health = || http_get(port, "/health").and_then(|b| serde_json::from_str::<Value>(&b).ok());
    // node-b's database does not exist yet: degraded, with the reason.
    assert!(wait_until(Duration::from_secs(10), || health()
        .is_some_and(|h| h["sources"][0]["last_poll"].is_string())));
    let h = health().unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("node-b"), "{h}");
    // It appears: picked up by the next attempt, baseline taken, healthy.
    create_fixture(&b, 30, SchemaFlavor::V5, 2).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || health().is_some_and(|h| h["status"] == "ok")),
        "{:?}",
        health()
    );
    let h = health().unwrap();
    assert_eq!(
        (h["sources"][0]["agents"].as_u64(), h["sources"][1]["agents"].as_u64()),
        (Some(20), Some(30))
    );
    assert_eq!(h["sources"][1]["schema"], "5.x");
    Simulator::open(&a).unwrap().register("in-a", "10.1.1.1").unwrap();
    Simulator::open(&b).unwrap().register("in-b", "10.2.2.2").unwrap();
    let rt = rt();
    let key = keys::load_key(&dir.path().join("state/signing.key"), 32).unwrap();
    let dec = Decoder::new(vec![key], None);
    let nodes = || {
        status_events(&rt.block_on(stored(&nats.url(), &dec)))
            .iter()
            .map(|v| {
                (v["manager_node"].as_str().unwrap().to_owned(), v["agent_name"].as_str().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(10), || nodes().len() == 2), "{:?}", nodes());
    let mut n = nodes();
    n.sort();
    assert_eq!(n, vec![("node-a".into(), "in-a".into()), ("node-b".into(), "in-b".into())]);
    let heartbeats = || -> Vec<String> {
        rt.block_on(stored(&nats.url(), &dec))
            .into_iter()
            .filter(|(s, _)| s.ends_with(".heartbeat"))
            .map(|(s, _)| s)
            .collect()
    };
    let both = || {
        let hb = heartbeats();
        hb.iter().any(|s| s == "wazuh.manager.node-a.heartbeat")
            && hb.iter().any(|s| s == "wazuh.manager.node-b.heartbeat")
    };
    assert!(wait_until(Duration::from_secs(10), both), "{:?}", heartbeats());
    bridge.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(bridge.wait_timeout(Duration::from_secs(15)).is_some_and(|s| s.success()));
}
