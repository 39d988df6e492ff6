//! Golden files pin what the log decoders make of sample lines: for each decoder,
//! `tests/golden/logs/<name>.log` holds the lines and `<name>.json` the decoded events.
//! Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p secmon-agent --test logs_golden`, and review the diff.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use secmon_agent::config::LogFormat;
use secmon_agent::logs::{DecodedLine, decode_line};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/logs")
}

/// Decodes every line of `<name>.log` as read from `/var/log/auth.log` on
/// 2026-11-23 22:00 UTC, and compares with `<name>.json`.
fn check(name: &str) -> Vec<DecodedLine> {
    let input = std::fs::read(golden_dir().join(format!("{name}.log"))).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 22, 0, 0).unwrap();
    let decoded: Vec<DecodedLine> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| decode_line("/var/log/auth.log", &String::from_utf8_lossy(l), LogFormat::Auto, now, &Utc))
        .collect();
    let json = serde_json::to_string_pretty(&decoded).unwrap() + "\n";
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(json, golden, "{name}: decoding differs from {}", path.display());
    decoded
}

/// Every sample line of a decoder's file is understood by that decoder.
fn check_decoder(name: &str) -> Vec<DecodedLine> {
    let decoded = check(name);
    assert!(!decoded.is_empty());
    for d in &decoded {
        assert_eq!(d.record.decoder.as_deref(), Some(name), "{}", d.record.raw);
        assert_ne!(d.activity, "line", "{}", d.record.raw);
        assert!(d.time.is_some(), "{}", d.record.raw);
    }
    decoded
}

fn activities(d: &[DecodedLine]) -> Vec<&str> {
    d.iter().map(|d| d.activity.as_str()).collect()
}

#[test]
fn sshd() {
    let d = check_decoder("sshd");
    assert_eq!(
        activities(&d),
        [
            "auth_accepted",
            "auth_accepted",
            "auth_failed",
            "auth_failed",
            "auth_failed",
            "invalid_user",
            "disconnected",
            "disconnected",
            "disconnected",
            "disconnected",
            "auth_accepted",
            "auth_failed"
        ]
    );
    let f = &d[0].record.fields;
    assert_eq!((f["user"].as_str(), f["src_ip"].as_str()), (Some("alice"), Some("192.0.2.10")));
    assert_eq!((f["src_port"].as_u64(), f["method"].as_str()), (Some(51234), Some("password")));
    assert_eq!(d[3].record.fields["user"], "admin");
    assert_eq!(d[3].severity, secmon_proto::Severity::Low);
    assert_eq!(d[0].severity, secmon_proto::Severity::Info);
    assert_eq!(d[10].record.format, "rfc5424");
}

#[test]
fn sudo() {
    let d = check_decoder("sudo");
    assert_eq!(activities(&d), ["sudo", "sudo", "sudo_failed", "sudo_failed", "sudo"]);
    let f = &d[0].record.fields;
    assert_eq!(f["user"], "alice");
    assert_eq!(f["tty"], "pts/0");
    assert_eq!(f["pwd"], "/home/alice");
    assert_eq!(f["target_user"], "root");
    assert_eq!(f["command"], "/usr/bin/id");
    assert_eq!(d[1].record.fields["command"], "/bin/sh -c echo a ; echo b");
}

#[test]
fn su() {
    let d = check_decoder("su");
    assert_eq!(activities(&d), ["su", "su", "su", "su_failed", "su_failed", "su_failed", "su", "su_failed"]);
    assert_eq!(d[1].record.fields["user"], "alice");
    assert_eq!(d[2].record.fields["target_user"], "postgres");
}

#[test]
fn useradd() {
    let d = check_decoder("useradd");
    assert_eq!(activities(&d), ["group_added", "user_added", "user_modified", "group_added"]);
    let f = &d[1].record.fields;
    assert_eq!(
        (f["user"].as_str(), f["uid"].as_u64(), f["shell"].as_str()),
        (Some("bob"), Some(1001), Some("/bin/bash"))
    );
    assert_eq!(d[1].severity, secmon_proto::Severity::Medium);
}

#[test]
fn usermod() {
    let d = check_decoder("usermod");
    assert!(d.iter().all(|d| d.activity == "user_modified" && d.severity == secmon_proto::Severity::Medium));
    assert_eq!(d[0].record.fields["group"], "sudo");
    assert_eq!(d[2].record.fields["to"], "/bin/bash");
}

#[test]
fn passwd() {
    let d = check_decoder("passwd");
    assert!(d.iter().all(|d| d.activity == "password_changed"));
    assert_eq!(d[0].record.fields["user"], "bob");
}

#[test]
fn cron() {
    let d = check_decoder("cron");
    assert_eq!(d[0].record.fields["user"], "root");
    assert_eq!(d[0].record.fields["command"], "command -v debian-sa1 > /dev/null && debian-sa1 1 1");
    assert_eq!(d[0].severity, secmon_proto::Severity::Info);
}

#[test]
fn unknown_lines_keep_their_text() {
    let d = check("unknown");
    assert!(d.iter().all(|d| d.activity == "line" && d.record.decoder.is_none()), "{d:?}");
    assert!(d.iter().all(|d| !d.record.message.is_empty()));
    assert_eq!(d[4].record.format, "raw");
    assert_eq!(d[4].record.message, "just some text without any header");
    assert_eq!(d[5].time.unwrap().to_rfc3339(), "2025-12-31T23:59:59+00:00", "a future date is last year's");
    assert!(d[7].record.raw.contains('\u{fffd}'), "invalid UTF-8 is replaced, never a panic");
}

#[test]
fn forced_formats() {
    let now = Utc::now();
    let line = "Nov 23 21:45:01 web1 sshd[812]: Invalid user x from 192.0.2.1 port 1";
    assert_eq!(decode_line("/l", line, LogFormat::Raw, now, &Utc).activity, "line");
    assert_eq!(decode_line("/l", line, LogFormat::Syslog5424, now, &Utc).record.format, "raw");
    assert_eq!(decode_line("/l", line, LogFormat::Syslog3164, now, &Utc).activity, "invalid_user");
}
