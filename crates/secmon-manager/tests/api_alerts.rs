//! Alerts end to end: raised inside a running manager on a real nats-server,
//! listed and shown through the API, published to JetStream (also when NATS was
//! down while they were raised), acknowledged, closed and raised again.

mod api_support;

use std::time::Duration;

use api_support::{Stack, WAIT};
use chrono::Utc;
use secmon_manager::alerts::AlertDraft;
use secmon_proto::{AgentId, AlertMessage, AlertMessageKind, Severity};
use secmon_testkit::wait_until;
use serde_json::{Value, json};
use uuid::Uuid;

fn draft(key: &str, events: &[Uuid]) -> AlertDraft {
    AlertDraft {
        rule_id: "ssh-brute-force".into(),
        rule_title: "SSH brute force".into(),
        severity: Severity::High,
        tags: vec!["attack.t1110".into(), "attack.credential_access".into()],
        agent_id: AgentId::new("web-01").unwrap(),
        event_ids: events.to_vec(),
        key: key.into(),
        time: Utc::now(),
    }
}

/// The last message on `subject` in SECMON_ALERTS, once `want` holds for it.
fn wait_message(s: &Stack, subject: &str, want: impl Fn(&AlertMessage) -> bool) -> AlertMessage {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(20), || {
        let got = s.block_on(async {
            let stream = s.js.get_stream("SECMON_ALERTS").await.ok()?;
            let m = stream.get_last_raw_message_by_subject(subject).await.ok()?;
            serde_json::from_slice::<AlertMessage>(&m.payload).ok()
        });
        let hit = got.as_ref().is_some_and(&want);
        last = got;
        hit
    });
    assert!(ok, "no matching message on {subject}; last: {last:?}");
    last.unwrap()
}

fn stream_messages(s: &Stack) -> u64 {
    s.block_on(async {
        let mut stream = s.js.get_stream("SECMON_ALERTS").await.unwrap();
        stream.info().await.unwrap().state.messages
    })
}

#[test]
fn raise_list_publish_acknowledge_close_and_raise_again() {
    let s = Stack::start();
    let alerts = s.manager().alerts();
    let events: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let raised = s.block_on(alerts.raise(draft("10.0.0.9", &events[..2]))).unwrap();
    assert!(raised.created);
    let id = raised.alert.id;
    assert_eq!(id.get_version_num(), 7);
    // A repeat folds in: one alert, count 2, three events.
    let again = s.block_on(alerts.raise(draft("10.0.0.9", &events[2..]))).unwrap();
    assert_eq!((again.created, again.alert.id), (false, id));

    let page = s.get_ok("/api/alerts?severity=high&status=open&rule=ssh-brute-force&agent=web-01");
    assert_eq!(page["total"], 1, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["id"], id.to_string());
    assert_eq!((item["count"].as_u64(), item["event_count"].as_u64()), (Some(2), Some(3)));
    assert_eq!(item["tags"], json!(["attack.t1110", "attack.credential_access"]));
    assert_eq!(item["key"], "10.0.0.9");
    assert_eq!(s.get_ok("/api/alerts?severity=critical")["total"], 0);

    let m = wait_message(&s, "secmon.alert.high", |m| m.alert_id == id);
    assert_eq!(m.kind, AlertMessageKind::Raised);
    assert_eq!(
        (m.rule_id.as_str(), m.title.as_str(), m.status.as_str()),
        ("ssh-brute-force", "SSH brute force", "open")
    );
    assert_eq!(m.severity, Severity::High);
    assert_eq!(m.agent_id.as_ref().map(|a| a.as_str()), Some("web-01"));
    assert_eq!(m.event_ids, events[..2], "published when raised, before the repeat");
    assert_eq!(m.tags, ["attack.t1110", "attack.credential_access"]);

    let path = format!("/api/alerts/{id}");
    let acked = s.patch_json(&path, &json!({"status": "acknowledged", "comment": "looking into it"}));
    assert_eq!(acked.status, 200, "{}", acked.text);
    let acked = acked.json();
    assert_eq!(acked["status"], "acknowledged");
    let m = wait_message(&s, "secmon.alert.high", |m| m.kind == AlertMessageKind::StatusChanged);
    let change = m.change.unwrap();
    assert_eq!((change.from.as_deref(), change.to.as_str()), (Some("open"), "acknowledged"));
    assert_eq!((change.by.as_str(), change.comment.as_str()), ("local", "looking into it"));
    assert_eq!(m.count, 2);

    let closed =
        s.patch_json(&path, &json!({"status": "closed", "comment": "false positive", "by": "alice"}));
    assert_eq!(closed.status, 200, "{}", closed.text);
    let shown = s.get_ok(&path);
    assert_eq!(shown["status"], "closed");
    assert_eq!(shown["event_ids"], json!(events.iter().map(|e| e.to_string()).collect::<Vec<_>>()));
    let history: Vec<(Value, Value, Value, Value)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from"].clone(), h["to"].clone(), h["by"].clone(), h["comment"].clone()))
        .collect();
    assert_eq!(
        history,
        [
            (Value::Null, json!("open"), json!("secmon"), json!("raised by rule ssh-brute-force")),
            (json!("open"), json!("acknowledged"), json!("local"), json!("looking into it")),
            (json!("acknowledged"), json!("closed"), json!("alice"), json!("false positive")),
        ]
    );
    wait_message(&s, "secmon.alert.high", |m| m.status == "closed");

    // Closed alerts take no repeats: the next match is a new alert.
    let fresh = s.block_on(alerts.raise(draft("10.0.0.9", &[Uuid::now_v7()]))).unwrap();
    assert!(fresh.created);
    assert_ne!(fresh.alert.id, id);
    wait_message(&s, "secmon.alert.high", |m| m.alert_id == fresh.alert.id);
    assert_eq!(s.get_ok("/api/alerts")["total"], 2);
    // raised, acknowledged, closed, raised: repeats are not published.
    assert_eq!(stream_messages(&s), 4);

    // Not allowed: closed -> acknowledged; reopening works.
    let (code, msg) = s.patch_json(&path, &json!({"status": "acknowledged"})).error(409);
    assert_eq!(code, "invalid_transition", "{msg}");
    let reopened = s.patch_json(&path, &json!({"status": "open", "comment": "came back"}));
    assert_eq!(reopened.json()["status"], "open");

    let metrics = s.metrics_text();
    for line in [
        "secmon_alerts_raised_total 2",
        "secmon_alerts_folded_total 1",
        "secmon_alert_status_changes_total 3",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

#[test]
fn alerts_raised_while_nats_is_down_are_published_when_it_is_back() {
    let mut s = Stack::start();
    let alerts = s.manager().alerts();
    s.nats.kill();
    let raised = s.block_on(alerts.raise(draft("k", &[Uuid::now_v7()]))).unwrap();
    let id = raised.alert.id;
    // Stored and listed at once, NATS or not.
    assert_eq!(s.get_ok(&format!("/api/alerts/{id}"))["status"], "open");
    let m = s.manager().metrics();
    assert!(
        wait_until(Duration::from_secs(20), || m.alert_publish_errors.get() > 0),
        "publishing without NATS did not fail"
    );
    s.nats.restart();
    let msg = wait_message(&s, "secmon.alert.high", |m| m.alert_id == id);
    assert_eq!(msg.kind, AlertMessageKind::Raised);
    assert!(wait_until(WAIT, || m.alerts_published.get() >= 1));
    assert_eq!(stream_messages(&s), 1, "published once");
}

#[test]
fn hostile_requests_get_clear_errors() {
    let s = Stack::start();
    let id = s.block_on(s.manager().alerts().raise(draft("k", &[]))).unwrap().alert.id;
    let path = format!("/api/alerts/{id}");
    let long = "x".repeat(4097);
    for (body, needle) in [
        (json!({"status": "resolved"}), "invalid status"),
        (json!({"status": "closed", "comment": long}), "comment is longer than 4096 bytes"),
        (json!({"status": "closed", "extra": 1}), "unknown field"),
        (json!({"comment": "no status"}), "missing field"),
        (json!({"status": 3}), "invalid JSON body"),
        (json!({"status": "closed", "by": ""}), "by must be"),
        (json!({"status": "closed", "by": "a\nb"}), "by must be"),
        (json!(["closed"]), "invalid JSON body"),
    ] {
        let a = s.patch_json(&path, &body);
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        let (code, msg) = a.error(400);
        assert_eq!(code, "bad_request", "{body}");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (code, _) = s.patch(&path, "application/json", "{not json").error(400);
    assert_eq!(code, "bad_request");
    let (code, _) = s.patch(&path, "text/plain", "status=closed").error(400);
    assert_eq!(code, "bad_request");
    let (code, _) = s.patch(&path, "application/json", vec![b' '; 100 * 1024]).error(413);
    assert_eq!(code, "payload_too_large");
    let (_, msg) = s.patch_json("/api/alerts/not-a-uuid", &json!({"status": "closed"})).error(400);
    assert!(msg.contains("\"id\""), "{msg}");
    s.get("/api/alerts/not-a-uuid").error(400);
    s.get(&format!("/api/alerts/{}", Uuid::now_v7())).error(404);
    s.patch_json(&format!("/api/alerts/{}", Uuid::now_v7()), &json!({"status": "closed"})).error(404);
    s.get(&format!("{path}?x=1")).error(400);
    let (code, _) = s.patch_json(&path, &json!({"status": "open"})).error(409);
    assert_eq!(code, "invalid_transition");
    // Nothing of that changed the alert.
    let shown = s.get_ok(&path);
    assert_eq!(shown["status"], "open");
    assert_eq!(shown["history"].as_array().unwrap().len(), 1);
}
