//! Rule test cases as data: a rule file, events that must fire it and events that
//! must not. The format (JSON):
//!
//! ```json
//! { "cases": [ { "name": "new key for root",
//!                "rule": "rules/linux/file_event/x.yml",
//!                "positive": { "class": "file", "activity": "created", "payload": { ... } },
//!                "negative": { "class": "file", "activity": "created", "payload": { ... } } } ] }
//! ```
//!
//! `rule` is relative to a rules root given when running ([`Case::run`]), or, for a
//! `*.tests.json` file beside its rules ([`run_pack`]), to that file's directory.
//! `positive` and `negative` are one event or a list of events fed in order (for
//! correlation rules): the rule must fire on at least one positive event and on no
//! negative one. `name` (optional) says what the case shows; `rule_id` (optional)
//! picks one rule when the file holds several. Events name `class`, `activity` and
//! `payload`; `severity` defaults to `info`, `agent_id` to `test` and `time` (RFC 3339)
//! to now: correlation cases set `time` to place events inside or outside a window.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Engine, LoadProblem, RuleSet};

/// Test files beside rules end with this.
pub const TESTS_SUFFIX: &str = ".tests.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    pub rule: PathBuf,
    #[serde(default)]
    pub rule_id: Option<String>,
    pub positive: Events,
    pub negative: Events,
}

/// One event, or a sequence fed to the engine in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Events {
    One(Box<EventSpec>),
    Sequence(Vec<EventSpec>),
}

impl Events {
    pub fn as_slice(&self) -> &[EventSpec] {
        match self {
            Events::One(e) => std::slice::from_ref(e),
            Events::Sequence(v) => v,
        }
    }
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
    pub time: Option<DateTime<Utc>>,
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
        let mut env =
            Envelope::new(agent, seq, self.class, self.activity.clone(), self.severity, self.payload.clone());
        if let Some(t) = self.time {
            env.time = t;
            env.observed = t;
        }
        Ok(env)
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
    /// events fire it and the negative ones do not.
    pub fn run(&self, rules_root: &Path) -> Result<(), String> {
        let file = rules_root.join(&self.rule);
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let (set, problems) = RuleSet::from_yaml(&file, &text);
        if let Some(p) = problems.first() {
            return Err(format!("{}: not loaded: {}", file.display(), p.reason));
        }
        let rule_id = self.pick(&set, &file)?;
        self.check(&rule_id, || Engine::new(set.clone()))
            .map_err(|reason| format!("{}: {reason}", self.rule.display()))
    }

    /// The id of the rule under test among those loaded from `file`.
    fn pick(&self, set: &RuleSet, file: &Path) -> Result<String, String> {
        let same = |f: &Path| same_file(f, file);
        let ids: Vec<String> = set
            .rules
            .iter()
            .filter(|r| same(&r.file))
            .map(|r| r.rule.id.clone())
            .chain(set.correlations.iter().filter(|c| same(&c.file)).map(|c| c.rule.id.clone()))
            .map(|id| id.ok_or_else(|| format!("{}: a rule without an id cannot be tested", file.display())))
            .collect::<Result<_, _>>()?;
        match (&self.rule_id, ids.as_slice()) {
            (Some(want), _) if ids.contains(want) => Ok(want.clone()),
            (Some(want), _) => Err(format!("{}: no loaded rule with id {want}", file.display())),
            (None, [one]) => Ok(one.clone()),
            (None, []) => {
                Err(format!("{}: no rule loaded from this file (see the load problems)", file.display()))
            }
            (None, _) => Err(format!("{}: holds {} rules; name one with rule_id", file.display(), ids.len())),
        }
    }

    /// Feed the positive events to one fresh engine and the negative ones to another.
    fn check(&self, rule_id: &str, engine: impl Fn() -> Engine) -> Result<(), String> {
        let fired_at = |events: &Events| -> Result<Option<usize>, String> {
            let engine = engine();
            for (i, spec) in events.as_slice().iter().enumerate() {
                let env = spec.to_envelope(i as u64 + 1)?;
                if engine.evaluate(&env).iter().any(|m| m.rule_id == rule_id) {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        };
        let positives = self.positive.as_slice().len();
        if fired_at(&self.positive)?.is_none() {
            return Err(format!("rule {rule_id} did not fire on the positive event(s) ({positives} fed)"));
        }
        if let Some(i) = fired_at(&self.negative)? {
            return Err(format!(
                "rule {rule_id} fired on negative event #{} of {}",
                i + 1,
                self.negative.as_slice().len()
            ));
        }
        Ok(())
    }

    /// Run against a loaded rule pack: `tests_dir` is the directory of the tests file
    /// (where `rule` is relative to). A detection rule is tested alone, so that a
    /// correlation's base rule (which reports only through the correlation in the
    /// full pack) can be checked too; a correlation is tested with the whole pack,
    /// since it needs the rules it refers to.
    pub fn run_in(&self, pack: &RuleSet, tests_dir: &Path) -> Result<String, String> {
        let file = tests_dir.join(&self.rule);
        if !file.is_file() {
            return Err(format!("rule file {} not found", file.display()));
        }
        let rule_id = self.pick(pack, &file)?;
        let detection = pack.rules.iter().find(|r| r.rule.id.as_deref() == Some(rule_id.as_str()));
        match detection {
            Some(r) => {
                let alone = RuleSet { rules: vec![r.clone()], correlations: vec![] };
                self.check(&rule_id, || Engine::new(alone.clone()))?;
            }
            None => self.check(&rule_id, || Engine::new(pack.clone()))?,
        }
        Ok(rule_id)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The outcome of one case of a pack.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// The tests file.
    pub file: PathBuf,
    /// Index of the case in its file (from 0).
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The rule file named by the case.
    pub rule: PathBuf,
    /// The rule's id, once found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    pub passed: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CaseOutcome {
    /// `file#index (name)`: how reports point at a case.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{}#{} ({n})", self.file.display(), self.index),
            None => format!("{}#{}", self.file.display(), self.index),
        }
    }
}

/// The result of testing a rule directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackReport {
    /// Rules and correlations loaded.
    pub loaded: usize,
    /// Rules that did not load.
    pub problems: Vec<LoadProblem>,
    /// Tests files that could not be read or parsed.
    pub bad_files: Vec<(PathBuf, String)>,
    pub cases: Vec<CaseOutcome>,
    /// Ids of loaded rules no case names.
    pub untested: Vec<String>,
}

impl PackReport {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// Every case passed, every rule loaded and every tests file was read.
    pub fn ok(&self) -> bool {
        self.failed() == 0 && self.problems.is_empty() && self.bad_files.is_empty()
    }
}

/// Load the rules under `dir` and run every case of every `*.tests.json` under it.
pub fn run_pack(dir: &Path) -> PackReport {
    let (pack, problems) = RuleSet::load(&[dir.to_owned()]);
    let mut report = PackReport { loaded: pack.len(), problems, ..Default::default() };
    let mut files = Vec::new();
    collect_tests(dir, &mut files, &mut report.bad_files);
    files.sort();
    let mut tested = BTreeSet::new();
    for file in files {
        let cases = match CaseFile::read(&file) {
            Ok(c) => c,
            Err(e) => {
                report.bad_files.push((file, e));
                continue;
            }
        };
        let tests_dir = file.parent().unwrap_or(Path::new("."));
        for (index, case) in cases.cases.iter().enumerate() {
            let mut outcome = CaseOutcome {
                file: file.clone(),
                index,
                name: case.name.clone(),
                rule: case.rule.clone(),
                rule_id: None,
                passed: false,
                reason: None,
            };
            match case.run_in(&pack, tests_dir) {
                Ok(id) => {
                    tested.insert(id.clone());
                    outcome.rule_id = Some(id);
                    outcome.passed = true;
                }
                Err(e) => outcome.reason = Some(e),
            }
            report.cases.push(outcome);
        }
    }
    report.untested = pack
        .rules
        .iter()
        .map(|r| r.rule.id.clone().unwrap_or_else(|| r.rule.title.clone()))
        .chain(pack.correlations.iter().map(|c| c.rule.id.clone().unwrap_or_else(|| c.rule.title.clone())))
        .filter(|id| !tested.contains(id))
        .collect();
    report
}

fn collect_tests(dir: &Path, out: &mut Vec<PathBuf>, bad: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            bad.push((dir.to_owned(), format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                bad.push((dir.to_owned(), format!("cannot read directory: {e}")));
                continue;
            }
        };
        let path = entry.path();
        // file_type() does not follow symlinks: no loops.
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_tests(&path, out, bad),
            Ok(_) if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(TESTS_SUFFIX)) => {
                out.push(path)
            }
            _ => {}
        }
    }
}
