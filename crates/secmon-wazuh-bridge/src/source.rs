//! One Wazuh manager node: wake on a file notification, a `data_version` check or
//! the poll tick; read the agent table; diff; hand the signed events to the
//! publisher; persist the snapshot once NATS has acknowledged everything derived
//! from it.
//!
//! Invariants:
//! - The persisted snapshot never runs ahead of what NATS acknowledged, so a crash
//!   or restart re-derives (with the same event ids, deduplicated by JetStream)
//!   whatever was not yet published, and nothing else.
//! - The database is only touched on a blocking thread, read-only, one short read
//!   transaction per cycle, behind a breaker.
//! - When the publish queue is more than half full, cycles wait (counted): the
//!   changes stay in the database and are published later as the net change.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::{Breaker, BreakerState};
use crate::config::{BridgeConfig, SourceConfig};
use crate::db::{DbError, WazuhDb};
use crate::diff::{Detected, DiffOutcome, Differ, build_event};
use crate::flapping::{FlapDecision, FlapDetector};
use crate::metrics::{Metrics, NodeKindLabels, NodeStatusLabels};
use crate::model::{AgentEvent, Batch, EventKind, FlappingInfo, SCHEMA_VERSION, Snapshot, Status, Summary};
use crate::outgoing::Outgoing;
use crate::publish::Publisher;
use crate::snapshot_store::SnapshotStore;
use crate::wire::Encoder;

/// What the heartbeat and `/health` report about a source.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    pub manager_node: String,
    pub db_path: String,
    pub schema: String,
    pub poll_interval: Duration,
    pub last_poll: Option<String>,
    pub last_poll_ok: Option<Instant>,
    pub last_poll_duration_ms: Option<f64>,
    pub db_breaker: BreakerState,
    pub agents: Summary,
    pub deferred_cycles: u64,
    pub last_error: Option<String>,
}

impl SourceStatus {
    fn new(cfg: &SourceConfig) -> Self {
        Self {
            manager_node: cfg.manager_node.clone(),
            db_path: cfg.db_path.display().to_string(),
            schema: "unknown".into(),
            poll_interval: cfg.poll_interval,
            last_poll: None,
            last_poll_ok: None,
            last_poll_duration_ms: None,
            db_breaker: BreakerState::Closed,
            agents: Summary::default(),
            deferred_cycles: 0,
            last_error: None,
        }
    }

    /// Healthy: breaker closed and a successful read within three poll intervals.
    pub fn healthy(&self) -> bool {
        self.db_breaker == BreakerState::Closed
            && self
                .last_poll_ok
                .is_some_and(|t| t.elapsed() < self.poll_interval * 3 + Duration::from_secs(1))
    }
}

pub type SharedStatus = Arc<Mutex<SourceStatus>>;

pub struct Source {
    pub cfg: SourceConfig,
    pub bridge: Arc<BridgeConfig>,
    pub publisher: Publisher,
    pub encoder: Arc<Encoder>,
    pub metrics: Arc<Metrics>,
    pub status: SharedStatus,
}

/// Why a cycle runs: a poll reads even when `data_version` looks unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Poll,
    Check,
}

/// Events waiting for their acks before the snapshot they came from may be saved.
struct PendingSave {
    /// Sequence number of the last message enqueued for this snapshot.
    seq: u64,
    had_events: bool,
}

impl Source {
    pub fn new(
        cfg: SourceConfig,
        bridge: Arc<BridgeConfig>,
        publisher: Publisher,
        encoder: Arc<Encoder>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let status = Arc::new(Mutex::new(SourceStatus::new(&cfg)));
        Self { cfg, bridge, publisher, encoder, metrics, status }
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Runs until `stop`; then waits (up to the drain timeout) for what it enqueued
    /// to be acknowledged and saves the snapshot.
    pub async fn run(self, stop: CancellationToken) {
        let node = self.cfg.manager_node.clone();
        let store = match SnapshotStore::new(&self.bridge.state.dir, &node) {
            Ok(s) => s.with_db_path(&self.cfg.db_path),
            Err(e) => {
                tracing::error!(manager_node = %node, error = %e, "cannot keep a snapshot for this source: not started");
                return;
            }
        };
        let (mut snapshot, mut first_run) = match store.load() {
            Ok(Some(s)) => {
                tracing::info!(manager_node = %node, agents = s.len(), "loaded the last published snapshot");
                (s, false)
            }
            Ok(None) => (Snapshot::default(), true),
            Err(e) => {
                tracing::error!(manager_node = %node, error = %e, "snapshot unreadable: starting from a fresh baseline");
                (Snapshot::default(), true)
            }
        };
        let wake = Arc::new(Notify::new());
        let _watch = if self.cfg.notify {
            let m = self.metrics.clone();
            let label = Metrics::node(&node);
            match crate::watch::spawn(&self.cfg.db_path, wake.clone(), move || {
                m.notifications.get_or_create(&label).inc();
            }) {
                Ok(h) => Some(AbortOnDrop(h)),
                Err(e) => {
                    tracing::warn!(manager_node = %node, error = %e, "no file notifications; relying on checks and polls");
                    None
                }
            }
        } else {
            None
        };
        let breaker = Breaker::new(3, self.cfg.poll_interval.max(Duration::from_secs(2)));
        let mut db: Option<WazuhDb> = None;
        let mut last_version: Option<i64> = None;
        let mut flap = FlapDetector::new(self.bridge.flapping.threshold, self.bridge.flapping.window);
        let mut pending: VecDeque<PendingSave> = VecDeque::new();
        let mut dirty_since_save = false;
        let mut last_save = Instant::now();
        let mut acked = self.publisher.acked();
        let mut poll = tokio::time::interval(self.cfg.poll_interval);
        let mut check = tokio::time::interval(self.cfg.check_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => break,
                _ = poll.tick() => Wake::Poll,
                _ = check.tick() => Wake::Check,
                _ = wake.notified() => Wake::Check,
                _ = acked.changed() => {
                    self.maybe_save(&store, &snapshot, &mut pending, &mut dirty_since_save, &mut last_save, *acked.borrow_and_update());
                    continue;
                }
            };
            let span = crate::logging::cycle_span(&node, &crate::logging::new_cycle_id());
            let outcome = self
                .cycle(why, &breaker, &mut db, &mut last_version, &mut snapshot, &mut first_run, &mut flap)
                .instrument(span.clone())
                .await;
            if let Some((seq, had_events, changed)) = outcome {
                if changed {
                    dirty_since_save = true;
                }
                if let Some(seq) = seq {
                    pending.push_back(PendingSave { seq, had_events });
                }
            }
            let a = *acked.borrow_and_update();
            span.in_scope(|| {
                self.maybe_save(&store, &snapshot, &mut pending, &mut dirty_since_save, &mut last_save, a)
            });
        }
        // Drain: what this source enqueued should be acknowledged before saving.
        let deadline = Instant::now() + self.bridge.publish.drain_timeout;
        let want = pending.back().map(|p| p.seq).unwrap_or(0);
        while *acked.borrow() < want && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), acked.changed()).await;
        }
        let a = *acked.borrow();
        last_save = Instant::now() - Duration::from_secs(3600);
        self.maybe_save(&store, &snapshot, &mut pending, &mut dirty_since_save, &mut last_save, a);
        if !pending.is_empty() {
            tracing::warn!(manager_node = %node, "stopped with unacknowledged events: they are derived again at the next start");
        }
    }

    /// Saves the snapshot when everything derived from it is acknowledged: at once
    /// after cycles with events, at most once a minute for keepalive-only changes.
    fn maybe_save(
        &self,
        store: &SnapshotStore,
        snapshot: &Snapshot,
        pending: &mut VecDeque<PendingSave>,
        dirty: &mut bool,
        last_save: &mut Instant,
        acked: u64,
    ) {
        let mut events_acked = false;
        while pending.front().is_some_and(|p| p.seq <= acked) {
            events_acked |= pending.pop_front().is_some_and(|p| p.had_events);
        }
        if !pending.is_empty() || !*dirty {
            return;
        }
        if !events_acked && last_save.elapsed() < Duration::from_secs(60) {
            return;
        }
        let started = Instant::now();
        match tokio::task::block_in_place(|| store.save(snapshot)) {
            Ok(()) => {
                *dirty = false;
                *last_save = Instant::now();
                tracing::debug!(
                    agents = snapshot.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot saved"
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot save the snapshot (kept in memory, retried)"),
        }
    }

    /// One cycle. Returns (last enqueued seq, whether events were enqueued,
    /// whether the snapshot changed), or `None` when nothing was read.
    #[allow(clippy::too_many_arguments)]
    async fn cycle(
        &self,
        why: Wake,
        breaker: &Breaker,
        db: &mut Option<WazuhDb>,
        last_version: &mut Option<i64>,
        snapshot: &mut Snapshot,
        first_run: &mut bool,
        flap: &mut FlapDetector,
    ) -> Option<(Option<u64>, bool, bool)> {
        let node = &self.cfg.manager_node;
        let label = Metrics::node(node);
        let now = Instant::now();
        let mut out: Vec<Outgoing> = Vec::new();
        let mut events: Vec<AgentEvent> = Vec::new();
        // Flapping agents that went quiet: one summary each.
        for ended in flap.tick(now) {
            if let Some(a) = snapshot.get(ended.agent_id) {
                let d = Detected {
                    kind: EventKind::FlappingEnded,
                    previous: None,
                    current: Some(a.clone()),
                    changes: vec![],
                };
                let info = FlappingInfo {
                    transitions: ended.transitions,
                    window_secs: self.bridge.flapping.window.as_secs(),
                    suppressed: ended.suppressed,
                };
                let ts = crate::model::now_rfc3339();
                self.push_event(
                    build_event(&d, EventKind::FlappingEnded, node, &ts, Some(info)),
                    None,
                    &mut out,
                    &mut events,
                );
            }
        }
        let stats = self.publisher.stats();
        if stats.queue_len * 2 > stats.capacity {
            self.metrics.queue_overflow.inc();
            self.status.lock().unwrap_or_else(|e| e.into_inner()).deferred_cycles += 1;
            tracing::warn!(queue_len = stats.queue_len, "publish queue over half full: cycle deferred");
            return self.enqueue(out, events, snapshot, false).await;
        }
        if !breaker.allow() {
            self.set_breaker(breaker);
            return self.enqueue(out, events, snapshot, false).await;
        }
        let started = Instant::now();
        let path = self.cfg.db_path.clone();
        let busy = self.cfg.busy_timeout;
        let metrics = self.metrics.clone();
        let taken_db = db.take();
        let prev = std::mem::take(snapshot);
        let prev_version = *last_version;
        let force = why == Wake::Poll;
        let res = tokio::task::spawn_blocking(move || {
            read_blocking(taken_db, &path, busy, &metrics, prev, prev_version, force)
        })
        .await;
        let Blocking { db: kept, result: res, prev } = match res {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "database task failed");
                breaker.failure();
                self.set_breaker(breaker);
                return None;
            }
        };
        *db = kept;
        match res {
            Err(e) => {
                *snapshot = prev;
                breaker.failure();
                self.metrics.poll_errors.get_or_create(&label).inc();
                tracing::warn!(error = %e, "cannot read the agent table (retried)");
                self.status.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
                self.set_breaker(breaker);
                self.enqueue(out, events, snapshot, false).await
            }
            Ok(None) => {
                *snapshot = prev;
                breaker.success();
                self.set_breaker(breaker);
                self.metrics.polls_unchanged.get_or_create(&label).inc();
                if out.is_empty() { None } else { self.enqueue(out, events, snapshot, false).await }
            }
            Ok(Some((outcome, version))) => {
                let schema = db.as_ref().map(|d| d.flavor().as_str()).unwrap_or("unknown").to_owned();
                *last_version = Some(version);
                breaker.success();
                let elapsed = started.elapsed();
                self.metrics.polls.get_or_create(&label).inc();
                self.metrics.poll_duration_seconds.get_or_create(&label).observe(elapsed.as_secs_f64());
                drop(prev);
                let DiffOutcome { snapshot: new_snapshot, detected, snapshot_changed } = outcome;
                *snapshot = new_snapshot;
                let ts = crate::model::now_rfc3339();
                if *first_run && !self.bridge.publish.announce_initial {
                    tracing::info!(agents = snapshot.len(), "first run: baseline taken, nothing announced");
                } else {
                    for d in &detected {
                        self.metrics
                            .changes
                            .get_or_create(&NodeKindLabels {
                                manager_node: node.clone(),
                                kind: d.kind.as_str().into(),
                            })
                            .inc();
                        self.detected_to_events(d, flap, now, &ts, &mut out, &mut events);
                    }
                }
                let changed = snapshot_changed || *first_run;
                *first_run = false;
                let summary = snapshot.summary(events.len() as u64);
                for (s, n) in summary.by_status() {
                    self.metrics
                        .agents
                        .get_or_create(&NodeStatusLabels {
                            manager_node: node.clone(),
                            status: s.as_str().into(),
                        })
                        .set(n as i64);
                }
                {
                    let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    st.schema = schema;
                    st.last_poll = Some(ts.clone());
                    st.last_poll_ok = Some(Instant::now());
                    st.last_poll_duration_ms = Some(elapsed.as_secs_f64() * 1000.0);
                    st.agents = summary;
                    st.last_error = None;
                }
                self.set_breaker(breaker);
                if !events.is_empty() {
                    tracing::info!(
                        changes = detected.len(),
                        agents = snapshot.len(),
                        ms = elapsed.as_millis() as u64,
                        "changes detected"
                    );
                }
                self.enqueue(out, events, snapshot, changed).await
            }
        }
    }

    fn set_breaker(&self, breaker: &Breaker) {
        let state = breaker.state();
        self.metrics
            .db_breaker_state
            .get_or_create(&Metrics::node(&self.cfg.manager_node))
            .set(state.as_gauge());
        self.status.lock().unwrap_or_else(|e| e.into_inner()).db_breaker = state;
    }

    /// Events for one detected change, through the flapping filter.
    fn detected_to_events(
        &self,
        d: &Detected,
        flap: &mut FlapDetector,
        now: Instant,
        ts: &str,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<AgentEvent>,
    ) {
        let node = &self.cfg.manager_node;
        let mut kind = d.kind;
        let mut info = None;
        if d.kind == EventKind::Removed {
            flap.forget(d.id());
        } else if d.is_status_change() && self.bridge.flapping.enabled {
            match flap.observe(d.id(), now) {
                FlapDecision::Publish => {}
                FlapDecision::StartFlapping { transitions } => {
                    kind = EventKind::Flapping;
                    info = Some(FlappingInfo {
                        transitions,
                        window_secs: self.bridge.flapping.window.as_secs(),
                        suppressed: 0,
                    });
                }
                FlapDecision::Suppress => {
                    self.metrics.flapping_suppressed.inc();
                    // Other fields that changed with the suppressed transition
                    // are still news.
                    let rest: Vec<_> = d.changes.iter().filter(|c| c.field != "status").cloned().collect();
                    if rest.is_empty() {
                        return;
                    }
                    let upd = Detected { kind: EventKind::Updated, changes: rest, ..d.clone() };
                    let ev = build_event(&upd, EventKind::Updated, node, ts, None);
                    self.push_event(ev, Some(now), out, events);
                    return;
                }
            }
        }
        let ev = build_event(d, kind, node, ts, info);
        self.push_event(ev, Some(now), out, events);
    }

    /// Signs and encodes an event; queues it on `.status` and, for a transition to
    /// active / disconnected, on `.connected` / `.disconnected`.
    fn push_event(
        &self,
        mut ev: AgentEvent,
        seen_at: Option<Instant>,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<AgentEvent>,
    ) {
        let prefix = &self.bridge.nats.subject_prefix;
        let enc = self.encoder.encode_event(&mut ev);
        let base = format!("{prefix}.agent.{}", ev.agent_id);
        out.push(Outgoing {
            subject: format!("{base}.status"),
            payload: enc.payload.clone(),
            headers: enc.headers.clone(),
            msg_id: ev.event_id.clone(),
            kind: "status",
            seen_at,
        });
        let transition = matches!(ev.kind, EventKind::StatusChange | EventKind::Registered);
        let extra = match ev.current_status {
            Status::Active if transition && ev.previous_status != Some(Status::Active) => Some("connected"),
            Status::Disconnected if transition && ev.previous_status != Some(Status::Disconnected) => {
                Some("disconnected")
            }
            _ => None,
        };
        if let Some(x) = extra {
            out.push(Outgoing {
                subject: format!("{base}.{x}"),
                payload: enc.payload,
                headers: enc.headers,
                msg_id: format!("{}.{x}", ev.event_id),
                kind: x,
                seen_at,
            });
        }
        events.push(ev);
    }

    /// Adds the cycle's batches and enqueues everything, waiting while the queue is
    /// full (nothing is dropped; the source simply stops reading meanwhile).
    async fn enqueue(
        &self,
        mut out: Vec<Outgoing>,
        events: Vec<AgentEvent>,
        snapshot: &Snapshot,
        changed: bool,
    ) -> Option<(Option<u64>, bool, bool)> {
        let had_events = !events.is_empty();
        if self.bridge.publish.batches && had_events {
            let node = &self.cfg.manager_node;
            let total = events.len() as u64;
            // One pass over the snapshot for every batch of the cycle.
            let summary = snapshot.summary(total);
            for chunk in events.chunks(self.bridge.publish.batch_max_events) {
                let mut h = Sha256::new();
                for e in chunk {
                    h.update(e.event_id.as_bytes());
                    h.update([0]);
                }
                let digest = hex::encode(h.finalize());
                let mut b = Batch {
                    schema_version: SCHEMA_VERSION,
                    batch_id: format!("batch_{node}_{}", &digest[..16]),
                    manager_node: node.clone(),
                    timestamp: crate::model::now_rfc3339(),
                    events: chunk.to_vec(),
                    summary: summary.clone(),
                    signature: None,
                };
                let enc = self.encoder.encode_batch(&mut b);
                out.push(Outgoing {
                    subject: format!("{}.security.agent_events", self.bridge.nats.subject_prefix),
                    payload: enc.payload,
                    headers: enc.headers,
                    msg_id: b.batch_id,
                    kind: "batch",
                    seen_at: Some(Instant::now()),
                });
            }
        }
        if out.is_empty() {
            return Some((None, false, changed));
        }
        let seq = enqueue_wait(&self.publisher, out).await;
        Some((Some(seq), had_events, changed))
    }
}

/// Enqueues in order, waiting for room; a set larger than the queue goes in pieces.
pub async fn enqueue_wait(publisher: &Publisher, items: Vec<Outgoing>) -> u64 {
    let cap = publisher.stats().capacity.max(2);
    let piece = (cap / 2).max(1);
    let mut acked = publisher.acked();
    let mut last = 0;
    let mut rest: VecDeque<Outgoing> = items.into();
    while !rest.is_empty() {
        let n = rest.len().min(piece);
        let chunk: Vec<Outgoing> = rest.drain(..n).collect();
        loop {
            // Room only frees when NATS acknowledges: wait for that instead of
            // retrying (each refused try counts as a queue overflow).
            let st = publisher.stats();
            if st.capacity - st.queue_len.min(st.capacity) < chunk.len() {
                let _ = tokio::time::timeout(Duration::from_millis(500), acked.changed()).await;
                continue;
            }
            match publisher.try_enqueue(chunk.clone()) {
                Ok(seq) => {
                    last = seq;
                    break;
                }
                // A heartbeat took the room meanwhile.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    last
}

/// What the blocking part of a cycle hands back: the connection (when still
/// usable), the outcome, and the previous snapshot unless the diff consumed it.
struct Blocking {
    db: Option<WazuhDb>,
    result: Result<Option<(DiffOutcome, i64)>, Box<DbError>>,
    prev: Snapshot,
}

/// Reads the agent table and diffs it against `prev`; rows stream into the merge,
/// so a cycle never holds every row as a full record. On a failed read, `prev`
/// comes back.
pub fn read_and_diff(
    db: &WazuhDb,
    metrics: &Metrics,
    prev: Snapshot,
) -> Result<DiffOutcome, Box<(DbError, Snapshot)>> {
    let expected = prev.len();
    let mut differ = Differ::new(prev, expected);
    match db.visit_agents(metrics, |r| {
        differ.push(r);
    }) {
        Ok(_) => Ok(differ.finish()),
        Err(e) => Err(Box::new((e, differ.abort()))),
    }
}

/// Opens (or reuses) the connection, checks `data_version`, and reads + diffs when
/// it moved (or on a poll). Runs on a blocking thread.
fn read_blocking(
    db: Option<WazuhDb>,
    path: &std::path::Path,
    busy: Duration,
    metrics: &Metrics,
    prev: Snapshot,
    prev_version: Option<i64>,
    force: bool,
) -> Blocking {
    let fail = |db, e, prev| Blocking { db, result: Err(Box::new(e)), prev };
    let mut d = match db {
        Some(d) => d,
        None => match WazuhDb::open(path, busy) {
            Ok(d) => d,
            Err(e) => return fail(None, e, prev),
        },
    };
    if let Err(e) = d.reopen_if_replaced() {
        return fail(None, e, prev);
    }
    let v = match d.data_version() {
        Ok(v) => v,
        Err(e) => return fail(None, e, prev),
    };
    if !force && prev_version == Some(v) {
        return Blocking { db: Some(d), result: Ok(None), prev };
    }
    let result = read_and_diff(&d, metrics, prev);
    // Give the read's freed memory back to the system now rather than at some later
    // allocation (see `tune_malloc` in main.rs).
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
    match result {
        Ok(outcome) => Blocking { db: Some(d), result: Ok(Some((outcome, v))), prev: Snapshot::default() },
        Err(b) => {
            let (e, prev) = *b;
            fail(Some(d), e, prev)
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
