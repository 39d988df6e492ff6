//! A message ready for NATS: what the bridge hands the publisher.

use std::time::Instant;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    /// The exact bytes to publish (signed, maybe compressed and/or encrypted).
    pub payload: Bytes,
    /// NATS headers (`Content-Encoding: zstd`, `Secmon-Encryption: ...`).
    pub headers: Vec<(String, String)>,
    /// Unique per message within the stream: JetStream's `Nats-Msg-Id` (so a copy
    /// published again is stored once) and the id in the audit log.
    pub msg_id: String,
    /// Metrics label: `status`, `connected`, `disconnected`, `batch`, `heartbeat`.
    pub kind: &'static str,
    /// When the change was seen in the database (change → ack latency); `None` for
    /// heartbeats.
    pub seen_at: Option<Instant>,
}
