//! Rule test cases as data: a rule file, an event that must fire it and one that must
//! not. The format (JSON):
//!
//! ```json
//! { "cases": [ { "rule": "rules/linux/file_event/x.yml",
//!                "positive": { "class": "file", "activity": "created", "payload": { ... } },
//!                "negative": { "class": "file", "activity": "created", "payload": { ... } } } ] }
//! ```
//!
//! `rule` is relative to a rules root given when running. Events name `class`,
//! `activity` and `payload`; `severity` defaults to `info` and `agent_id` to `test`.

use std::path::{Path, PathBuf};

use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use serde::Deserialize;
use serde_json::Value;

use crate::{Engine, RuleSet};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub rule: PathBuf,
    pub positive: EventSpec,
    pub negative: EventSpec,
}

/// The parts of an envelope a case states.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub class: EventClass,
    pub activity: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub payload: Value,
}

fn default_severity() -> Severity {
    Severity::Info
}

impl EventSpec {
    pub fn to_envelope(&self, seq: u64) -> Result<Envelope, String> {
        let agent = AgentId::new(self.agent_id.clone().unwrap_or_else(|| "test".into()))
            .map_err(|e| format!("agent_id: {e}"))?;
        Ok(Envelope::new(agent, seq, self.class, self.activity.clone(), self.severity, self.payload.clone()))
    }
}

impl CaseFile {
    pub fn read(path: &Path) -> Result<CaseFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Case {
    /// Load the case's rule from under `rules_root` alone and check that the positive
    /// event fires it and the negative one does not.
    pub fn run(&self, rules_root: &Path) -> Result<(), String> {
        let file = rules_root.join(&self.rule);
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let (set, problems) = RuleSet::from_yaml(&file, &text);
        if let Some(p) = problems.first() {
            return Err(format!("{}: not loaded: {}", file.display(), p.reason));
        }
        let Some(rule_id) = set.rules.first().and_then(|r| r.rule.id.clone()) else {
            return Err(format!("{}: no detection rule with an id", file.display()));
        };
        let engine = Engine::new(set);
        let fired = |spec: &EventSpec, seq| -> Result<bool, String> {
            Ok(engine.evaluate(&spec.to_envelope(seq)?).iter().any(|m| m.rule_id == rule_id))
        };
        if !fired(&self.positive, 1)? {
            return Err(format!("{}: positive event did not match", self.rule.display()));
        }
        if fired(&self.negative, 2)? {
            return Err(format!("{}: negative event matched", self.rule.display()));
        }
        Ok(())
    }
}
