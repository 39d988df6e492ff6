//! Pure alert logic, over data with the time passed in: folding a rule match into
//! an open alert or starting a new one, keeping the triggering event ids bounded,
//! status transitions, and the wire message of an alert.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{AlertMessage, AlertMessageKind, AlertStatusChangeWire, PROTOCOL_VERSION};
use uuid::Uuid;

use super::AlertDraft;
use crate::store::{AlertRecord, AlertStatus, AlertStatusChange};

/// Event ids kept from the start of an alert, and from its end.
pub const KEEP_FIRST: usize = 10;
pub const KEEP_LAST: usize = 10;

/// `kept` (already bounded by this function) followed by `new`, bounded again: all
/// ids up to `KEEP_FIRST + KEEP_LAST`, else the first and the last ones. Because
/// `kept` already holds the first ids of the alert and its last ones, the first of
/// the concatenation are the alert's first, and its last the alert's last.
pub fn keep_event_ids(kept: &[Uuid], new: &[Uuid]) -> Vec<Uuid> {
    let total = kept.len() + new.len();
    let all = kept.iter().chain(new).copied();
    if total <= KEEP_FIRST + KEEP_LAST {
        return all.collect();
    }
    let mut out: Vec<Uuid> = all.clone().take(KEEP_FIRST).collect();
    out.extend(all.skip(total - KEEP_LAST));
    out
}

/// Whether a match at `t` belongs to an alert seen from `first` to `last`: within
/// `window` of that span (a late match, older than `last`, belongs too).
pub fn within_window(first: DateTime<Utc>, last: DateTime<Utc>, t: DateTime<Utc>, window: Duration) -> bool {
    let w = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let lo = first.checked_sub_signed(w).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let hi = last.checked_add_signed(w).unwrap_or(DateTime::<Utc>::MAX_UTC);
    lo <= t && t <= hi
}

/// Whether `draft` folds into `alert`: same rule, agent and key, not closed, and
/// within the window.
pub fn folds_into(alert: &AlertRecord, draft: &AlertDraft, window: Duration) -> bool {
    alert.status != AlertStatus::Closed
        && alert.rule_id == draft.rule_id
        && alert.agent_id.as_ref() == Some(&draft.agent_id)
        && alert.key == draft.key
        && within_window(alert.first_seen, alert.last_seen, draft.time, window)
}

/// The outcome of [`fold`].
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub alert: AlertRecord,
    pub created: bool,
}

/// Folds `draft` into `existing` when it belongs there, else makes a new alert
/// with id `new_id`. A folded repeat raises the count and widens the seen span;
/// severity never goes down, title and tags follow the rule's latest version.
pub fn fold(existing: Option<AlertRecord>, draft: &AlertDraft, window: Duration, new_id: Uuid) -> Folded {
    match existing {
        Some(mut a) if folds_into(&a, draft, window) => {
            a.count = a.count.saturating_add(1);
            a.event_count = a.event_count.saturating_add(draft.event_ids.len() as u64);
            a.event_ids = keep_event_ids(&a.event_ids, &draft.event_ids);
            a.first_seen = a.first_seen.min(draft.time);
            a.last_seen = a.last_seen.max(draft.time);
            a.severity = a.severity.max(draft.severity);
            a.title.clone_from(&draft.rule_title);
            a.tags.clone_from(&draft.tags);
            Folded { alert: a, created: false }
        }
        _ => Folded {
            alert: AlertRecord {
                id: new_id,
                rule_id: draft.rule_id.clone(),
                title: draft.rule_title.clone(),
                severity: draft.severity,
                agent_id: Some(draft.agent_id.clone()),
                status: AlertStatus::Open,
                tags: draft.tags.clone(),
                key: draft.key.clone(),
                event_ids: keep_event_ids(&[], &draft.event_ids),
                event_count: draft.event_ids.len() as u64,
                first_seen: draft.time,
                last_seen: draft.time,
                count: 1,
            },
            created: true,
        },
    }
}

/// Whether an alert may go from `from` to `to`: open and acknowledged alerts can
/// be closed, open ones acknowledged, and acknowledged or closed ones reopened.
/// Staying in the same status is not a change.
pub fn check_transition(from: AlertStatus, to: AlertStatus) -> Result<(), String> {
    use AlertStatus::*;
    match (from, to) {
        (Open, Acknowledged)
        | (Open, Closed)
        | (Acknowledged, Closed)
        | (Acknowledged, Open)
        | (Closed, Open) => Ok(()),
        (f, t) if f == t => Err(format!("the alert is already {}", t.as_str())),
        (f, t) => Err(format!("a {} alert cannot become {}", f.as_str(), t.as_str())),
    }
}

/// The JetStream message announcing `alert` (raised, or changed by `change`).
pub fn message(alert: &AlertRecord, change: Option<&AlertStatusChange>) -> AlertMessage {
    AlertMessage {
        v: PROTOCOL_VERSION,
        kind: if change.is_some() { AlertMessageKind::StatusChanged } else { AlertMessageKind::Raised },
        alert_id: alert.id,
        rule_id: alert.rule_id.clone(),
        title: alert.title.clone(),
        severity: alert.severity,
        tags: alert.tags.clone(),
        agent_id: alert.agent_id.clone(),
        status: alert.status.as_str().into(),
        key: alert.key.clone(),
        event_ids: alert.event_ids.clone(),
        event_count: alert.event_count,
        count: alert.count,
        first_seen: alert.first_seen,
        last_seen: alert.last_seen,
        change: change.map(|c| AlertStatusChangeWire {
            from: c.from.map(|s| s.as_str().into()),
            to: c.to.as_str().into(),
            at: c.at,
            by: c.by.clone(),
            comment: c.comment.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use secmon_proto::{AgentId, Severity};

    use super::*;

    const MIN5: Duration = Duration::from_secs(300);

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn ids(range: std::ops::Range<u128>) -> Vec<Uuid> {
        range.map(Uuid::from_u128).collect()
    }

    fn draft(secs: i64, events: std::ops::Range<u128>) -> AlertDraft {
        AlertDraft {
            rule_id: "ssh-brute".into(),
            rule_title: "SSH brute force".into(),
            severity: Severity::High,
            tags: vec!["attack.t1110".into()],
            agent_id: AgentId::new("a1").unwrap(),
            event_ids: ids(events),
            key: "10.0.0.9".into(),
            time: at(secs),
        }
    }

    #[test]
    fn a_repeat_within_the_window_folds_into_the_open_alert() {
        let first = fold(None, &draft(0, 1..3), MIN5, Uuid::from_u128(100));
        assert!(first.created);
        assert_eq!((first.alert.count, first.alert.event_count), (1, 2));
        assert_eq!(first.alert.status, AlertStatus::Open);

        let mut d = draft(290, 3..4);
        d.severity = Severity::Medium;
        let again = fold(Some(first.alert.clone()), &d, MIN5, Uuid::from_u128(101));
        assert!(!again.created);
        let a = again.alert;
        assert_eq!(a.id, Uuid::from_u128(100));
        assert_eq!((a.count, a.event_count), (2, 3));
        assert_eq!(a.event_ids, ids(1..4));
        assert_eq!((a.first_seen, a.last_seen), (at(0), at(290)));
        assert_eq!(a.severity, Severity::High, "severity never goes down");

        // A late match (older than last_seen) still folds and widens first_seen.
        let late = fold(Some(a), &draft(-60, 4..5), MIN5, Uuid::from_u128(102)).alert;
        assert_eq!((late.first_seen, late.last_seen, late.count), (at(-60), at(290), 3));
    }

    #[test]
    fn a_new_alert_after_the_window_after_close_or_for_another_key() {
        let a = fold(None, &draft(0, 1..2), MIN5, Uuid::from_u128(1)).alert;
        let after = fold(Some(a.clone()), &draft(301, 2..3), MIN5, Uuid::from_u128(2));
        assert!(after.created);
        assert_eq!(
            (after.alert.id, after.alert.count, after.alert.first_seen),
            (Uuid::from_u128(2), 1, at(301))
        );
        assert!(
            !fold(Some(a.clone()), &draft(300, 2..3), MIN5, Uuid::from_u128(3)).created,
            "edge is inside"
        );

        let closed = AlertRecord { status: AlertStatus::Closed, ..a.clone() };
        assert!(fold(Some(closed), &draft(10, 2..3), MIN5, Uuid::from_u128(4)).created);
        let acked = AlertRecord { status: AlertStatus::Acknowledged, ..a.clone() };
        assert!(!fold(Some(acked), &draft(10, 2..3), MIN5, Uuid::from_u128(5)).created);

        let mut other = draft(10, 2..3);
        other.key = "10.0.0.10".into();
        assert!(fold(Some(a.clone()), &other, MIN5, Uuid::from_u128(6)).created);
        let mut other = draft(10, 2..3);
        other.agent_id = AgentId::new("a2").unwrap();
        assert!(fold(Some(a), &other, MIN5, Uuid::from_u128(7)).created);
    }

    #[test]
    fn event_ids_keep_the_first_and_last_ten() {
        assert_eq!(keep_event_ids(&[], &ids(0..20)), ids(0..20));
        let mut kept = keep_event_ids(&[], &ids(0..25));
        assert_eq!(kept, [ids(0..10), ids(15..25)].concat());
        for n in 25..100u128 {
            kept = keep_event_ids(&kept, &[Uuid::from_u128(n)]);
        }
        assert_eq!(kept, [ids(0..10), ids(90..100)].concat());

        let mut a = fold(None, &draft(0, 0..15), MIN5, Uuid::from_u128(1000)).alert;
        for i in 0..10u128 {
            a = fold(Some(a), &draft(1, 15 + i * 3..18 + i * 3), MIN5, Uuid::from_u128(1001)).alert;
        }
        assert_eq!(a.event_count, 45);
        assert_eq!(a.event_ids, [ids(0..10), ids(35..45)].concat());
    }

    #[test]
    fn transitions() {
        use AlertStatus::*;
        for (from, to) in [
            (Open, Acknowledged),
            (Open, Closed),
            (Acknowledged, Closed),
            (Acknowledged, Open),
            (Closed, Open),
        ] {
            assert!(check_transition(from, to).is_ok(), "{from:?} -> {to:?}");
        }
        assert_eq!(
            check_transition(Closed, Acknowledged).unwrap_err(),
            "a closed alert cannot become acknowledged"
        );
        assert_eq!(check_transition(Open, Open).unwrap_err(), "the alert is already open");
    }

    #[test]
    fn messages_carry_the_alert_and_the_change() {
        let a = fold(None, &draft(0, 1..3), MIN5, Uuid::from_u128(9)).alert;
        let m = message(&a, None);
        assert_eq!(m.kind, AlertMessageKind::Raised);
        assert_eq!((m.alert_id, m.severity, m.count, m.event_count), (a.id, Severity::High, 1, 2));
        let c = AlertStatusChange {
            at: at(5),
            by: "local".into(),
            from: Some(AlertStatus::Open),
            to: AlertStatus::Closed,
            comment: "fp".into(),
        };
        let m = message(&AlertRecord { status: AlertStatus::Closed, ..a }, Some(&c));
        assert_eq!(m.kind, AlertMessageKind::StatusChanged);
        assert_eq!(m.status, "closed");
        assert_eq!(m.change.unwrap().from.as_deref(), Some("open"));
    }
}
