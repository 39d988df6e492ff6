//! Detection end to end: Sigma rules in a temp directory, a real nats-server and
//! a real manager; events published as an agent raise alerts that show in the
//! API and on `secmon.alert.<severity>`; rules reload when their files change.

mod api_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use api_support::{SimAgent, Stack, enc};
use secmon_proto::{AlertMessage, Envelope, EventClass, Severity};
use secmon_testkit::wait_until;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

const AUTHORIZED_KEYS_ID: &str = "5f0c7a52-93b4-4d1e-8f4e-0000000000a1";
const AUTHORIZED_KEYS: &str = r#"
title: SSH authorized_keys modified
id: 5f0c7a52-93b4-4d1e-8f4e-0000000000a1
status: test
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: '/authorized_keys'
    condition: selection
level: critical
tags:
    - attack.persistence
    - attack.t1098.004
"#;

const BRUTE_FORCE_ID: &str = "5f0c7a52-93b4-4d1e-8f4e-0000000000b2";
const BRUTE_FORCE: &str = r#"
title: SSH authentication failure
id: 5f0c7a52-93b4-4d1e-8f4e-0000000000b1
name: test_sshd_auth_failed
logsource:
    product: linux
    service: sshd
detection:
    selection:
        activity: auth_failed
    condition: selection
level: low
---
title: SSH brute force from one source
id: 5f0c7a52-93b4-4d1e-8f4e-0000000000b2
correlation:
    type: event_count
    rules:
        - test_sshd_auth_failed
    group-by:
        - src_ip
    timespan: 60s
    condition:
        gte: 5
level: high
tags:
    - attack.credential-access
    - attack.t1110
"#;

const SUDOERS_ID: &str = "5f0c7a52-93b4-4d1e-8f4e-0000000000c1";
const SUDOERS: &str = r#"
title: sudoers modified
id: 5f0c7a52-93b4-4d1e-8f4e-0000000000c1
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename: /etc/sudoers
    condition: selection
level: high
tags:
    - attack.t1548.003
"#;

/// A stack whose `[rules] dirs` is a fresh temp directory holding `files`.
fn stack_with_rules(files: &[(&str, &str)]) -> (Stack, tempfile::TempDir, PathBuf) {
    let rules = tempfile::tempdir().unwrap();
    let dir = rules.path().join("rules");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let d = dir.clone();
    let s = Stack::start_with(move |c| {
        c.rules.dirs = vec![d];
        c.rules.watch_interval = Duration::from_millis(500);
    });
    (s, rules, dir)
}

/// A `file` / `modified` event of `path` (a FileActivity, as the agent's FIM sends).
fn file_modified(a: &mut SimAgent, path: &str) -> Envelope {
    let mut e = a.next_event();
    e.payload["path"] = json!(path);
    e.payload["description"] = json!(format!("{path} modified"));
    e.payload["watch"] = json!(Path::new(path).parent().unwrap());
    e
}

/// An sshd `auth_failed` log event (a LogRecord, as the agent's log reader sends).
fn sshd_failure(a: &mut SimAgent, src_ip: &str) -> Envelope {
    a.seq += 1;
    let message = format!("Failed password for root from {src_ip} port 50022 ssh2");
    Envelope::new(
        a.id.clone(),
        a.seq,
        EventClass::Log,
        "auth_failed",
        Severity::Low,
        json!({
            "path": "/var/log/auth.log",
            "raw": format!("Nov 23 10:00:00 web sshd[811]: {message}"),
            "message": message,
            "format": "rfc3164",
            "host": "web",
            "program": "sshd",
            "pid": 811,
            "decoder": "sshd",
            "fields": {"user": "root", "src_ip": src_ip, "src_port": 50022, "method": "password"}
        }),
    )
}

/// The alerts of `rule`, once `want` holds for them (panics after the deadline).
fn wait_alerts(s: &Stack, rule: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = vec![];
    let ok = wait_until(DEADLINE, || {
        last = s.get_ok(&format!("/api/alerts?rule={}", enc(rule)))["items"].as_array().unwrap().clone();
        want(&last)
    });
    assert!(ok, "alerts of {rule} never as expected; last: {last:?}");
    last
}

fn rules_answer(s: &Stack) -> Value {
    s.get_ok("/api/rules")
}

fn rule_ids(v: &Value) -> Vec<String> {
    v["rules"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

fn wait_rules(s: &Stack, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(DEADLINE, || {
        last = rules_answer(s);
        want(&last)
    });
    assert!(ok, "rules never {what}; last: {last}");
    last
}

#[test]
fn file_rule_raises_a_critical_alert_listed_published_and_counted() {
    let (s, _rules, _dir) = stack_with_rules(&[("authorized_keys.yml", AUTHORIZED_KEYS)]);
    let mut a = s.sim("web-01");

    let loaded = rules_answer(&s);
    assert_eq!(rule_ids(&loaded), [AUTHORIZED_KEYS_ID], "{loaded}");
    assert_eq!(loaded["problems"], json!([]));
    let rule = s.get_ok(&format!("/api/rules/{AUTHORIZED_KEYS_ID}"));
    assert_eq!(rule["title"], "SSH authorized_keys modified");
    assert_eq!(rule["level"], "critical");
    assert_eq!(rule["correlation"], false);
    assert!(rule["file"].as_str().unwrap().ends_with("authorized_keys.yml"), "{rule}");
    assert_eq!(rule["hits"], 0);
    let (code, _) = s.get("/api/rules/no-such-rule").error(404);
    assert_eq!(code, "not_found");

    // A non-matching event first, then the match: once the alert is there, the
    // first event was evaluated too (one task, in order).
    let other = file_modified(&mut a, "/home/alice/.ssh/known_hosts");
    let hit = file_modified(&mut a, "/home/alice/.ssh/authorized_keys");
    s.publish_events(&[other, hit.clone()], 2);
    let alerts = wait_alerts(&s, AUTHORIZED_KEYS_ID, |v| !v.is_empty());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let al = &alerts[0];
    assert_eq!(al["severity"], "critical");
    assert_eq!(al["title"], "SSH authorized_keys modified");
    assert_eq!(al["agent_id"], "web-01");
    assert_eq!(al["key"], "");
    assert_eq!(al["event_ids"], json!([hit.id]));
    assert_eq!(al["tags"], json!(["attack.persistence", "attack.t1098.004"]));
    assert_eq!(s.get_ok("/api/alerts")["total"], 1, "the non-matching event raised nothing");

    // Published for consumers of critical alerts.
    let mut msg = None;
    let ok = wait_until(DEADLINE, || {
        msg = s.block_on(async {
            let stream = s.js.get_stream("SECMON_ALERTS").await.ok()?;
            let m = stream.get_last_raw_message_by_subject("secmon.alert.critical").await.ok()?;
            serde_json::from_slice::<AlertMessage>(&m.payload).ok()
        });
        msg.is_some()
    });
    assert!(ok, "no message on secmon.alert.critical");
    let msg = msg.unwrap();
    assert_eq!(msg.rule_id, AUTHORIZED_KEYS_ID);
    assert_eq!(msg.alert_id.to_string(), al["id"].as_str().unwrap());

    // Hit counts follow the matches.
    assert_eq!(s.get_ok(&format!("/api/rules/{AUTHORIZED_KEYS_ID}"))["hits"], 1);
    let again = file_modified(&mut a, "/root/.ssh/authorized_keys");
    s.publish_events(&[again], 3);
    let ok = wait_until(DEADLINE, || s.get_ok(&format!("/api/rules/{AUTHORIZED_KEYS_ID}"))["hits"] == 2);
    assert!(ok, "hit count did not reach 2");
    let m = s.manager().metrics();
    assert_eq!(m.rule_events_evaluated.get(), 3);
    assert_eq!(m.rule_matches.get(), 2);
    assert_eq!(m.rule_eval_errors.get(), 0);
    let text = s.metrics_text();
    assert!(text.contains("secmon_rules_loaded 1"), "{text}");
    assert!(text.contains("secmon_rule_matches_total 2"), "{text}");
}

#[test]
fn brute_force_correlation_fires_on_five_failures_from_one_source_not_four() {
    let (s, _rules, _dir) = stack_with_rules(&[("sshd_brute_force.yml", BRUTE_FORCE)]);
    let mut a = s.sim("bastion-1");
    let loaded = rules_answer(&s);
    let corr = loaded["rules"].as_array().unwrap().iter().find(|r| r["id"] == BRUTE_FORCE_ID).unwrap();
    assert_eq!(corr["correlation"], true, "{loaded}");

    // Four from one source, then five from another.
    let mut events: Vec<Envelope> = (0..4).map(|_| sshd_failure(&mut a, "203.0.113.7")).collect();
    let five: Vec<Envelope> = (0..5).map(|_| sshd_failure(&mut a, "198.51.100.23")).collect();
    events.extend(five.iter().cloned());
    s.publish_events(&events, 9);

    let alerts = wait_alerts(&s, BRUTE_FORCE_ID, |v| !v.is_empty());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let al = &alerts[0];
    assert_eq!(al["key"], "src_ip=198.51.100.23");
    assert_eq!(al["severity"], "high");
    assert_eq!(al["agent_id"], "bastion-1");
    let ids: Vec<String> =
        al["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    assert!(ids.contains(&five[4].id.to_string()), "{al}");
    for e in &events[..4] {
        assert!(!ids.contains(&e.id.to_string()), "the other source's events are not in it: {al}");
    }
    // The four from the first source (evaluated before the fifth) raised nothing,
    // and the base rule reports only through the correlation.
    assert_eq!(s.get_ok("/api/alerts")["total"], 1);
    assert_eq!(s.manager().metrics().rule_events_evaluated.get(), 9);
}

#[test]
fn rule_files_reload_on_change_and_bad_files_do_not_stop_the_others() {
    let (s, _rules, dir) = stack_with_rules(&[("authorized_keys.yml", AUTHORIZED_KEYS)]);
    let mut a = s.sim("db-02");
    let first = rules_answer(&s);
    assert_eq!(rule_ids(&first), [AUTHORIZED_KEYS_ID]);

    // A new rule file is picked up and used.
    std::fs::write(dir.join("sudoers.yml"), SUDOERS).unwrap();
    let v = wait_rules(&s, "listing the new rule", |v| rule_ids(v).contains(&SUDOERS_ID.to_owned()));
    assert_ne!(v["loaded_at"], first["loaded_at"]);
    let e = file_modified(&mut a, "/etc/sudoers");
    s.publish_events(std::slice::from_ref(&e), 1);
    let alerts = wait_alerts(&s, SUDOERS_ID, |v| !v.is_empty());
    assert_eq!((alerts[0]["severity"].as_str(), &alerts[0]["event_ids"]), (Some("high"), &json!([e.id])));

    // A broken file is listed as a problem; the other rules keep working.
    std::fs::write(dir.join("broken.yml"), "title: broken\ndetection: [not, a, map\n").unwrap();
    std::fs::write(
        dir.join("unsupported.yml"),
        "title: Windows only\nid: 5f0c7a52-93b4-4d1e-8f4e-0000000000d1\nlogsource:\n    product: windows\n    \
         category: process_creation\ndetection:\n    sel:\n        Image|endswith: '\\cmd.exe'\n    condition: sel\n",
    )
    .unwrap();
    let v = wait_rules(&s, "listing the broken files", |v| v["problems"].as_array().unwrap().len() >= 2);
    let problems = v["problems"].as_array().unwrap();
    for name in ["broken.yml", "unsupported.yml"] {
        let p = problems.iter().find(|p| p["file"].as_str().unwrap().ends_with(name));
        let p = p.unwrap_or_else(|| panic!("{name} not in the problems: {v}"));
        assert!(!p["reason"].as_str().unwrap().is_empty(), "{p}");
    }
    let mut ids = rule_ids(&v);
    ids.sort();
    assert_eq!(ids, [AUTHORIZED_KEYS_ID, SUDOERS_ID]);
    // Hit counts survive the reloads.
    assert_eq!(s.get_ok(&format!("/api/rules/{SUDOERS_ID}"))["hits"], 1);
    let k = file_modified(&mut a, "/home/bob/.ssh/authorized_keys");
    s.publish_events(std::slice::from_ref(&k), 2);
    let alerts = wait_alerts(&s, AUTHORIZED_KEYS_ID, |v| !v.is_empty());
    assert_eq!(alerts[0]["event_ids"], json!([k.id]));
    let text = s.metrics_text();
    assert!(text.contains("secmon_rule_load_problems 2"), "{text}");

    // The directory vanishes: the loaded rules stay, the failure is counted.
    let gone = dir.with_file_name("moved-away");
    std::fs::rename(&dir, &gone).unwrap();
    let ok =
        wait_until(DEADLINE, || s.metrics_text().contains("secmon_rule_reloads_total{result=\"failed\"} 1"));
    assert!(ok, "the failed reload was not counted: {}", s.metrics_text());
    let mut ids = rule_ids(&rules_answer(&s));
    ids.sort();
    assert_eq!(ids, [AUTHORIZED_KEYS_ID, SUDOERS_ID]);
    let e2 = file_modified(&mut a, "/etc/sudoers");
    s.publish_events(std::slice::from_ref(&e2), 3);
    let ok = wait_until(DEADLINE, || s.get_ok(&format!("/api/rules/{SUDOERS_ID}"))["hits"] == 2);
    assert!(ok, "the kept rules stopped matching");
}
