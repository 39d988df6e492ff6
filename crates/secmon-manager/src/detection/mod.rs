//! Detection: the Sigma rules of `[rules] dirs` ([`secmon_rules`]) run over every
//! newly stored event, and each match becomes an alert ([`crate::alerts`]).
//!
//! - Where: ingest's committer hands each committed batch's newly stored events
//!   (not duplicates, not rejected ones), in delivery order (per agent, the order
//!   the agent published them), to [`evaluate`]'s task over a bounded channel and
//!   only then acknowledges the batch. When the channel is full the committer
//!   waits, so ingest slows down to what the rules can take and nothing is
//!   dropped. The task evaluates a batch on a blocking thread and raises alerts.
//! - What a crash can lose: events are acknowledged after they are stored, and
//!   matches are raised after that. A redelivered event is a duplicate and is not
//!   evaluated again, so a crash loses the matches of the events stored but not
//!   yet evaluated (at most [`evaluate::QUEUE_BATCHES`] batches plus the one being
//!   evaluated). Correlation state is in memory too: a restart starts its windows
//!   afresh. On a clean stop the queue is drained first.
//! - Reload ([`RulesHandle::reload`]), on SIGHUP and when [`watch`] sees a rule
//!   file change: the new set is loaded on a blocking thread and swapped in at
//!   once; a batch being evaluated finishes on the old engine. Rules that cannot
//!   be used are logged and listed ([`LoadedRules::problems`]); the others load.
//!   If a rule directory is gone the old rules stay. The correlation windows of
//!   the old engine are lost (a half-counted brute force starts again); hit
//!   counts carry over by rule id.

pub mod evaluate;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use secmon_rules::{Engine, LoadProblem, RuleSet, RuleStat};

use crate::metrics::Metrics;

/// One loaded rule set and its engine.
pub struct LoadedRules {
    pub engine: Engine,
    /// Rules (and files, directories) skipped, with the reason.
    pub problems: Vec<LoadProblem>,
    pub loaded_at: DateTime<Utc>,
    /// Hits of earlier engines, by rule id, so counts survive a reload.
    base_hits: HashMap<String, u64>,
}

impl LoadedRules {
    /// The loaded rules with their hit counts since the manager started.
    pub fn stats(&self) -> Vec<RuleStat> {
        let mut stats = self.engine.rule_stats();
        for s in &mut stats {
            s.hits += self.base_hits.get(&s.rule_id).copied().unwrap_or(0);
        }
        stats
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("rule directory {0} is missing or not a directory; keeping the loaded rules")]
    DirMissing(PathBuf),
    #[error("rule loading failed: {0}")]
    Task(String),
}

/// What a reload installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub rules: usize,
    pub problems: usize,
}

/// The current rule set; cheap to clone. Readers take an `Arc` snapshot, a reload
/// replaces it.
#[derive(Clone)]
pub struct RulesHandle {
    inner: Arc<Inner>,
}

struct Inner {
    dirs: Vec<PathBuf>,
    current: RwLock<Arc<LoadedRules>>,
    /// One reload at a time (SIGHUP and the watcher may ask together).
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

/// Parsing and compiling rules is CPU work: run on a blocking thread.
fn load_blocking(dirs: &[PathBuf]) -> (Engine, Vec<LoadProblem>) {
    let (set, problems) = RuleSet::load(dirs);
    (Engine::new(set), problems)
}

fn log_problems(problems: &[LoadProblem]) {
    for p in problems {
        tracing::warn!(
            file = %p.file.display(),
            rule = p.rule.as_deref().unwrap_or("-"),
            reason = %p.reason,
            "rule not loaded"
        );
    }
}

impl RulesHandle {
    /// Loads the rules of `dirs` (none when empty). Unusable rules, and missing
    /// directories, are logged and listed as problems; the manager runs with the
    /// rest.
    pub async fn load(dirs: Vec<PathBuf>, metrics: Arc<Metrics>) -> Self {
        let d = dirs.clone();
        let (engine, problems) = tokio::task::spawn_blocking(move || load_blocking(&d))
            .await
            .unwrap_or_else(|e| (Engine::new(RuleSet::default()), vec![task_problem(&e.to_string())]));
        let loaded = install_metrics(engine, problems, HashMap::new(), &metrics);
        tracing::info!(
            rules = loaded.engine.rule_count(),
            problems = loaded.problems.len(),
            dirs = ?dirs,
            "rules loaded"
        );
        Self {
            inner: Arc::new(Inner {
                dirs,
                current: RwLock::new(Arc::new(loaded)),
                reloading: tokio::sync::Mutex::new(()),
                metrics,
            }),
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.inner.dirs
    }

    /// The rule set in use now.
    pub fn current(&self) -> Arc<LoadedRules> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the rule directories again and swaps the new set in. A missing
    /// directory keeps the old set; bad rules are skipped (logged, listed).
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let _one = self.inner.reloading.lock().await;
        let result = self.reload_locked().await;
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.inner
            .metrics
            .rule_reloads
            .get_or_create(&crate::metrics::ResultLabel { result: label.into() })
            .inc();
        match &result {
            Ok(s) => tracing::info!(rules = s.rules, problems = s.problems, "rules reloaded"),
            Err(e) => tracing::error!(error = %e, "rule reload failed"),
        }
        result
    }

    async fn reload_locked(&self) -> Result<ReloadSummary, ReloadError> {
        let dirs = self.inner.dirs.clone();
        if let Some(gone) = dirs.iter().find(|d| !d.is_dir()) {
            return Err(ReloadError::DirMissing(gone.clone()));
        }
        let (engine, problems) = tokio::task::spawn_blocking(move || load_blocking(&dirs))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))?;
        let old = self.current();
        let mut base = old.base_hits.clone();
        for s in old.engine.rule_stats() {
            *base.entry(s.rule_id).or_default() += s.hits;
        }
        let loaded = Arc::new(install_metrics(engine, problems, base, &self.inner.metrics));
        let summary = ReloadSummary { rules: loaded.engine.rule_count(), problems: loaded.problems.len() };
        *self.inner.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(summary)
    }
}

fn task_problem(reason: &str) -> LoadProblem {
    LoadProblem { file: PathBuf::new(), rule: None, reason: format!("rule loading failed: {reason}") }
}

/// Builds the engine, logs the problems and sets the rule gauges.
fn install_metrics(
    engine: Engine,
    problems: Vec<LoadProblem>,
    base_hits: HashMap<String, u64>,
    metrics: &Metrics,
) -> LoadedRules {
    log_problems(&problems);
    metrics.rules_loaded.set(i64::try_from(engine.rule_count()).unwrap_or(i64::MAX));
    metrics.rule_load_problems.set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
    LoadedRules { engine, problems, loaded_at: Utc::now(), base_hits }
}
