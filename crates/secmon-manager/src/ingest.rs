//! Event ingest: a durable JetStream pull consumer into storage.
//!
//! Managers using the same consumer name share it, so each event goes to one of
//! them. A pipeline of three tasks joined by bounded channels: the fetcher pulls
//! (two batches per request, short expiry); the checker decodes and checks each
//! message (size, version, shape, subject, removed agent, in secure mode the
//! signature against the enrolled key, sequence); the committer
//! stores a batch in one transaction together with the agents' sequence state and
//! only then acknowledges it, after handing its newly stored events to rule
//! evaluation ([`crate::detection`]). The file state updates of `file` events (see
//! [`crate::file_state`]) go into that same transaction. A crash before the ack means a redelivery, which
//! storage ignores by event id and sequence tracking counts as a duplicate. A
//! message that can never be stored is terminated, so it does not come back forever.
//!
//! On stop, the pull request in flight is finished (at most [`PULL_EXPIRY`]) and
//! what it delivered is stored and acknowledged, so no event waits for `ack_wait`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use futures::StreamExt;
use secmon_proto::{AgentId, AgentSubject, EVENTS_STREAM, Envelope, Subjects};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::alerts::{AlertDraft, AlertsHandle};
use crate::detection::evaluate::EvalSender;
use crate::file_state;
use crate::log_limit::{LogLimiter, clip};
use crate::metrics::Metrics;
use crate::registry::RegistryHandle;
use crate::security::enroll::SignatureVerifier;
use crate::seq::{self, SeqOutcome};
use crate::store::{FileUpdate, SeqState, Store, StoredEvent};

/// How long one pull request waits for events; also the longest a stop waits.
pub const PULL_EXPIRY: Duration = Duration::from_millis(500);

/// How long the server waits for an ack before redelivering (to any manager).
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How often the consumer lag gauges are refreshed.
pub const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// Ingest settings (from `[ingest]`).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub consumer: String,
    pub batch_size: usize,
    pub max_event_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot find JetStream stream {EVENTS_STREAM}: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
    #[error("cannot create or open the durable consumer {name} on {EVENTS_STREAM}: {source}")]
    Consumer { name: String, source: jetstream::stream::ConsumerError },
    #[error("cannot load sequence state: {0}")]
    Load(#[from] crate::store::StoreError),
}

/// Everything ingest works with.
pub struct IngestContext {
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub store: Arc<dyn Store>,
    pub registry: RegistryHandle,
    pub metrics: Arc<Metrics>,
    pub settings: IngestSettings,
    /// Where newly stored events go for rule evaluation ([`crate::detection`]).
    pub evaluate: EvalSender,
    /// Secure mode with `require_signatures`: every event must carry a valid
    /// signature by its agent's enrolled key.
    pub signatures: Option<SignatureCheck>,
}

/// Rule id and title of the alert raised for events with a missing, forged or
/// unknown signature.
pub const SPOOFING_RULE_ID: &str = "secmon-spoofing-attempt";
pub const SPOOFING_TITLE: &str = "spoofing attempt";

/// Signature verification and where its alerts go.
#[derive(Clone)]
pub struct SignatureCheck {
    pub verifier: SignatureVerifier,
    pub alerts: AlertsHandle,
}

/// The running ingest loop and lag monitor.
pub struct IngestTasks {
    pub ingest: JoinHandle<()>,
    pub lag: JoinHandle<()>,
}

fn consumer_config(s: &IngestSettings, subjects: &Subjects) -> pull::Config {
    pull::Config {
        durable_name: Some(s.consumer.clone()),
        description: Some("secmon manager ingest".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        filter_subject: subjects.all_events(),
        // What the pipeline holds (a pull, a checked batch, a batch being stored) with
        // room to spare; bounds what is redelivered after a crash.
        max_ack_pending: i64::try_from(s.batch_size * 8).unwrap_or(i64::MAX),
        max_batch: 0,
        ..Default::default()
    }
}

/// Creates (or updates) the durable consumer and starts ingest and the lag
/// monitor, which run until `stop` is cancelled.
pub async fn start(ctx: IngestContext, stop: CancellationToken) -> Result<IngestTasks, IngestError> {
    let stream = ctx.js.get_stream(EVENTS_STREAM).await?;
    let config = consumer_config(&ctx.settings, &ctx.subjects);
    let consumer = ensure_consumer(&stream, &config).await?;
    let seq: HashMap<AgentId, SeqState> = ctx.store.load_seq_states().await?.into_iter().collect();
    tracing::info!(consumer = %ctx.settings.consumer, agents = seq.len(), "ingest starting");

    let lag = tokio::spawn(lag_monitor(
        stream.clone(),
        ctx.settings.consumer.clone(),
        ctx.metrics.clone(),
        stop.clone(),
    ));
    let fetcher = Fetcher {
        stream,
        config,
        consumer,
        pull: ctx.settings.batch_size * 2,
        warn: LogLimiter::new(Duration::from_secs(10)),
    };
    let ingest = tokio::spawn(run(ctx, fetcher, seq, stop));
    Ok(IngestTasks { ingest, lag })
}

async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    config: &pull::Config,
) -> Result<PullConsumer, IngestError> {
    let name = config.durable_name.clone().unwrap_or_default();
    match stream.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        // An existing consumer with settings that cannot change in place: use it.
        Err(create) => match stream.get_consumer::<pull::Config>(&name).await {
            Ok(c) => {
                tracing::warn!(consumer = %name, error = %create, "using the existing consumer as it is");
                Ok(c)
            }
            Err(_) => Err(IngestError::Consumer { name, source: create }),
        },
    }
}

async fn lag_monitor(
    stream: jetstream::stream::Stream,
    name: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(LAG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = update_lag(&stream, &name, &metrics).await {
            tracing::debug!(error = %e, "cannot read consumer info");
        }
    }
}

/// Sets the consumer lag gauges from the server's consumer info.
pub async fn update_lag(
    stream: &jetstream::stream::Stream,
    consumer: &str,
    metrics: &Metrics,
) -> Result<(), jetstream::context::ConsumerInfoError> {
    let info = stream.consumer_info(consumer).await?;
    metrics.consumer_pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
    metrics.consumer_ack_pending.set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
    Ok(())
}

/// Pulls from the consumer and hands messages on, one pull request at a time, so
/// that on stop the request in flight is finished rather than abandoned.
struct Fetcher {
    stream: jetstream::stream::Stream,
    config: pull::Config,
    consumer: PullConsumer,
    pull: usize,
    warn: LogLimiter,
}

impl Fetcher {
    async fn run(mut self, tx: mpsc::Sender<jetstream::Message>, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let batch =
                match self.consumer.batch().max_messages(self.pull).expires(PULL_EXPIRY).messages().await {
                    Ok(b) => {
                        failures = 0;
                        b
                    }
                    Err(e) => {
                        failures += 1;
                        if let Some(suppressed) = self.warn.allow() {
                            tracing::warn!(error = %e, suppressed, "cannot pull events; retrying");
                        }
                        let delay = Duration::from_millis(100 * 2u64.pow(failures.min(6)))
                            .min(Duration::from_secs(5));
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        if failures.is_multiple_of(5) {
                            // The consumer may be gone (stream recreated): bring it back.
                            if let Ok(c) = ensure_consumer(&self.stream, &self.config).await {
                                self.consumer = c;
                            }
                        }
                        continue;
                    }
                };
            futures::pin_mut!(batch);
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "pull request ended"),
                }
            }
        }
    }
}

/// A checked batch on its way to storage.
struct Prepared {
    msgs: Vec<jetstream::Message>,
    verdicts: Vec<Verdict>,
    events: Vec<StoredEvent>,
    seq_states: Vec<(AgentId, SeqState)>,
    files: Vec<FileUpdate>,
    redelivered_replays: u64,
}

/// What to do with one message once the batch is committed.
enum Verdict {
    /// Stored (or a known duplicate): ack.
    Ack,
    /// Never storable: terminate so it is not redelivered.
    Term,
}

/// Decodes and checks messages and tracks sequences.
struct Checker {
    subjects: Subjects,
    registry: RegistryHandle,
    metrics: Arc<Metrics>,
    max_event_bytes: usize,
    /// Sequence state of every agent seen: as committed, plus the batches on their
    /// way (commits are retried until they succeed, so the two cannot diverge).
    seq: HashMap<AgentId, SeqState>,
    /// Ids of the last few batches, which may still be on their way to storage, so
    /// a redelivered event is told from a replay without waiting for the commit.
    recent: VecDeque<HashSet<Uuid>>,
    store: Arc<dyn Store>,
    warn: LogLimiter,
    /// For file events that are stored but cannot update the file state.
    file_warn: LogLimiter,
    signatures: Option<SignatureCheck>,
    /// For events rejected for their signature.
    sig_warn: LogLimiter,
}

/// Batches whose ids [`Checker::recent`] keeps: the one being checked, the one in
/// the channel and the one being committed, plus one spare.
const RECENT_BATCHES: usize = 4;

/// Stores batches, then acknowledges them.
struct Committer {
    store: Arc<dyn Store>,
    evaluate: EvalSender,
    metrics: Arc<Metrics>,
    warn: LogLimiter,
}

/// The pipeline: fetch -> check -> commit and ack, three tasks joined by bounded
/// channels, so decoding the next batch overlaps with storing the last one. On
/// stop, each stage finishes what the previous one handed over and exits.
async fn run(ctx: IngestContext, fetcher: Fetcher, seq: HashMap<AgentId, SeqState>, stop: CancellationToken) {
    let batch_size = ctx.settings.batch_size;
    let (msg_tx, mut msg_rx) = mpsc::channel::<jetstream::Message>(batch_size * 2);
    let (batch_tx, mut batch_rx) = mpsc::channel::<Prepared>(1);
    let fetch = tokio::spawn(fetcher.run(msg_tx, stop.clone()));
    let committer = Committer {
        store: ctx.store.clone(),
        evaluate: ctx.evaluate,
        metrics: ctx.metrics.clone(),
        warn: LogLimiter::new(Duration::from_secs(10)),
    };
    let commit_stop = stop.clone();
    let commit = tokio::spawn(async move {
        while let Some(p) = batch_rx.recv().await {
            committer.commit(p, &commit_stop).await;
        }
    });
    let mut checker = Checker {
        subjects: ctx.subjects,
        registry: ctx.registry,
        metrics: ctx.metrics,
        max_event_bytes: ctx.settings.max_event_bytes,
        seq,
        recent: VecDeque::with_capacity(RECENT_BATCHES),
        store: ctx.store.clone(),
        warn: LogLimiter::new(Duration::from_secs(10)),
        file_warn: LogLimiter::new(Duration::from_secs(10)),
        signatures: ctx.signatures,
        sig_warn: LogLimiter::new(Duration::from_secs(10)),
    };
    while let Some(first) = msg_rx.recv().await {
        let mut msgs = Vec::with_capacity(batch_size);
        msgs.push(first);
        while msgs.len() < batch_size {
            match msg_rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        if batch_tx.send(checker.prepare(msgs).await).await.is_err() {
            break;
        }
    }
    drop(batch_tx);
    for (name, task) in [("fetch", fetch), ("commit", commit)] {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "ingest task failed");
        }
    }
    tracing::debug!("ingest stopped");
}

impl Checker {
    async fn prepare(&mut self, msgs: Vec<jetstream::Message>) -> Prepared {
        let received = Utc::now();
        let mut events = Vec::with_capacity(msgs.len());
        let mut verdicts = Vec::with_capacity(msgs.len());
        let mut files = Vec::new();
        let mut touched: HashSet<AgentId> = HashSet::new();
        let mut batch_ids = HashSet::with_capacity(msgs.len());
        // Events whose sequence number was seen already: a replay, or the same event
        // delivered again (a lost ack, or consumer state a crashed server forgot).
        let mut seen_seq = Vec::new();
        // Events refused for their signature, by claimed agent: (event ids, reasons).
        let mut spoofed: HashMap<AgentId, (Vec<Uuid>, Vec<&'static str>)> = HashMap::new();
        let checked: Vec<Result<Envelope, &'static str>> = msgs.iter().map(|m| self.check(m)).collect();
        let signatures = self.verify_signatures(&msgs, &checked).await;
        for ((m, checked), signature) in msgs.iter().zip(checked).zip(signatures) {
            match checked {
                Ok(env) => {
                    // Before sequence tracking: a forged event must not move an
                    // agent's sequence.
                    if let Err(reason) = self.check_signature(m, &env, signature) {
                        self.metrics.reject(reason);
                        self.metrics.spoofing_attempts.inc();
                        let e = spoofed.entry(env.agent_id.clone()).or_default();
                        e.0.push(env.id);
                        if !e.1.contains(&reason) {
                            e.1.push(reason);
                        }
                        verdicts.push(Verdict::Term);
                        continue;
                    }
                    let state = self.seq.entry(env.agent_id.clone()).or_default();
                    let outcome = seq::observe(state, env.seq);
                    touched.insert(env.agent_id.clone());
                    match outcome {
                        SeqOutcome::InOrder => {}
                        SeqOutcome::Gap { missing } => {
                            self.metrics.seq_gap_events.inc_by(missing);
                        }
                        SeqOutcome::Late => {
                            self.metrics.seq_late_events.inc();
                        }
                        SeqOutcome::Replay => seen_seq.push((env.agent_id.clone(), env.id)),
                    }
                    if outcome.keep() {
                        self.file_updates(&env, &mut files);
                        batch_ids.insert(env.id);
                        events.push(StoredEvent { envelope: env, received });
                    }
                    verdicts.push(Verdict::Ack);
                }
                Err(reason) => {
                    self.metrics.reject(reason);
                    verdicts.push(Verdict::Term);
                }
            }
        }
        self.raise_spoofing(spoofed).await;
        let mut redelivered_replays = 0u64;
        if !seen_seq.is_empty() {
            let stored = self.stored_ids(&seen_seq).await;
            for (agent, id) in &seen_seq {
                if batch_ids.contains(id) || stored.contains(id) || self.recent.iter().any(|r| r.contains(id))
                {
                    // The same event again: a duplicate, not a replay.
                    redelivered_replays += 1;
                    if let Some(s) = self.seq.get_mut(agent) {
                        s.replays = s.replays.saturating_sub(1);
                    }
                } else {
                    self.metrics.reject("replay");
                }
            }
        }
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(batch_ids);
        let seq_states = touched.into_iter().map(|id| (id.clone(), self.seq[&id].clone())).collect();
        Prepared { msgs, verdicts, events, seq_states, files, redelivered_replays }
    }

    /// The signature check of secure mode for every message that passed
    /// [`Checker::check`] (`Ok(())` for the others and without signature checks), in
    /// message order. Ed25519 verification is most of ingest's cost per event, so a
    /// large batch is split over the cores on blocking threads, and each part is
    /// checked with one batch equation ([`SignatureVerifier::verify_many`]).
    async fn verify_signatures(
        &self,
        msgs: &[jetstream::Message],
        checked: &[Result<Envelope, &'static str>],
    ) -> Vec<Result<(), &'static str>> {
        /// Fewest events worth handing to a thread of their own (~1 ms of work).
        const MIN_PER_WORKER: usize = 16;
        static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let mut out = vec![Ok(()); msgs.len()];
        let Some(sig) = &self.signatures else { return out };
        // The envelope's agent equals the subject's (checked), so this is the key
        // the event must be signed with.
        let (index, jobs): (Vec<usize>, Vec<(&AgentId, &bytes::Bytes)>) = checked
            .iter()
            .zip(msgs)
            .enumerate()
            .filter_map(|(i, (c, m))| c.as_ref().ok().map(|env| (i, (&env.agent_id, &m.payload))))
            .unzip();
        let workers = *WORKERS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let workers = workers.min(jobs.len() / MIN_PER_WORKER).max(1);
        if workers == 1 {
            for (i, r) in index.into_iter().zip(sig.verifier.verify_many(&jobs)) {
                out[i] = r;
            }
            return out;
        }
        let per_worker = jobs.len().div_ceil(workers);
        let tasks: Vec<_> = jobs
            .chunks(per_worker)
            .map(|chunk| {
                // Owned copies only for the blocking threads (`Bytes` clones share the buffer).
                let chunk: Vec<(AgentId, bytes::Bytes)> =
                    chunk.iter().map(|&(agent, raw)| (agent.clone(), raw.clone())).collect();
                let verifier = sig.verifier.clone();
                tokio::task::spawn_blocking(move || verifier.verify_many(&chunk))
            })
            .collect();
        for ((task, chunk), index) in
            tasks.into_iter().zip(jobs.chunks(per_worker)).zip(index.chunks(per_worker))
        {
            // A worker that did not finish (runtime shutting down): verify here.
            let results = match task.await {
                Ok(r) => r,
                Err(_) => sig.verifier.verify_many(chunk),
            };
            for (i, r) in index.iter().zip(results) {
                out[*i] = r;
            }
        }
        out
    }

    /// The signature check of secure mode, from [`Checker::verify_signatures`]; the
    /// error is the rejection reason.
    fn check_signature(
        &self,
        m: &jetstream::Message,
        env: &Envelope,
        verified: Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        if self.signatures.is_none() {
            return Ok(());
        }
        verified.inspect_err(|reason| {
            if let Some(suppressed) = self.sig_warn.allow() {
                tracing::warn!(
                    subject = %m.subject,
                    agent = %env.agent_id,
                    event = %env.id,
                    reason,
                    suppressed,
                    "event rejected: signature check failed (spoofing attempt)"
                );
            }
        })
    }

    /// One critical `spoofing attempt` alert per claimed agent and batch; the alert
    /// store folds repeats within its window into the open alert.
    async fn raise_spoofing(&self, spoofed: HashMap<AgentId, (Vec<Uuid>, Vec<&'static str>)>) {
        let Some(sig) = &self.signatures else { return };
        for (agent, (ids, reasons)) in spoofed {
            let mut tags = vec!["attack.defense_evasion".to_string(), "attack.t1565".to_string()];
            tags.extend(reasons.iter().map(|r| format!("secmon.signature.{r}")));
            let draft = AlertDraft {
                rule_id: SPOOFING_RULE_ID.into(),
                rule_title: SPOOFING_TITLE.into(),
                severity: secmon_proto::Severity::Critical,
                tags,
                agent_id: agent.clone(),
                event_ids: ids,
                key: String::new(),
                time: Utc::now(),
            };
            if let Err(e) = sig.alerts.raise(draft).await
                && let Some(suppressed) = self.sig_warn.allow()
            {
                tracing::error!(agent = %agent, error = %e, suppressed, "cannot raise the spoofing attempt alert");
            }
        }
    }

    /// Adds the file state updates of `env`. An event that cannot update the file
    /// state (a malformed payload) is still stored: it is counted and logged here.
    fn file_updates(&self, env: &Envelope, out: &mut Vec<FileUpdate>) {
        match file_state::updates(env) {
            Ok(u) => out.extend(u),
            Err(skip) => {
                self.metrics.skip_file_state(skip.reason);
                if let Some(suppressed) = self.file_warn.allow() {
                    tracing::warn!(
                        agent = %env.agent_id,
                        event = %env.id,
                        class = %env.class,
                        reason = skip.reason,
                        detail = skip.detail,
                        suppressed,
                        "event stored, but it cannot update the file state"
                    );
                }
            }
        }
    }

    /// Which of these event ids are stored. On a storage error, none are assumed
    /// stored: a duplicate is then counted as a replay, never stored twice.
    async fn stored_ids(&self, seen: &[(AgentId, Uuid)]) -> HashSet<Uuid> {
        let ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        match self.store.existing_event_ids(&ids).await {
            Ok(found) => found,
            Err(e) => {
                if let Some(suppressed) = self.warn.allow() {
                    tracing::warn!(error = %e, suppressed, "cannot look up replayed event ids");
                }
                HashSet::new()
            }
        }
    }

    /// Decodes one message and checks it may be stored; the error is the
    /// rejection reason.
    fn check(&self, m: &jetstream::Message) -> Result<Envelope, &'static str> {
        let reject = |reason: &'static str, detail: String| {
            if let Some(suppressed) = self.warn.allow() {
                tracing::warn!(subject = %m.subject, reason, detail, suppressed, "event rejected");
            }
            reason
        };
        let Some((subject_agent, AgentSubject::Event(class))) = self.subjects.parse_agent_subject(&m.subject)
        else {
            return Err(reject("malformed", "not an event subject".into()));
        };
        let env: Envelope = secmon_proto::decode(&m.payload, self.max_event_bytes)
            .map_err(|e| reject(e.kind(), clip(e.to_string())))?;
        if env.agent_id != subject_agent || env.class.as_str() != class {
            return Err(reject(
                "subject_mismatch",
                format!("envelope agent {} class {} on this subject", env.agent_id, env.class),
            ));
        }
        if self.registry.is_removed(&env.agent_id) {
            return Err(reject("removed_agent", format!("agent {} was removed", env.agent_id)));
        }
        Ok(env)
    }
}

impl Committer {
    /// Stores the batch (retrying until it succeeds or the manager stops), then
    /// acknowledges every message: stored ones and known duplicates with an ack,
    /// unstorable ones with a terminate.
    async fn commit(&self, p: Prepared, stop: &CancellationToken) {
        let mut delay = Duration::from_millis(100);
        let outcome = loop {
            match self.store.insert_events(&p.events, &p.seq_states, &p.files).await {
                Ok(o) => break o,
                Err(e) => {
                    self.metrics.ingest_store_errors.inc();
                    if let Some(suppressed) = self.warn.allow() {
                        tracing::error!(error = %e, events = p.events.len(), suppressed, "cannot store events; retrying");
                    }
                    if stop.is_cancelled() {
                        // Not acknowledged: redelivered after a restart.
                        return;
                    }
                    // Keep the server from redelivering while storage recovers.
                    for m in &p.msgs {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        self.metrics.events_ingested.inc_by(outcome.inserted);
        self.metrics.events_duplicate.inc_by(outcome.duplicates + p.redelivered_replays);
        // Before the ack, so a slow evaluation holds ingest back (the queue is
        // bounded) instead of piling up.
        let fresh: Vec<Envelope> = p
            .events
            .into_iter()
            .zip(outcome.stored.iter().copied().chain(std::iter::repeat(false)))
            .filter_map(|(e, stored)| stored.then_some(e.envelope))
            .collect();
        if !fresh.is_empty() && self.evaluate.send(fresh).await.is_err() {
            tracing::debug!("rule evaluation has stopped; events stored without evaluation");
        }
        for (m, v) in p.msgs.iter().zip(p.verdicts) {
            let r = match v {
                Verdict::Ack => m.ack().await,
                Verdict::Term => m.ack_with(AckKind::Term).await,
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "cannot acknowledge; the event will be redelivered and ignored");
            }
        }
    }
}
