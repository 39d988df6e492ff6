//! Publishes the alert outbox to JetStream, oldest first, one message at a time
//! (order kept), removing each once JetStream acknowledged it. While NATS or the
//! stream is unavailable it retries with a growing pause; nothing is lost, since
//! the messages stay in storage until acknowledged. Each carries a `Nats-Msg-Id`,
//! so a message published twice (ack lost) is stored once by the stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use secmon_proto::Subjects;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

/// Messages read from the outbox per round.
const BATCH: u64 = 100;
/// How often the outbox is read when nothing woke the publisher (covers messages
/// left by a previous run).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How long one publish waits for JetStream's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Publisher {
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
}

impl Publisher {
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let pause = match self.round().await {
                Ok(0) => {
                    backoff = MIN_BACKOFF;
                    IDLE_POLL
                }
                Ok(_) => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Err(()) => {
                    let p = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    p
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified(), if pause == IDLE_POLL => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes one batch; the number published, or `Err` after a failure
    /// (counted and logged) so the caller pauses.
    async fn round(&self) -> Result<usize, ()> {
        let pending = self.store.pending_alert_messages(BATCH).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the alert outbox");
        })?;
        self.metrics.alert_outbox_pending.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        let mut sent = 0;
        for m in pending {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", m.msg_id.as_str());
            let subject = self.subjects.alert(m.severity);
            let published = async {
                let ack = self.js.publish_with_headers(subject, headers, m.body.into()).await?;
                tokio::time::timeout(ACK_TIMEOUT, ack)
                    .await
                    .map_err(|_| anyhow::anyhow!("no ack in {ACK_TIMEOUT:?}"))??;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = published {
                self.metrics.alert_publish_errors.inc();
                tracing::warn!(error = %e, "cannot publish an alert to JetStream; retrying");
                return Err(());
            }
            self.metrics.alerts_published.inc();
            if let Err(e) = self.store.remove_alert_messages(&[m.id]).await {
                // Published but still in the outbox: it goes again, and the stream's
                // duplicate window drops the copy.
                tracing::warn!(error = %e, "cannot remove a published alert from the outbox");
                return Err(());
            }
            sent += 1;
        }
        Ok(sent)
    }
}
