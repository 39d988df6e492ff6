//! Evaluating envelopes: map, run rsigma's detection engine, keep the detections
//! whose logsource fits the event, feed them to the correlation state, count hits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rsigma_eval::{CorrelationConfig, CorrelationEngine, CorrelationEventMode, EvaluationResult};
use rsigma_parser::{LogSource, SigmaCollection};
use secmon_proto::Envelope;
use serde::Serialize;
use uuid::Uuid;

use crate::event::SigmaView;
use crate::load::RuleSet;
use crate::mapping::{self, EventLogsource};

/// Bounds on correlation state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// (correlation, group) windows kept across all correlation rules; beyond it the
    /// expired ones, then the stalest, are evicted.
    pub max_groups: usize,
    /// Entries kept inside one group's window (oldest dropped first).
    pub max_group_entries: usize,
    /// Event ids kept per group for [`Match::event_ids`].
    pub max_event_ids: usize,
    /// Sweep expired windows every this many events.
    pub sweep_every: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_groups: 10_000, max_group_entries: 1_000, max_event_ids: 10, sweep_every: 1_024 }
    }
}

/// A Sigma logsource, as in the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Logsource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl From<&LogSource> for Logsource {
    fn from(ls: &LogSource) -> Self {
        Self { category: ls.category.clone(), product: ls.product.clone(), service: ls.service.clone() }
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// The rule's id, or its title when it has none.
    pub rule_id: String,
    pub title: String,
    /// Sigma level (`informational` .. `critical`), if the rule sets one.
    pub level: Option<String>,
    pub tags: Vec<String>,
    /// Empty for correlation rules.
    pub logsource: Logsource,
    /// The event evaluated; for a correlation, the contributing events kept (up to
    /// [`Limits::max_event_ids`]).
    pub event_ids: Vec<Uuid>,
    pub correlation: bool,
    /// `event_count`, `value_count`, `temporal`, ... for correlations.
    pub correlation_type: Option<String>,
    /// Group-by field and value pairs of a correlation.
    pub group_key: Vec<(String, String)>,
    /// The counted value (events, distinct values, ...) of a correlation.
    pub aggregated_value: Option<f64>,
}

/// Per-rule information and hit count.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStat {
    pub rule_id: String,
    pub title: String,
    pub level: Option<String>,
    pub file: PathBuf,
    pub correlation: bool,
    pub hits: u64,
}

struct RuleMeta {
    rule_id: String,
    title: String,
    level: Option<String>,
    tags: Vec<String>,
    logsource: Option<LogSource>,
    file: PathBuf,
    /// Sigma: a rule a correlation refers to reports only through the correlation
    /// unless that says `generate: true`. (rsigma's own filter only knows rule ids,
    /// not the `name` references correlations usually use.)
    silent: bool,
    hits: AtomicU64,
}

/// The rule engine. `evaluate` takes `&self`: correlation state sits behind a mutex.
pub struct Engine {
    inner: Mutex<State>,
    meta: Vec<RuleMeta>,
    /// rsigma reports a rule by id (or title when it has none): index into `meta`.
    by_key: HashMap<String, usize>,
    limits: Limits,
}

struct State {
    engine: CorrelationEngine,
    events: u64,
    /// Events that found the group cap reached: rsigma then evicts expired windows
    /// and, if still full, the stalest tenth (which may lose a pending correlation).
    cap_reached: u64,
}

impl Engine {
    pub fn new(rules: RuleSet) -> Self {
        Self::with_limits(rules, Limits::default())
    }

    pub fn with_limits(rules: RuleSet, limits: Limits) -> Self {
        let config = CorrelationConfig {
            // secmon gives the event time explicitly (envelope `time`).
            timestamp_fields: vec![],
            max_state_entries: limits.max_groups,
            max_group_entries: Some(limits.max_group_entries),
            correlation_event_mode: CorrelationEventMode::Refs,
            max_correlation_events: limits.max_event_ids,
            ..CorrelationConfig::default()
        };
        let mut engine = CorrelationEngine::new(config);
        let mut meta = Vec::new();
        let mut by_key = HashMap::new();
        let mut collection = SigmaCollection::new();
        for r in rules.rules {
            let key = r.rule.id.clone().unwrap_or_else(|| r.rule.title.clone());
            by_key.insert(key.clone(), meta.len());
            meta.push(RuleMeta {
                rule_id: key,
                title: r.rule.title.clone(),
                level: r.rule.level.map(|l| l.as_str().to_owned()),
                tags: r.rule.tags.clone(),
                logsource: Some(r.rule.logsource.clone()),
                file: r.file,
                silent: rules.correlations.iter().any(|c| {
                    !c.rule.generate
                        && c.rule
                            .rules
                            .iter()
                            .any(|x| Some(x) == r.rule.id.as_ref() || Some(x) == r.rule.name.as_ref())
                }),
                hits: AtomicU64::new(0),
            });
            collection.rules.push(r.rule);
        }
        for c in rules.correlations {
            let key = c.rule.id.clone().unwrap_or_else(|| c.rule.title.clone());
            by_key.insert(key.clone(), meta.len());
            meta.push(RuleMeta {
                rule_id: key,
                title: c.rule.title.clone(),
                level: c.rule.level.map(|l| l.as_str().to_owned()),
                tags: c.rule.tags.clone(),
                logsource: None,
                file: c.file,
                silent: false,
                hits: AtomicU64::new(0),
            });
            collection.correlations.push(c.rule);
        }
        // Every rule was compiled once while loading, so this cannot fail on them; if
        // rsigma still refuses, log it: the engine then runs with no rules.
        if let Err(e) = engine.add_collection(&collection) {
            tracing::error!(error = %e, "rule set rejected by rsigma after loading");
        }
        Self { inner: Mutex::new(State { engine, events: 0, cap_reached: 0 }), meta, by_key, limits }
    }

    /// Rules and correlations in the engine.
    pub fn rule_count(&self) -> usize {
        self.meta.len()
    }

    /// Live correlation windows (correlation, group); at most [`Limits::max_groups`].
    pub fn correlation_groups(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).engine.state_count()
    }

    /// Events that arrived with the correlation group cap reached (each forced an
    /// eviction of the stalest windows).
    pub fn correlation_cap_reached(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).cap_reached
    }

    /// Every rule with its hit count, in load order.
    pub fn rule_stats(&self) -> Vec<RuleStat> {
        self.meta
            .iter()
            .map(|m| RuleStat {
                rule_id: m.rule_id.clone(),
                title: m.title.clone(),
                level: m.level.clone(),
                file: m.file.clone(),
                correlation: m.logsource.is_none(),
                hits: m.hits.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Evaluate one envelope: detection matches first, then correlations it completed.
    pub fn evaluate(&self, env: &Envelope) -> Vec<Match> {
        let mapped = mapping::map_envelope(env);
        let view = SigmaView::new(&mapped);
        let ts = env.time.timestamp();
        let results = {
            let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            state.events += 1;
            if state.events.is_multiple_of(self.limits.sweep_every) {
                state.engine.evict_expired(ts);
            }
            if state.engine.state_count() >= self.limits.max_groups {
                state.cap_reached += 1;
            }
            let detections: Vec<EvaluationResult> = state
                .engine
                .evaluate(&view)
                .into_iter()
                .filter(|d| self.meta_of(d).is_some_and(|m| fits(m, &mapped.logsource)))
                .collect();
            state.engine.process_with_detections(&view, detections, ts)
        };
        results.into_iter().filter_map(|r| self.to_match(&r, env.id)).collect()
    }

    fn meta_of(&self, r: &EvaluationResult) -> Option<&RuleMeta> {
        let key = r.header.rule_id.as_ref().unwrap_or(&r.header.rule_title);
        self.by_key.get(key).map(|&i| &self.meta[i])
    }

    fn to_match(&self, r: &EvaluationResult, event_id: Uuid) -> Option<Match> {
        let Some(meta) = self.meta_of(r) else {
            tracing::warn!(rule = %r.header.rule_title, "match from a rule the engine does not know");
            return None;
        };
        if meta.silent && r.is_detection() {
            return None;
        }
        meta.hits.fetch_add(1, Ordering::Relaxed);
        let mut m = Match {
            rule_id: meta.rule_id.clone(),
            title: meta.title.clone(),
            level: meta.level.clone(),
            tags: meta.tags.clone(),
            logsource: meta.logsource.as_ref().map(Logsource::from).unwrap_or_default(),
            event_ids: vec![event_id],
            correlation: false,
            correlation_type: None,
            group_key: vec![],
            aggregated_value: None,
        };
        if let Some(c) = r.as_correlation() {
            m.correlation = true;
            m.correlation_type = Some(c.correlation_type.as_str().to_owned());
            m.group_key = c.group_key.clone();
            m.aggregated_value = Some(c.aggregated_value);
            if let Some(refs) = &c.event_refs {
                m.event_ids =
                    refs.iter().filter_map(|e| e.id.as_deref().and_then(|s| s.parse().ok())).collect();
            }
        }
        Some(m)
    }
}

/// Sigma logsource semantics: each part the rule names must equal the event's.
fn fits(meta: &RuleMeta, event: &EventLogsource) -> bool {
    let Some(ls) = &meta.logsource else { return true };
    let eq = |rule: &Option<String>, ev: Option<&str>| match rule {
        None => true,
        Some(r) => ev.is_some_and(|e| e.eq_ignore_ascii_case(r)),
    };
    eq(&ls.category, event.category)
        && eq(&ls.product, Some(event.product))
        && ls.service.as_ref().is_none_or(|s| event.services.contains(&s.to_ascii_lowercase()))
}
