//! The bridge's metrics, rendered at `GET /metrics` on the metrics port
//! (Prometheus text format). Names are `secmon_wazuh_bridge_<what>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub manager_node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStatusLabels {
    pub manager_node: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeKindLabels {
    pub manager_node: String,
    pub kind: String,
}

/// `kind`: `status`, `connected`, `disconnected`, `batch`, `heartbeat`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    /// Agents by connection status, per manager node (from the last read).
    pub agents: Family<NodeStatusLabels, Gauge>,
    /// Changes detected, by kind (`registered`, `status_change`, ...).
    pub changes: Family<NodeKindLabels, Counter>,
    /// Messages published and acknowledged, by kind.
    pub published: Family<KindLabel, Counter>,
    /// Failed publish attempts (each retried), by reason: `timeout`, `nats`, `breaker_open`.
    pub publish_errors: Family<ReasonLabel, Counter>,
    /// From the change being seen in the database to NATS acknowledging it.
    pub publish_latency_seconds: Histogram,
    pub poll_duration_seconds: Family<NodeLabel, Histogram, fn() -> Histogram>,
    pub polls: Family<NodeLabel, Counter>,
    pub poll_errors: Family<NodeLabel, Counter>,
    /// Reads skipped because `PRAGMA data_version` was unchanged.
    pub polls_unchanged: Family<NodeLabel, Counter>,
    /// File notifications on the database or its journal.
    pub notifications: Family<NodeLabel, Counter>,
    /// Row values cut or replaced while validating, by reason (`too_long`,
    /// `control_chars`, `invalid_utf8`, `bad_time`, `unknown_status`).
    pub rows_sanitized: Family<ReasonLabel, Counter>,
    /// 0 closed, 1 open, 2 half-open.
    pub db_breaker_state: Family<NodeLabel, Gauge>,
    pub nats_breaker_state: Gauge,
    pub queue_len: Gauge,
    pub queue_capacity: Gauge,
    /// Poll cycles deferred because the publish queue was full.
    pub queue_overflow: Counter,
    /// Transitions folded into a flapping summary instead of published one by one.
    pub flapping_suppressed: Counter,
    pub audit_errors: Counter,
    /// 1 when publishing to a JetStream stream with acks, 0 for core NATS.
    pub jetstream: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secmon_wazuh_bridge");
        let m = Self {
            agents: Family::default(),
            changes: Family::default(),
            published: Family::default(),
            publish_errors: Family::default(),
            publish_latency_seconds: seconds_histogram(),
            poll_duration_seconds: Family::new_with_constructor(seconds_histogram),
            polls: Family::default(),
            poll_errors: Family::default(),
            polls_unchanged: Family::default(),
            notifications: Family::default(),
            rows_sanitized: Family::default(),
            db_breaker_state: Family::default(),
            nats_breaker_state: Gauge::default(),
            queue_len: Gauge::default(),
            queue_capacity: Gauge::default(),
            queue_overflow: Counter::default(),
            flapping_suppressed: Counter::default(),
            audit_errors: Counter::default(),
            jetstream: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("agents", "Wazuh agents by connection status", m.agents.clone());
        r.register("changes", "Agent changes detected, by kind", m.changes.clone());
        r.register("published", "Messages published and acknowledged, by kind", m.published.clone());
        r.register(
            "publish_errors",
            "Failed publish attempts (retried), by reason",
            m.publish_errors.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "Change seen in the database to NATS acknowledgement",
            m.publish_latency_seconds.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Read + diff of the agent table",
            m.poll_duration_seconds.clone(),
        );
        r.register("polls", "Reads of the agent table", m.polls.clone());
        r.register("poll_errors", "Failed reads of the agent table", m.poll_errors.clone());
        r.register("polls_unchanged", "Checks skipped: data_version unchanged", m.polls_unchanged.clone());
        r.register("notifications", "File notifications on the database or journal", m.notifications.clone());
        r.register("rows_sanitized", "Row values cut or replaced, by reason", m.rows_sanitized.clone());
        r.register(
            "db_breaker_state",
            "Database breaker: 0 closed, 1 open, 2 half-open",
            m.db_breaker_state.clone(),
        );
        r.register(
            "nats_breaker_state",
            "NATS breaker: 0 closed, 1 open, 2 half-open",
            m.nats_breaker_state.clone(),
        );
        r.register("queue_len", "Messages waiting to be published", m.queue_len.clone());
        r.register("queue_capacity", "Publish queue bound", m.queue_capacity.clone());
        r.register("queue_overflow", "Poll cycles deferred: publish queue full", m.queue_overflow.clone());
        r.register(
            "flapping_suppressed",
            "Transitions folded into flapping summaries",
            m.flapping_suppressed.clone(),
        );
        r.register("audit_errors", "Audit log writes that failed", m.audit_errors.clone());
        r.register("jetstream", "1 when publishing with JetStream acks", m.jetstream.clone());
        Self { registry, ..m }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String cannot fail");
        out
    }

    pub fn node(node: &str) -> NodeLabel {
        NodeLabel { manager_node: node.to_owned() }
    }

    pub fn sanitized(&self, reason: &str) {
        self.rows_sanitized.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }
}
