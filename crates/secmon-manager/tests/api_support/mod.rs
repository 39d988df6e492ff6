//! Harness for the REST API tests (and the CLI's, which include this file): a real
//! nats-server, a real manager on a temp data dir with its API on an ephemeral
//! port, blocking HTTP through ureq, and simulated agents (from `common`) that
//! heartbeat and answer commands on a tokio runtime the harness owns.

#![allow(dead_code)] // each test binary uses a different subset

#[path = "../common/mod.rs"]
pub mod common;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_proto::{AgentId, AgentStatus, CommandReply, CommandRequest, Envelope, Subjects};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use common::SimAgent;

pub const WAIT: Duration = Duration::from_secs(10);

/// A running stack. Dropping it shuts the manager down, then kills nats-server.
pub struct Stack {
    manager: Option<ManagerHandle>,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    http: ureq::Agent,
    tasks: Vec<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    pub nats: NatsServer,
    // Last: the runtime outlives everything that runs on it.
    pub rt: tokio::runtime::Runtime,
}

/// An HTTP answer: status, content type and body (parsed when JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts the API's error shape and returns (code, message).
    pub fn error(&self, status: u16) -> (String, String) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert!(self.content_type.starts_with("application/json"), "{}", self.content_type);
        let v = self.json();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{v}");
        let code = v["error"]["code"].as_str().expect("error.code").to_owned();
        let message = v["error"]["message"].as_str().expect("error.message").to_owned();
        (code, message)
    }
}

/// A manager config for API tests: heartbeat timeout long enough that statuses
/// only move when a test moves them.
pub fn api_config(nats_url: &str, dir: &std::path::Path) -> ManagerConfig {
    let mut c = common::config(nats_url, dir);
    c.agents.heartbeat_timeout = Duration::from_secs(60);
    c.api.command_timeout = Duration::from_secs(2);
    c
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut ManagerConfig)) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = api_config(&nats.url(), dir.path());
        tweak(&mut cfg);
        let manager = rt.block_on(Manager::start(cfg)).expect("manager starts");
        let base = format!("http://{}", manager.api_addr());
        let client = rt.block_on(common::connect(&nats.url()));
        let js = async_nats::jetstream::new(client.clone());
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { manager: Some(manager), client, js, base, http, tasks: Vec::new(), dir, nats, rt }
    }

    pub fn manager(&self) -> &ManagerHandle {
        self.manager.as_ref().unwrap()
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut resp = resp.expect("HTTP exchange with the manager API");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
        Answer { status, content_type, text }
    }

    /// GET `path_and_query` as given (already encoded).
    pub fn get(&self, path_and_query: &str) -> Answer {
        Self::answer(self.http.get(format!("{}{path_and_query}", self.base)).call())
    }

    /// GET expecting 200 JSON.
    pub fn get_ok(&self, path_and_query: &str) -> Value {
        let a = self.get(path_and_query);
        assert_eq!(a.status, 200, "GET {path_and_query}: {}", a.text);
        a.json()
    }

    pub fn post(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        let body: Vec<u8> = body.into();
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .send(&body[..]),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post(path, "application/json", serde_json::to_vec(body).unwrap())
    }

    pub fn patch(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        let body: Vec<u8> = body.into();
        Self::answer(
            self.http
                .patch(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .send(&body[..]),
        )
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Answer {
        self.patch(path, "application/json", serde_json::to_vec(body).unwrap())
    }

    pub fn delete(&self, path: &str) -> Answer {
        Self::answer(self.http.delete(format!("{}{path}", self.base)).call())
    }

    pub fn sim(&self, id: &str) -> SimAgent {
        SimAgent::new(&self.client, id)
    }

    /// Registers the agent and waits until the registry holds it as `pending`.
    pub fn register(&self, a: &SimAgent) {
        let reply = self.block_on(a.register());
        assert!(reply.accepted, "{reply:?}");
        self.wait_status(&a.id, AgentStatus::Pending);
    }

    /// Registers, heartbeats and waits until the agent is `active`.
    pub fn activate(&self, a: &SimAgent) {
        self.register(a);
        self.block_on(a.heartbeat());
        self.wait_status(&a.id, AgentStatus::Active);
    }

    pub fn wait_status(&self, id: &AgentId, status: AgentStatus) {
        let reg = self.manager().registry();
        assert!(
            secmon_testkit::wait_until(WAIT, || reg.status(id) == Some(status)),
            "agent {id} never became {status} (is {:?})",
            reg.status(id)
        );
    }

    /// Publishes events through JetStream and waits until the manager stored
    /// `expected_total` events in all.
    pub fn publish_events(&self, events: &[Envelope], expected_total: u64) {
        self.block_on(common::publish_events(&self.js, events));
        let store = self.manager().store();
        let ok = secmon_testkit::wait_until(WAIT, || {
            self.block_on(store.count_events()).unwrap() >= expected_total
        });
        assert!(ok, "manager did not store {expected_total} events");
    }

    /// Answers the agent's commands like a real agent: `ping` -> `{"pong": true,
    /// "args": <args>}`, `status` -> a small status object, anything else ->
    /// `unknown_command`.
    pub fn answer_commands(&mut self, agent: &AgentId) {
        let id = agent.clone();
        self.respond(agent, move |req| {
            let reply = match req.command.as_str() {
                "ping" => CommandReply::success(req.id, id.clone(), json!({"pong": true, "args": req.args})),
                "status" => CommandReply::success(req.id, id.clone(), json!({"version": "0.1.0-test"})),
                other => CommandReply::failure(
                    req.id,
                    id.clone(),
                    "unknown_command",
                    format!("unknown command {other:?}"),
                ),
            };
            Some(serde_json::to_vec(&reply).unwrap())
        });
    }

    /// Subscribes to the agent's command subject and answers each request with
    /// what `answer` returns (`None`: stay silent).
    pub fn respond(
        &mut self,
        id: &AgentId,
        answer: impl Fn(CommandRequest) -> Option<Vec<u8>> + Send + 'static,
    ) {
        let client = self.client.clone();
        let mut sub = self.block_on(client.subscribe(Subjects::default().command(id))).unwrap();
        self.block_on(client.flush()).unwrap();
        self.tasks.push(self.rt.spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply else { continue };
                let req: CommandRequest = serde_json::from_slice(&msg.payload).expect("a CommandRequest");
                if let Some(body) = answer(req) {
                    client.publish(reply_to, body.into()).await.unwrap();
                }
            }
        }));
    }

    /// Heartbeats every 200 ms until the stack is dropped.
    pub fn keep_alive(&mut self, a: &SimAgent) {
        let a = SimAgent::new(&self.client, a.id.as_str());
        self.tasks.push(self.rt.spawn(async move {
            loop {
                a.heartbeat().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    pub fn metrics_text(&self) -> String {
        let a = self.get("/metrics");
        assert_eq!(a.status, 200);
        a.text
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(m) = self.manager.take() {
            self.rt.block_on(m.shutdown());
        }
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
