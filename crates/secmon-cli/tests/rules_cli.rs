//! `secmon rules check` (the real binary) on SigmaHQ's Linux rules and on a temp dir
//! with a bad rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn secmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secmon")).args(args).output().expect("run secmon")
}

fn stdout_ok(args: &[&str]) -> String {
    let out = secmon(args);
    assert!(out.status.success(), "secmon {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sigma_linux() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/sigma"));
    assert!(root.is_dir(), "SigmaHQ checkout missing at {} (expected ../shared/sigma)", root.display());
    root.join("rules/linux")
}

fn yml_count(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(
            |p| if p.is_dir() { yml_count(&p) } else { u64::from(p.extension().is_some_and(|x| x == "yml")) },
        )
        .sum()
}

#[test]
fn check_sigmahq_linux_reports_loaded_and_unsupported_with_reasons() {
    let linux = sigma_linux();
    let dir = linux.to_str().unwrap();
    let json: Value = serde_json::from_str(&stdout_ok(&["rules", "check", dir, "--json"])).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["loaded", "unsupported"]);
    let loaded = json["loaded"].as_u64().unwrap();
    let unsupported = json["unsupported"].as_array().unwrap();
    // Every file is either loaded or reported (one rule per SigmaHQ file).
    assert_eq!(loaded + unsupported.len() as u64, yml_count(&linux));
    // The four folders secmon feeds (157 rules) load; auditd rules do not.
    assert!(loaded >= 150, "loaded {loaded}");
    assert!(!unsupported.is_empty());
    for u in unsupported {
        assert_eq!(u.as_object().unwrap().len(), 2, "{u}");
        assert!(u["file"].as_str().unwrap().starts_with(dir), "{u}");
        assert!(!u["reason"].as_str().unwrap().is_empty(), "{u}");
    }
    assert!(
        unsupported.iter().any(|u| u["file"].as_str().unwrap().contains("/auditd/")
            && u["reason"].as_str().unwrap().contains("service \"auditd\"")),
        "auditd rules are reported with their reason"
    );

    let human = stdout_ok(&["rules", "check", dir]);
    assert!(human.starts_with(&format!("loaded: {loaded}\nunsupported: {}\n", unsupported.len())), "{human}");
    assert_eq!(human.lines().count(), 2 + unsupported.len());
}

#[test]
fn check_reports_a_bad_rule_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        "title: Good\nid: g-1\nlogsource: {product: linux, category: process_creation}\n\
         detection: {sel: {Image|endswith: /id}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.yml"), "title: [unclosed\n").unwrap();
    let d = dir.path().to_str().unwrap();

    let json: Value = serde_json::from_str(&stdout_ok(&["rules", "check", d, "--json"])).unwrap();
    assert_eq!(json["loaded"], 1);
    let unsupported = json["unsupported"].as_array().unwrap();
    assert_eq!(unsupported.len(), 1);
    assert_eq!(unsupported[0]["file"], format!("{d}/bad.yml"));
    assert!(unsupported[0]["reason"].as_str().unwrap().contains("parse error"), "{json}");

    let human = stdout_ok(&["rules", "check", d]);
    let lines: Vec<_> = human.lines().collect();
    assert_eq!(lines[..2], ["loaded: 1", "unsupported: 1"]);
    assert!(lines[2].starts_with(&format!("  {d}/bad.yml: parse error")), "{human}");
}

#[test]
fn check_fails_clearly_on_a_missing_directory() {
    let out = secmon(&["rules", "check", "/nonexistent/secmon-rules"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/secmon-rules") && err.contains("No such file"), "{err}");
    assert!(out.stdout.is_empty());
}
