//! The publisher: a bounded, ordered queue of [`Outgoing`] messages and one task that
//! publishes them to NATS, in order, never dropping one.
//!
//! Every message gets a sequence number (1, 2, 3, ...) when it is enqueued and stays
//! in the queue until NATS has it: a JetStream ack (JetStream mode) or a successful
//! flush (core mode). [`Publisher::acked`] is the highest sequence number such that
//! it and everything before it are published; the bridge persists its snapshot from
//! it, so a change is never marked as announced before NATS holds it.
//!
//! Invariants:
//! - Order: the task publishes from the first unacknowledged message; up to
//!   `max_in_flight` are in flight and their acks are awaited in order. On any
//!   failure the client is dropped and a new one resends from the first
//!   unacknowledged message. Each client serves one connection only
//!   (`secmon_nats::connect_once`): async-nats, when it reconnects, drops its write
//!   buffer but sends its queue, which would put later messages in the stream ahead of
//!   earlier ones. A client that never reconnects sends nothing after its connection
//!   broke, so the stream order is the queue order.
//! - Exactly once in JetStream: each message carries `Nats-Msg-Id` = its `msg_id`;
//!   a resend of a message the stream already stored (its ack was lost) is dropped by
//!   the stream's duplicate window. Core NATS has no such thing: after a failure,
//!   messages sent but not confirmed by a flush are sent again and a subscriber may
//!   see them twice (never out of order within one connection).
//! - Mode, decided at each new connection (`publish.jetstream`): `auto` uses
//!   JetStream when a stream's subjects cover all of `<prefix>.>` (or creates one
//!   with `publish.create_stream`), else core publish + flush; `on` keeps messages
//!   queued until such a stream exists; `off` is core only. A stream created later
//!   is picked up at the next connection.
//! - A message NATS can never accept (bigger than the server's `max_payload`) is
//!   retried forever and holds back those after it: nothing is dropped, by design;
//!   the bridge keeps batches well under the limit.
//! - Never gives up: connection failures back off (exponential, jittered, capped at
//!   `publish.retry_max_delay`); `publish.breaker_threshold` consecutive failures
//!   (or `nats.max_reconnects` failed connects in a row) open the breaker for
//!   `publish.breaker_cooldown`, then a trial connection decides.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::breaker::{Breaker, BreakerState};
use crate::config::{BridgeConfig, JetStreamMode};
use crate::metrics::{KindLabel, Metrics, ReasonLabel};
use crate::outgoing::Outgoing;

/// `try_enqueue` refused the whole batch: it does not fit, or the publisher is
/// shutting down. Nothing of the batch was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "publish queue cannot take {requested} more messages ({queued} of {capacity} queued){}",
    if *.closed { "; publisher is shutting down" } else { "" }
)]
pub struct QueueFull {
    pub requested: usize,
    pub queued: usize,
    pub capacity: usize,
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherStats {
    pub queue_len: usize,
    pub capacity: usize,
    /// Messages acknowledged (JetStream) or flushed (core) since start.
    pub published: u64,
    /// Failed attempts (connects, publishes, stream checks); each was retried.
    pub errors: u64,
    /// Whether the current (or last) connection publishes through JetStream.
    pub jetstream: bool,
    pub breaker: BreakerState,
    pub connected: bool,
}

/// Handle to the publishing task; clones share it. The task stops at
/// [`Publisher::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Publisher {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

struct Item {
    seq: u64,
    out: Outgoing,
}

struct Queue {
    /// Not yet published, in sequence order (in-flight ones included).
    items: VecDeque<Item>,
    next_seq: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    acked: watch::Sender<u64>,
    capacity: usize,
    metrics: Arc<Metrics>,
    audit: Option<Arc<AuditLog>>,
    breaker: Breaker,
    published: AtomicU64,
    errors: AtomicU64,
    jetstream: AtomicBool,
    client: Mutex<Option<async_nats::Client>>,
    overflow_log: RateLimit,
    audit_log: RateLimit,
}

/// What the task needs from the configuration.
struct Settings {
    nats: secmon_nats::NatsConfig,
    mode: JetStreamMode,
    create_stream: bool,
    stream_name: String,
    /// `<prefix>.>`: every subject the bridge publishes on.
    subjects: String,
    max_age: Duration,
    duplicate_window: Duration,
    ack_timeout: Duration,
    max_in_flight: usize,
    retry_base: Duration,
    retry_max: Duration,
    max_reconnects: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets a warning through at most once per `every`, counting the ones held back.
struct RateLimit {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed since the last one)` when this one may be logged.
    fn check(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        match s.0 {
            Some(at) if at.elapsed() < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(Instant::now()), 0);
                Some(suppressed)
            }
        }
    }
}

impl Publisher {
    /// Starts the publishing task on the current tokio runtime (panics outside one).
    /// Never fails because of NATS: it may be down; messages queue until it is back.
    pub fn start(cfg: &BridgeConfig, metrics: Arc<Metrics>, audit: Option<Arc<AuditLog>>) -> Publisher {
        let p = &cfg.publish;
        let capacity = p.queue_capacity.max(1);
        metrics.queue_capacity.set(capacity as i64);
        metrics.queue_len.set(0);
        let breaker = Breaker::new(p.breaker_threshold, p.breaker_cooldown);
        metrics.nats_breaker_state.set(breaker.state().as_gauge());
        let retry_base = cfg.nats.reconnect_delay.max(Duration::from_millis(10));
        let settings = Settings {
            nats: cfg.nats_config(),
            mode: p.jetstream,
            create_stream: p.create_stream,
            stream_name: p.stream_name.clone(),
            subjects: format!("{}.>", cfg.nats.subject_prefix),
            max_age: p.stream_max_age,
            duplicate_window: p.duplicate_window,
            ack_timeout: p.ack_timeout,
            max_in_flight: p.max_in_flight.max(1),
            retry_base,
            retry_max: p.retry_max_delay.max(retry_base),
            max_reconnects: cfg.nats.max_reconnects,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { items: VecDeque::new(), next_seq: 1, closed: false }),
            wake: Notify::new(),
            acked: watch::Sender::new(0),
            capacity,
            metrics,
            audit,
            breaker,
            published: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            jetstream: AtomicBool::new(false),
            client: Mutex::new(None),
            overflow_log: RateLimit::new(Duration::from_secs(10)),
            audit_log: RateLimit::new(Duration::from_secs(10)),
        });
        let task = tokio::spawn(run(shared.clone(), settings));
        Publisher { handle: Arc::new(Handle { shared, task: Mutex::new(Some(task)) }) }
    }

    /// Queues all of `items` or none. Returns the sequence number of the last one
    /// (with an empty `items`, the last number given out so far). A batch bigger
    /// than the whole capacity can never fit: callers split.
    pub fn try_enqueue(&self, items: Vec<Outgoing>) -> Result<u64, QueueFull> {
        let sh = &self.handle.shared;
        let mut q = lock(&sh.queue);
        if q.closed || q.items.len() + items.len() > sh.capacity {
            let err = QueueFull {
                requested: items.len(),
                queued: q.items.len(),
                capacity: sh.capacity,
                closed: q.closed,
            };
            drop(q);
            if !err.closed {
                sh.metrics.queue_overflow.inc();
                if let Some(suppressed) = sh.overflow_log.check() {
                    tracing::warn!(
                        requested = err.requested,
                        queued = err.queued,
                        capacity = err.capacity,
                        suppressed,
                        "publish queue full: changes wait for NATS"
                    );
                }
            }
            return Err(err);
        }
        for out in items {
            let seq = q.next_seq;
            q.next_seq += 1;
            q.items.push_back(Item { seq, out });
        }
        let (last, len) = (q.next_seq - 1, q.items.len());
        drop(q);
        sh.metrics.queue_len.set(len as i64);
        sh.wake.notify_one();
        Ok(last)
    }

    /// The highest sequence number such that it and every earlier message are
    /// published (0 before the first).
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.handle.shared.acked.subscribe()
    }

    pub fn stats(&self) -> PublisherStats {
        let sh = &self.handle.shared;
        let connected = lock(&sh.client)
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        PublisherStats {
            queue_len: lock(&sh.queue).items.len(),
            capacity: sh.capacity,
            published: sh.published.load(Ordering::Relaxed),
            errors: sh.errors.load(Ordering::Relaxed),
            jetstream: sh.jetstream.load(Ordering::Relaxed),
            breaker: sh.breaker.state(),
            connected,
        }
    }

    /// Stops accepting messages, waits up to `timeout` for the queue and the
    /// in-flight publishes to complete, then stops the task. Returns whether
    /// everything enqueued was published; logs what was left.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let sh = self.handle.shared.clone();
        let last = {
            let mut q = lock(&sh.queue);
            q.closed = true;
            q.next_seq - 1
        };
        let mut acked = sh.acked.subscribe();
        let done = matches!(tokio::time::timeout(timeout, acked.wait_for(|a| *a >= last)).await, Ok(Ok(_)));
        let task = lock(&self.handle.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        *lock(&sh.client) = None;
        let q = lock(&sh.queue);
        if done {
            tracing::info!(published = sh.published.load(Ordering::Relaxed), "publisher drained");
        } else {
            tracing::warn!(
                left = q.items.len(),
                first_seq = q.items.front().map(|i| i.seq),
                last_seq = q.items.back().map(|i| i.seq),
                ?timeout,
                "publisher stopped with messages not published (they are re-detected after restart)"
            );
        }
        done
    }
}

/// One failed attempt: the metrics reason and what to log.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    /// Counts toward the breaker (NATS misbehaving, not "no stream yet").
    breaker: bool,
    message: String,
}

impl Failure {
    fn nats(e: impl std::fmt::Display) -> Self {
        let message = e.to_string();
        let reason = if message.contains("timed out") { "timeout" } else { "nats" };
        Failure { reason, breaker: true, message }
    }

    fn no_stream(message: String) -> Self {
        Failure { reason: "no_stream", breaker: false, message }
    }

    fn publish(e: jetstream::context::PublishError) -> Self {
        use jetstream::context::PublishErrorKind as K;
        match e.kind() {
            K::TimedOut => Failure { reason: "timeout", breaker: true, message: e.to_string() },
            K::StreamNotFound => Failure::no_stream(e.to_string()),
            _ => Failure::nats(e),
        }
    }
}

impl Shared {
    fn set_breaker_gauge(&self) {
        self.metrics.nats_breaker_state.set(self.breaker.state().as_gauge());
    }

    fn count_error(&self, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.publish_errors.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    fn first_unacked(&self) -> u64 {
        let q = lock(&self.queue);
        q.items.front().map_or(q.next_seq, |i| i.seq)
    }

    /// The queued message with sequence number `seq`, if queued.
    fn get(&self, seq: u64) -> Option<Outgoing> {
        let q = lock(&self.queue);
        let first = q.items.front()?.seq;
        let idx = usize::try_from(seq.checked_sub(first)?).ok()?;
        q.items.get(idx).map(|i| i.out.clone())
    }

    /// Message `seq` (the first in the queue) is published.
    fn complete(&self, seq: u64) {
        let (item, len) = {
            let mut q = lock(&self.queue);
            if q.items.front().map(|i| i.seq) != Some(seq) {
                // Cannot happen: only this task removes items, front first.
                tracing::error!(seq, "publisher: completed message is not first in the queue");
                return;
            }
            let item = q.items.pop_front().expect("checked above");
            (item, q.items.len())
        };
        self.metrics.queue_len.set(len as i64);
        self.published.fetch_add(1, Ordering::Relaxed);
        let out = &item.out;
        self.metrics.published.get_or_create(&KindLabel { kind: out.kind.to_owned() }).inc();
        if let Some(seen) = out.seen_at {
            self.metrics.publish_latency_seconds.observe(seen.elapsed().as_secs_f64());
        }
        if let Some(audit) = &self.audit
            && let Err(e) = audit.record(&out.msg_id, &out.subject, &out.payload)
        {
            // The message is published; a broken audit log must not stop publishing.
            self.metrics.audit_errors.inc();
            if let Some(suppressed) = self.audit_log.check() {
                tracing::error!(error = %e, suppressed, "audit log write failed");
            }
        }
        self.acked.send_replace(seq);
        self.breaker.success();
        self.set_breaker_gauge();
    }

    fn set_jetstream(&self, on: bool) {
        self.jetstream.store(on, Ordering::Relaxed);
        self.metrics.jetstream.set(i64::from(on));
    }
}

/// The publishing task: connect, publish until something fails, back off, repeat.
async fn run(shared: Arc<Shared>, s: Settings) {
    let mut failures = 0usize; // consecutive, for the backoff
    let mut connect_failures = 0usize; // consecutive, for nats.max_reconnects
    loop {
        if failures > 0 {
            tokio::time::sleep(secmon_nats::backoff(failures, s.retry_base, s.retry_max)).await;
        }
        if !shared.breaker.allow() {
            shared.count_error("breaker_open");
            shared.set_breaker_gauge();
            tracing::warn!("NATS breaker open: waiting for the cooldown");
            while !shared.breaker.allow() {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        shared.set_breaker_gauge();
        let client = match secmon_nats::connect_once(&s.nats, "secmon-wazuh-bridge", None).await {
            Ok(c) => {
                connect_failures = 0;
                c
            }
            Err(e) => {
                failures += 1;
                connect_failures += 1;
                fail(&shared, Failure::nats(e), failures);
                if s.max_reconnects > 0 && connect_failures >= s.max_reconnects {
                    tracing::warn!(
                        attempts = connect_failures,
                        "NATS unreachable after nats.max_reconnects attempts: opening the breaker"
                    );
                    force_open(&shared.breaker);
                    shared.set_breaker_gauge();
                    connect_failures = 0;
                }
                continue;
            }
        };
        *lock(&shared.client) = Some(client.clone());
        let published_before = shared.published.load(Ordering::Relaxed);
        let result = serve(&shared, &s, &client).await;
        if result.is_ok() || shared.published.load(Ordering::Relaxed) > published_before {
            // Progress on this connection: the next failure starts a fresh backoff.
            failures = 0;
        }
        // Dropping the client discards whatever it still holds: a connect_once client
        // never sends it later, so nothing overtakes the resend below.
        *lock(&shared.client) = None;
        drop(client);
        match result {
            Ok(()) => tracing::info!("NATS connection lost while idle: reconnecting"),
            Err(f) => {
                failures += 1;
                fail(&shared, f, failures);
            }
        }
    }
}

fn fail(shared: &Shared, f: Failure, attempt: usize) {
    shared.count_error(f.reason);
    if f.breaker {
        shared.breaker.failure();
    } else {
        // NATS answered (e.g. "no stream yet"): it is up, and a half-open breaker's
        // trial must report or it would stay half-open for good.
        shared.breaker.success();
    }
    shared.set_breaker_gauge();
    tracing::warn!(
        reason = f.reason,
        error = %f.message,
        attempt,
        queued = lock(&shared.queue).items.len(),
        "NATS publish failed; retrying from the first unacknowledged message"
    );
}

/// Opens the breaker now (the breaker has no such call: report failures until it is).
fn force_open(b: &Breaker) {
    for _ in 0..64 {
        if b.state() == BreakerState::Open {
            return;
        }
        b.failure();
    }
}

/// Publishes on one connection until a failure (`Err`) or until the connection is
/// lost while idle (`Ok`).
async fn serve(shared: &Shared, s: &Settings, client: &async_nats::Client) -> Result<(), Failure> {
    let js = detect(s, client).await?;
    shared.set_jetstream(js.is_some());
    match js {
        Some(js) => pump_jetstream(shared, s, client, &js).await,
        None => pump_core(shared, s, client).await,
    }
}

/// JetStream context when messages should go through JetStream on this connection.
async fn detect(s: &Settings, client: &async_nats::Client) -> Result<Option<jetstream::Context>, Failure> {
    if s.mode == JetStreamMode::Off {
        return Ok(None);
    }
    let mut js = jetstream::new(client.clone());
    js.set_timeout(s.ack_timeout);
    if s.create_stream {
        match ensure_stream(s, &js).await {
            Ok(()) => return Ok(Some(js)),
            Err(f) if s.mode == JetStreamMode::Auto && jetstream_unavailable(&f.message) => {
                tracing::warn!(error = %f.message, "JetStream unavailable: publishing with core NATS");
                return Ok(None);
            }
            Err(f) => return Err(f),
        }
    }
    let found = match js.stream_by_subject(s.subjects.as_str()).await {
        Ok(name) => match js.get_stream(&name).await {
            Ok(stream) => {
                let cfg = &stream.cached_info().config;
                if cfg.subjects.iter().any(|p| covers(p, &s.subjects)) {
                    tracing::info!(stream = %name, "publishing through JetStream");
                    return Ok(Some(js));
                }
                format!("stream {name} covers only part of {} ({:?})", s.subjects, cfg.subjects)
            }
            Err(e) => return Err(Failure::nats(e)),
        },
        Err(e) => {
            use jetstream::context::GetStreamByNameErrorKind as K;
            let text = error_chain(&e);
            if !matches!(e.kind(), K::NotFound) && !jetstream_unavailable(&text) {
                return Err(Failure::nats(text));
            }
            format!("no stream covers {}", s.subjects)
        }
    };
    if s.mode == JetStreamMode::On {
        return Err(Failure::no_stream(format!("{found}; publish.jetstream is on: messages wait")));
    }
    tracing::info!(reason = %found, "publishing with core NATS (publish + flush)");
    Ok(None)
}

/// Creates `stream_name` over `<prefix>.>`, or makes an existing one cover it with
/// the configured age and duplicate window.
async fn ensure_stream(s: &Settings, js: &jetstream::Context) -> Result<(), Failure> {
    use jetstream::context::GetStreamErrorKind;
    use jetstream::stream::Config;
    match js.get_stream(&s.stream_name).await {
        Ok(stream) => {
            let have = stream.cached_info().config.clone();
            let covered = have.subjects.iter().any(|p| covers(p, &s.subjects));
            if covered && have.max_age == s.max_age && have.duplicate_window == s.duplicate_window {
                return Ok(());
            }
            let mut subjects = have.subjects.clone();
            if !covered {
                subjects.push(s.subjects.clone());
            }
            let update =
                Config { subjects, max_age: s.max_age, duplicate_window: s.duplicate_window, ..have };
            js.update_stream(update).await.map_err(|e| Failure::nats(error_chain(&e)))?;
            tracing::info!(stream = %s.stream_name, subjects = %s.subjects, "updated JetStream stream");
            Ok(())
        }
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(Config {
                name: s.stream_name.clone(),
                subjects: vec![s.subjects.clone()],
                max_age: s.max_age,
                duplicate_window: s.duplicate_window.min(s.max_age),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| Failure::nats(error_chain(&e)))?;
            tracing::info!(stream = %s.stream_name, subjects = %s.subjects, "created JetStream stream");
            Ok(())
        }
        Err(e) => Err(Failure::nats(error_chain(&e))),
    }
}

/// An error with its sources, for logs and classification.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// The server has no JetStream for us (disabled, or no responders on its API), as
/// opposed to a timeout or a broken connection. async-nats exposes this only in
/// error texts.
fn jetstream_unavailable(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    !t.contains("timed out")
        && (t.contains("does not exist")
            || t.contains("no responders")
            || t.contains("not enabled")
            || t.contains("unavailable"))
}

/// Whether stream subject `pattern` matches every subject `wanted` (`a.b.>`) does.
fn covers(pattern: &str, wanted: &str) -> bool {
    let w: Vec<&str> = wanted.split('.').collect();
    let tail = w.len() - 1; // position of `>` in `wanted`
    for (i, p) in pattern.split('.').enumerate() {
        if p == ">" {
            return true;
        }
        if i >= tail || (p != "*" && p != w[i]) {
            return false;
        }
    }
    false
}

type AckFuture = Pin<
    Box<dyn Future<Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>> + Send>,
>;

fn headers(out: &Outgoing) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in &out.headers {
        h.insert(k.as_str(), v.as_str());
    }
    h.insert(async_nats::header::NATS_MESSAGE_ID, out.msg_id.as_str());
    h
}

async fn pump_jetstream(
    shared: &Shared,
    s: &Settings,
    client: &async_nats::Client,
    js: &jetstream::Context,
) -> Result<(), Failure> {
    let mut in_flight: VecDeque<(u64, AckFuture)> = VecDeque::new();
    let mut next = shared.first_unacked();
    loop {
        while in_flight.len() < s.max_in_flight {
            let Some(out) = shared.get(next) else { break };
            let publish =
                jetstream::context::Publish::build().payload(out.payload.clone()).headers(headers(&out));
            let ack = js.send_publish(out.subject, publish).await.map_err(Failure::publish)?;
            in_flight.push_back((next, ack.into_future()));
            next += 1;
        }
        let Some((seq, ack)) = in_flight.pop_front() else {
            if !idle(shared, client).await {
                return Ok(());
            }
            continue;
        };
        ack.await.map_err(Failure::publish)?;
        shared.complete(seq);
    }
}

async fn pump_core(shared: &Shared, s: &Settings, client: &async_nats::Client) -> Result<(), Failure> {
    loop {
        let first = shared.first_unacked();
        let mut sent = 0u64;
        while (sent as usize) < s.max_in_flight {
            let Some(out) = shared.get(first + sent) else { break };
            client
                .publish_with_headers(out.subject.clone(), headers(&out), out.payload)
                .await
                .map_err(Failure::nats)?;
            sent += 1;
        }
        if sent == 0 {
            if !idle(shared, client).await {
                return Ok(());
            }
            continue;
        }
        // The server answered the flush's PING: everything before it reached it.
        match tokio::time::timeout(s.ack_timeout, client.flush()).await {
            Ok(Ok(())) => (first..first + sent).for_each(|seq| shared.complete(seq)),
            Ok(Err(e)) => return Err(Failure::nats(e)),
            Err(_) => {
                return Err(Failure { reason: "timeout", breaker: true, message: "flush timed out".into() });
            }
        }
    }
}

/// Waits for new messages; false when the connection was lost meanwhile.
async fn idle(shared: &Shared, client: &async_nats::Client) -> bool {
    // Connected with nothing failing: a half-open breaker's trial succeeded.
    if shared.breaker.state() != BreakerState::Closed {
        shared.breaker.success();
        shared.set_breaker_gauge();
    }
    loop {
        tokio::select! {
            _ = shared.wake.notified() => return true,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if client.connection_state() != async_nats::connection::State::Connected {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_coverage() {
        assert!(covers("wazuh.>", "wazuh.>"));
        assert!(covers(">", "wazuh.>"));
        assert!(covers("*.>", "wazuh.>"));
        assert!(covers("a.*.>", "a.b.>"));
        assert!(!covers("wazuh.agent.>", "wazuh.>"), "only part");
        assert!(!covers("wazuh.*", "wazuh.>"), "one token only");
        assert!(!covers("other.>", "wazuh.>"));
        assert!(!covers("wazuh", "wazuh.>"));
    }

    #[test]
    fn rate_limit_lets_one_through_and_counts_the_rest() {
        let r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.check(), Some(0));
        assert_eq!(r.check(), None);
        assert_eq!(r.check(), None);
        let r0 = RateLimit::new(Duration::ZERO);
        assert_eq!(r0.check(), Some(0));
        assert_eq!(r0.check(), Some(0));
    }

    #[test]
    fn jetstream_unavailable_is_told_from_timeouts() {
        assert!(jetstream_unavailable("request error: requested JetStream resource does not exist"));
        assert!(jetstream_unavailable("jetstream error: jetstream not enabled (code 503, error code 10076)"));
        assert!(jetstream_unavailable("jetstream unavailable"));
        assert!(!jetstream_unavailable("request error: timed out"));
        assert!(!jetstream_unavailable("broken pipe"));
    }

    #[test]
    fn queue_full_says_why() {
        let e = QueueFull { requested: 3, queued: 9, capacity: 10, closed: false };
        assert_eq!(e.to_string(), "publish queue cannot take 3 more messages (9 of 10 queued)");
        let e = QueueFull { closed: true, ..e };
        assert!(e.to_string().ends_with("publisher is shutting down"));
    }
}
