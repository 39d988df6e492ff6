//! Publishes the spool to JetStream in order, with the event id as `Nats-Msg-Id` so a
//! retried event is stored once.
//!
//! Order: a window of acknowledgements is pipelined, but the spool's cursor only
//! moves over the contiguous acknowledged prefix. On an error, a timeout or a new
//! connection, everything after the cursor is published again, in order; the stream's
//! duplicate window drops the repeats. Each connection has its own client (see
//! `uplink`), so nothing queued for a broken connection goes out on the next one
//! ahead of the retries; and after every restart of the pump one event must be
//! acknowledged before the window opens (a stream that is not back yet fails one
//! event, not hundreds).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use secmon_proto::{AgentId, Subjects};
use tokio::sync::{Notify, watch};

use crate::pipeline::SharedSpool;
use crate::spool::{Position, SpooledEvent};
use crate::uplink::{Conn, Conns, is_current, sleep_or_stop, wait_conn};

/// Most events awaiting their JetStream acknowledgement at once.
pub const WINDOW: usize = 256;
/// How often the link is checked while publishing.
const LINK_CHECK: Duration = Duration::from_millis(100);
/// Room kept for headers and subject under the server's `max_payload`.
const HEADER_ROOM: usize = 512;

pub(crate) struct Publisher {
    pub(crate) conns: Conns,
    pub(crate) spool: SharedSpool,
    pub(crate) subjects: Subjects,
    pub(crate) agent_id: AgentId,
    pub(crate) wake: Arc<Notify>,
    /// Timeout of one acknowledgement.
    pub(crate) ack_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) stop: watch::Receiver<bool>,
}

enum Outcome {
    Stopped,
    LinkChanged,
    Failed(String),
}

type Ack = BoxFuture<'static, (Position, u64, Result<(), String>)>;

impl Publisher {
    pub(crate) async fn run(mut self) {
        let mut failures = 0;
        loop {
            let Some(conn) = wait_conn(&mut self.conns, &mut self.stop).await else { break };
            self.spool.run(|s| s.rewind()).await;
            let (outcome, progressed) = self.pump(&conn).await;
            if progressed {
                failures = 0;
            }
            match outcome {
                Outcome::Stopped => break,
                Outcome::Failed(_) | Outcome::LinkChanged if !is_current(&self.conns, &conn) => {
                    tracing::debug!("NATS connection gone; publishing again from the cursor on the next one");
                }
                Outcome::LinkChanged => {}
                Outcome::Failed(e) => {
                    failures += 1;
                    let d = secmon_nats::backoff(failures, self.backoff_base, self.backoff_max);
                    if failures == 1 || failures % 10 == 0 {
                        tracing::warn!(error = %e, failures, retry_in = ?d, "publishing to JetStream failed; retrying from the first unacknowledged event");
                    } else {
                        tracing::debug!(error = %e, failures, retry_in = ?d, "publishing to JetStream failed");
                    }
                    if sleep_or_stop(d, &mut self.stop).await {
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.spool.run(|s| s.persist_cursor()).await {
            tracing::error!(error = %e, "cannot persist the spool cursor");
        }
    }

    /// Publishes until something goes wrong or `stop` fires. Returns whether any
    /// event was acknowledged.
    async fn pump(&mut self, conn: &Conn) -> (Outcome, bool) {
        let mut js = jetstream::new(conn.client.clone());
        js.set_timeout(self.ack_timeout);
        let mut pending: FuturesOrdered<Ack> = FuturesOrdered::new();
        let mut buffered: std::collections::VecDeque<SpooledEvent> = Default::default();
        let mut window = 1;
        let mut progressed = false;
        // Acknowledged since the cursor file was last written.
        let mut unpersisted = false;
        let mut tick = tokio::time::interval(LINK_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while pending.len() < window {
                if buffered.is_empty() {
                    match self.spool.run(|s| s.read_batch(WINDOW)).await {
                        Ok(b) if b.is_empty() => break,
                        Ok(b) => buffered = b.into(),
                        Err(e) => return (Outcome::Failed(e.to_string()), progressed),
                    }
                }
                if !is_current(&self.conns, conn) {
                    return (Outcome::LinkChanged, progressed);
                }
                let ev = buffered.pop_front().expect("not empty");
                match self.publish(conn, &js, ev).await {
                    Ok(ack) => pending.push_back(ack),
                    Err(e) => return (Outcome::Failed(e), progressed),
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return (Outcome::Stopped, progressed),
                Some(first) = pending.next(), if !pending.is_empty() => {
                    // Take every acknowledgement already in, then move the cursor once.
                    let mut acked: Option<Position> = None;
                    let mut count = 0;
                    let mut failure = None;
                    let mut next = Some(first);
                    while let Some((pos, seq, res)) = next.take() {
                        match res {
                            Ok(()) => {
                                acked = Some(pos);
                                count += 1;
                            }
                            Err(e) => {
                                failure = Some(format!("event seq {seq}: {e}"));
                                break;
                            }
                        }
                        next = pending.next().now_or_never().flatten();
                    }
                    if let Some(upto) = acked {
                        if let Err(e) = self.spool.run(move |s| s.ack(upto, count)).await {
                            return (Outcome::Failed(e.to_string()), progressed);
                        }
                        progressed = true;
                        unpersisted = true;
                        window = WINDOW;
                    }
                    if let Some(e) = failure {
                        return (Outcome::Failed(e), progressed);
                    }
                }
                _ = self.wake.notified(), if pending.len() < window => {}
                _ = tick.tick() => {
                    if !is_current(&self.conns, conn) {
                        return (Outcome::LinkChanged, progressed);
                    }
                    if unpersisted {
                        unpersisted = false;
                        if let Err(e) = self.spool.run(|s| s.persist_cursor()).await {
                            return (Outcome::Failed(e.to_string()), progressed);
                        }
                    }
                }
            }
        }
    }

    /// Hands one event to the client; the returned future resolves with its
    /// acknowledgement.
    async fn publish(&self, conn: &Conn, js: &jetstream::Context, ev: SpooledEvent) -> Result<Ack, String> {
        let (next, seq) = (ev.next, ev.seq);
        let max_payload = conn.client.server_info().max_payload;
        if max_payload > 0 && ev.json.len() + HEADER_ROOM > max_payload {
            // It can never be accepted; retrying would block every later event.
            tracing::error!(
                seq,
                bytes = ev.json.len(),
                max_payload,
                "event larger than the server's max_payload; skipped"
            );
            return Ok(async move { (next, seq, Ok(())) }.boxed());
        }
        let subject = self.subjects.event(&self.agent_id, ev.class);
        let publish = Publish::build().payload(ev.json).message_id(ev.id.to_string());
        let ack = js.send_publish(subject, publish).await.map_err(|e| format!("event seq {seq}: {e}"))?;
        Ok(async move { (next, seq, ack.await.map(|_| ()).map_err(|e| e.to_string())) }.boxed())
    }
}
