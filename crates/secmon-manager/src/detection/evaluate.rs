//! The evaluation task: takes batches of newly stored events from ingest, runs
//! the current rules over them on a blocking thread and raises an alert per match.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, Envelope, Severity};
use secmon_rules::Match;
use tokio::sync::mpsc;

use super::RulesHandle;
use crate::alerts::{AlertDraft, AlertError, AlertsHandle, severity_from_sigma_level};
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;

/// Batches waiting for evaluation; when full, ingest's committer waits.
pub const QUEUE_BATCHES: usize = 4;

/// Attempts to store one alert before it is counted as an error and given up.
const RAISE_ATTEMPTS: u32 = 5;

/// Where ingest sends newly stored events (bounded; `send` waits when full).
pub type EvalSender = mpsc::Sender<Vec<Envelope>>;

pub fn channel() -> (EvalSender, mpsc::Receiver<Vec<Envelope>>) {
    mpsc::channel(QUEUE_BATCHES)
}

/// A match, with what the alert needs from its event.
struct Fired {
    agent_id: AgentId,
    time: DateTime<Utc>,
    m: Match,
}

/// Runs until ingest drops its sender, so on stop the queue is drained.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<Envelope>>,
    rules: RulesHandle,
    alerts: AlertsHandle,
    metrics: Arc<Metrics>,
) {
    let warn = LogLimiter::new(Duration::from_secs(10));
    while let Some(batch) = rx.recv().await {
        let loaded = rules.current();
        if loaded.engine.rule_count() == 0 {
            continue;
        }
        let n = batch.len() as u64;
        // The snapshot keeps this batch on one engine even if a reload swaps it.
        let evaluated = tokio::task::spawn_blocking(move || {
            let mut fired = Vec::new();
            for env in &batch {
                for m in loaded.engine.evaluate(env) {
                    fired.push(Fired { agent_id: env.agent_id.clone(), time: env.time, m });
                }
            }
            fired
        })
        .await;
        let fired = match evaluated {
            Ok(f) => f,
            Err(e) => {
                metrics.rule_eval_errors.inc_by(n);
                tracing::error!(error = %e, events = n, "rule evaluation failed; these events raise no alerts");
                continue;
            }
        };
        metrics.rule_events_evaluated.inc_by(n);
        metrics.rule_matches.inc_by(fired.len() as u64);
        for f in fired {
            raise(&alerts, draft(f), &metrics, &warn).await;
        }
    }
    tracing::debug!("rule evaluation stopped");
}

/// The alert for a match: Sigma level to severity (`medium` when the rule has no
/// or an unknown level), group-by values as the key.
fn draft(f: Fired) -> AlertDraft {
    let m = f.m;
    let severity = m.level.as_deref().and_then(severity_from_sigma_level).unwrap_or(Severity::Medium);
    AlertDraft {
        rule_id: m.rule_id,
        rule_title: m.title,
        severity,
        tags: m.tags,
        agent_id: f.agent_id,
        event_ids: m.event_ids,
        key: alert_key(&m.group_key),
        time: f.time,
    }
}

/// `src_ip=10.0.0.5`, pairs joined with `,`; empty for a single-event rule.
pub fn alert_key(group: &[(String, String)]) -> String {
    group.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Stores the alert, retrying storage errors a few times; a failure is counted
/// and logged.
async fn raise(alerts: &AlertsHandle, d: AlertDraft, metrics: &Metrics, warn: &LogLimiter) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=RAISE_ATTEMPTS {
        let err = match alerts.raise(d.clone()).await {
            Ok(_) => return,
            Err(e) => e,
        };
        let retry = matches!(err, AlertError::Store(_)) && attempt < RAISE_ATTEMPTS;
        if !retry {
            metrics.rule_eval_errors.inc();
            if let Some(suppressed) = warn.allow() {
                tracing::error!(rule = %d.rule_id, agent = %d.agent_id, error = %err, suppressed, "cannot raise alert");
            }
            return;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_group_by_pairs() {
        assert_eq!(alert_key(&[]), "");
        assert_eq!(alert_key(&[("src_ip".into(), "10.0.0.5".into())]), "src_ip=10.0.0.5");
        assert_eq!(
            alert_key(&[("src_ip".into(), "10.0.0.5".into()), ("user".into(), "root".into())]),
            "src_ip=10.0.0.5,user=root"
        );
    }
}
