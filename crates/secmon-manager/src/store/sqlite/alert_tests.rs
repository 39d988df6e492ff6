//! Alert storage: dedup through the database, status history, the outbox.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, AlertMessage, AlertMessageKind, Severity};
use uuid::Uuid;

use super::SqliteStore;
use crate::alerts::AlertDraft;
use crate::store::{AlertQuery, AlertStatus, AlertStatusChange, Store, StoreError};

const WINDOW: Duration = Duration::from_secs(300);

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn draft(agent: &str, key: &str, secs: i64, event: u128) -> AlertDraft {
    AlertDraft {
        rule_id: "ssh-brute".into(),
        rule_title: "SSH brute force".into(),
        severity: Severity::High,
        tags: vec!["attack.t1110".into(), "attack.credential_access".into()],
        agent_id: AgentId::new(agent).unwrap(),
        event_ids: vec![Uuid::from_u128(event)],
        key: key.into(),
        time: at(secs),
    }
}

fn change(to: AlertStatus, comment: &str) -> AlertStatusChange {
    AlertStatusChange { at: Utc::now(), by: "local".into(), from: None, to, comment: comment.into() }
}

#[tokio::test]
async fn repeats_within_the_window_fold_and_others_make_new_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let first = s.raise_alert(&draft("a1", "10.0.0.9", 0, 1), WINDOW).await.unwrap();
    assert!(first.created);
    for (i, secs) in [60, 200, 490].into_iter().enumerate() {
        let r = s.raise_alert(&draft("a1", "10.0.0.9", secs, 2 + i as u128), WINDOW).await.unwrap();
        assert!(!r.created, "{secs}s is within the window of the last repeat");
        assert_eq!(r.alert.id, first.alert.id);
    }
    let a = s.get_alert(first.alert.id).await.unwrap().unwrap();
    assert_eq!((a.alert.count, a.alert.event_count, a.alert.last_seen), (4, 4, at(490)));
    assert_eq!(a.alert.event_ids, (1..5).map(Uuid::from_u128).collect::<Vec<_>>());

    // Another key, another agent, and a match after the window: new alerts.
    assert!(s.raise_alert(&draft("a1", "10.0.0.10", 500, 9), WINDOW).await.unwrap().created);
    assert!(s.raise_alert(&draft("a2", "10.0.0.9", 500, 9), WINDOW).await.unwrap().created);
    let late = s.raise_alert(&draft("a1", "10.0.0.9", 791, 10), WINDOW).await.unwrap();
    assert!(late.created, "291 s after last_seen + window");
    assert_ne!(late.alert.id, first.alert.id);
    let all = s.list_alerts(&AlertQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(all.total, 4);
}

#[tokio::test]
async fn a_repeat_after_close_makes_a_new_alert_and_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let a = s.raise_alert(&draft("a1", "k", 0, 1), WINDOW).await.unwrap().alert;
    let acked = s.set_alert_status(a.id, &change(AlertStatus::Acknowledged, "looking")).await.unwrap();
    assert_eq!(acked.alert.status, AlertStatus::Acknowledged);
    // Acknowledged alerts still aggregate.
    assert!(!s.raise_alert(&draft("a1", "k", 10, 2), WINDOW).await.unwrap().created);
    let closed = s.set_alert_status(a.id, &change(AlertStatus::Closed, "false positive")).await.unwrap();
    let steps: Vec<_> = closed.history.iter().map(|h| (h.from, h.to, h.comment.as_str())).collect();
    assert_eq!(
        steps,
        [
            (None, AlertStatus::Open, "raised by rule ssh-brute"),
            (Some(AlertStatus::Open), AlertStatus::Acknowledged, "looking"),
            (Some(AlertStatus::Acknowledged), AlertStatus::Closed, "false positive"),
        ]
    );
    assert_eq!(closed.history[1].by, "local");
    let again = s.raise_alert(&draft("a1", "k", 20, 3), WINDOW).await.unwrap();
    assert!(again.created, "a closed alert takes no repeats");
    assert_eq!(s.get_alert(a.id).await.unwrap().unwrap().alert.count, 2);

    let e = s.set_alert_status(a.id, &change(AlertStatus::Acknowledged, "")).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ref m) if m.contains("closed")), "{e}");
    let e = s.set_alert_status(Uuid::now_v7(), &change(AlertStatus::Closed, "")).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound), "{e}");
    assert!(s.get_alert(Uuid::now_v7()).await.unwrap().is_none());
}

#[tokio::test]
async fn new_alerts_and_status_changes_wait_in_the_outbox_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = SqliteStore::open(dir.path()).unwrap();
        let a = s.raise_alert(&draft("a1", "k", 0, 1), WINDOW).await.unwrap().alert;
        s.raise_alert(&draft("a1", "k", 1, 2), WINDOW).await.unwrap(); // folded: no message
        s.set_alert_status(a.id, &change(AlertStatus::Closed, "done")).await.unwrap();
        s.close().await.unwrap();
        a.id
    };
    let s = SqliteStore::open(dir.path()).unwrap();
    let out = s.pending_alert_messages(10).await.unwrap();
    assert_eq!(out.len(), 2);
    let msgs: Vec<AlertMessage> = out.iter().map(|m| serde_json::from_slice(&m.body).unwrap()).collect();
    assert_eq!((msgs[0].kind, msgs[0].alert_id, msgs[0].count), (AlertMessageKind::Raised, id, 1));
    assert_eq!((msgs[1].kind, msgs[1].status.as_str()), (AlertMessageKind::StatusChanged, "closed"));
    assert_eq!(msgs[1].count, 2);
    assert!(out.iter().all(|m| m.severity == Severity::High));
    assert_ne!(out[0].msg_id, out[1].msg_id);
    s.remove_alert_messages(&[out[0].id]).await.unwrap();
    assert_eq!(s.pending_alert_messages(10).await.unwrap(), vec![out[1].clone()]);
}
