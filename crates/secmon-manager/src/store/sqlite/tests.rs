//! SqliteStore against real database files in temp dirs.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use secmon_proto::{AgentId, AgentStatus, Envelope, EventClass, HostFacts, Severity};
use uuid::Uuid;

use super::*;
use crate::store::{AgentSortField, AlertStatus};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 123_456_789).unwrap()
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn agent(name: &str, status: AgentStatus, hostname: &str, ips: &[&str]) -> AgentRecord {
    AgentRecord {
        id: id(&format!("id-{}", name.replace('%', "pct"))),
        name: name.into(),
        status,
        status_reason: "test".into(),
        status_changed_at: t(1),
        host: HostFacts {
            hostname: hostname.into(),
            os: "Debian GNU/Linux 12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
        },
        agent_version: "0.1.0".into(),
        sensors: vec!["fim".into()],
        config_digest: "abc".into(),
        heartbeat_interval_ms: 5000,
        registered_at: t(0),
        last_seen: Some(t(2)),
        seq: SeqState::default(),
    }
}

fn event(agent: &str, seq: u64, class: EventClass, time: DateTime<Utc>) -> StoredEvent {
    let mut e =
        Envelope::new(id(agent), seq, class, "created", Severity::Low, serde_json::json!({"path": "/etc/x"}));
    e.time = time;
    e.observed = time;
    StoredEvent { envelope: e, received: t(1000) }
}

fn change(
    a: &AgentRecord,
    from: Option<AgentStatus>,
    to: AgentStatus,
    at: i64,
    reason: &str,
) -> StatusChange {
    StatusChange { agent_id: a.id.clone(), from, to, at: t(at), reason: reason.into() }
}

#[tokio::test]
async fn open_creates_a_wal_database_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("nested/data")).unwrap();
    assert!(s.path().exists());
    s.health().await.unwrap();
    let c = Connection::open(s.path()).unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(migrate::current_version(&c).unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_manager() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    c.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 'later')", []).unwrap();
    drop(c);
    let e = SqliteStore::open(dir.path()).err().expect("newer schema refused");
    assert!(matches!(e, StoreError::SchemaTooNew { found: 99, .. }), "{e}");
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("web", AgentStatus::Active, "web-01", &["10.0.0.5"]);
    let ev = event("id-web", 1, EventClass::File, t(10));
    let seq = SeqState { last_seq: 5, missing: vec![(2, 3)], gap_events: 2, ..Default::default() };
    let alert = AlertRecord {
        id: Uuid::now_v7(),
        rule_id: "r1".into(),
        title: "t".into(),
        severity: Severity::High,
        agent_id: Some(a.id.clone()),
        status: AlertStatus::Open,
        tags: vec!["attack.t1".into()],
        key: "10.0.0.9".into(),
        event_ids: vec![ev.envelope.id],
        event_count: 1,
        first_seen: t(10),
        last_seen: t(11),
        count: 2,
    };
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.save_agent(&a, &[change(&a, None, AgentStatus::Pending, 0, "registered")]).await.unwrap();
        s.insert_events(std::slice::from_ref(&ev), &[(a.id.clone(), seq.clone())], &[]).await.unwrap();
        s.insert_alert(&alert).await.unwrap();
        s.close().await.unwrap();
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let loaded = s.load_agents().await.unwrap();
    assert_eq!(loaded, vec![AgentRecord { seq: seq.clone(), ..a.clone() }]);
    assert_eq!(s.get_agent(&a.id).await.unwrap().unwrap().seq, seq);
    assert_eq!(s.status_history(&a.id, 10).await.unwrap()[0].reason, "registered");
    let events = s.list_events(&EventQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(events.items, vec![ev]);
    assert_eq!(s.count_events().await.unwrap(), 1);
    let alerts = s.list_alerts(&AlertQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(alerts.items, vec![alert]);
}

#[tokio::test]
async fn save_agent_updates_in_place_and_keeps_history_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut a = agent("db", AgentStatus::Pending, "db-01", &[]);
    s.save_agent(&a, &[change(&a, None, AgentStatus::Pending, 0, "registered")]).await.unwrap();
    a.status = AgentStatus::Active;
    s.save_agent(&a, &[change(&a, Some(AgentStatus::Pending), AgentStatus::Active, 1, "heartbeat")])
        .await
        .unwrap();
    a.status = AgentStatus::Disconnected;
    let b = agent("db2", AgentStatus::Active, "db-02", &[]);
    s.save_agents(&[
        (
            a.clone(),
            vec![change(&a, Some(AgentStatus::Active), AgentStatus::Disconnected, 2, "heartbeat timeout")],
        ),
        (b.clone(), vec![]),
    ])
    .await
    .unwrap();
    assert_eq!(s.load_agents().await.unwrap().len(), 2);
    assert_eq!(s.get_agent(&a.id).await.unwrap().unwrap().status, AgentStatus::Disconnected);
    let h = s.status_history(&a.id, 10).await.unwrap();
    let reasons: Vec<_> = h.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(reasons, ["heartbeat timeout", "heartbeat", "registered"]);
    assert_eq!(h[0].from, Some(AgentStatus::Active));
    assert_eq!(h[2].from, None);
    assert_eq!(s.status_history(&a.id, 1).await.unwrap().len(), 1);
    assert!(s.status_history(&b.id, 10).await.unwrap().is_empty());
    assert_eq!(s.get_agent(&id("nope")).await.unwrap(), None);
}

#[tokio::test]
async fn agent_list_filters_searches_sorts_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut all = [
        agent("alpha", AgentStatus::Active, "web-01.example", &["10.0.0.1"]),
        agent("bravo", AgentStatus::Disconnected, "WEB-02", &["10.0.0.2", "fe80::2"]),
        agent("charlie", AgentStatus::Active, "db_1", &["192.168.1.7"]),
        agent("delta", AgentStatus::Pending, "db-2", &[]),
        agent("echo%", AgentStatus::Removed, "x", &[]),
    ];
    for (i, a) in all.iter_mut().enumerate() {
        a.last_seen = Some(t(100 - i as i64));
        s.save_agent(a, &[]).await.unwrap();
    }
    let names = |p: &Page<AgentRecord>| p.items.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    let q = |f: fn(&mut AgentQuery)| {
        let mut q = AgentQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };

    let p = s.list_agents(&q(|_| {})).await.unwrap();
    assert_eq!(names(&p), ["alpha", "bravo", "charlie", "delta", "echo%"]);
    assert_eq!(p.total, 5);

    let p = s.list_agents(&q(|q| q.status = Some(AgentStatus::Active))).await.unwrap();
    assert_eq!((names(&p), p.total), (vec!["alpha".to_string(), "charlie".into()], 2));

    let p = s.list_agents(&q(|q| q.name = Some("bravo".into()))).await.unwrap();
    assert_eq!(names(&p), ["bravo"]);

    // `q`: case-insensitive over hostname, IPs, name and id; wildcards are literal.
    for (text, want) in [
        ("web", vec!["alpha", "bravo"]),
        ("FE80", vec!["bravo"]),
        ("192.168", vec!["charlie"]),
        ("id-DEL", vec!["delta"]),
        ("_", vec!["charlie"]),
        ("%", vec!["echo%"]),
        ("nothing", vec![]),
    ] {
        let mut query = q(|_| {});
        query.q = Some(text.into());
        assert_eq!(names(&s.list_agents(&query).await.unwrap()), want, "q={text}");
    }

    let p = s.list_agents(&q(|q| q.sort = AgentSortField::Status)).await.unwrap();
    assert_eq!(names(&p), ["delta", "alpha", "charlie", "bravo", "echo%"]);
    let p = s
        .list_agents(&q(|q| {
            q.sort = AgentSortField::LastSeen;
            q.descending = true;
        }))
        .await
        .unwrap();
    assert_eq!(names(&p), ["alpha", "bravo", "charlie", "delta", "echo%"]);

    let p = s
        .list_agents(&AgentQuery { offset: 1, limit: 2, descending: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        (names(&p), p.total, p.offset, p.limit),
        (vec!["delta".to_string(), "charlie".into()], 5, 1, 2)
    );
}

#[tokio::test]
async fn redelivered_events_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let batch: Vec<_> = (1..=100).map(|i| event("a1", i, EventClass::Process, t(i as i64))).collect();
    let out = s.insert_events(&batch, &[], &[]).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (100, 0));
    assert!(out.stored.iter().all(|s| *s));
    // Half of it again, with new events mixed in.
    let mut again = batch[50..].to_vec();
    again.push(event("a1", 101, EventClass::Process, t(101)));
    let out = s.insert_events(&again, &[], &[]).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (1, 50));
    // Only the new event, last in the batch, was stored now.
    assert_eq!(out.stored.iter().position(|s| *s), Some(50));
    assert_eq!(s.count_events().await.unwrap(), 101);
    let c = Connection::open(s.path()).unwrap();
    let n: i64 = c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 101);
}

#[tokio::test]
async fn event_list_filters_orders_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut batch = Vec::new();
    for i in 0..30i64 {
        let agent = if i % 3 == 0 { "a1" } else { "a2" };
        let class = if i % 2 == 0 { EventClass::File } else { EventClass::Process };
        batch.push(event(agent, i as u64 + 1, class, t(i)));
    }
    s.insert_events(&batch, &[], &[]).await.unwrap();
    let seqs = |p: &Page<StoredEvent>| p.items.iter().map(|e| e.envelope.seq).collect::<Vec<_>>();

    let p = s.list_events(&EventQuery { limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!((seqs(&p), p.total), (vec![30, 29, 28], 30), "newest first");
    let p = s
        .list_events(&EventQuery { limit: 3, offset: 3, ascending: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seqs(&p), [4, 5, 6]);

    let p =
        s.list_events(&EventQuery { agent: Some(id("a1")), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(p.total, 10);
    assert!(p.items.iter().all(|e| e.envelope.agent_id == id("a1")));

    let q = EventQuery {
        agent: Some(id("a2")),
        class: Some(EventClass::File),
        since: Some(t(10)),
        until: Some(t(20)),
        ascending: true,
        limit: 100,
        ..Default::default()
    };
    let p = s.list_events(&q).await.unwrap();
    // i in [10, 20), i % 3 != 0, i even: 10, 14, 16.
    assert_eq!((seqs(&p), p.total), (vec![11, 15, 17], 3));
    let p = s.list_events(&EventQuery { limit: 0, ..Default::default() }).await.unwrap();
    assert_eq!((p.items.len(), p.total), (0, 30));
}

#[tokio::test]
async fn received_since_filters_and_orders_by_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    // Seq 1 happened first but arrives last (a spool sent after an outage).
    let mut early = event("a1", 1, EventClass::File, t(10));
    early.received = t(2000);
    let mut recent = event("a1", 2, EventClass::File, t(500));
    recent.received = t(1500);
    let old = event("a1", 3, EventClass::File, t(600)); // received t(1000)
    s.insert_events(&[early, recent, old], &[], &[]).await.unwrap();
    let q = EventQuery { received_since: Some(t(1500)), ascending: true, limit: 10, ..Default::default() };
    let p = s.list_events(&q).await.unwrap();
    let seqs: Vec<u64> = p.items.iter().map(|e| e.envelope.seq).collect();
    assert_eq!((seqs, p.total), (vec![2, 1], 2), "arrival order, arrivals before t(1500) left out");
}

#[tokio::test]
async fn seq_state_of_unregistered_agents_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let st = SeqState { last_seq: 9, replays: 1, given_up_ranges: 3, ..Default::default() };
    s.insert_events(&[event("ghost", 9, EventClass::Log, t(0))], &[(id("ghost"), st.clone())], &[])
        .await
        .unwrap();
    assert_eq!(s.load_seq_states().await.unwrap(), vec![(id("ghost"), st)]);
    assert!(s.load_agents().await.unwrap().is_empty());
    let st2 = SeqState { last_seq: 10, ..Default::default() };
    s.insert_events(&[], &[(id("ghost"), st2.clone())], &[]).await.unwrap();
    assert_eq!(s.load_seq_states().await.unwrap(), vec![(id("ghost"), st2)]);
}

#[tokio::test]
async fn alert_list_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    for (i, sev) in Severity::ALL.into_iter().enumerate() {
        let a = AlertRecord {
            id: Uuid::now_v7(),
            rule_id: format!("r{}", i % 2),
            title: sev.to_string(),
            severity: sev,
            agent_id: (i % 2 == 0).then(|| id("a1")),
            status: if i == 4 { AlertStatus::Closed } else { AlertStatus::Open },
            tags: vec![],
            key: String::new(),
            event_ids: vec![],
            event_count: 0,
            first_seen: t(i as i64),
            last_seen: t(i as i64),
            count: 1,
        };
        s.insert_alert(&a).await.unwrap();
    }
    let titles = |p: &Page<AlertRecord>| p.items.iter().map(|a| a.title.clone()).collect::<Vec<_>>();
    let base = AlertQuery { limit: 100, ..Default::default() };
    let p =
        s.list_alerts(&AlertQuery { min_severity: Some(Severity::Medium), ..base.clone() }).await.unwrap();
    assert_eq!(titles(&p), ["critical", "high", "medium"]);
    let p = s.list_alerts(&AlertQuery { agent: Some(id("a1")), ..base.clone() }).await.unwrap();
    assert_eq!(p.total, 3);
    let p = s.list_alerts(&AlertQuery { status: Some(AlertStatus::Closed), ..base.clone() }).await.unwrap();
    assert_eq!(titles(&p), ["critical"]);
    let p =
        s.list_alerts(&AlertQuery { since: Some(t(1)), until: Some(t(3)), ..base.clone() }).await.unwrap();
    assert_eq!(titles(&p), ["medium", "low"]);
    let p = s.list_alerts(&AlertQuery { rule: Some("r1".into()), ..base.clone() }).await.unwrap();
    assert_eq!(titles(&p), ["high", "low"]);

    // Upsert: the same id moves on.
    let mut first = s.list_alerts(&base).await.unwrap().items.pop().unwrap();
    first.count = 7;
    first.status = AlertStatus::Acknowledged;
    s.insert_alert(&first).await.unwrap();
    let p = s.list_alerts(&base).await.unwrap();
    assert_eq!(p.total, 5);
    assert!(p.items.contains(&first));
}

#[tokio::test]
async fn reads_are_not_blocked_by_an_open_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    s.insert_events(&[event("a1", 1, EventClass::File, t(0))], &[], &[]).await.unwrap();
    // Another writer holds the write lock with uncommitted rows.
    let other = Connection::open(s.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; DELETE FROM events;").unwrap();
    let p = tokio::time::timeout(
        Duration::from_secs(2),
        s.list_events(&EventQuery { limit: 10, ..Default::default() }),
    )
    .await
    .expect("read not blocked")
    .unwrap();
    assert_eq!(p.items.len(), 1, "readers see the last committed state");
    other.execute_batch("ROLLBACK").unwrap();
}
