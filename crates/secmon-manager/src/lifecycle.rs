//! The fleet lifecycle as pure transition functions: the current record (if any),
//! what happened and the time in; the new record and the status change (if the
//! status moved) out. No IO, no clock: the registry calls these and persists.
//!
//! ```text
//! (unknown) --register--> pending --heartbeat--> active
//! never_connected --register--> pending        active --register--> pending
//! pending|active --heartbeat timeout / shutdown notice--> disconnected
//! disconnected --register--> pending, --heartbeat--> active
//! any --removal--> removed (terminal: registrations and events refused)
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, AgentStatus, HostFacts, Registration};

use crate::store::{AgentRecord, SeqState, StatusChange};

/// Longest reason text kept from an agent's shutdown notice.
pub const MAX_REASON_CHARS: usize = 200;

/// A record after an event, and the status change it caused, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: AgentRecord,
    pub change: Option<StatusChange>,
}

/// Why a control message changed nothing; the label is the rejection counter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Heartbeat or shutdown notice from an agent that never registered here.
    UnknownAgent,
    /// The agent was removed by an operator.
    Removed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownAgent => "unknown_agent",
            Refusal::Removed => "removed",
        }
    }
}

fn change(record: &mut AgentRecord, to: AgentStatus, reason: String, now: DateTime<Utc>) -> StatusChange {
    let c = StatusChange { agent_id: record.id.clone(), from: Some(record.status), to, at: now, reason };
    record.status = to;
    record.status_reason = c.reason.clone();
    record.status_changed_at = now;
    c
}

/// An enrolled agent that has not connected yet (enrollment arrives with the
/// security issue).
pub fn enrolled(id: AgentId, name: String, now: DateTime<Utc>) -> Transition {
    let reason = "enrolled".to_owned();
    let record = AgentRecord {
        id: id.clone(),
        name,
        status: AgentStatus::NeverConnected,
        status_reason: reason.clone(),
        status_changed_at: now,
        host: HostFacts::default(),
        agent_version: String::new(),
        sensors: Vec::new(),
        config_digest: String::new(),
        heartbeat_interval_ms: 0,
        registered_at: now,
        last_seen: None,
        seq: SeqState::default(),
    };
    let c = StatusChange { agent_id: id, from: None, to: AgentStatus::NeverConnected, at: now, reason };
    Transition { record, change: Some(c) }
}

/// A registration: unknown, never connected, pending, active or disconnected agents
/// become (or stay) `pending` with the facts of the registration; removed agents
/// are refused.
pub fn on_registration(
    existing: Option<&AgentRecord>,
    reg: &Registration,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let Some(old) = existing else {
        let reason = "registered".to_owned();
        let record = AgentRecord {
            id: reg.agent_id.clone(),
            name: reg.name.clone(),
            status: AgentStatus::Pending,
            status_reason: reason.clone(),
            status_changed_at: now,
            host: reg.host.clone(),
            agent_version: reg.agent_version.clone(),
            sensors: reg.sensors.clone(),
            config_digest: reg.config_digest.clone(),
            heartbeat_interval_ms: reg.heartbeat_interval_ms,
            registered_at: now,
            last_seen: Some(now),
            seq: SeqState::default(),
        };
        let c = StatusChange {
            agent_id: reg.agent_id.clone(),
            from: None,
            to: AgentStatus::Pending,
            at: now,
            reason,
        };
        return Ok(Transition { record, change: Some(c) });
    };
    if old.status == AgentStatus::Removed {
        return Err(Refusal::Removed);
    }
    let mut record = old.clone();
    record.name = reg.name.clone();
    record.host = reg.host.clone();
    record.agent_version = reg.agent_version.clone();
    record.sensors = reg.sensors.clone();
    record.config_digest = reg.config_digest.clone();
    record.heartbeat_interval_ms = reg.heartbeat_interval_ms;
    record.last_seen = Some(now);
    let c = match old.status {
        AgentStatus::Pending => None,
        AgentStatus::Active => Some(change(&mut record, AgentStatus::Pending, "re-registered".into(), now)),
        _ => Some(change(&mut record, AgentStatus::Pending, "registered".into(), now)),
    };
    Ok(Transition { record, change: c })
}

/// A heartbeat: pending, disconnected (and never connected) agents become active;
/// active ones only get `last_seen`. Unknown and removed agents are refused.
pub fn on_heartbeat(existing: Option<&AgentRecord>, now: DateTime<Utc>) -> Result<Transition, Refusal> {
    let old = existing.ok_or(Refusal::UnknownAgent)?;
    let mut record = old.clone();
    record.last_seen = Some(now);
    let c = match old.status {
        AgentStatus::Removed => return Err(Refusal::Removed),
        AgentStatus::Active => None,
        AgentStatus::Pending | AgentStatus::Disconnected | AgentStatus::NeverConnected => {
            Some(change(&mut record, AgentStatus::Active, "heartbeat".into(), now))
        }
    };
    Ok(Transition { record, change: c })
}

/// A clean shutdown notice: the agent becomes disconnected at once, with the
/// agent's reason (truncated to [`MAX_REASON_CHARS`]).
pub fn on_shutdown(
    existing: Option<&AgentRecord>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let old = existing.ok_or(Refusal::UnknownAgent)?;
    let mut record = old.clone();
    record.last_seen = Some(now);
    let c = match old.status {
        AgentStatus::Removed => return Err(Refusal::Removed),
        AgentStatus::Disconnected => None,
        AgentStatus::Pending | AgentStatus::Active | AgentStatus::NeverConnected => {
            let reason: String = reason.chars().filter(|c| !c.is_control()).take(MAX_REASON_CHARS).collect();
            Some(change(&mut record, AgentStatus::Disconnected, format!("shutdown notice: {reason}"), now))
        }
    };
    Ok(Transition { record, change: c })
}

/// The periodic check: a pending or active agent silent for longer than `timeout`
/// becomes disconnected. Silence is counted from `max(last_seen, not_before)`, with
/// `not_before` the manager's start, so a manager restart does not disconnect
/// agents whose heartbeats it simply has not had time to see.
pub fn on_heartbeat_check(
    record: &AgentRecord,
    now: DateTime<Utc>,
    timeout: Duration,
    not_before: DateTime<Utc>,
) -> Option<Transition> {
    if !matches!(record.status, AgentStatus::Pending | AgentStatus::Active) {
        return None;
    }
    let since = record.last_seen.map_or(not_before, |t| t.max(not_before));
    let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let deadline = since.checked_add_signed(timeout)?;
    if deadline >= now {
        return None;
    }
    let mut record = record.clone();
    let c = change(&mut record, AgentStatus::Disconnected, "heartbeat timeout".into(), now);
    Some(Transition { record, change: Some(c) })
}

/// An operator removed the agent. Removing a removed agent changes nothing.
pub fn on_removal(record: &AgentRecord, reason: &str, now: DateTime<Utc>) -> Transition {
    let mut record = record.clone();
    let c = (record.status != AgentStatus::Removed)
        .then(|| change(&mut record, AgentStatus::Removed, format!("removed: {reason}"), now));
    Transition { record, change: c }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn reg(name: &str) -> Registration {
        Registration {
            v: 1,
            agent_id: AgentId::new("a1").unwrap(),
            name: name.into(),
            agent_version: "0.1.0".into(),
            host: HostFacts { hostname: "h1".into(), ..Default::default() },
            started_at: t(0),
            sensors: vec!["fim".into()],
            config_digest: "d".into(),
            heartbeat_interval_ms: 1000,
            last_seq: 0,
        }
    }

    fn with_status(status: AgentStatus) -> AgentRecord {
        let mut r = on_registration(None, &reg("web"), t(0)).unwrap().record;
        r.status = status;
        r
    }

    #[test]
    fn registration_of_unknown_agent_is_pending() {
        let tr = on_registration(None, &reg("web"), t(5)).unwrap();
        assert_eq!(tr.record.status, AgentStatus::Pending);
        assert_eq!(tr.record.registered_at, t(5));
        assert_eq!(tr.record.last_seen, Some(t(5)));
        assert_eq!(tr.record.host.hostname, "h1");
        let c = tr.change.unwrap();
        assert_eq!((c.from, c.to, c.at, c.reason.as_str()), (None, AgentStatus::Pending, t(5), "registered"));
    }

    #[test]
    fn registration_moves_every_live_status_to_pending_and_updates_facts() {
        for (from, reason) in [
            (AgentStatus::NeverConnected, Some("registered")),
            (AgentStatus::Disconnected, Some("registered")),
            (AgentStatus::Active, Some("re-registered")),
            (AgentStatus::Pending, None),
        ] {
            let old = with_status(from);
            let tr = on_registration(Some(&old), &reg("renamed"), t(9)).unwrap();
            assert_eq!(tr.record.status, AgentStatus::Pending, "{from}");
            assert_eq!(tr.record.name, "renamed");
            assert_eq!(tr.record.registered_at, t(0), "first registration kept");
            assert_eq!(tr.record.last_seen, Some(t(9)));
            assert_eq!(tr.change.as_ref().map(|c| c.reason.as_str()), reason, "{from}");
            if let Some(c) = tr.change {
                assert_eq!((c.from, c.to, c.at), (Some(from), AgentStatus::Pending, t(9)));
                assert_eq!(tr.record.status_changed_at, t(9));
            }
        }
    }

    #[test]
    fn registration_of_removed_agent_is_refused() {
        let old = with_status(AgentStatus::Removed);
        assert_eq!(on_registration(Some(&old), &reg("web"), t(1)), Err(Refusal::Removed));
    }

    #[test]
    fn heartbeat_activates_and_refreshes() {
        for from in [AgentStatus::Pending, AgentStatus::Disconnected, AgentStatus::NeverConnected] {
            let tr = on_heartbeat(Some(&with_status(from)), t(3)).unwrap();
            assert_eq!(tr.record.status, AgentStatus::Active);
            let c = tr.change.unwrap();
            assert_eq!((c.from, c.to, c.reason.as_str()), (Some(from), AgentStatus::Active, "heartbeat"));
        }
        let tr = on_heartbeat(Some(&with_status(AgentStatus::Active)), t(4)).unwrap();
        assert_eq!(tr.change, None);
        assert_eq!(tr.record.last_seen, Some(t(4)));
        assert_eq!(on_heartbeat(None, t(1)), Err(Refusal::UnknownAgent));
        assert_eq!(on_heartbeat(Some(&with_status(AgentStatus::Removed)), t(1)), Err(Refusal::Removed));
    }

    #[test]
    fn shutdown_notice_disconnects_with_the_reason() {
        for from in [AgentStatus::Pending, AgentStatus::Active, AgentStatus::NeverConnected] {
            let tr = on_shutdown(Some(&with_status(from)), "SIGTERM", t(2)).unwrap();
            assert_eq!(tr.record.status, AgentStatus::Disconnected);
            assert_eq!(tr.change.unwrap().reason, "shutdown notice: SIGTERM");
        }
        let tr = on_shutdown(Some(&with_status(AgentStatus::Disconnected)), "x", t(2)).unwrap();
        assert_eq!(tr.change, None);
        assert_eq!(on_shutdown(None, "x", t(1)), Err(Refusal::UnknownAgent));
        assert_eq!(on_shutdown(Some(&with_status(AgentStatus::Removed)), "x", t(1)), Err(Refusal::Removed));
        let long = "x\n".repeat(1000);
        let tr = on_shutdown(Some(&with_status(AgentStatus::Active)), &long, t(2)).unwrap();
        assert_eq!(tr.record.status_reason, format!("shutdown notice: {}", "x".repeat(MAX_REASON_CHARS)));
    }

    #[test]
    fn heartbeat_timeout_disconnects_only_silent_live_agents() {
        let timeout = Duration::from_secs(15);
        let mut a = with_status(AgentStatus::Active);
        a.last_seen = Some(t(100));
        assert_eq!(on_heartbeat_check(&a, t(115), timeout, t(0)), None, "exactly at the deadline");
        let tr = on_heartbeat_check(&a, t(116), timeout, t(0)).unwrap();
        assert_eq!(tr.record.status, AgentStatus::Disconnected);
        let c = tr.change.unwrap();
        assert_eq!(
            (c.from, c.reason.as_str(), c.at),
            (Some(AgentStatus::Active), "heartbeat timeout", t(116))
        );

        let mut p = with_status(AgentStatus::Pending);
        p.last_seen = Some(t(100));
        assert!(on_heartbeat_check(&p, t(200), timeout, t(0)).is_some());

        for s in [AgentStatus::Disconnected, AgentStatus::Removed, AgentStatus::NeverConnected] {
            let mut r = with_status(s);
            r.last_seen = Some(t(0));
            assert_eq!(on_heartbeat_check(&r, t(1000), timeout, t(0)), None, "{s}");
        }
    }

    #[test]
    fn silence_is_measured_from_manager_start_after_a_restart() {
        let timeout = Duration::from_secs(15);
        let mut a = with_status(AgentStatus::Active);
        a.last_seen = Some(t(0));
        // Manager (re)started at t=500: the agent gets a full timeout from then.
        assert_eq!(on_heartbeat_check(&a, t(510), timeout, t(500)), None);
        assert!(on_heartbeat_check(&a, t(516), timeout, t(500)).is_some());
        a.last_seen = None;
        assert!(on_heartbeat_check(&a, t(516), timeout, t(500)).is_some());
        assert_eq!(on_heartbeat_check(&a, t(514), Duration::MAX, t(500)), None, "no overflow");
    }

    #[test]
    fn removal_is_terminal_and_idempotent() {
        for from in AgentStatus::ALL {
            let tr = on_removal(&with_status(from), "decommissioned", t(7));
            assert_eq!(tr.record.status, AgentStatus::Removed);
            if from == AgentStatus::Removed {
                assert_eq!(tr.change, None);
            } else {
                let c = tr.change.unwrap();
                assert_eq!(
                    (c.from, c.to, c.reason.as_str()),
                    (Some(from), AgentStatus::Removed, "removed: decommissioned")
                );
            }
        }
    }

    #[test]
    fn enrolled_agents_are_never_connected() {
        let tr = enrolled(AgentId::new("e1").unwrap(), "db".into(), t(1));
        assert_eq!(tr.record.status, AgentStatus::NeverConnected);
        assert_eq!(tr.record.last_seen, None);
        assert_eq!(tr.change.unwrap().from, None);
        let tr2 = on_registration(Some(&tr.record), &reg("db"), t(2)).unwrap();
        assert_eq!(tr2.change.unwrap().from, Some(AgentStatus::NeverConnected));
    }
}
