//! The control plane against a real nats-server: registration (refused, accepted,
//! again after a reconnect), heartbeats, and commands.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use futures::StreamExt;
use secmon_agent::{Agent, AgentHandle, AgentOptions};
use secmon_proto::{
    AgentStatus, CommandReply, DEFAULT_MAX_EVENT_BYTES, Heartbeat, PROTOCOL_VERSION, RegisterReply,
    Registration, decode,
};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};
use uuid::Uuid;

/// Answers registrations: refuses the first, accepts the rest. Records each one with
/// the time its reply was sent.
fn spawn_registrar(client: async_nats::Client, seen: Arc<Mutex<Vec<(Instant, Registration, bool)>>>) {
    tokio::spawn(async move {
        let mut sub = client.subscribe("secmon.agent.*.register").await.unwrap();
        while let Some(msg) = sub.next().await {
            let reg: Registration =
                decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("valid registration");
            let accepted = !seen.lock().unwrap().is_empty();
            // Before the reply goes out: no legitimate heartbeat can come earlier.
            let replied_at = Instant::now();
            let reply = RegisterReply {
                v: PROTOCOL_VERSION,
                accepted,
                status: if accepted { AgentStatus::Pending } else { AgentStatus::Removed },
                reason: (!accepted).then(|| "refused by the test".to_owned()),
            };
            client.publish(msg.reply.unwrap(), serde_json::to_vec(&reply).unwrap().into()).await.unwrap();
            client.flush().await.unwrap();
            seen.lock().unwrap().push((replied_at, reg, accepted));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_host_facts_then_sends_heartbeats_and_registers_again_after_reconnect() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let client = client(&url).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    spawn_registrar(client.clone(), seen.clone());
    let beats = Arc::new(Mutex::new(Vec::<(Instant, Heartbeat)>::new()));
    let mut heartbeats = client.subscribe("secmon.agent.*.heartbeat").await.unwrap();
    tokio::spawn({
        let beats = beats.clone();
        async move {
            while let Some(msg) = heartbeats.next().await {
                let hb: Heartbeat = decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("valid heartbeat");
                beats.lock().unwrap().push((Instant::now(), hb));
            }
        }
    });
    client.flush().await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(&url, tmp.path()), AgentOptions::default()).await.unwrap();

    // Refused first, then retried and accepted.
    assert!(
        eventually(Duration::from_secs(10), || seen.lock().unwrap().len() >= 2).await,
        "no second registration"
    );
    let (accepted_at, reg) = {
        let s = seen.lock().unwrap();
        assert!(!s[0].2 && s[1].2);
        (s[1].0, s[1].1.clone())
    };
    assert_eq!(&reg.agent_id, agent.agent_id());
    assert_eq!(reg.name, "test-agent");
    assert_eq!(reg.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(reg.heartbeat_interval_ms, 200);
    assert_eq!(reg.config_digest, agent.config_digest());
    assert!(!reg.host.hostname.is_empty() && !reg.host.os.is_empty() && !reg.host.kernel.is_empty());
    assert_eq!(reg.host.arch, std::env::consts::ARCH);
    assert!(reg.last_seq <= 1, "at most the started event: {}", reg.last_seq);

    // Heartbeats start after the accepted registration, one at once, then every 200 ms.
    assert!(
        eventually(Duration::from_secs(5), || beats.lock().unwrap().len() >= 6).await,
        "heartbeats missing"
    );
    let beats = beats.lock().unwrap()[..6].to_vec();
    assert!(beats[0].0 > accepted_at, "a heartbeat came before the registration was accepted");
    assert!(beats[0].0 - accepted_at < Duration::from_millis(150), "first heartbeat not sent at once");
    assert!(beats.iter().all(|(_, hb)| &hb.agent_id == agent.agent_id()));
    assert_eq!(beats[5].1.last_seq, 1, "the started event");
    let mean = (beats[5].0 - beats[1].0) / 4;
    assert!(
        (Duration::from_millis(150)..Duration::from_millis(500)).contains(&mean),
        "mean heartbeat interval {mean:?}, configured 200ms"
    );

    // After NATS comes back, the agent registers again.
    tokio::task::block_in_place(|| nats.restart());
    assert!(
        eventually(Duration::from_secs(15), || seen.lock().unwrap().len() >= 3).await,
        "no registration after reconnect"
    );
    agent.shutdown("test").await;
}

struct Commands {
    client: async_nats::Client,
    subject: String,
}

impl Commands {
    async fn raw(&self, payload: Vec<u8>) -> CommandReply {
        let msg = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.request(self.subject.clone(), payload.into()),
        )
        .await
        .expect("reply within 5s")
        .expect("request answered");
        decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("reply decodes")
    }

    async fn send(&self, command: &str) -> (Uuid, CommandReply) {
        let id = Uuid::now_v7();
        let req = json!({"v": 1, "id": id, "command": command, "args": {}, "issued_at": Utc::now()});
        let reply = self.raw(serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(reply.id, id, "reply carries the request id");
        (id, reply)
    }

    async fn ok(&self, command: &str) -> Value {
        let (_, reply) = self.send(command).await;
        assert!(reply.ok, "{command} failed: {:?}", reply.error);
        reply.result
    }

    async fn err(&self, command: &str) -> secmon_proto::CommandError {
        let (_, reply) = self.send(command).await;
        assert!(!reply.ok, "{command} should fail");
        reply.error.expect("error present")
    }
}

async fn start_with_file(url: &str, dir: &std::path::Path) -> (AgentHandle, std::path::PathBuf) {
    let path = dir.join("agent.toml");
    std::fs::write(&path, config_toml(url, &dir.join("state"), "200ms")).unwrap();
    let cfg = secmon_config::load(Some(&path)).unwrap();
    let opts = AgentOptions { config_path: Some(path.clone()), ..Default::default() };
    (Agent::start(cfg, opts).await.unwrap(), path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_including_unknown_and_malformed_ones() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (agent, path) = start_with_file(&nats.url(), tmp.path()).await;
    let cmd = Commands { client: client.clone(), subject: format!("secmon.cmd.{}", agent.agent_id()) };
    assert!(eventually(Duration::from_secs(5), || agent.status()["nats"]["connected"] == true).await);
    assert!(eventually(Duration::from_secs(5), || agent.last_seq() == 1).await, "started event spooled");

    let pong = cmd.ok("ping").await;
    assert_eq!(pong["pong"], true);
    assert!(pong["time"].is_string());

    let st = cmd.ok("status").await;
    assert_eq!(st["agent_id"], agent.agent_id().to_string());
    assert_eq!(st["name"], "test-agent");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptime_secs"].is_u64() && st["sensors"].is_array());
    for q in ["channel_depth", "spool_depth", "spool_bytes", "spool_dropped", "channel_dropped"] {
        assert!(st["queues"][q].is_u64(), "queues.{q} missing: {st}");
    }
    assert_eq!(st["config_digest"], agent.config_digest());
    assert_eq!(st["nats"]["connected"], true);
    assert_eq!(st["last_seq"], 1);
    assert_eq!(st["heartbeat_interval_ms"], 200);
    let digest_before = agent.config_digest();

    // A live key and a restart-only key change.
    let text = config_toml("nats://127.0.0.1:1", &tmp.path().join("state"), "300ms");
    std::fs::write(&path, text).unwrap();
    let r = cmd.ok("reload-config").await;
    assert_eq!(r["changed"], json!(["agent.heartbeat_interval", "nats.url"]));
    assert_eq!(r["restart_required"], json!(["nats.url"]));
    let st = cmd.ok("status").await;
    assert_eq!(st["heartbeat_interval_ms"], 300);
    assert_ne!(st["config_digest"], digest_before);
    assert_eq!(st["nats"]["connected"], true, "nats.url needs a restart: the connection stays");

    // A broken file is refused with the key, and the running config stays.
    std::fs::write(&path, "[agent]\nheartbeat_interval = \"soon\"\n").unwrap();
    let e = cmd.err("reload-config").await;
    assert_eq!(e.code, "bad_config");
    assert!(e.message.contains("agent.heartbeat_interval"), "{}", e.message);
    assert_eq!(cmd.ok("status").await["heartbeat_interval_ms"], 300);

    let e = cmd.err("frobnicate").await;
    assert_eq!(e.code, "unknown_command");
    assert!(
        e.message.contains("frobnicate") && e.message.contains("ping, status, reload-config"),
        "{}",
        e.message
    );

    let r = cmd.raw(b"{not json".to_vec()).await;
    assert!(!r.ok);
    assert_eq!(r.error.unwrap().code, "malformed_request");
    let id = Uuid::now_v7();
    let future = json!({"v": 2, "id": id, "command": "ping", "issued_at": Utc::now()});
    let r = cmd.raw(serde_json::to_vec(&future).unwrap()).await;
    assert_eq!((r.ok, r.id), (false, id), "a malformed request's id is echoed when readable");
    let e = r.error.unwrap();
    assert_eq!(e.code, "malformed_request");
    assert!(e.message.contains("version"), "{}", e.message);

    agent.shutdown("test").await;
}
