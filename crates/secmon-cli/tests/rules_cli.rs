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

fn pack() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules"))
}

#[test]
fn test_runs_the_shipped_pack_and_every_case_passes() {
    let dir = pack();
    let d = dir.to_str().unwrap();
    let human = stdout_ok(&["rules", "test", d]);
    let last = human.lines().last().unwrap();
    assert!(last.starts_with("13 rules loaded, 0 not loaded; "), "{human}");
    assert!(last.ends_with(" failed") && last.contains(" passed, 0 failed"), "{human}");
    assert!(!human.contains("FAIL") && !human.contains("untested"), "{human}");
    assert!(human.contains("ok   ") && human.contains("ssh_login_after_brute_force.tests.json#0"), "{human}");
    // As a user runs it from the checkout: `secmon rules test rules/`.
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["rules", "test", "rules/"])
        .current_dir(dir.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok   rules/ssh/ssh_brute_force.tests.json#0"));

    let json: Value = serde_json::from_str(&stdout_ok(&["rules", "test", d, "--json"])).unwrap();
    assert_eq!(json["loaded"], 13);
    assert_eq!(json["failed"], 0);
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(json["passed"].as_u64().unwrap(), cases.len() as u64);
    assert!(cases.len() >= 25, "{json}");
    assert!(cases.iter().all(|c| c["passed"] == true && c["reason"].is_null()), "{json}");
    assert!(json["untested"].as_array().unwrap().is_empty(), "{json}");
    // Each rule file of the pack is named by some case.
    for rule in ["setid_file.yml", "ssh_brute_force.yml", "agent_disconnected_without_shutdown.yml"] {
        assert!(cases.iter().any(|c| c["rule"] == rule), "{rule} untested: {json}");
    }
}

#[test]
fn test_fails_and_names_a_wrong_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pack().join("file/ssh_authorized_keys_changed.yml"), dir.path().join("keys.yml")).unwrap();
    // The first case is right; the second says known_hosts must fire, which it must not.
    std::fs::write(
        dir.path().join("keys.tests.json"),
        r#"{"cases": [
          {"name": "right", "rule": "keys.yml",
           "positive": {"class": "file", "activity": "modified", "payload": {"path": "/root/.ssh/authorized_keys"}},
           "negative": {"class": "file", "activity": "modified", "payload": {"path": "/root/.ssh/known_hosts"}}},
          {"name": "known_hosts is no key grant", "rule": "keys.yml",
           "positive": {"class": "file", "activity": "modified", "payload": {"path": "/root/.ssh/known_hosts"}},
           "negative": {"class": "file", "activity": "modified", "payload": {"path": "/etc/hosts"}}}
        ]}"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let tests_file = format!("{d}/keys.tests.json");

    let out = secmon(&["rules", "test", d]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines[0], format!("ok   {tests_file}#0 (right)"), "{stdout}");
    assert!(
        lines[1].starts_with(&format!("FAIL {tests_file}#1 (known_hosts is no key grant): rule "))
            && lines[1].contains("did not fire on the positive"),
        "{stdout}"
    );
    assert_eq!(lines[2], "1 rules loaded, 0 not loaded; 2 cases: 1 passed, 1 failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 failing case"), "{err}");

    let out = secmon(&["rules", "test", d, "--json"]);
    assert!(!out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["failed"], 1);
    assert_eq!(json["cases"][1]["name"], "known_hosts is no key grant");
    assert_eq!(json["cases"][1]["passed"], false);
    assert!(json["cases"][1]["reason"].as_str().unwrap().contains("did not fire"), "{json}");
}

#[test]
fn test_fails_on_a_rule_that_does_not_load_or_an_unreadable_tests_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(dir.path().join("bad.tests.json"), "{\"cases\": [").unwrap();
    let d = dir.path().to_str().unwrap();
    let out = secmon(&["rules", "test", d]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&format!("NOT LOADED {d}/bad.yml: parse error")), "{stdout}");
    assert!(stdout.contains(&format!("BAD TESTS FILE {d}/bad.tests.json: ")), "{stdout}");

    let out = secmon(&["rules", "test", "/nonexistent/secmon-rules"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/secmon-rules"));
}
