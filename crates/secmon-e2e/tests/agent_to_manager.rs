//! The whole chain in one process: a real agent and a real manager over a real
//! nats-server, each with its own state on disk.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use secmon_agent::config::AgentConfig;
use secmon_agent::{Agent, AgentHandle, AgentOptions};
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_manager::store::EventQuery;
use secmon_proto::{AgentStatus, EventClass, Severity};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};

fn manager_config(nats: &str, dir: &std::path::Path) -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.nats.url = nats.to_owned();
    c.api.listen = "127.0.0.1:0".into();
    c.storage.data_dir = dir.to_owned();
    c.agents.heartbeat_timeout = Duration::from_secs(2);
    c.agents.check_interval = Duration::from_millis(100);
    c
}

fn agent_config(nats: &str, dir: &std::path::Path) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.nats.url = nats.to_owned();
    c.agent.name = "e2e-host".into();
    c.agent.state_dir = dir.to_owned();
    c.agent.heartbeat_interval = Duration::from_millis(200);
    c
}

async fn eventually(timeout: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < end, "timed out after {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(m: &ManagerHandle, a: &AgentHandle) -> Option<AgentStatus> {
    m.registry().status(a.agent_id())
}

/// Payload numbers of this agent's `log`/`e2e` events, as stored by the manager.
async fn stored_numbers(m: &ManagerHandle, a: &AgentHandle) -> (u64, BTreeSet<u64>) {
    let mut seen = BTreeSet::new();
    let mut offset = 0;
    loop {
        let q = EventQuery {
            agent: Some(a.agent_id().clone()),
            class: Some(EventClass::Log),
            ascending: true,
            offset,
            limit: 1000,
            ..Default::default()
        };
        let page = m.store().list_events(&q).await.unwrap();
        for e in &page.items {
            seen.insert(e.envelope.payload["n"].as_u64().unwrap());
        }
        offset += page.items.len() as u64;
        if page.items.is_empty() || offset >= page.total {
            return (page.total, seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_twice_while_the_agent_produces_nothing_lost_nothing_duplicated() {
    let mut nats = NatsServer::start();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let manager = Manager::start(manager_config(&nats.url(), dirs.0.path())).await.unwrap();
    let agent =
        Agent::start(agent_config(&nats.url(), dirs.1.path()), AgentOptions::default()).await.unwrap();
    eventually(Duration::from_secs(10), "agent active", async || {
        status(&manager, &agent) == Some(AgentStatus::Active)
    })
    .await;

    const N: u64 = 3000;
    for n in 0..N {
        assert!(agent.emit(EventClass::Log, "e2e", Severity::Info, json!({ "n": n })), "event {n} refused");
        if n == N / 3 || n == 2 * N / 3 {
            nats.kill();
            // The agent keeps producing while NATS is away: these wait in its spool.
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            nats.restart();
        }
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    eventually(Duration::from_secs(60), "all events stored", async || {
        stored_numbers(&manager, &agent).await.0 >= N
    })
    .await;
    // Give any straggling redelivery the chance to (wrongly) land twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, numbers) = stored_numbers(&manager, &agent).await;
    assert_eq!(total, N, "events stored (duplicates would exceed N)");
    assert_eq!(numbers, (0..N).collect::<BTreeSet<_>>(), "every event stored once");

    let rec = manager.store().get_agent(agent.agent_id()).await.unwrap().expect("agent stored");
    assert_eq!(rec.seq.replays, 0, "no sequence replays: {:?}", rec.seq);
    assert!(rec.seq.missing.is_empty(), "no sequence gaps left: {:?}", rec.seq);
    assert_eq!(rec.seq.last_seq, agent.last_seq(), "manager saw the agent's last sequence number");
    assert_eq!(manager.metrics().rejected("malformed"), 0);

    eventually(Duration::from_secs(10), "agent active again after the NATS restarts", async || {
        status(&manager, &agent) == Some(AgentStatus::Active)
    })
    .await;
    agent.shutdown("test done").await;
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_through_its_lifecycle_and_a_command_through_the_api() {
    let nats = NatsServer::start();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let manager = Manager::start(manager_config(&nats.url(), dirs.0.path())).await.unwrap();
    let agent =
        Agent::start(agent_config(&nats.url(), dirs.1.path()), AgentOptions::default()).await.unwrap();
    let id = agent.agent_id().clone();
    eventually(Duration::from_secs(5), "agent active within 5 s", async || {
        status(&manager, &agent) == Some(AgentStatus::Active)
    })
    .await;

    // Registration carried the host facts.
    let rec = manager.registry().get(&id).expect("registered");
    assert_eq!(rec.name, "e2e-host");
    assert!(!rec.host.kernel.is_empty() && !rec.host.arch.is_empty() && !rec.host.hostname.is_empty());

    // A command round trip through the REST API to the real agent.
    let url = format!("http://{}/api/agents/{id}/command", manager.api_addr());
    let body = tokio::task::spawn_blocking(move || {
        let mut resp = ureq::post(&url).send_json(json!({"command": "status"})).expect("command answered");
        resp.body_mut().read_json::<Value>().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["result"]["agent_id"], json!(id.as_str()), "{body}");
    assert!(body["result"]["queues"]["spool_depth"].is_u64(), "{body}");

    // A clean shutdown is a shutdown notice: disconnected with that reason (the
    // reason tells it from a heartbeat timeout, so the wait can be generous).
    agent.shutdown("maintenance").await;
    eventually(Duration::from_secs(5), "disconnected by the shutdown notice", async || {
        manager.registry().status(&id) == Some(AgentStatus::Disconnected)
    })
    .await;
    let history = manager.store().status_history(&id, 10).await.unwrap();
    assert!(history[0].reason.contains("shutdown"), "{history:?}");
    // The agent/stopped event made it out before the notice.
    let stopped = manager
        .store()
        .list_events(&EventQuery {
            agent: Some(id.clone()),
            class: Some(EventClass::Agent),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let activities: Vec<_> = stopped.items.iter().map(|e| e.envelope.activity.as_str()).collect();
    assert!(activities.contains(&"started") && activities.contains(&"stopped"), "{activities:?}");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_lost_its_database_gets_running_agents_back() {
    let nats = NatsServer::start();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Manager::start(manager_config(&nats.url(), dirs.0.path())).await.unwrap();
    let agent =
        Agent::start(agent_config(&nats.url(), dirs.1.path()), AgentOptions::default()).await.unwrap();
    eventually(Duration::from_secs(5), "agent active", async || {
        status(&first, &agent) == Some(AgentStatus::Active)
    })
    .await;
    first.shutdown().await;

    // A new manager with an empty database hears heartbeats from an agent it does
    // not know, and asks it to register again.
    let second = Manager::start(manager_config(&nats.url(), dirs.2.path())).await.unwrap();
    eventually(Duration::from_secs(5), "agent known and active again", async || {
        status(&second, &agent) == Some(AgentStatus::Active)
    })
    .await;
    let rec = second.registry().get(agent.agent_id()).expect("registered again");
    assert_eq!(rec.name, "e2e-host");
    agent.shutdown("test done").await;
    second.shutdown().await;
}
