//! The rule pack in `rules/` at the workspace root: every rule loads, every rule has
//! test cases beside it, and every case passes (positives fire, negatives do not).

use std::path::{Path, PathBuf};

use secmon_rules::RuleSet;
use secmon_rules::cases::{CaseFile, run_pack};

fn pack_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    assert!(dir.is_dir(), "rule pack missing at {}", dir.display());
    dir
}

#[test]
fn every_pack_rule_loads_without_problems() {
    let (set, problems) = RuleSet::load(&[pack_dir()]);
    assert!(problems.is_empty(), "problems: {problems:#?}");
    assert_eq!(set.rules.len(), 11, "detection rules");
    assert_eq!(set.correlations.len(), 2, "correlation rules");
    for r in &set.rules {
        let id = r.rule.id.as_deref().unwrap_or_else(|| panic!("{}: no id", r.file.display()));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{}: id {id} is not a UUID", r.file.display());
        assert_eq!(r.rule.author.as_deref(), Some("secmon"), "{}", r.file.display());
        assert!(r.rule.level.is_some() && r.rule.status.is_some(), "{}", r.file.display());
        assert!(r.rule.description.is_some() && !r.rule.falsepositives.is_empty(), "{}", r.file.display());
        assert!(r.rule.tags.iter().any(|t| t.starts_with("attack.t")), "{}: no ATT&CK id", r.file.display());
    }
    for c in &set.correlations {
        let id = c.rule.id.as_deref().unwrap_or_else(|| panic!("{}: no id", c.file.display()));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{}: id {id} is not a UUID", c.file.display());
        assert!(c.rule.tags.iter().any(|t| t.starts_with("attack.t")), "{}: no ATT&CK id", c.file.display());
    }
}

#[test]
fn every_pack_case_passes_and_every_rule_is_tested() {
    let report = run_pack(&pack_dir());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.bad_files.is_empty(), "{:#?}", report.bad_files);
    let failures: Vec<String> = report
        .cases
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.label(), c.reason.as_deref().unwrap_or_default()))
        .collect();
    assert!(failures.is_empty(), "failing cases:\n{}", failures.join("\n"));
    assert!(report.untested.is_empty(), "rules without cases: {:?}", report.untested);
    assert_eq!(report.loaded, 13);
    assert!(report.cases.len() >= 25, "only {} cases", report.cases.len());
    assert!(report.ok());
}

/// One tests file per rule, named after it: `x.yml` beside `x.tests.json`, whose
/// cases all name `x.yml`.
#[test]
fn tests_files_sit_beside_their_rules() {
    let mut stack = vec![pack_dir()];
    let mut rules = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if let Some(stem) = name.strip_suffix(".yml") {
                rules += 1;
                let tests = dir.join(format!("{stem}.tests.json"));
                let cases = CaseFile::read(&tests).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!cases.cases.is_empty(), "{}", tests.display());
                for c in &cases.cases {
                    assert_eq!(c.rule, Path::new(name), "{}", tests.display());
                    assert!(!c.positive.as_slice().is_empty() && !c.negative.as_slice().is_empty());
                }
            }
        }
    }
    assert_eq!(rules, 13);
}

/// A case whose expectation is wrong fails, naming the rule and why.
#[test]
fn a_wrong_case_fails_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pack_dir().join("file/sshd_config_changed.yml"), dir.path().join("sshd.yml")).unwrap();
    std::fs::write(
        dir.path().join("sshd.tests.json"),
        r#"{"cases": [
          {"name": "swapped", "rule": "sshd.yml",
           "positive": {"class": "file", "activity": "modified", "payload": {"path": "/etc/ssh/ssh_config"}},
           "negative": {"class": "file", "activity": "modified", "payload": {"path": "/etc/ssh/sshd_config"}}},
          {"name": "missing rule", "rule": "nope.yml",
           "positive": {"class": "file", "activity": "modified", "payload": {}},
           "negative": {"class": "file", "activity": "modified", "payload": {}}}
        ]}"#,
    )
    .unwrap();
    let report = run_pack(dir.path());
    assert!(!report.ok());
    assert_eq!(report.failed(), 2);
    let reason = report.cases[0].reason.as_deref().unwrap();
    assert!(reason.contains("did not fire on the positive"), "{reason}");
    assert!(reason.contains("8eec7a6c-7314-41c9-af3d-1c222b9c0ded"), "{reason}");
    assert!(report.cases[1].reason.as_deref().unwrap().contains("nope.yml"), "{:?}", report.cases[1]);
    assert_eq!(
        report.cases[0].label(),
        format!("{}#0 (swapped)", dir.path().join("sshd.tests.json").display())
    );
}

/// rsigma's Sigma linter finds nothing to say about the pack (spec errors, best
/// practice warnings and hints alike).
#[test]
fn pack_rules_pass_the_sigma_linter() {
    let results = rsigma_parser::lint_yaml_directory(&pack_dir()).unwrap();
    assert_eq!(results.len(), 13, "linted files");
    let found: Vec<String> = results
        .iter()
        .flat_map(|r| r.warnings.iter().map(move |w| format!("{}: {w}", r.path.display())))
        .collect();
    assert!(found.is_empty(), "lint:\n{}", found.join("\n"));
}
