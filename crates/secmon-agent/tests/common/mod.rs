//! Helpers shared by the agent's integration tests: test configs, the events stream
//! (the manager creates it in production), and readers for what reached JetStream.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod lines;

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use secmon_agent::AgentConfig;
use secmon_proto::{DEFAULT_MAX_EVENT_BYTES, EVENTS_STREAM, Envelope, decode};

/// A config for tests: short intervals so failures and recoveries take little time.
pub fn config(nats_url: &str, state_dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.agent.name = "test-agent".into();
    c.agent.state_dir = state_dir.to_owned();
    c.agent.heartbeat_interval = Duration::from_millis(200);
    c.nats.url = nats_url.to_owned();
    c.nats.reconnect_base_delay = Duration::from_millis(50);
    c.nats.reconnect_max_delay = Duration::from_millis(300);
    c.nats.connect_timeout = Duration::from_secs(1);
    c.nats.request_timeout = Duration::from_secs(1);
    c
}

/// A local-only config (no NATS) with the event socket at `<dir>/agent.sock` and the
/// state in `<dir>/state`.
pub fn local_config(dir: &Path) -> AgentConfig {
    let mut c = config("", &dir.join("state"));
    c.socket.path = dir.join("agent.sock");
    // No FIM unless a test asks for it (a host with a camera would start it).
    c.fim.camera_paths.clear();
    c
}

/// The same config as TOML, for tests that go through a file.
pub fn config_toml(nats_url: &str, state_dir: &Path, heartbeat: &str) -> String {
    format!(
        "[agent]\nname = \"test-agent\"\nstate_dir = {:?}\nheartbeat_interval = \"{heartbeat}\"\n\n\
         [nats]\nurl = \"{nats_url}\"\nreconnect_base_delay = \"50ms\"\nreconnect_max_delay = \"300ms\"\n\
         connect_timeout = \"1s\"\nrequest_timeout = \"1s\"\n",
        state_dir.display().to_string()
    )
}

pub async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("test client connects")
}

/// Creates `SECMON_EVENTS` as the manager does: all agents' events, file storage.
pub async fn create_events_stream(client: &async_nats::Client) -> stream::Stream {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec!["secmon.agent.*.event.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the events stream")
}

pub async fn stream_len(client: &async_nats::Client) -> u64 {
    match jetstream::new(client.clone()).get_stream(EVENTS_STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the stream holds `n` messages; panics with what it holds otherwise.
pub async fn wait_stream_len(client: &async_nats::Client, n: u64, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let len = stream_len(client).await;
        if len >= n {
            return;
        }
        assert!(Instant::now() < end, "stream holds {len} messages after {timeout:?}, expected {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One stored event: the envelope, the subject and the `Nats-Msg-Id` header.
pub struct Stored {
    pub envelope: Envelope,
    pub subject: String,
    pub msg_id: String,
}

/// Every message of the events stream, in stream order.
pub async fn stored_events(client: &async_nats::Client) -> Vec<Stored> {
    let mut s = jetstream::new(client.clone()).get_stream(EVENTS_STREAM).await.expect("events stream");
    let info = s.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap_or_else(|e| panic!("stream message {seq}: {e}"));
        let envelope: Envelope =
            decode(&m.payload, DEFAULT_MAX_EVENT_BYTES).expect("stored envelope decodes");
        let msg_id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(Stored { envelope, subject: m.subject.to_string(), msg_id });
    }
    out
}

/// Asserts the stream holds exactly the agent's events 1..=n, once each, in order,
/// on the agent's subjects, with the event id as message id.
pub fn assert_complete_in_order(events: &[Stored], agent: &secmon_proto::AgentId, n: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.envelope.seq).collect();
    let expected: Vec<u64> = (1..=n).collect();
    if seqs != expected {
        let first_bad =
            seqs.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(seqs.len().min(expected.len()));
        panic!(
            "stream holds {} events, expected seqs 1..={n} in order; first difference at index {first_bad}: {:?}",
            seqs.len(),
            &seqs[first_bad.saturating_sub(3)..(first_bad + 3).min(seqs.len())]
        );
    }
    let mut ids = std::collections::HashSet::new();
    for e in events {
        assert_eq!(&e.envelope.agent_id, agent);
        assert_eq!(e.msg_id, e.envelope.id.to_string(), "Nats-Msg-Id must be the event id");
        assert!(ids.insert(e.envelope.id), "event id {} stored twice", e.envelope.id);
        assert_eq!(e.subject, format!("secmon.agent.{agent}.event.{}", e.envelope.class));
    }
}

/// Accepts every registration and keeps them, in arrival order.
pub fn spawn_accepting_registrar(
    client: async_nats::Client,
) -> std::sync::Arc<std::sync::Mutex<Vec<secmon_proto::Registration>>> {
    use futures::StreamExt;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        let mut sub = client.subscribe("secmon.agent.*.register").await.unwrap();
        client.flush().await.unwrap();
        ready_tx.send(()).unwrap();
        while let Some(msg) = sub.next().await {
            let reg: secmon_proto::Registration =
                decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("valid registration");
            let reply = secmon_proto::RegisterReply {
                v: secmon_proto::PROTOCOL_VERSION,
                accepted: true,
                status: secmon_proto::AgentStatus::Pending,
                reason: None,
            };
            client.publish(msg.reply.unwrap(), serde_json::to_vec(&reply).unwrap().into()).await.unwrap();
            seen.lock().unwrap().push(reg);
        }
    });
    tokio::task::block_in_place(|| {
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("registrar subscribed")
    });
    out
}

/// Forwards TCP connections to `upstream`; `cut` drops the current ones.
pub struct Proxy {
    pub url: String,
    pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            std::sync::Arc::default();
        let p = pipes.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                p.lock().unwrap().push(pipe);
            }
        });
        Proxy { url, pipes }
    }

    pub fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}
