//! Running the real `secmon` binary in tests: output, success or failure, table cells.

use std::process::{Command, Output};

pub fn secmon(api: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secmon"))
        .arg("--api")
        .arg(api)
        .args(args)
        .env_remove("SECMON_API")
        .output()
        .expect("run secmon")
}

pub fn ok_stdout(api: &str, args: &[&str]) -> String {
    let out = secmon(api, args);
    assert!(out.status.success(), "secmon {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn failure(api: &str, args: &[&str]) -> String {
    let out = secmon(api, args);
    assert!(!out.status.success(), "secmon {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// Splits a table line into its cells (columns are separated by 2+ spaces).
pub fn cells(line: &str) -> Vec<&str> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
}
