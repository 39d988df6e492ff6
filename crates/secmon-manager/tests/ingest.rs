//! Event ingest end to end: JetStream streams and the durable consumer on a real
//! nats-server, events stored in real SQLite files.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::{SimAgent, config, connect, consumer_drained, eventually, publish_events, publish_raw};
use secmon_manager::app::Manager;
use secmon_manager::store::{EventQuery, FileQuery, Store};
use secmon_proto::{AgentId, EVENTS_STREAM, Envelope, Subjects};
use secmon_testkit::NatsServer;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

async fn stored_ids(store: &Arc<dyn Store>) -> Vec<Uuid> {
    let q = EventQuery { limit: 1_000_000, ascending: true, ..Default::default() };
    store.list_events(&q).await.unwrap().items.into_iter().map(|e| e.envelope.id).collect()
}

async fn wait_count(store: &Arc<dyn Store>, n: u64) {
    eventually(WAIT, &format!("{n} events stored"), || async { store.count_events().await.unwrap() >= n })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_with_the_configured_limits_and_updated() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&nats.url(), dir.path());
    cfg.ingest.max_age = Duration::from_secs(3600);
    cfg.ingest.duplicate_window = Duration::from_secs(60);
    let m = Manager::start(cfg.clone()).await.unwrap();
    m.shutdown().await;
    let js = jetstream::new(connect(&nats.url()).await);
    let c = js.get_stream(EVENTS_STREAM).await.unwrap().cached_info().config.clone();
    assert_eq!(c.subjects, ["secmon.agent.*.event.>"]);
    assert_eq!(c.storage, jetstream::stream::StorageType::File);
    assert_eq!(
        (c.max_age, c.duplicate_window, c.max_bytes),
        (Duration::from_secs(3600), Duration::from_secs(60), -1)
    );
    let alerts = js.get_stream("SECMON_ALERTS").await.unwrap().cached_info().config.clone();
    assert_eq!(alerts.subjects, ["secmon.alert.>"]);

    cfg.ingest.max_age = Duration::from_secs(7200);
    cfg.ingest.max_bytes = 1 << 20;
    let m = Manager::start(cfg).await.unwrap();
    m.shutdown().await;
    let c = js.get_stream(EVENTS_STREAM).await.unwrap().cached_info().config.clone();
    assert_eq!((c.max_age, c.max_bytes), (Duration::from_secs(7200), 1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_stream_with_the_same_name_is_refused_clearly() {
    let nats = NatsServer::start();
    let js = jetstream::new(connect(&nats.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = Manager::start(config(&nats.url(), dir.path())).await.err().expect("start refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains(EVENTS_STREAM) && msg.contains("other.>") && msg.contains("secmon.agent.*.event.>"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_clearly_without_nats_or_with_the_port_taken() {
    let dir = tempfile::tempdir().unwrap();
    let port = secmon_testkit::free_port();
    let e =
        Manager::start(config(&format!("nats://127.0.0.1:{port}"), dir.path())).await.err().expect("no NATS");
    let msg = format!("{e:#}");
    assert!(msg.contains(&format!("cannot connect to NATS at nats://127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("start nats-server or set [nats] url"), "{msg}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nats = NatsServer::start();
    let mut cfg = config(&nats.url(), dir.path());
    cfg.api.listen = taken.local_addr().unwrap().to_string();
    let e = Manager::start(cfg).await.err().expect("port taken");
    let msg = format!("{e:#}");
    assert!(msg.contains("[api] listen") && msg.contains(&cfg_port(&taken)), "{msg}");
}

fn cfg_port(l: &std::net::TcpListener) -> String {
    l.local_addr().unwrap().port().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_across_a_manager_restart() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&nats.url(), dir.path());
    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let mut a = SimAgent::new(&client, "restart-agent");

    let m = Manager::start(cfg.clone()).await.unwrap();
    // Events from an agent that has not registered yet are stored too.
    let first: Vec<Envelope> = (0..300).map(|_| a.next_event()).collect();
    publish_events(&js, &first).await;
    wait_count(&m.store(), 300).await;
    m.shutdown().await;

    // While the manager is down: new events, a republish of old ones with their
    // message ids (as an agent spool does after a lost publish ack: JetStream drops
    // them), and copies without ids (they reach the manager, which drops them).
    let second: Vec<Envelope> = (0..500).map(|_| a.next_event()).collect();
    publish_events(&js, &second).await;
    publish_events(&js, &first[250..]).await;
    for e in &first[..50] {
        publish_raw(&js, format!("secmon.agent.{}.event.file", a.id), serde_json::to_vec(e).unwrap()).await;
    }

    let m = Manager::start(cfg).await.unwrap();
    let store = m.store();
    let metrics = m.metrics();
    wait_count(&store, 800).await;
    eventually(WAIT, "consumer drained", || consumer_drained(&js, "secmon-manager")).await;
    // The copies carry ids already stored: duplicates, dropped and counted, not
    // sequence replays (a crashed server can redeliver the same way).
    assert_eq!(metrics.rejected("replay"), 0);
    assert!(metrics.events_duplicate.get() >= 50, "duplicates: {}", metrics.events_duplicate.get());
    let ids = stored_ids(&store).await;
    assert_eq!(ids.len(), 800);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 800, "an event stored twice");
    let want: HashSet<Uuid> = first.iter().chain(&second).map(|e| e.id).collect();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), want);
    assert_eq!(metrics.events_ingested.get(), 500, "the second run stored only the new events");
    let seq = store.load_seq_states().await.unwrap();
    assert_eq!(seq.len(), 1);
    assert_eq!((seq[0].1.last_seq, seq[0].1.gap_events, seq[0].1.replays), (800, 0, 0));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_share_the_consumer_and_store_each_event_once() {
    const N: usize = 3000;
    let nats = NatsServer::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c1 = config(&nats.url(), d1.path());
    c1.ingest.batch_size = 50;
    let mut c2 = c1.clone();
    c2.storage.data_dir = d2.path().to_owned();
    let m1 = Manager::start(c1).await.unwrap();
    let m2 = Manager::start(c2).await.unwrap();

    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let mut agents: Vec<SimAgent> = (0..10).map(|i| SimAgent::new(&client, &format!("shared-{i}"))).collect();
    let events: Vec<Envelope> = (0..N).map(|i| agents[i % 10].next_event()).collect();
    publish_events(&js, &events).await;

    let (s1, s2) = (m1.store(), m2.store());
    eventually(WAIT, "all events stored by one manager or the other", || async {
        s1.count_events().await.unwrap() + s2.count_events().await.unwrap() >= N as u64
    })
    .await;
    eventually(WAIT, "consumer drained", || consumer_drained(&js, "secmon-manager")).await;
    let (i1, i2) = (stored_ids(&s1).await, stored_ids(&s2).await);
    assert_eq!(i1.len() + i2.len(), N, "sum of both stores");
    let (h1, h2): (HashSet<_>, HashSet<_>) = (i1.iter().collect(), i2.iter().collect());
    assert!(h1.is_disjoint(&h2), "an event stored by both managers");
    assert!(!i1.is_empty() && !i2.is_empty(), "load not shared: {} / {}", i1.len(), i2.len());
    m1.shutdown().await;
    m2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_dropped_while_good_events_flow() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&nats.url(), dir.path());
    cfg.ingest.max_event_bytes = 4096;
    let m = Manager::start(cfg).await.unwrap();
    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let s = Subjects::default();
    let mut good = SimAgent::new(&client, "good");
    let other = AgentId::new("other").unwrap();
    let subject = s.event(&good.id, secmon_proto::EventClass::File);

    let mut sent = Vec::new();
    for round in 0..5 {
        let batch: Vec<Envelope> = (0..20).map(|_| good.next_event()).collect();
        publish_events(&js, &batch).await;
        sent.extend(batch.iter().map(|e| e.id));
        publish_raw(&js, subject.clone(), b"{not json".to_vec()).await;
        let mut big = good.event(10_000 + round);
        big.payload = serde_json::json!({"blob": "x".repeat(5000)});
        publish_raw(&js, subject.clone(), serde_json::to_vec(&big).unwrap()).await;
        let mut v2 = serde_json::to_value(good.event(20_000 + round)).unwrap();
        v2["v"] = 2.into();
        publish_raw(&js, subject.clone(), serde_json::to_vec(&v2).unwrap()).await;
        // Another agent's event on this agent's subject.
        let mut foreign = good.event(30_000 + round);
        foreign.agent_id = other.clone();
        publish_raw(&js, subject.clone(), serde_json::to_vec(&foreign).unwrap()).await;
    }

    let store = m.store();
    wait_count(&store, 100).await;
    let metrics = m.metrics();
    eventually(WAIT, "rejections counted", || async {
        ["malformed", "oversize", "version", "subject_mismatch"].iter().all(|r| metrics.rejected(r) == 5)
    })
    .await;
    eventually(WAIT, "nothing left unacknowledged", || consumer_drained(&js, "secmon-manager")).await;
    let ids: HashSet<Uuid> = stored_ids(&store).await.into_iter().collect();
    assert_eq!(ids, sent.into_iter().collect());
    assert_eq!(metrics.events_ingested.get(), 100);
    assert!(metrics.render().contains(r#"secmon_events_rejected_total{reason="oversize"} 5"#));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gaps_late_events_and_replays_are_counted() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(config(&nats.url(), dir.path())).await.unwrap();
    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let a = SimAgent::new(&client, "seq-agent");

    // 1 2 5 (gap of 3, 4) 3 (late) 3 again with a new id (replay) 6.
    let events: Vec<Envelope> = [1, 2, 5, 3, 3, 6].iter().map(|&q| a.event(q)).collect();
    for e in &events {
        publish_events(&js, std::slice::from_ref(e)).await;
    }
    let store = m.store();
    let metrics = m.metrics();
    eventually(WAIT, "replay counted", || async { metrics.rejected("replay") == 1 }).await;
    wait_count(&store, 5).await;
    assert_eq!(metrics.seq_gap_events.get(), 2);
    assert_eq!(metrics.seq_late_events.get(), 1);
    let seqs: Vec<u64> = {
        let q = EventQuery { limit: 100, ascending: true, ..Default::default() };
        store.list_events(&q).await.unwrap().items.iter().map(|e| e.envelope.seq).collect()
    };
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2, 3, 5, 6]);
    let st = &store.load_seq_states().await.unwrap()[0].1;
    assert_eq!(
        (st.last_seq, st.missing.clone(), st.gap_events, st.late_events, st.replays),
        (6, vec![(4, 4)], 2, 1, 1)
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_removed_agents_are_rejected() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(config(&nats.url(), dir.path())).await.unwrap();
    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let mut gone = SimAgent::new(&client, "gone");
    let mut kept = SimAgent::new(&client, "kept");
    gone.register().await;
    m.registry().remove(&gone.id, "stolen laptop").await.unwrap();

    let bad: Vec<Envelope> = (0..10).map(|_| gone.next_event()).collect();
    let good: Vec<Envelope> = (0..10).map(|_| kept.next_event()).collect();
    publish_events(&js, &bad).await;
    publish_events(&js, &good).await;
    let metrics = m.metrics();
    eventually(WAIT, "removed agent's events rejected", || async { metrics.rejected("removed_agent") == 10 })
        .await;
    wait_count(&m.store(), 10).await;
    let ids: HashSet<Uuid> = stored_ids(&m.store()).await.into_iter().collect();
    assert_eq!(ids, good.iter().map(|e| e.id).collect());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_measured_while_the_manager_is_away() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(config(&nats.url(), dir.path())).await.unwrap();
    m.shutdown().await;
    let client = connect(&nats.url()).await;
    let js = jetstream::new(client.clone());
    let mut a = SimAgent::new(&client, "laggy");
    let events: Vec<Envelope> = (0..25).map(|_| a.next_event()).collect();
    publish_events(&js, &events).await;

    let metrics = secmon_manager::metrics::Metrics::new();
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    secmon_manager::ingest::update_lag(&stream, "secmon-manager", &metrics).await.unwrap();
    assert_eq!((metrics.consumer_pending.get(), metrics.consumer_ack_pending.get()), (25, 0));
    assert!(metrics.render().contains("secmon_consumer_pending_messages 25"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_the_registry_resume_after_nats_restarts() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&nats.url(), dir.path());
    cfg.nats.reconnect_max_delay = Duration::from_millis(500);
    cfg.agents.heartbeat_timeout = Duration::from_secs(60);
    let m = Manager::start(cfg).await.unwrap();
    let store = m.store();
    let mut a = {
        let client = connect(&nats.url()).await;
        let mut a = SimAgent::new(&client, "through-restart");
        let js = jetstream::new(client.clone());
        let before: Vec<Envelope> = (0..100).map(|_| a.next_event()).collect();
        publish_events(&js, &before).await;
        wait_count(&store, 100).await;
        a
    };

    nats.restart();
    let client = connect(&nats.url()).await;
    a.client = client.clone();
    let js = jetstream::new(client.clone());
    let after: Vec<Envelope> = (0..100).map(|_| a.next_event()).collect();
    publish_events(&js, &after).await;
    wait_count(&store, 200).await;
    // The registry's subscriptions came back too.
    eventually(WAIT, "registration answered after the restart", || async {
        let body = serde_json::to_vec(&a.registration()).unwrap();
        client.request(Subjects::default().register(&a.id), body.into()).await.is_ok()
    })
    .await;
    assert_eq!(m.registry().status(&a.id), Some(secmon_proto::AgentStatus::Pending));
    let ids: HashSet<Uuid> = stored_ids(&store).await.into_iter().collect();
    assert_eq!(ids.len(), 200);
    // Each event names its own path: the file state holds exactly those 200.
    let q = FileQuery { agent: a.id.clone(), prefix: None, include_deleted: true, offset: 0, limit: 1000 };
    let files = store.list_file_states(&q).await.unwrap();
    assert_eq!(files.total, 200);
    let file_events: HashSet<Uuid> = files.items.iter().filter_map(|f| f.last_event_id).collect();
    assert_eq!(file_events, ids, "every stored event is in the file state, and nothing else");
    assert_eq!(m.metrics().file_state_skips("malformed_payload"), 0);
    m.shutdown().await;
}
