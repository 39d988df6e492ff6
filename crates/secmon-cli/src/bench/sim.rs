//! Simulated agents: they speak the agent's wire protocol (registration, heartbeats,
//! command replies, events) from inside the bench process, so a bench can put
//! hundreds or thousands of agents in front of one manager.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_nats::Client;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use secmon_proto::{
    AgentId, CommandReply, CommandRequest, Heartbeat, HostFacts, PROTOCOL_VERSION, RegisterReply,
    Registration, SpoolStats, Subjects, decode,
};
use serde_json::json;
use tokio::task::JoinHandle;

const MAX_MSG: usize = secmon_proto::DEFAULT_MAX_EVENT_BYTES;

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct SimAgent {
    pub id: AgentId,
    pub name: String,
    /// The NKey it enrolled with (secure mode): it signs every event.
    pub key: Option<AgentKey>,
}

/// An enrolled agent's NKey. Cheap to clone; its Debug shows the public key only.
#[derive(Clone)]
pub struct AgentKey(Arc<nkeys::KeyPair>);

impl AgentKey {
    pub fn new(key: nkeys::KeyPair) -> Self {
        Self(Arc::new(key))
    }

    /// Signs `env` (see `secmon_proto::signing`).
    pub fn sign(&self, env: &mut secmon_proto::Envelope) -> anyhow::Result<()> {
        secmon_proto::signing::sign_envelope(env, &self.0).context("signing a simulated event")
    }
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AgentKey").field(&self.0.public_key()).finish()
    }
}

/// `n` agents with ids unique to this run (`bench-<run>-00042`).
pub fn fleet(n: usize) -> Vec<SimAgent> {
    let run = &uuid::Uuid::now_v7().simple().to_string()[..8];
    (0..n)
        .map(|i| {
            let name = format!("bench-{run}-{i:05}");
            SimAgent { id: AgentId::new(name.clone()).expect("valid agent id"), name, key: None }
        })
        .collect()
}

impl SimAgent {
    /// Registers with the manager (request/reply) and checks it was accepted.
    pub async fn register(
        &self,
        client: &Client,
        subjects: &Subjects,
        heartbeat_interval: Duration,
        last_seq: u64,
    ) -> anyhow::Result<()> {
        let reg = Registration {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            name: self.name.clone(),
            agent_version: format!("bench-{}", env!("CARGO_PKG_VERSION")),
            host: HostFacts {
                hostname: self.name.clone(),
                os: "simulated".into(),
                kernel: "simulated".into(),
                arch: std::env::consts::ARCH.into(),
                ips: vec![],
            },
            started_at: Utc::now(),
            sensors: vec![],
            config_digest: String::new(),
            heartbeat_interval_ms: heartbeat_interval.as_millis() as u64,
            last_seq,
        };
        let msg = client
            .request(subjects.register(&self.id), serde_json::to_vec(&reg)?.into())
            .await
            .with_context(|| format!("registering {}", self.id))?;
        let reply: RegisterReply = decode(&msg.payload, MAX_MSG).context("register reply")?;
        ensure!(reply.accepted, "registration of {} refused: {:?}", self.id, reply.reason);
        Ok(())
    }

    fn heartbeat(&self, started: Instant, last_seq: u64) -> Vec<u8> {
        let hb = Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            time: Utc::now(),
            uptime_secs: started.elapsed().as_secs(),
            last_seq,
            spool: SpoolStats::default(),
        };
        serde_json::to_vec(&hb).expect("a heartbeat serializes")
    }
}

/// Registers every agent, 64 at a time.
pub async fn register_all(
    client: &Client,
    subjects: &Subjects,
    agents: &[SimAgent],
    heartbeat_interval: Duration,
) -> anyhow::Result<()> {
    futures::stream::iter(agents.iter().map(|a| a.register(client, subjects, heartbeat_interval, 0)))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Heartbeats for `agents` every `interval`, skipping those whose `alive` flag is
/// off (as a crashed agent would: no shutdown notice).
pub fn spawn_heartbeats(
    client: Client,
    subjects: Subjects,
    agents: Arc<Vec<SimAgent>>,
    alive: Arc<Vec<AtomicBool>>,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (a, on) in agents.iter().zip(alive.iter()) {
                if on.load(Ordering::Relaxed) {
                    // A lost heartbeat is what the manager's timeout is for; the
                    // bench's checks will show it.
                    let _ = client.publish(subjects.heartbeat(&a.id), a.heartbeat(started, 0).into()).await;
                }
            }
        }
    })
}

/// One task per agent answering commands on its own subject, like the real agent:
/// `ping` succeeds, anything else gets an `unknown_command` error.
pub async fn spawn_responders(
    client: &Client,
    subjects: &Subjects,
    agents: &[SimAgent],
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::with_capacity(agents.len());
    for a in agents {
        let mut sub = client.subscribe(subjects.command(&a.id)).await?;
        let client = client.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply else { continue };
                let reply = match decode::<CommandRequest>(&msg.payload, MAX_MSG) {
                    Ok(req) if req.command == "ping" => {
                        CommandReply::success(req.id, id.clone(), json!({"pong": true}))
                    }
                    Ok(req) => CommandReply::failure(
                        req.id,
                        id.clone(),
                        "unknown_command",
                        format!("unknown command {:?}", req.command),
                    ),
                    Err(e) => CommandReply::failure(
                        uuid::Uuid::nil(),
                        id.clone(),
                        "malformed_request",
                        e.to_string(),
                    ),
                };
                let body = serde_json::to_vec(&reply).expect("a reply serializes");
                let _ = client.publish(reply_to, body.into()).await;
            }
        }));
    }
    client.flush().await?;
    Ok(tasks)
}
