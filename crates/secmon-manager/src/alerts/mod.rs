//! Alerts users work with. A detection stage hands an [`AlertDraft`] to
//! [`AlertsHandle::raise`]; the store folds repeats of the same rule, agent and
//! key within `[alerts] dedup_window` into the open alert ([`aggregate`]) and
//! writes every new alert and status change, with its JetStream message, in one
//! transaction (an outbox). [`publisher`] publishes the outbox to
//! `<prefix>.alert.<severity>` and removes what JetStream acknowledged, so an
//! alert raised while NATS is down is published when it is back.

pub mod aggregate;
pub mod publisher;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, Severity};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{AlertDetails, AlertStatus, AlertStatusChange, RaisedAlert, Store, StoreError};

/// Longest rule id, key and title accepted in a draft, in bytes.
pub const MAX_RULE_ID: usize = 256;
pub const MAX_TITLE: usize = 1024;
pub const MAX_KEY: usize = 1024;
/// Most tags on a draft, and the longest tag.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG: usize = 256;
/// Longest status change comment and author, in bytes.
pub const MAX_COMMENT: usize = 4096;
pub const MAX_BY: usize = 128;
/// Who a status change is attributed to when the request names nobody.
pub const DEFAULT_BY: &str = "local";
/// The author of the creation entry in an alert's history.
pub const SYSTEM_BY: &str = "secmon";

/// A rule match, as the detection stage hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDraft {
    pub rule_id: String,
    pub rule_title: String,
    /// See [`severity_from_sigma_level`].
    pub severity: Severity,
    /// Rule tags, ATT&CK ids included (`attack.t1110`, `attack.credential_access`).
    pub tags: Vec<String>,
    pub agent_id: AgentId,
    /// The triggering events (any number: the alert keeps the first and last 10).
    pub event_ids: Vec<Uuid>,
    /// Correlation group-by values, joined (empty for a single-event rule).
    pub key: String,
    /// Time of the match (its last event's time).
    pub time: DateTime<Utc>,
}

/// Sigma `level` to severity: `informational` is `info`; the others keep their name.
pub fn severity_from_sigma_level(level: &str) -> Option<Severity> {
    match level {
        "informational" => Some(Severity::Info),
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("invalid alert: {0}")]
    Invalid(String),
    #[error("no such alert")]
    NotFound,
    #[error("{0}")]
    Transition(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AlertError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AlertError::NotFound,
            StoreError::Conflict(m) => AlertError::Transition(m),
            e => AlertError::Store(e),
        }
    }
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), AlertError> {
    if s.len() > max {
        return Err(AlertError::Invalid(format!("{what} is longer than {max} bytes")));
    }
    Ok(())
}

/// Refuses drafts whose text would bloat storage and messages.
pub fn validate(d: &AlertDraft) -> Result<(), AlertError> {
    if d.rule_id.is_empty() {
        return Err(AlertError::Invalid("empty rule id".into()));
    }
    check_len("rule id", &d.rule_id, MAX_RULE_ID)?;
    check_len("rule title", &d.rule_title, MAX_TITLE)?;
    check_len("key", &d.key, MAX_KEY)?;
    if d.tags.len() > MAX_TAGS {
        return Err(AlertError::Invalid(format!("more than {MAX_TAGS} tags")));
    }
    for t in &d.tags {
        check_len("tag", t, MAX_TAG)?;
    }
    Ok(())
}

/// A status change asked for by a user.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRequest {
    pub to: AlertStatus,
    pub comment: String,
    /// `None`: [`DEFAULT_BY`].
    pub by: Option<String>,
}

/// Raises alerts and changes their status; cheap to clone. Both wake the
/// publisher so messages leave at once.
#[derive(Clone)]
pub struct AlertsHandle {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    window: Duration,
}

impl AlertsHandle {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, window: Duration) -> Self {
        Self { store, metrics, wake: Arc::new(Notify::new()), window }
    }

    /// What the publisher waits on.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stores the match as a new alert or folds it into the open one; a new alert
    /// is published (after it is stored).
    pub async fn raise(&self, draft: AlertDraft) -> Result<RaisedAlert, AlertError> {
        if let Err(e) = validate(&draft) {
            self.metrics.alerts_rejected.inc();
            return Err(e);
        }
        let raised = self.store.raise_alert(&draft, self.window).await?;
        if raised.created {
            self.metrics.alerts_raised.inc();
            self.wake.notify_one();
        } else {
            self.metrics.alerts_folded.inc();
        }
        Ok(raised)
    }

    /// Changes an alert's status (validated transition), records it in the
    /// history and publishes it.
    pub async fn set_status(&self, id: Uuid, req: StatusRequest) -> Result<AlertDetails, AlertError> {
        check_len("comment", &req.comment, MAX_COMMENT)?;
        let by = req.by.unwrap_or_else(|| DEFAULT_BY.to_owned());
        check_len("by", &by, MAX_BY)?;
        if by.is_empty() {
            return Err(AlertError::Invalid("empty by".into()));
        }
        let change = AlertStatusChange { at: Utc::now(), by, from: None, to: req.to, comment: req.comment };
        let details = self.store.set_alert_status(id, &change).await?;
        self.metrics.alert_status_changes.inc();
        self.wake.notify_one();
        Ok(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_levels_map_to_severities() {
        assert_eq!(severity_from_sigma_level("informational"), Some(Severity::Info));
        assert_eq!(severity_from_sigma_level("critical"), Some(Severity::Critical));
        assert_eq!(severity_from_sigma_level("info"), None);
    }

    #[test]
    fn oversized_drafts_are_refused() {
        let d = AlertDraft {
            rule_id: "r".into(),
            rule_title: "t".into(),
            severity: Severity::Low,
            tags: vec![],
            agent_id: AgentId::new("a1").unwrap(),
            event_ids: vec![],
            key: String::new(),
            time: Utc::now(),
        };
        assert!(validate(&d).is_ok());
        for bad in [
            AlertDraft { rule_id: String::new(), ..d.clone() },
            AlertDraft { rule_id: "r".repeat(MAX_RULE_ID + 1), ..d.clone() },
            AlertDraft { key: "k".repeat(MAX_KEY + 1), ..d.clone() },
            AlertDraft { tags: vec!["t".into(); MAX_TAGS + 1], ..d.clone() },
            AlertDraft { tags: vec!["t".repeat(MAX_TAG + 1)], ..d.clone() },
        ] {
            assert!(matches!(validate(&bad), Err(AlertError::Invalid(_))), "{bad:?}");
        }
    }
}
