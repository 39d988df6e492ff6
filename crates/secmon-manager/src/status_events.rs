//! Agent status changes as events: when the registry marks an agent
//! `disconnected` (heartbeat timeout or shutdown notice), the manager makes an
//! `agent`/`disconnected` event in that agent's history, so rules can alert on it
//! (`rules/agent/agent_disconnected_without_shutdown.yml`).
//!
//! - Marker: `seq` 0 and `extra` `"origin": "manager"`. Agents count from 1 and
//!   ingest treats seq 0 as a replay, so an agent cannot forge such an event, and
//!   these events never reach sequence tracking (they do not go through ingest),
//!   so they count as neither gap nor replay.
//! - Flow: the registry actor builds the event and `try_send`s it on a bounded
//!   channel, never waiting. When the channel is full it keeps up to
//!   [`BACKLOG`] events and offers them again after each batch; beyond that the
//!   oldest is dropped and counted. [`run`] stores each batch (a bounded retry)
//!   and hands what was stored to rule evaluation, waiting when that queue is full.
//! - Crash: an event queued but not stored is lost (the status change itself is
//!   in the registry's table).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::payload::{AgentStatusChange, DisconnectReason, MANAGER_ORIGIN};
use secmon_proto::{Envelope, EventClass, Severity};
use tokio::sync::mpsc;

use crate::detection::evaluate::EvalSender;
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::store::{StatusChange, Store, StoredEvent};

/// Events in the channel to [`run`].
pub const QUEUE: usize = 256;

/// Events the registry keeps while the channel is full; beyond, the oldest is dropped.
pub const BACKLOG: usize = 1024;

/// Events stored in one transaction.
const MAX_BATCH: usize = 256;

/// Attempts to store a batch before its events are counted as dropped.
const STORE_ATTEMPTS: u32 = 5;

pub type StatusEventSender = mpsc::Sender<Envelope>;

pub fn channel() -> (StatusEventSender, mpsc::Receiver<Envelope>) {
    mpsc::channel(QUEUE)
}

/// The event for a change to `disconnected`. `last_seen` is the agent's record
/// after the change, `timeout` the manager's heartbeat timeout.
pub fn disconnected_event(
    change: &StatusChange,
    reason: DisconnectReason,
    last_seen: Option<DateTime<Utc>>,
    timeout: Duration,
) -> Envelope {
    let payload = AgentStatusChange {
        reason,
        // An agent is disconnected from pending or active; `None` is only for a
        // first enrollment, which never ends here.
        from: change.from.unwrap_or(change.to),
        last_seen,
        timeout_secs: timeout.as_secs(),
        detail: change.reason.clone(),
    };
    let payload = serde_json::to_value(payload).expect("an AgentStatusChange always encodes");
    let mut env = Envelope::new(
        change.agent_id.clone(),
        0,
        EventClass::Agent,
        "disconnected",
        Severity::Medium,
        payload,
    );
    env.time = change.at;
    let (k, v) = MANAGER_ORIGIN;
    env.extra.insert(k.into(), v.into());
    env
}

/// The registry's side: offers events without ever waiting.
pub struct Outbox {
    tx: StatusEventSender,
    backlog: VecDeque<Envelope>,
    metrics: Arc<Metrics>,
    warn: LogLimiter,
}

impl Outbox {
    pub fn new(tx: StatusEventSender, metrics: Arc<Metrics>) -> Self {
        Self { tx, backlog: VecDeque::new(), metrics, warn: LogLimiter::new(Duration::from_secs(10)) }
    }

    pub fn push(&mut self, env: Envelope) {
        self.backlog.push_back(env);
        if self.backlog.len() > BACKLOG {
            self.backlog.pop_front();
            self.dropped(1, "the agent status event queue is full");
        }
        self.offer();
    }

    /// Sends what the channel takes now, oldest first.
    pub fn offer(&mut self) {
        while let Some(env) = self.backlog.pop_front() {
            match self.tx.try_send(env) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(env)) => {
                    self.backlog.push_front(env);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let n = self.backlog.len() as u64 + 1;
                    self.backlog.clear();
                    self.dropped(n, "agent status events are no longer stored");
                    return;
                }
            }
        }
    }

    fn dropped(&self, n: u64, why: &str) {
        self.metrics.agent_status_events_dropped.inc_by(n);
        if let Some(suppressed) = self.warn.allow() {
            tracing::warn!(events = n, suppressed, "{why}; agent status events dropped");
        }
    }
}

/// What is still in the backlog when the registry stops is lost: counted.
impl Drop for Outbox {
    fn drop(&mut self) {
        if !self.backlog.is_empty() {
            self.dropped(self.backlog.len() as u64, "the manager stopped with agent status events queued");
        }
    }
}

/// Stores manager-made events and hands them to rule evaluation. Runs until the
/// registry drops its sender (at stop, after its last flush).
pub async fn run(
    mut rx: mpsc::Receiver<Envelope>,
    store: Arc<dyn Store>,
    evaluate: EvalSender,
    metrics: Arc<Metrics>,
) {
    let warn = LogLimiter::new(Duration::from_secs(10));
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let received = Utc::now();
        let events: Vec<StoredEvent> =
            batch.drain(..).map(|envelope| StoredEvent { envelope, received }).collect();
        let Some(stored) = store_batch(store.as_ref(), &events, &metrics, &warn).await else { continue };
        let fresh: Vec<Envelope> =
            events.into_iter().zip(stored).filter(|(_, s)| *s).map(|(e, _)| e.envelope).collect();
        metrics.agent_status_events.inc_by(fresh.len() as u64);
        if !fresh.is_empty() && evaluate.send(fresh).await.is_err() {
            tracing::warn!("rule evaluation stopped; agent status events not evaluated");
        }
    }
    tracing::debug!("agent status events stopped");
}

/// Stores one batch, retrying a few times; `None` (counted as dropped) when
/// storage keeps failing.
async fn store_batch(
    store: &dyn Store,
    events: &[StoredEvent],
    metrics: &Metrics,
    warn: &LogLimiter,
) -> Option<Vec<bool>> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=STORE_ATTEMPTS {
        match store.insert_events(events, &[], &[]).await {
            Ok(out) => return Some(out.stored),
            Err(e) => {
                if let Some(suppressed) = warn.allow() {
                    tracing::error!(error = %e, attempt, events = events.len(), suppressed, "cannot store agent status events");
                }
            }
        }
        if attempt < STORE_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    metrics.agent_status_events_dropped.inc_by(events.len() as u64);
    None
}

#[cfg(test)]
mod tests {
    use secmon_proto::{AgentId, AgentStatus};

    use super::*;

    fn change(from: AgentStatus, reason: &str) -> StatusChange {
        StatusChange {
            agent_id: AgentId::new("web1").unwrap(),
            from: Some(from),
            to: AgentStatus::Disconnected,
            at: DateTime::parse_from_rfc3339("2026-11-23T22:00:00Z").unwrap().to_utc(),
            reason: reason.into(),
        }
    }

    #[test]
    fn heartbeat_timeout_event_has_the_rule_shape() {
        let seen = DateTime::parse_from_rfc3339("2026-11-23T21:59:40Z").unwrap().to_utc();
        let c = change(AgentStatus::Active, "heartbeat timeout");
        let env =
            disconnected_event(&c, DisconnectReason::HeartbeatTimeout, Some(seen), Duration::from_secs(15));
        assert_eq!((env.seq, env.class, env.activity.as_str()), (0, EventClass::Agent, "disconnected"));
        assert_eq!((env.severity, env.time, env.agent_id.as_str()), (Severity::Medium, c.at, "web1"));
        assert_eq!(env.id.get_version_num(), 7);
        assert_eq!(env.extra["origin"], "manager");
        assert_eq!(
            env.payload,
            serde_json::json!({
                "reason": "heartbeat_timeout",
                "from": "active",
                "last_seen": "2026-11-23T21:59:40Z",
                "timeout_secs": 15,
                "detail": "heartbeat timeout"
            })
        );
    }

    #[test]
    fn shutdown_notice_event_keeps_the_agents_reason() {
        let c = change(AgentStatus::Pending, "shutdown notice: SIGTERM");
        let env = disconnected_event(&c, DisconnectReason::ShutdownNotice, None, Duration::from_secs(90));
        assert_eq!(env.payload["reason"], "shutdown_notice");
        assert_eq!(env.payload["from"], "pending");
        assert_eq!(env.payload["last_seen"], serde_json::Value::Null);
        assert_eq!(env.payload["detail"], "shutdown notice: SIGTERM");
    }

    #[test]
    fn a_full_queue_keeps_a_bounded_backlog_and_counts_drops() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel(2);
        let mut out = Outbox::new(tx, metrics.clone());
        let c = change(AgentStatus::Active, "heartbeat timeout");
        let ev = || disconnected_event(&c, DisconnectReason::HeartbeatTimeout, None, Duration::from_secs(1));
        let first = ev();
        let first_id = first.id;
        out.push(first);
        for _ in 0..BACKLOG + 4 {
            out.push(ev());
        }
        // 2 in the channel, BACKLOG kept, the rest dropped and counted.
        assert_eq!(out.backlog.len(), BACKLOG);
        assert_eq!(metrics.agent_status_events_dropped.get(), 3);
        assert_eq!(rx.try_recv().unwrap().id, first_id);
        out.offer();
        assert_eq!(out.backlog.len(), BACKLOG - 1);
        drop(rx);
        out.offer();
        assert!(out.backlog.is_empty());
        assert_eq!(metrics.agent_status_events_dropped.get(), 3 + BACKLOG as u64 - 1);
    }
}
