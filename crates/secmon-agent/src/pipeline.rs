//! From sensors to the spool: the bounded channel every sensor emits into, and the
//! single writer task that drains it into the spool (where sequence numbers are given).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{EventClass, Severity, SpoolStats};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::spool::{EventDraft, LossReason, Spool};

/// Capacity of the channel in front of the spool. Bursts beyond it are dropped and
/// counted (then reported by an `event_loss` event) rather than blocking a sensor.
pub const CHANNEL_CAPACITY: usize = 8192;
/// Most items the writer takes from the channel per spool operation.
const WRITER_BATCH: usize = 512;
/// Longest a channel-drop count waits before it is handed to the spool for reporting.
const LOSS_NOTE_EVERY: Duration = Duration::from_secs(1);
/// How often written records are flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

pub(crate) enum Item {
    Event(EventDraft),
    /// Answered once every item sent before it is in the spool.
    Flush(oneshot::Sender<()>),
    /// Closes the spool and ends the writer.
    Stop(oneshot::Sender<()>),
}

/// The one entry point for sensors: cheap to clone; `emit` never blocks (a sensor on
/// its own thread that must not lose events uses `emit_blocking`).
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("depth", &self.channel_depth())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Emitter {
    pub(crate) fn new() -> (Emitter, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (Emitter { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx)
    }

    /// Queues an event that happened now. Returns false (and counts the drop) when
    /// the channel is full or the agent has stopped.
    pub fn emit(
        &self,
        class: EventClass,
        activity: impl Into<String>,
        severity: Severity,
        payload: Value,
    ) -> bool {
        self.emit_draft(EventDraft::now(class, activity, severity, payload))
    }

    /// Like [`Emitter::emit`], for an event whose time the sensor knows.
    pub fn emit_at(
        &self,
        time: DateTime<Utc>,
        class: EventClass,
        activity: impl Into<String>,
        severity: Severity,
        payload: Value,
    ) -> bool {
        self.emit_draft(EventDraft { time, class, activity: activity.into(), severity, payload })
    }

    pub fn emit_draft(&self, draft: EventDraft) -> bool {
        match self.tx.try_send(Item::Event(draft)) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues an event from a thread that may block (a sensor's own thread, never an
    /// async task), waiting for room however long it takes: for sensors whose events
    /// must not be dropped (file integrity monitoring), so a burst is back-pressure on
    /// the sensor instead of a loss. Returns false (and counts it) only when the agent
    /// has stopped.
    pub fn emit_blocking(&self, draft: EventDraft) -> bool {
        match self.tx.blocking_send(Item::Event(draft)) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Events waiting in the channel.
    pub fn channel_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Events dropped because the channel was full (or closed), since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues an agent event, waiting up to `timeout` for room: lifecycle events
    /// are few and must not be dropped by a burst.
    pub(crate) async fn emit_waiting(&self, draft: EventDraft, timeout: Duration) -> bool {
        let sent = tokio::time::timeout(timeout, self.tx.send(Item::Event(draft))).await;
        let ok = matches!(sent, Ok(Ok(())));
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Waits until everything queued so far is in the spool.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(timeout, async {
            self.tx.send(Item::Flush(tx)).await.is_ok() && rx.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    pub(crate) async fn stop_writer(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(timeout, async {
            self.tx.send(Item::Stop(tx)).await.is_ok() && rx.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

/// Spool figures kept outside the lock, so status and heartbeats never wait on disk.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    depth: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    last_seq: AtomicU64,
}

/// The spool shared by the writer and the publisher. Operations run on the blocking
/// pool, because they touch files.
#[derive(Clone)]
pub(crate) struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    gauges: Arc<Gauges>,
}

impl SharedSpool {
    pub(crate) fn new(spool: Spool) -> Self {
        let s = SharedSpool { inner: Arc::new(Mutex::new(spool)), gauges: Arc::default() };
        s.update_gauges(&s.inner.lock().unwrap_or_else(PoisonError::into_inner));
        s
    }

    /// Runs `f` on the spool in the blocking pool, then refreshes the gauges.
    pub(crate) async fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut Spool) -> R + Send + 'static) -> R {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut spool = this.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let r = f(&mut spool);
            this.update_gauges(&spool);
            r
        })
        .await
        .expect("spool operation panicked")
    }

    fn update_gauges(&self, spool: &Spool) {
        let st = spool.stats();
        self.gauges.depth.store(st.depth, Ordering::Relaxed);
        self.gauges.bytes.store(st.bytes, Ordering::Relaxed);
        self.gauges.dropped.store(st.dropped, Ordering::Relaxed);
        self.gauges.last_seq.store(spool.last_seq(), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> SpoolStats {
        SpoolStats {
            depth: self.gauges.depth.load(Ordering::Relaxed),
            bytes: self.gauges.bytes.load(Ordering::Relaxed),
            dropped: self.gauges.dropped.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.gauges.last_seq.load(Ordering::Relaxed)
    }
}

/// The single spool writer: drains the channel in batches, reports channel drops,
/// syncs periodically and wakes the publisher after each batch.
pub(crate) async fn run_writer(
    mut rx: mpsc::Receiver<Item>,
    spool: SharedSpool,
    channel_dropped: Arc<AtomicU64>,
    wake_publisher: Arc<Notify>,
) {
    let mut reported_drops = 0u64;
    let mut last_noted = std::time::Instant::now();
    let mut sync_tick = tokio::time::interval(SYNC_EVERY);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            _ = sync_tick.tick() => {
                // Also report drops of a burst that ended the channel's traffic.
                let drops = channel_dropped.load(Ordering::Relaxed);
                let new_drops = drops - reported_drops;
                reported_drops = drops;
                let synced = spool.run(move |s| {
                    s.note_loss(LossReason::ChannelFull, new_drops);
                    s.report_losses();
                    s.sync()
                }).await;
                if let Err(e) = synced {
                    tracing::error!(error = %e, "spool sync failed");
                }
                if new_drops > 0 {
                    wake_publisher.notify_one();
                }
                continue;
            }
        };
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < WRITER_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // Channel drops are noted once the burst is over (the channel drained) or once
        // a second, so a long burst gives a few `event_loss` events, not one per batch.
        let drained = batch.len() < WRITER_BATCH;
        let mut new_drops = 0;
        if drained || last_noted.elapsed() >= LOSS_NOTE_EVERY {
            let drops = channel_dropped.load(Ordering::Relaxed);
            new_drops = drops - reported_drops;
            reported_drops = drops;
            last_noted = std::time::Instant::now();
        }
        let (acks, stop) = spool
            .run(move |s| {
                s.note_loss(LossReason::ChannelFull, new_drops);
                let mut acks = Vec::new();
                let mut stop = None;
                let mut late = 0;
                for item in batch {
                    match item {
                        Item::Event(_) if stop.is_some() => late += 1,
                        Item::Event(d) => {
                            s.append(d);
                        }
                        Item::Flush(tx) => acks.push(tx),
                        Item::Stop(_) if stop.is_some() => {}
                        Item::Stop(tx) => {
                            if let Err(e) = s.close() {
                                tracing::error!(error = %e, "closing the spool failed");
                            }
                            stop = Some(tx);
                        }
                    }
                }
                if late > 0 {
                    tracing::warn!(lost = late, "events emitted after the agent stopped were not spooled");
                }
                (acks, stop)
            })
            .await;
        wake_publisher.notify_one();
        for tx in acks {
            let _ = tx.send(());
        }
        if let Some(tx) = stop {
            let _ = tx.send(());
            return;
        }
    }
    if let Err(e) = spool.run(|s| s.close()).await {
        tracing::error!(error = %e, "closing the spool failed");
    }
}

impl Emitter {
    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}
