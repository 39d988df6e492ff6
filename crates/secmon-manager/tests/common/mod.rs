//! Shared helpers for the manager's integration tests: a manager config for tests,
//! simulated agents speaking the wire protocol over a plain NATS client, and an
//! async wait.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::Utc;
use secmon_manager::config::ManagerConfig;
use secmon_proto::payload::{FileActivity, FileKind, FileState};
use secmon_proto::{
    AgentId, Envelope, EventClass, Heartbeat, HostFacts, PROTOCOL_VERSION, RegisterReply, Registration,
    Severity, ShutdownNotice, Subjects,
};

/// A manager config for tests: API on a free port, short heartbeat timing.
pub fn config(nats_url: &str, data_dir: &Path) -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.nats.url = nats_url.to_owned();
    c.api.listen = "127.0.0.1:0".into();
    c.storage.data_dir = data_dir.to_owned();
    c.agents.heartbeat_timeout = Duration::from_secs(1);
    c.agents.check_interval = Duration::from_millis(100);
    c.ingest.batch_size = 100;
    c
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect to the test nats-server")
}

/// An agent simulated with the wire types; many can share one client.
pub struct SimAgent {
    pub id: AgentId,
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub seq: u64,
}

impl SimAgent {
    pub fn new(client: &async_nats::Client, id: &str) -> Self {
        Self { id: AgentId::new(id).unwrap(), client: client.clone(), subjects: Subjects::default(), seq: 0 }
    }

    pub fn registration(&self) -> Registration {
        Registration {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            name: format!("name-{}", self.id),
            agent_version: "0.1.0-test".into(),
            host: HostFacts {
                hostname: format!("host-{}", self.id),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0".into(),
                arch: "x86_64".into(),
                ips: vec!["10.1.2.3".into()],
            },
            started_at: Utc::now(),
            sensors: vec!["fim".into()],
            config_digest: "0".repeat(64),
            heartbeat_interval_ms: 200,
            last_seq: self.seq,
        }
    }

    pub async fn register(&self) -> RegisterReply {
        let body = serde_json::to_vec(&self.registration()).unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request(self.subjects.register(&self.id), body.into()),
        )
        .await
        .expect("registration reply in time")
        .expect("registration reply");
        serde_json::from_slice(&reply.payload).expect("a RegisterReply")
    }

    pub fn heartbeat_body(&self) -> Vec<u8> {
        serde_json::to_vec(&Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            time: Utc::now(),
            uptime_secs: 1,
            last_seq: self.seq,
            spool: Default::default(),
        })
        .unwrap()
    }

    pub async fn heartbeat(&self) {
        self.client.publish(self.subjects.heartbeat(&self.id), self.heartbeat_body().into()).await.unwrap();
        self.client.flush().await.unwrap();
    }

    pub async fn shutdown(&self, reason: &str) {
        let body = serde_json::to_vec(&ShutdownNotice {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            time: Utc::now(),
            reason: reason.into(),
            last_seq: self.seq,
        })
        .unwrap();
        self.client.publish(self.subjects.shutdown(&self.id), body.into()).await.unwrap();
        self.client.flush().await.unwrap();
    }

    /// The next event of this agent (sequence numbers from 1).
    pub fn next_event(&mut self) -> Envelope {
        self.seq += 1;
        self.event(self.seq)
    }

    /// An event with a given sequence number (for gaps and replays): a file
    /// modification as the agent's FIM reports it, one path per sequence number.
    pub fn event(&self, seq: u64) -> Envelope {
        let path = format!("/etc/file-{seq}");
        let state = |size: u64| FileState {
            mtime: 1_750_000_000.0,
            ctime: 1_750_000_000.0,
            inode: 1000 + seq,
            ..FileState::sha256_file(size, &format!("{seq:064x}"))
        };
        let activity = FileActivity {
            description: format!("{path} modified"),
            path,
            old_path: None,
            kind: FileKind::File,
            watch: "/etc".into(),
            watch_description: String::new(),
            event_type: "FileModify".into(),
            detector: None,
            before: Some(state(10)),
            after: Some(state(20)),
            changes: vec!["size".into(), "hash".into()],
            diff: None,
            diff_truncated: false,
            process: None,
            source: "realtime".into(),
            backend: "inotify".into(),
        };
        Envelope::new(
            self.id.clone(),
            seq,
            EventClass::File,
            "modified",
            Severity::Medium,
            serde_json::to_value(activity).expect("a FileActivity serializes"),
        )
    }
}

/// Publishes events to the events stream with the event id as message id, and
/// waits for every publish ack.
pub async fn publish_events(js: &jetstream::Context, events: &[Envelope]) {
    let subjects = Subjects::default();
    let mut acks = Vec::with_capacity(events.len());
    for e in events {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", e.id.to_string().as_str());
        let body = serde_json::to_vec(e).unwrap();
        acks.push(
            js.publish_with_headers(subjects.event(&e.agent_id, e.class), h, body.into()).await.unwrap(),
        );
    }
    for a in acks {
        a.await.expect("stream ack");
    }
}

/// Publishes raw bytes on a subject of the events stream.
pub async fn publish_raw(js: &jetstream::Context, subject: String, body: Vec<u8>) {
    js.publish(subject, body.into()).await.unwrap().await.expect("stream ack");
}

/// True when the manager consumer has nothing left to deliver or to be acked.
pub async fn consumer_drained(js: &jetstream::Context, consumer: &str) -> bool {
    let stream = js.get_stream(secmon_proto::EVENTS_STREAM).await.unwrap();
    let info = stream.consumer_info(consumer).await.unwrap();
    info.num_pending == 0 && info.num_ack_pending == 0
}

/// Heartbeats for `id` every `every` until the task is aborted.
pub fn spawn_heartbeats(
    client: &async_nats::Client,
    id: &str,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let a = SimAgent::new(client, id);
    tokio::spawn(async move {
        loop {
            a.heartbeat().await;
            tokio::time::sleep(every).await;
        }
    })
}
