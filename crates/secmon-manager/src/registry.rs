//! Fleet registry: registration, heartbeats, shutdown notices, heartbeat timeouts.
//!
//! One task (an actor) owns every change: it reads the register, heartbeat and
//! shutdown subjects of all agents (plain core-NATS subscriptions, so every manager
//! sees every message), applies the pure transitions of [`crate::lifecycle`],
//! persists, and only then answers registrations. Readers ([`RegistryHandle::get`],
//! ingest's removed check) read a shared map without waiting for the actor.
//!
//! Writes are batched: the actor handles every message that is ready, then writes
//! all status changes in one transaction. `last_seen` alone is not worth a write
//! per heartbeat; it is flushed every [`SEEN_FLUSH_INTERVAL`], on status changes
//! and at shutdown. When storage fails, the changes stay queued (one entry per
//! agent, bounded transitions each) and are retried.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subscriber};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use secmon_proto::payload::DisconnectReason;
use secmon_proto::{
    AgentId, AgentStatus, CommandRequest, Heartbeat, PROTOCOL_VERSION, RegisterReply, Registration,
    ShutdownNotice, Subjects, Versioned,
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{self, Refusal, Transition};
use crate::log_limit::{LogLimiter, clip};
use crate::metrics::{Metrics, StatusLabel};
use crate::status_events::{self, Outbox, StatusEventSender};
use crate::store::{AgentRecord, StatusChange, Store, StoreError};

/// Control messages (register, heartbeat, shutdown) larger than this are refused.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// How often `last_seen` of agents that only sent heartbeats is written.
pub const SEEN_FLUSH_INTERVAL: Duration = Duration::from_secs(15);

/// Messages handled before the actor writes what they changed.
const MAX_BATCH: usize = 1000;

/// Transitions queued per agent while storage fails; older ones are dropped.
const MAX_QUEUED_TRANSITIONS: usize = 64;

/// Registry timing.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub heartbeat_timeout: Duration,
    pub check_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot load agents from storage: {0}")]
    Load(#[from] StoreError),
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe { subject: String, source: async_nats::SubscribeError },
}

/// Cloneable handle the API (and ingest) use to read and act on the registry.
#[derive(Clone)]
pub struct RegistryHandle {
    agents: Arc<RwLock<HashMap<AgentId, AgentRecord>>>,
    commands: mpsc::Sender<Command>,
}

/// Where the answer to a removal goes.
type RemoveReply = oneshot::Sender<Result<Option<AgentRecord>, StoreError>>;
/// Where the answer to an enrollment goes.
type EnrollReply = oneshot::Sender<Result<(), StoreError>>;

enum Command {
    Remove { id: AgentId, reason: String, reply: RemoveReply },
    Enroll { record: Box<AgentRecord>, change: StatusChange, reply: EnrollReply },
}

impl RegistryHandle {
    /// Marks an agent `removed` (its registrations and events are refused from now
    /// on). `Ok(None)` when the agent is unknown. Removing a removed agent returns
    /// it unchanged.
    pub async fn remove(&self, id: &AgentId, reason: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.ask(|reply| Command::Remove { id: id.clone(), reason: reason.to_owned(), reply }).await
    }

    /// Sends the command made with the reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || StoreError::Database("the registry is stopped".into());
        self.commands.send(cmd(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Adds a newly enrolled agent as `never_connected` with its name and host facts
    /// (stored before this returns). An agent already known is left as it is.
    pub async fn enroll(
        &self,
        id: &AgentId,
        name: &str,
        host: secmon_proto::HostFacts,
        agent_version: &str,
    ) -> Result<(), StoreError> {
        let lifecycle::Transition { mut record, change } =
            lifecycle::enrolled(id.clone(), name.to_owned(), Utc::now());
        record.host = host;
        record.agent_version = agent_version.to_owned();
        let Some(change) = change else { return Ok(()) };
        self.ask(|reply| Command::Enroll { record: Box::new(record), change, reply }).await
    }

    /// The registry's current record of an agent: status and `last_seen` are
    /// fresher than storage (which gets `last_seen` every few seconds); `seq` is
    /// not tracked here (see [`Store::get_agent`]).
    pub fn get(&self, id: &AgentId) -> Option<AgentRecord> {
        self.read().get(id).cloned()
    }

    pub fn status(&self, id: &AgentId) -> Option<AgentStatus> {
        self.read().get(id).map(|a| a.status)
    }

    /// True for agents an operator removed (their events are refused).
    pub fn is_removed(&self, id: &AgentId) -> bool {
        self.status(id) == Some(AgentStatus::Removed)
    }

    /// Agents per status.
    pub fn counts(&self) -> HashMap<AgentStatus, u64> {
        let mut out = HashMap::new();
        for a in self.read().values() {
            *out.entry(a.status).or_insert(0) += 1;
        }
        out
    }

    /// Number of agents known.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<AgentId, AgentRecord>> {
        self.agents.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the registry: loads every agent from `store`, subscribes, and spawns
/// the actor, which runs until `stop` is cancelled (then flushes `last_seen`).
/// `started_at` is the manager's start: silence is measured from it at the
/// earliest, so a restart does not disconnect the fleet. Changes to
/// `disconnected` go to `status_events` as events ([`crate::status_events`]).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    client: Client,
    subjects: Subjects,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    cfg: RegistryConfig,
    started_at: DateTime<Utc>,
    status_events: StatusEventSender,
    stop: CancellationToken,
) -> Result<(RegistryHandle, JoinHandle<()>), RegistryError> {
    let loaded = store.load_agents().await?;
    let agents: HashMap<_, _> = loaded.into_iter().map(|a| (a.id.clone(), a)).collect();
    tracing::info!(agents = agents.len(), "registry loaded");
    let sub = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| RegistryError::Subscribe { subject, source })
        }
    };
    let registers = sub(subjects.all_registers()).await?;
    let heartbeats = sub(subjects.all_heartbeats()).await?;
    let shutdowns = sub(subjects.all_shutdowns()).await?;
    let (tx, commands) = mpsc::channel(64);
    let handle = RegistryHandle { agents: Arc::new(RwLock::new(agents)), commands: tx };
    let mut actor = Actor {
        shared: handle.agents.clone(),
        client,
        subjects,
        store,
        events: Outbox::new(status_events, metrics.clone()),
        metrics,
        cfg,
        started_at,
        queued: HashMap::new(),
        seen_dirty: HashSet::new(),
        replies: Vec::new(),
        reregister: ReregisterAsks::default(),
        removals: Vec::new(),
        enrollments: Vec::new(),
        statuses_changed: true,
        warn: LogLimiter::new(Duration::from_secs(10)),
        store_warn: LogLimiter::new(Duration::from_secs(10)),
    };
    actor.publish_gauges();
    let task = tokio::spawn(async move {
        actor.run(Inputs { registers, heartbeats, shutdowns, commands }, stop).await;
    });
    Ok((handle, task))
}

struct Inputs {
    registers: Subscriber,
    heartbeats: Subscriber,
    shutdowns: Subscriber,
    commands: mpsc::Receiver<Command>,
}

enum Input {
    Register(Message),
    Heartbeat(Message),
    Shutdown(Message),
    Command(Command),
    Check,
    FlushSeen,
    Stop,
}

struct Actor {
    shared: Arc<RwLock<HashMap<AgentId, AgentRecord>>>,
    client: Client,
    subjects: Subjects,
    store: Arc<dyn Store>,
    /// `agent`/`disconnected` events on their way to storage and the rules.
    events: Outbox,
    metrics: Arc<Metrics>,
    cfg: RegistryConfig,
    started_at: DateTime<Utc>,
    /// Agents whose record must be written, with the transitions to store.
    queued: HashMap<AgentId, Vec<StatusChange>>,
    /// Agents whose `last_seen` moved since it was last written.
    seen_dirty: HashSet<AgentId>,
    /// Registration replies to send once the batch is written.
    replies: Vec<(async_nats::Subject, RegisterReply)>,
    /// Unknown agents that sent a heartbeat: asked to register again (a manager whose
    /// database was lost, or a second manager that started late), at most once per
    /// [`REREGISTER_EVERY`] each.
    reregister: ReregisterAsks,
    removals: Vec<(RemoveReply, AgentId)>,
    /// Enrollments answered once the batch is written.
    enrollments: Vec<EnrollReply>,
    statuses_changed: bool,
    warn: LogLimiter,
    store_warn: LogLimiter,
}

impl Actor {
    async fn run(&mut self, mut inputs: Inputs, stop: CancellationToken) {
        let mut check = tokio::time::interval(self.cfg.check_interval);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen = tokio::time::interval(SEEN_FLUSH_INTERVAL);
        seen.set_missed_tick_behavior(MissedTickBehavior::Delay);
        seen.reset(); // the first tick of an interval is immediate; nothing to flush yet
        'outer: loop {
            let mut handled = 0;
            while handled < MAX_BATCH {
                // Wait for the first input of a batch; then take only what is ready.
                let wait = handled == 0;
                let input = tokio::select! {
                    biased;
                    _ = stop.cancelled() => Input::Stop,
                    Some(c) = inputs.commands.recv() => Input::Command(c),
                    _ = check.tick() => Input::Check,
                    _ = seen.tick() => Input::FlushSeen,
                    m = inputs.registers.next() => m.map_or(Input::Stop, Input::Register),
                    m = inputs.shutdowns.next() => m.map_or(Input::Stop, Input::Shutdown),
                    m = inputs.heartbeats.next() => m.map_or(Input::Stop, Input::Heartbeat),
                    _ = std::future::ready(()), if !wait => break,
                };
                match input {
                    Input::Stop => {
                        self.queue_seen();
                        self.flush().await;
                        break 'outer;
                    }
                    Input::Register(m) => self.on_register(m),
                    Input::Heartbeat(m) => self.on_heartbeat(m),
                    Input::Shutdown(m) => self.on_shutdown(m),
                    Input::Command(Command::Remove { id, reason, reply }) => {
                        self.on_remove(id, &reason, reply)
                    }
                    Input::Command(Command::Enroll { record, change, reply }) => {
                        self.on_enroll(*record, change, reply)
                    }
                    Input::Check => self.on_check(),
                    Input::FlushSeen => self.queue_seen(),
                }
                handled += 1;
            }
            self.flush().await;
        }
        tracing::debug!("registry stopped");
    }

    /// Decodes a control message and checks that the agent id in the subject is the
    /// one in the body; counts and logs what it refuses.
    fn decode<T: DeserializeOwned + Versioned>(
        &self,
        m: &Message,
        kind: &str,
        body_id: impl Fn(&T) -> &AgentId,
    ) -> Option<T> {
        let subject_id = match self.subjects.parse_agent_subject(&m.subject) {
            Some((id, _)) => id,
            None => return self.refuse(m, "malformed", &format!("{kind}: bad agent id in subject")),
        };
        let body: T = match secmon_proto::decode(&m.payload, MAX_CONTROL_BYTES) {
            Ok(b) => b,
            Err(e) => return self.refuse(m, e.kind(), &format!("{kind}: {}", clip(e.to_string()))),
        };
        if body_id(&body) != &subject_id {
            return self.refuse(
                m,
                "subject_mismatch",
                &format!("{kind}: body agent_id {} differs", body_id(&body)),
            );
        }
        Some(body)
    }

    fn refuse<T>(&self, m: &Message, reason: &str, detail: &str) -> Option<T> {
        self.metrics.reject_control(reason);
        if let Some(suppressed) = self.warn.allow() {
            tracing::warn!(subject = %m.subject, reason, detail, suppressed, "control message refused");
        }
        None
    }

    fn on_register(&mut self, m: Message) {
        let Some(reg) = self.decode::<Registration>(&m, "registration", |r| &r.agent_id) else { return };
        let now = Utc::now();
        let existing = self.get(&reg.agent_id);
        let reply = match lifecycle::on_registration(existing.as_ref(), &reg, now) {
            Ok(tr) => {
                self.metrics.registrations.inc();
                tracing::info!(agent = %reg.agent_id, name = %reg.name, host = %reg.host.hostname, "agent registered");
                let status = tr.record.status;
                self.apply(tr, true);
                RegisterReply { v: PROTOCOL_VERSION, accepted: true, status, reason: None }
            }
            Err(refusal) => {
                self.refuse::<()>(&m, refusal.as_str(), "registration of a removed agent");
                RegisterReply {
                    v: PROTOCOL_VERSION,
                    accepted: false,
                    status: AgentStatus::Removed,
                    reason: Some("this agent was removed by an operator".into()),
                }
            }
        };
        if let Some(r) = m.reply {
            self.replies.push((r, reply));
        }
    }

    fn on_heartbeat(&mut self, m: Message) {
        let Some(hb) = self.decode::<Heartbeat>(&m, "heartbeat", |h| &h.agent_id) else { return };
        let existing = self.get(&hb.agent_id);
        match lifecycle::on_heartbeat(existing.as_ref(), Utc::now()) {
            Ok(tr) => {
                self.metrics.heartbeats.inc();
                self.apply(tr, false);
            }
            Err(r) => {
                if r == Refusal::UnknownAgent {
                    self.reregister.want(&hb.agent_id, Instant::now());
                }
                self.refused(&m, r)
            }
        }
    }

    fn on_shutdown(&mut self, m: Message) {
        let Some(n) = self.decode::<ShutdownNotice>(&m, "shutdown notice", |n| &n.agent_id) else { return };
        let existing = self.get(&n.agent_id);
        match lifecycle::on_shutdown(existing.as_ref(), &n.reason, Utc::now()) {
            Ok(tr) => {
                tracing::info!(agent = %n.agent_id, reason = %n.reason, "agent shut down");
                self.emit_disconnect(&tr, DisconnectReason::ShutdownNotice);
                self.apply(tr, false);
            }
            Err(r) => self.refused(&m, r),
        }
    }

    fn refused(&self, m: &Message, r: Refusal) {
        let detail = match r {
            Refusal::UnknownAgent => "agent not registered",
            Refusal::Removed => "agent removed",
        };
        self.refuse::<()>(m, r.as_str(), detail);
    }

    fn on_remove(&mut self, id: AgentId, reason: &str, reply: RemoveReply) {
        let Some(existing) = self.get(&id) else {
            let _ = reply.send(Ok(None));
            return;
        };
        let tr = lifecycle::on_removal(&existing, reason, Utc::now());
        tracing::info!(agent = %id, reason, "agent removed");
        self.apply(tr, true);
        self.removals.push((reply, id));
    }

    fn on_enroll(&mut self, record: AgentRecord, change: StatusChange, reply: EnrollReply) {
        if self.get(&record.id).is_some() {
            // Agent ids are generated at enrollment: a clash means nothing to add.
            let _ = reply.send(Ok(()));
            return;
        }
        tracing::info!(agent = %record.id, name = %record.name, "agent enrolled; never connected yet");
        self.apply(Transition { record, change: Some(change) }, true);
        self.enrollments.push(reply);
    }

    fn on_check(&mut self) {
        let now = Utc::now();
        let timed_out: Vec<Transition> = {
            let map = self.shared.read().unwrap_or_else(|e| e.into_inner());
            map.values()
                .filter_map(|a| {
                    lifecycle::on_heartbeat_check(a, now, self.cfg.heartbeat_timeout, self.started_at)
                })
                .collect()
        };
        for tr in timed_out {
            tracing::info!(agent = %tr.record.id, last_seen = ?tr.record.last_seen, "agent heartbeat timeout");
            self.emit_disconnect(&tr, DisconnectReason::HeartbeatTimeout);
            self.apply(tr, false);
        }
    }

    /// Queues the `agent`/`disconnected` event of a transition that changed the
    /// status to disconnected (a notice from a disconnected agent changes nothing).
    fn emit_disconnect(&mut self, tr: &Transition, reason: DisconnectReason) {
        let Some(c) = tr.change.as_ref().filter(|c| c.to == AgentStatus::Disconnected) else { return };
        let env =
            status_events::disconnected_event(c, reason, tr.record.last_seen, self.cfg.heartbeat_timeout);
        self.events.push(env);
    }

    fn get(&self, id: &AgentId) -> Option<AgentRecord> {
        self.shared.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Takes a transition into memory and queues what must be written: always on a
    /// status change or when `write` (new facts), else only `last_seen` moved.
    fn apply(&mut self, tr: Transition, write: bool) {
        let id = tr.record.id.clone();
        self.shared.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), tr.record);
        match tr.change {
            Some(c) => {
                self.statuses_changed = true;
                let q = self.queued.entry(id).or_default();
                if q.len() >= MAX_QUEUED_TRANSITIONS {
                    q.remove(0);
                    self.metrics.status_changes_dropped.inc();
                }
                q.push(c);
            }
            None if write => {
                self.queued.entry(id).or_default();
            }
            None => {
                self.seen_dirty.insert(id);
            }
        }
    }

    fn queue_seen(&mut self) {
        for id in self.seen_dirty.drain() {
            self.queued.entry(id).or_default();
        }
    }

    /// Writes the queued records (as they are in memory now) with their
    /// transitions, then answers the registrations and removals of the batch.
    async fn flush(&mut self) {
        let mut result = Ok(());
        if !self.queued.is_empty() {
            let batch: Vec<(AgentRecord, Vec<StatusChange>)> = {
                let map = self.shared.read().unwrap_or_else(|e| e.into_inner());
                self.queued
                    .iter()
                    .filter_map(|(id, ch)| map.get(id).map(|a| (a.clone(), ch.clone())))
                    .collect()
            };
            result = self.store.save_agents(&batch).await;
            match &result {
                Ok(()) => {
                    for (a, _) in &batch {
                        self.seen_dirty.remove(&a.id);
                    }
                    self.queued.clear();
                }
                Err(e) => {
                    self.metrics.registry_store_errors.inc();
                    if let Some(suppressed) = self.store_warn.allow() {
                        tracing::error!(error = %e, agents = batch.len(), suppressed, "cannot store agent changes; will retry");
                    }
                }
            }
        }
        for (subject, reply) in self.replies.drain(..) {
            let body = serde_json::to_vec(&reply).expect("a RegisterReply always encodes");
            if let Err(e) = self.client.publish(subject, body.into()).await {
                tracing::warn!(error = %e, "cannot send registration reply");
            }
        }
        for id in self.reregister.take() {
            let req = CommandRequest {
                v: PROTOCOL_VERSION,
                id: uuid::Uuid::now_v7(),
                command: "register".into(),
                args: serde_json::json!({}),
                issued_at: Utc::now(),
            };
            let body = serde_json::to_vec(&req).expect("a CommandRequest always encodes");
            // No reply subject: the agent answers by registering.
            if let Err(e) = self.client.publish(self.subjects.command(&id), body.into()).await {
                tracing::warn!(error = %e, agent = %id, "cannot ask an unknown agent to register");
            }
        }
        for (reply, id) in self.removals.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(self.shared.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()),
                Err(e) => Err(StoreError::Database(e.to_string())),
            };
            let _ = reply.send(answer);
        }
        for reply in self.enrollments.drain(..) {
            let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| StoreError::Database(e.to_string())));
        }
        if std::mem::take(&mut self.statuses_changed) {
            self.publish_gauges();
        }
        self.events.offer();
    }

    fn publish_gauges(&self) {
        let mut counts: HashMap<AgentStatus, i64> = AgentStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for a in self.shared.read().unwrap_or_else(|e| e.into_inner()).values() {
            *counts.entry(a.status).or_insert(0) += 1;
        }
        for (status, n) in counts {
            self.metrics
                .agents_by_status
                .get_or_create(&StatusLabel { status: status.as_str().into() })
                .set(n);
        }
    }
}

/// How often one unknown agent is asked to register again.
const REREGISTER_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Bound on remembered asks, so spoofed heartbeats with random ids cannot grow it.
const REREGISTER_MAX: usize = 10_000;

/// Rate-limited "please register" asks for unknown agents.
#[derive(Default)]
struct ReregisterAsks {
    asked: HashMap<AgentId, Instant>,
    pending: Vec<AgentId>,
}

impl ReregisterAsks {
    fn want(&mut self, id: &AgentId, now: Instant) {
        if self.asked.get(id).is_some_and(|t| now.duration_since(*t) < REREGISTER_EVERY) {
            return;
        }
        if self.asked.len() >= REREGISTER_MAX {
            self.asked.retain(|_, t| now.duration_since(*t) < REREGISTER_EVERY);
            if self.asked.len() >= REREGISTER_MAX {
                return;
            }
        }
        self.asked.insert(id.clone(), now);
        self.pending.push(id.clone());
    }

    fn take(&mut self) -> Vec<AgentId> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod reregister_tests {
    use super::*;

    #[test]
    fn asks_once_per_interval_and_stays_bounded() {
        let mut a = ReregisterAsks::default();
        let t0 = Instant::now();
        let id = AgentId::new("a1").unwrap();
        a.want(&id, t0);
        a.want(&id, t0 + std::time::Duration::from_secs(1));
        assert_eq!(a.take(), vec![id.clone()]);
        a.want(&id, t0 + REREGISTER_EVERY);
        assert_eq!(a.take(), vec![id]);
        for i in 0..REREGISTER_MAX + 50 {
            a.want(&AgentId::new(format!("x{i}")).unwrap(), t0);
        }
        assert!(a.asked.len() <= REREGISTER_MAX && a.take().len() <= REREGISTER_MAX);
    }
}
