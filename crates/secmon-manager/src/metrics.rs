//! The manager's metrics, in one registry rendered at `GET /metrics` (Prometheus
//! text format). Names follow `secmon_<component>_<what>_<unit>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern (`/api/agents/{id}`), never the raw path, so cardinality
    /// stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    pub events_ingested: Counter,
    /// Rejected events by reason: `malformed`, `oversize`, `version`,
    /// `subject_mismatch`, `removed_agent`, `replay`; in secure mode also `unsigned`,
    /// `forged`, `bad_signature`, `unknown_agent`, `bad_key`.
    pub events_rejected: Family<ReasonLabel, Counter>,
    pub events_duplicate: Counter,
    pub seq_gap_events: Counter,
    pub seq_late_events: Counter,
    pub agents_by_status: Family<StatusLabel, Gauge>,
    /// Messages in the events stream not yet delivered to this manager's consumer.
    pub consumer_pending: Gauge,
    /// Messages delivered but not yet acknowledged.
    pub consumer_ack_pending: Gauge,
    pub registrations: Counter,
    pub heartbeats: Counter,
    /// Control messages (register, heartbeat, shutdown) rejected, by reason.
    pub control_rejected: Family<ReasonLabel, Counter>,
    pub commands: Family<ResultLabel, Counter>,
    /// Registry writes to storage that failed (kept in memory and retried).
    pub registry_store_errors: Counter,
    /// Status transitions not stored because too many piled up for one agent while
    /// storage was failing.
    pub status_changes_dropped: Counter,
    /// Manager-made `agent` events (`disconnected`) stored.
    pub agent_status_events: Counter,
    /// Manager-made `agent` events lost: the queue stayed full, or storage kept failing.
    pub agent_status_events_dropped: Counter,
    /// Event batches whose commit failed (retried, not acknowledged meanwhile).
    pub ingest_store_errors: Counter,
    /// File (and camera device) events stored but not applied to the file state,
    /// by reason: `malformed_payload`, `bad_path`, `unknown_activity`.
    pub file_state_skipped: Family<ReasonLabel, Counter>,
    pub api_request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// New alerts stored.
    pub alerts_raised: Counter,
    /// Rule matches folded into an open alert (its count raised).
    pub alerts_folded: Counter,
    /// Drafts refused (oversized fields).
    pub alerts_rejected: Counter,
    pub alert_status_changes: Counter,
    /// Alert messages acknowledged by JetStream.
    pub alerts_published: Counter,
    /// Alert publish attempts that failed (retried from the outbox).
    pub alert_publish_errors: Counter,
    /// Alert messages waiting in the outbox (at the last read, at most one batch).
    pub alert_outbox_pending: Gauge,
    /// Newly stored events run through the rules (none while no rule is loaded).
    pub rule_events_evaluated: Counter,
    /// Rule matches (each raises or folds into an alert).
    pub rule_matches: Counter,
    /// Events whose evaluation failed, and matches whose alert could not be stored.
    pub rule_eval_errors: Counter,
    /// Rules (detections and correlations) in use.
    pub rules_loaded: Gauge,
    /// Rules, files or directories skipped by the last load.
    pub rule_load_problems: Gauge,
    /// Rule reloads by result: `ok`, `failed` (old rules kept).
    pub rule_reloads: Family<ResultLabel, Counter>,
    /// Agents enrolled.
    pub enrollments: Counter,
    /// Enrollments refused, by reason: `malformed`, `wrong_ca`, `unknown`, `expired`,
    /// `used_up`, `revoked`, `key_in_use`, `csr` (missing or bad CSR with mutual TLS).
    pub enrollments_refused: Family<ReasonLabel, Counter>,
    /// Agent key revocations, by result: `pushed`, `not_pushed` (applies at the next
    /// nats-server or manager start).
    pub revocations: Family<ResultLabel, Counter>,
    /// Events rejected for their signature (unsigned, forged, unknown agent key) that
    /// raised or folded into a `spoofing attempt` alert.
    pub spoofing_attempts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secmon");
        let m = Self {
            events_ingested: Counter::default(),
            events_rejected: Family::default(),
            events_duplicate: Counter::default(),
            seq_gap_events: Counter::default(),
            seq_late_events: Counter::default(),
            agents_by_status: Family::default(),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            registrations: Counter::default(),
            heartbeats: Counter::default(),
            control_rejected: Family::default(),
            commands: Family::default(),
            registry_store_errors: Counter::default(),
            status_changes_dropped: Counter::default(),
            agent_status_events: Counter::default(),
            agent_status_events_dropped: Counter::default(),
            ingest_store_errors: Counter::default(),
            file_state_skipped: Family::default(),
            api_request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            alerts_raised: Counter::default(),
            alerts_folded: Counter::default(),
            alerts_rejected: Counter::default(),
            alert_status_changes: Counter::default(),
            alerts_published: Counter::default(),
            alert_publish_errors: Counter::default(),
            alert_outbox_pending: Gauge::default(),
            rule_events_evaluated: Counter::default(),
            rule_matches: Counter::default(),
            rule_eval_errors: Counter::default(),
            rules_loaded: Gauge::default(),
            rule_load_problems: Gauge::default(),
            rule_reloads: Family::default(),
            enrollments: Counter::default(),
            enrollments_refused: Family::default(),
            revocations: Family::default(),
            spoofing_attempts: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("events_ingested", "Events stored", m.events_ingested.clone());
        registry.register("events_rejected", "Events refused, by reason", m.events_rejected.clone());
        registry.register(
            "events_duplicate",
            "Redelivered events already stored",
            m.events_duplicate.clone(),
        );
        registry.register(
            "seq_gap_events",
            "Events missing from per-agent sequences when a gap opened",
            m.seq_gap_events.clone(),
        );
        registry.register(
            "seq_late_events",
            "Events that arrived late and filled a sequence gap",
            m.seq_late_events.clone(),
        );
        registry.register("agents", "Agents by status", m.agents_by_status.clone());
        registry.register(
            "consumer_pending_messages",
            "Events in the stream not yet delivered to the manager consumer (lag)",
            m.consumer_pending.clone(),
        );
        registry.register(
            "consumer_ack_pending_messages",
            "Events delivered but not yet acknowledged",
            m.consumer_ack_pending.clone(),
        );
        registry.register("registrations", "Agent registrations handled", m.registrations.clone());
        registry.register("heartbeats", "Agent heartbeats handled", m.heartbeats.clone());
        registry.register(
            "control_rejected",
            "Register/heartbeat/shutdown messages refused, by reason",
            m.control_rejected.clone(),
        );
        registry.register("commands", "Agent commands sent through the API, by result", m.commands.clone());
        registry.register(
            "registry_store_errors",
            "Registry writes to storage that failed and are retried",
            m.registry_store_errors.clone(),
        );
        registry.register(
            "status_changes_dropped",
            "Status transitions not stored because storage failed for too long",
            m.status_changes_dropped.clone(),
        );
        registry.register(
            "agent_status_events",
            "Agent status change events (disconnected) the manager stored",
            m.agent_status_events.clone(),
        );
        registry.register(
            "agent_status_events_dropped",
            "Agent status change events lost (queue full or storage failing)",
            m.agent_status_events_dropped.clone(),
        );
        registry.register(
            "ingest_store_errors",
            "Event batch commits that failed and are retried",
            m.ingest_store_errors.clone(),
        );
        registry.register(
            "file_state_skipped",
            "File events stored but not applied to the file state, by reason",
            m.file_state_skipped.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency",
            m.api_request_duration.clone(),
        );
        registry.register("alerts_raised", "New alerts stored", m.alerts_raised.clone());
        registry.register("alerts_folded", "Rule matches folded into an open alert", m.alerts_folded.clone());
        registry.register("alerts_rejected", "Alert drafts refused as invalid", m.alerts_rejected.clone());
        registry.register("alert_status_changes", "Alert status changes", m.alert_status_changes.clone());
        registry.register(
            "alerts_published",
            "Alert messages acknowledged by JetStream",
            m.alerts_published.clone(),
        );
        registry.register(
            "alert_publish_errors",
            "Alert publish attempts that failed and are retried",
            m.alert_publish_errors.clone(),
        );
        registry.register(
            "alert_outbox_pending_messages",
            "Alert messages waiting to be published",
            m.alert_outbox_pending.clone(),
        );
        registry.register(
            "rule_events_evaluated",
            "Newly stored events evaluated by the rules",
            m.rule_events_evaluated.clone(),
        );
        registry.register("rule_matches", "Rule matches", m.rule_matches.clone());
        registry.register(
            "rule_eval_errors",
            "Events whose evaluation failed and matches whose alert could not be stored",
            m.rule_eval_errors.clone(),
        );
        registry.register("rules_loaded", "Rules in use", m.rules_loaded.clone());
        registry.register(
            "rule_load_problems",
            "Rules, files or directories skipped by the last rule load",
            m.rule_load_problems.clone(),
        );
        registry.register("rule_reloads", "Rule reloads by result", m.rule_reloads.clone());
        registry.register("enrollments", "Agents enrolled", m.enrollments.clone());
        registry.register(
            "enrollments_refused",
            "Enrollments refused, by reason",
            m.enrollments_refused.clone(),
        );
        registry.register("revocations", "Agent key revocations, by result", m.revocations.clone());
        registry.register(
            "spoofing_attempts",
            "Events rejected for a missing, forged or unknown signature",
            m.spoofing_attempts.clone(),
        );
        Self { registry, ..m }
    }

    pub fn reject(&self, reason: &str) {
        self.events_rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    pub fn reject_control(&self, reason: &str) {
        self.control_rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Rejections counted so far for `reason` (for tests and `status`).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.events_rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).get()
    }

    /// Control-message rejections counted so far for `reason` (for tests and `status`).
    pub fn control_rejections(&self, reason: &str) -> u64 {
        self.control_rejected.get_or_create(&ReasonLabel { reason: reason.to_owned() }).get()
    }

    pub fn enroll_refused(&self, reason: &str) {
        self.enrollments_refused.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Enrollments refused so far for `reason`.
    pub fn enroll_refusals(&self, reason: &str) -> u64 {
        self.enrollments_refused.get_or_create(&ReasonLabel { reason: reason.to_owned() }).get()
    }

    pub fn revocation(&self, pushed: bool) {
        let result = if pushed { "pushed" } else { "not_pushed" };
        self.revocations.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub fn skip_file_state(&self, reason: &str) {
        self.file_state_skipped.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// File events counted so far as not applied to the file state, for `reason`.
    pub fn file_state_skips(&self, reason: &str) -> u64 {
        self.file_state_skipped.get_or_create(&ReasonLabel { reason: reason.to_owned() }).get()
    }

    /// Current `agents{status=...}` gauge.
    pub fn agents_with_status(&self, status: &str) -> i64 {
        self.agents_by_status.get_or_create(&StatusLabel { status: status.to_owned() }).get()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String cannot fail");
        out
    }
}
