//! Loading Sigma rule files from directories: parse with rsigma, check that secmon can
//! ever feed each rule (logsource and fields in the mapping table), compile it, and
//! report every rule that cannot be used instead of failing the whole set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rsigma_parser::{CorrelationRule, LogSource, SigmaCollection, SigmaRule};
use serde::Serialize;

use crate::mapping;

/// A rule file (or one rule in it) that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadProblem {
    pub file: PathBuf,
    /// The rule's id, or its title when it has no id; `None` when the file did not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
}

/// A detection rule that loaded, with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub file: PathBuf,
    pub rule: SigmaRule,
}

/// A correlation rule that loaded.
#[derive(Debug, Clone)]
pub struct LoadedCorrelation {
    pub file: PathBuf,
    pub rule: CorrelationRule,
}

/// The usable rules from a set of directories.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<LoadedRule>,
    pub correlations: Vec<LoadedCorrelation>,
}

impl RuleSet {
    /// Load every `*.yml` / `*.yaml` under `dirs` (recursively, in path order).
    /// Unreadable directories and files, parse errors and unsupported rules come back
    /// as problems; everything else loads.
    pub fn load(dirs: &[PathBuf]) -> (RuleSet, Vec<LoadProblem>) {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for dir in dirs {
            collect_files(dir, &mut files, &mut problems);
        }
        files.sort();
        let mut set = RuleSet::default();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => set.add_yaml(&file, &text, &mut problems),
                Err(e) => problems.push(problem(&file, None, format!("cannot read: {e}"))),
            }
        }
        set.drop_dangling_correlations(&mut problems);
        (set, problems)
    }

    /// Load rules from YAML text (one or more documents) as if read from `file`.
    pub fn from_yaml(file: &Path, text: &str) -> (RuleSet, Vec<LoadProblem>) {
        let mut set = RuleSet::default();
        let mut problems = Vec::new();
        set.add_yaml(file, text, &mut problems);
        set.drop_dangling_correlations(&mut problems);
        (set, problems)
    }

    /// Rules and correlations loaded.
    pub fn len(&self) -> usize {
        self.rules.len() + self.correlations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add_yaml(&mut self, file: &Path, text: &str, problems: &mut Vec<LoadProblem>) {
        let collection = match rsigma_parser::parse_sigma_yaml(text) {
            Ok(c) => c,
            Err(e) => {
                problems.push(problem(file, None, format!("parse error: {e}")));
                return;
            }
        };
        let SigmaCollection { rules, correlations, filters, errors } = collection;
        for e in errors {
            problems.push(problem(file, None, format!("parse error: {e}")));
        }
        for f in filters {
            problems.push(problem(
                file,
                f.id.clone().or(Some(f.title.clone())),
                "filter rules are not supported".into(),
            ));
        }
        for rule in rules {
            let name = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            if self.rules.iter().any(|r| r.rule.id.is_some() && r.rule.id == rule.id) {
                problems.push(problem(file, Some(name), "duplicate rule id".into()));
                continue;
            }
            match check_rule(&rule) {
                Ok(()) => self.rules.push(LoadedRule { file: file.to_owned(), rule }),
                Err(reason) => problems.push(problem(file, Some(name), reason)),
            }
        }
        for rule in correlations {
            let name = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            match rsigma_eval::correlation::compile_correlation(&rule) {
                Ok(_) => self.correlations.push(LoadedCorrelation { file: file.to_owned(), rule }),
                Err(e) => problems.push(problem(file, Some(name), format!("correlation: {e}"))),
            }
        }
    }

    /// A correlation over rules that did not load would never fire: report it. rsigma
    /// finds a detection's correlations through the rule's `id`, so a referenced rule
    /// without an id counts as not loaded for this.
    fn drop_dangling_correlations(&mut self, problems: &mut Vec<LoadProblem>) {
        let correlations = std::mem::take(&mut self.correlations);
        let known: HashSet<String> = self
            .rules
            .iter()
            .filter(|r| r.rule.id.is_some())
            .flat_map(|r| r.rule.id.iter().chain(r.rule.name.iter()))
            .chain(correlations.iter().flat_map(|c| c.rule.id.iter().chain(c.rule.name.iter())))
            .cloned()
            .collect();
        let mut keep = Vec::new();
        for c in correlations {
            match c.rule.rules.iter().find(|r| !known.contains(*r)) {
                None => keep.push(c),
                Some(missing) => {
                    let name = c.rule.id.clone().unwrap_or_else(|| c.rule.title.clone());
                    problems.push(problem(
                        &c.file,
                        Some(name),
                        format!("correlation refers to rule {missing:?}, which is not loaded (or has no id)"),
                    ));
                }
            }
        }
        self.correlations = keep;
    }
}

fn problem(file: &Path, rule: Option<String>, reason: String) -> LoadProblem {
    LoadProblem { file: file.to_owned(), rule, reason }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<LoadProblem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(dir, None, format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(problem(dir, None, format!("cannot read directory: {e}")));
                continue;
            }
        };
        let path = entry.path();
        // file_type() does not follow symlinks, so a link loop cannot recurse forever.
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&path, out, problems),
            Ok(_) if is_rule_file(&path) => out.push(path),
            Ok(_) => {}
            Err(e) => problems.push(problem(&path, None, format!("cannot stat: {e}"))),
        }
    }
}

fn is_rule_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yml" || e == "yaml")
}

/// Why secmon cannot use a detection rule, if it cannot.
fn check_rule(rule: &SigmaRule) -> Result<(), String> {
    check_logsource(&rule.logsource)?;
    check_fields(rule)?;
    rsigma_eval::compile_rule(rule).map(|_| ()).map_err(|e| format!("compile error: {e}"))
}

fn check_logsource(ls: &LogSource) -> Result<(), String> {
    if let Some(p) = &ls.product
        && !p.eq_ignore_ascii_case(mapping::PRODUCT)
    {
        return Err(format!("logsource product {p:?} is not produced by secmon (only linux)"));
    }
    if let Some(c) = &ls.category
        && mapping::for_category(c).is_none()
    {
        let known: Vec<_> = mapping::known_categories().collect();
        return Err(format!(
            "logsource category {c:?} is not produced by secmon (known: {})",
            known.join(", ")
        ));
    }
    if let Some(s) = &ls.service {
        if ls.category.is_some() {
            return Err(format!("logsource with both category and service {s:?} is not produced by secmon"));
        }
        if !mapping::known_services().any(|k| k.eq_ignore_ascii_case(s)) {
            let known: Vec<_> = mapping::known_services().collect();
            return Err(format!(
                "logsource service {s:?} is not produced by secmon (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// For categories with a fixed field list, every field the detection reads must be
/// a mapped Sigma field or a native envelope field; otherwise the rule never matches.
fn check_fields(rule: &SigmaRule) -> Result<(), String> {
    let Some(row) = rule.logsource.category.as_deref().and_then(mapping::for_category) else {
        return Ok(());
    };
    let single =
        SigmaCollection { rules: vec![rule.clone()], correlations: vec![], filters: vec![], errors: vec![] };
    let fields = rsigma_eval::RuleFieldSet::collect(&single, &[], false);
    let mut unknown: Vec<&str> = fields
        .iter()
        .filter(|(_, origin)| origin.sources.contains(&rsigma_eval::FieldSource::Detection))
        .map(|(name, _)| name)
        .filter(|name| !row.fields.iter().any(|f| f.sigma == *name) && !is_native_field(name))
        .collect();
    unknown.sort_unstable();
    if unknown.is_empty() {
        Ok(())
    } else {
        let category = row.category.unwrap_or_default();
        Err(format!("field(s) {} not mapped for {category}", unknown.join(", ")))
    }
}

/// Field names of the envelope itself, usable in any rule.
pub fn is_native_field(name: &str) -> bool {
    const TOP: &[&str] = &["v", "id", "agent_id", "seq", "time", "observed", "class", "activity", "severity"];
    TOP.contains(&name) || name.starts_with("payload.")
}
