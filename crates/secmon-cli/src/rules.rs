//! `secmon rules`: work with Sigma rule files locally (no manager needed).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use secmon_rules::RuleSet;
use secmon_rules::cases::run_pack;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    cmd: RulesCmd,
}

#[derive(Debug, clap::Subcommand)]
enum RulesCmd {
    /// Load the rules under DIR and report which cannot be used, and why.
    Check {
        /// Directory searched recursively for *.yml / *.yaml rules.
        dir: PathBuf,
    },
    /// Load the rules under DIR and run the test cases beside them (`*.tests.json`):
    /// positive events must fire the case's rule, negative ones must not. Exits
    /// non-zero when a case fails, a rule does not load or a tests file is unreadable.
    Test {
        /// Directory searched recursively for rules and *.tests.json cases.
        dir: PathBuf,
    },
}

pub fn run(args: RulesArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.cmd {
        RulesCmd::Check { dir } => check(&dir, global.json),
        RulesCmd::Test { dir } => test(&dir, global.json),
    }
}

/// A missing or unreadable directory is a usage error, not "0 rules loaded".
fn require_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("rules directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    std::fs::read_dir(dir).with_context(|| format!("cannot read rules directory {}", dir.display()))?;
    Ok(())
}

fn check(dir: &Path, json: bool) -> anyhow::Result<()> {
    require_dir(dir)?;

    let (set, problems) = RuleSet::load(&[dir.to_owned()]);
    // writeln! rather than println!: a closed pipe (`| head`) is an error, not a panic.
    let mut out = std::io::stdout().lock();
    if json {
        let unsupported: Vec<_> = problems
            .iter()
            .map(|p| serde_json::json!({"file": p.file.display().to_string(), "reason": reason(p)}))
            .collect();
        writeln!(out, "{}", serde_json::json!({"loaded": set.len(), "unsupported": unsupported}))?;
    } else {
        writeln!(out, "loaded: {}", set.len())?;
        writeln!(out, "unsupported: {}", problems.len())?;
        for p in &problems {
            writeln!(out, "  {}: {}", p.file.display(), reason(p))?;
        }
    }
    Ok(())
}

/// The reason, naming the rule when a file holds several.
fn reason(p: &secmon_rules::LoadProblem) -> String {
    match &p.rule {
        Some(rule) => format!("{} (rule {rule})", p.reason),
        None => p.reason.clone(),
    }
}

fn test(dir: &Path, json: bool) -> anyhow::Result<()> {
    require_dir(dir)?;
    let report = run_pack(dir);
    let mut out = std::io::stdout().lock();
    if json {
        let cases: Vec<_> = report
            .cases
            .iter()
            .map(|c| {
                serde_json::json!({
                    "file": c.file.display().to_string(),
                    "index": c.index,
                    "name": c.name,
                    "rule": c.rule.display().to_string(),
                    "rule_id": c.rule_id,
                    "passed": c.passed,
                    "reason": c.reason,
                })
            })
            .collect();
        let unsupported: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({"file": p.file.display().to_string(), "reason": reason(p)}))
            .collect();
        let bad_files: Vec<_> = report
            .bad_files
            .iter()
            .map(|(f, e)| serde_json::json!({"file": f.display().to_string(), "reason": e}))
            .collect();
        let summary = serde_json::json!({
            "loaded": report.loaded,
            "unsupported": unsupported,
            "bad_test_files": bad_files,
            "cases": cases,
            "passed": report.cases.len() - report.failed(),
            "failed": report.failed(),
            "untested": report.untested,
        });
        writeln!(out, "{summary}")?;
    } else {
        for p in &report.problems {
            writeln!(out, "NOT LOADED {}: {}", p.file.display(), reason(p))?;
        }
        for (f, e) in &report.bad_files {
            writeln!(out, "BAD TESTS FILE {}: {e}", f.display())?;
        }
        for c in &report.cases {
            match &c.reason {
                None => writeln!(out, "ok   {}", c.label())?,
                Some(r) => writeln!(out, "FAIL {}: {r}", c.label())?,
            }
        }
        for id in &report.untested {
            writeln!(out, "untested rule {id}")?;
        }
        writeln!(
            out,
            "{} rules loaded, {} not loaded; {} cases: {} passed, {} failed",
            report.loaded,
            report.problems.len(),
            report.cases.len(),
            report.cases.len() - report.failed(),
            report.failed(),
        )?;
    }
    out.flush()?;
    if !report.ok() {
        bail!(
            "rule tests failed: {} failing case(s), {} rule(s) not loaded, {} unreadable tests file(s)",
            report.failed(),
            report.problems.len(),
            report.bad_files.len()
        );
    }
    Ok(())
}
