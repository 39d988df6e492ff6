//! `secmon rules`: work with Sigma rule files locally (no manager needed).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use secmon_rules::RuleSet;

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
}

pub fn run(args: RulesArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.cmd {
        RulesCmd::Check { dir } => check(&dir, global.json),
    }
}

fn check(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    // A missing or unreadable directory is a usage error, not "0 rules loaded".
    let meta = std::fs::metadata(dir).with_context(|| format!("rules directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    std::fs::read_dir(dir).with_context(|| format!("cannot read rules directory {}", dir.display()))?;

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
