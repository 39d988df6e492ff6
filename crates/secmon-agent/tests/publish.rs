//! Events from the agent to JetStream: in order, once each, through NATS outages
//! and agent restarts.

mod common;

use std::time::Duration;

use common::*;
use secmon_agent::{Agent, AgentHandle, AgentOptions};
use secmon_proto::{EventClass, Severity};
use secmon_testkit::NatsServer;
use serde_json::json;

async fn start(cfg: secmon_agent::AgentConfig) -> AgentHandle {
    Agent::start(cfg, AgentOptions::default()).await.expect("agent starts")
}

fn emit_files(agent: &AgentHandle, range: std::ops::Range<u64>) {
    for i in range {
        assert!(
            agent.emit(EventClass::File, "modified", Severity::Low, json!({"i": i})),
            "event {i} refused"
        );
    }
}

async fn wait_spool_empty(agent: &AgentHandle, timeout: Duration) {
    assert!(
        eventually(timeout, || agent.spool_stats().depth == 0).await,
        "spool not empty after {timeout:?}: {:?}",
        agent.spool_stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_with_the_event_id_as_message_id() {
    let nats = NatsServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let agent = start(config(&nats.url(), tmp.path())).await;
    let id = agent.agent_id().clone();

    emit_files(&agent, 0..300);
    agent.emit(EventClass::Process, "started", Severity::Info, json!({"pid": 1}));
    wait_stream_len(&client, 302, Duration::from_secs(15)).await;
    wait_spool_empty(&agent, Duration::from_secs(5)).await;
    agent.shutdown("test").await;

    let events = stored_events(&client).await;
    assert_complete_in_order(&events, &id, 303);
    let activities: Vec<&str> = events.iter().map(|e| e.envelope.activity.as_str()).collect();
    assert_eq!(activities[0], "started");
    assert_eq!(events[0].envelope.class, EventClass::Agent);
    assert_eq!(events[1].envelope.payload, json!({"i": 0}));
    assert_eq!(events[301].envelope.class, EventClass::Process);
    assert_eq!(activities[302], "stopped", "shutdown emits agent/stopped and flushes it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_while_emitting_loses_and_duplicates_nothing() {
    const N: u64 = 10_000;
    let mut nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    create_events_stream(&client(&url).await).await;
    let agent = start(config(&url, tmp.path())).await;
    let id = agent.agent_id().clone();

    // 10,000 events at about 10,000/s (so hundreds are in flight when NATS dies),
    // through two SIGKILLs of the server.
    let emitter = agent.emitter();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            assert!(emitter.emit(EventClass::File, "modified", Severity::Low, json!({"i": i})));
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    for outage in 0..2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tokio::task::block_in_place(|| nats.kill());
        tokio::time::sleep(Duration::from_millis(300)).await;
        if outage == 0 {
            assert!(agent.spool_stats().depth > 0, "events emitted during the outage wait in the spool");
        }
        tokio::task::block_in_place(|| nats.restart());
    }
    producer.await.unwrap();

    let client = client(&url).await;
    wait_stream_len(&client, N + 1, Duration::from_secs(30)).await;
    wait_spool_empty(&agent, Duration::from_secs(10)).await;
    let events = stored_events(&client).await;
    assert_complete_in_order(&events, &id, N + 1);
    let status = agent.status();
    assert_eq!(status["queues"]["channel_dropped"], 0);
    assert_eq!(status["queues"]["spool_dropped"], 0);
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cut_while_emitting_keeps_order_with_the_server_up() {
    // A network cut, unlike a server crash, lets a reconnect succeed at once: what was
    // queued for the broken connection must not overtake the events lost with it.
    let nats = NatsServer::start();
    let proxy = Proxy::start(nats.port()).await;
    let tmp = tempfile::tempdir().unwrap();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let agent = start(config(&proxy.url, tmp.path())).await;
    let id = agent.agent_id().clone();

    let emitter = agent.emitter();
    let producer = tokio::spawn(async move {
        for i in 0..3000u64 {
            assert!(emitter.emit(EventClass::File, "modified", Severity::Low, json!({"i": i})));
            if i % 150 == 149 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.cut();
    }
    producer.await.unwrap();
    wait_stream_len(&client, 3001, Duration::from_secs(30)).await;
    wait_spool_empty(&agent, Duration::from_secs(10)).await;
    assert_complete_in_order(&stored_events(&client).await, &id, 3001);
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_while_nats_is_down_spools_then_delivers() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    create_events_stream(&client(&url).await).await;
    nats.kill();
    let tmp = tempfile::tempdir().unwrap();
    let agent = start(config(&url, tmp.path())).await;
    let id = agent.agent_id().clone();

    emit_files(&agent, 0..50);
    assert!(
        eventually(Duration::from_secs(5), || agent.spool_stats().depth == 51).await,
        "{:?}",
        agent.spool_stats()
    );
    assert_eq!(agent.status()["nats"]["connected"], false);

    tokio::task::block_in_place(|| nats.restart());
    let client = client(&url).await;
    wait_stream_len(&client, 51, Duration::from_secs(20)).await;
    wait_spool_empty(&agent, Duration::from_secs(5)).await;
    assert_complete_in_order(&stored_events(&client).await, &id, 51);
    agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_unsent_events_sends_them_and_continues_the_sequence() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    create_events_stream(&client(&url).await).await;
    nats.kill();
    let tmp = tempfile::tempdir().unwrap();

    // First run: NATS is down the whole time; the shutdown flush gives up.
    let first = start(config(&url, tmp.path())).await;
    let id = first.agent_id().clone();
    emit_files(&first, 0..30);
    first.shutdown("test restart").await;

    tokio::task::block_in_place(|| nats.restart());
    let second = start(config(&url, tmp.path())).await;
    assert_eq!(second.agent_id(), &id, "identity kept across restarts");
    let client = client(&url).await;
    wait_stream_len(&client, 33, Duration::from_secs(20)).await;
    wait_spool_empty(&second, Duration::from_secs(5)).await;
    assert_eq!(second.last_seq(), 33);

    let events = stored_events(&client).await;
    assert_complete_in_order(&events, &id, 33);
    let activities: Vec<&str> = events.iter().map(|e| e.envelope.activity.as_str()).collect();
    assert_eq!((activities[0], activities[31], activities[32]), ("started", "stopped", "started"));
    assert!(activities[1..31].iter().all(|a| *a == "modified"));
    second.shutdown("test").await;
}
