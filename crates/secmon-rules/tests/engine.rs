//! Correlation, native fields, load problems and hit counts, on rules written here.

use std::path::{Path, PathBuf};

use chrono::{Duration, TimeZone, Utc};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use secmon_rules::{Engine, RuleSet};
use serde_json::json;

const SSHD_BRUTE_FORCE: &str = r#"
title: SSH authentication failure
id: 7d3c2c63-0f2a-4c59-9d4c-000000000001
name: sshd_auth_failed
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
id: 7d3c2c63-0f2a-4c59-9d4c-000000000002
correlation:
    type: event_count
    rules:
        - sshd_auth_failed
    group-by:
        - src_ip
    timespan: 60s
    condition:
        gte: 5
level: high
tags:
    - attack.credential-access
"#;

fn sshd_failure(seq: u64, src_ip: &str, t: chrono::DateTime<Utc>) -> Envelope {
    let message = format!("Failed password for root from {src_ip} port 50000 ssh2");
    let mut env = Envelope::new(
        AgentId::new("web-1").unwrap(),
        seq,
        EventClass::Log,
        "auth_failed",
        Severity::Low,
        json!({
            "path": "/var/log/auth.log",
            "raw": format!("Jan  5 10:00:00 web sshd[811]: {message}"),
            "message": message,
            "format": "rfc3164",
            "program": "sshd",
            "pid": 811,
            "decoder": "sshd",
            "fields": {"user": "root", "src_ip": src_ip, "src_port": 50000, "method": "password"}
        }),
    );
    env.time = t;
    env
}

fn load(text: &str) -> Engine {
    let (set, problems) = RuleSet::from_yaml(Path::new("inline.yml"), text);
    assert!(problems.is_empty(), "{problems:?}");
    Engine::new(set)
}

#[test]
fn event_count_fires_on_the_fifth_failure_per_source_within_the_window() {
    let engine = load(SSHD_BRUTE_FORCE);
    let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap();
    let correlations = |env: &Envelope| -> Vec<secmon_rules::Match> {
        engine.evaluate(env).into_iter().filter(|m| m.correlation).collect()
    };
    let mut seq = 0;
    let mut ids = vec![];
    // Four from A and interleaved four from B: no group reaches five.
    for i in 0..4 {
        seq += 1;
        let a = sshd_failure(seq, "203.0.113.1", t0 + Duration::seconds(i * 5));
        ids.push(a.id);
        // The base rule reports only through the correlation (`generate: false`).
        assert_eq!(engine.evaluate(&a), vec![]);
        seq += 1;
        assert!(
            correlations(&sshd_failure(seq, "198.51.100.2", t0 + Duration::seconds(i * 5 + 1))).is_empty()
        );
    }
    // A fifth from A, outside 60 s of the first: the window slides, still no alert.
    seq += 1;
    assert!(correlations(&sshd_failure(seq, "203.0.113.1", t0 + Duration::seconds(75))).is_empty());
    // A fifth from B within its window fires, grouped by B's source.
    seq += 1;
    let fifth = sshd_failure(seq, "198.51.100.2", t0 + Duration::seconds(30));
    let fired = correlations(&fifth);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let c = &fired[0];
    assert_eq!(c.rule_id, "7d3c2c63-0f2a-4c59-9d4c-000000000002");
    assert_eq!(c.title, "SSH brute force from one source");
    assert_eq!(c.level.as_deref(), Some("high"));
    assert_eq!(c.correlation_type.as_deref(), Some("event_count"));
    assert_eq!(c.group_key, vec![("src_ip".to_owned(), "198.51.100.2".to_owned())]);
    assert_eq!(c.aggregated_value, Some(5.0));
    assert!(c.event_ids.contains(&fifth.id), "{:?}", c.event_ids);
    assert!(c.event_ids.iter().all(|id| !ids.contains(id)), "A's events are not in B's group");

    let stats = engine.rule_stats();
    let corr = stats.iter().find(|s| s.correlation).unwrap();
    assert_eq!(corr.hits, 1);
    let det = stats.iter().find(|s| !s.correlation).unwrap();
    // Not emitted, so not counted.
    assert_eq!(det.hits, 0);
}

#[test]
fn native_field_names_work_in_rules() {
    let engine = load(
        r#"
title: Native fields
id: 11111111-2222-3333-4444-555555555555
logsource:
    product: linux
    category: file_event
detection:
    selection:
        class: file
        agent_id: web-1
        payload.path|endswith: /authorized_keys
        payload.watch: /root/.ssh
    condition: selection
level: high
"#,
    );
    let mut env = Envelope::new(
        AgentId::new("web-1").unwrap(),
        1,
        EventClass::File,
        "modified",
        Severity::High,
        json!({"path": "/root/.ssh/authorized_keys", "watch": "/root/.ssh"}),
    );
    let m = engine.evaluate(&env);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].event_ids, vec![env.id]);
    assert_eq!(m[0].logsource.category.as_deref(), Some("file_event"));
    assert_eq!(engine.rule_stats()[0].hits, 1);
    // `accessed` is not a file_event activity.
    env.activity = "accessed".into();
    assert!(engine.evaluate(&env).is_empty());
}

#[test]
fn a_malformed_rule_file_is_reported_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("nested");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        "title: Good\nid: g-1\nlogsource: {product: linux, category: process_creation}\n\
         detection: {sel: {Image|endswith: /id}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(sub.join("broken.yaml"), "title: [unclosed\n  detection: {{{\n").unwrap();
    std::fs::write(
        sub.join("no_condition.yml"),
        "title: No condition\nid: nc-1\nlogsource: {product: linux}\ndetection: {sel: {a: b}}\n",
    )
    .unwrap();
    std::fs::write(
        sub.join("auditd.yml"),
        "title: Auditd\nid: au-1\nlogsource: {product: linux, service: auditd}\n\
         detection: {sel: {type: EXECVE}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(
        sub.join("windows.yml"),
        "title: Win\nid: w-1\nlogsource: {product: windows, category: process_creation}\n\
         detection: {sel: {Image|endswith: '\\cmd.exe'}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(
        sub.join("unknown_field.yml"),
        "title: Hashes\nid: h-1\nlogsource: {product: linux, category: process_creation}\n\
         detection: {sel: {Hashes|contains: 'MD5='}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(sub.join("notes.txt"), "not a rule").unwrap();

    let (set, problems) = RuleSet::load(&[dir.path().to_owned()]);
    assert_eq!(set.rules.len(), 1);
    assert_eq!(set.rules[0].rule.title, "Good");
    let by_file = |name: &str| {
        problems
            .iter()
            .find(|p| p.file.file_name().unwrap() == name)
            .unwrap_or_else(|| panic!("{name} not reported: {problems:?}"))
    };
    assert!(by_file("broken.yaml").reason.contains("parse error"), "{problems:?}");
    assert!(!by_file("no_condition.yml").reason.is_empty());
    assert!(by_file("auditd.yml").reason.contains("service \"auditd\""), "{problems:?}");
    assert!(by_file("windows.yml").reason.contains("product \"windows\""), "{problems:?}");
    assert!(by_file("unknown_field.yml").reason.contains("Hashes"), "{problems:?}");
    assert_eq!(problems.len(), 5, "{problems:?}");
}

#[test]
fn a_missing_directory_is_a_problem_not_a_panic() {
    let missing = PathBuf::from("/nonexistent/secmon-rules-test");
    let (set, problems) = RuleSet::load(std::slice::from_ref(&missing));
    assert!(set.is_empty());
    assert_eq!(problems.len(), 1);
    assert!(problems[0].reason.contains("cannot read directory"), "{problems:?}");
}

#[test]
fn a_correlation_over_a_rule_without_id_is_reported() {
    let text = SSHD_BRUTE_FORCE.replace("id: 7d3c2c63-0f2a-4c59-9d4c-000000000001\n", "");
    let (set, problems) = RuleSet::from_yaml(Path::new("c.yml"), &text);
    assert_eq!(set.rules.len(), 1);
    assert!(set.correlations.is_empty());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("has no id"), "{problems:?}");
}

#[test]
fn a_correlation_over_a_rule_that_did_not_load_is_reported() {
    let text = SSHD_BRUTE_FORCE.replace("service: sshd", "service: auditd");
    let (set, problems) = RuleSet::from_yaml(Path::new("c.yml"), &text);
    assert!(set.is_empty());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[1].reason.contains("not loaded"), "{problems:?}");
}

fn process(seq: u64, exe: &str, user: &str, t: chrono::DateTime<Utc>) -> Envelope {
    let mut env = Envelope::new(
        AgentId::new("web-1").unwrap(),
        seq,
        EventClass::Process,
        "started",
        Severity::Info,
        json!({"exe": exe, "cmdline": exe, "user": user, "pid": 1000 + seq}),
    );
    env.time = t;
    env
}

#[test]
fn value_count_and_temporal_correlations_fire() {
    let engine = load(
        r#"
title: Discovery tool
id: disc-1
name: discovery
logsource: {product: linux, category: process_creation}
detection:
    sel:
        Image|endswith: ['/id', '/whoami', '/uname', '/hostname']
    condition: sel
---
title: Shell started
id: shell-1
name: shell
logsource: {product: linux, category: process_creation}
detection:
    sel:
        Image|endswith: /bash
    condition: sel
---
title: Several discovery tools by one user
id: vc-1
correlation:
    type: value_count
    rules: [discovery]
    group-by: [User]
    timespan: 5m
    condition:
        field: Image
        gte: 3
---
title: Shell then discovery
id: tmp-1
correlation:
    type: temporal
    rules: [shell, discovery]
    group-by: [User]
    timespan: 1m
    condition:
        gte: 2
"#,
    );
    let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap();
    let fired = |env: &Envelope| -> Vec<String> {
        engine.evaluate(env).into_iter().filter(|m| m.correlation).map(|m| m.rule_id).collect()
    };
    // The same tool three times is one distinct value.
    for i in 0..3 {
        let f = fired(&process(i + 1, "/usr/bin/id", "eve", t0 + Duration::seconds(i as i64)));
        assert!(f.is_empty(), "{i}: {f:?}");
    }
    assert!(fired(&process(4, "/usr/bin/whoami", "eve", t0 + Duration::seconds(10))).is_empty());
    assert_eq!(fired(&process(5, "/usr/bin/uname", "eve", t0 + Duration::seconds(20))), ["vc-1"]);
    // Temporal: a shell and a discovery tool for the same user within a minute.
    assert!(fired(&process(6, "/usr/bin/bash", "bob", t0 + Duration::seconds(30))).is_empty());
    assert_eq!(fired(&process(7, "/usr/bin/id", "bob", t0 + Duration::seconds(40))), ["tmp-1"]);
}

#[test]
fn correlation_state_is_capped_at_max_groups() {
    let (set, problems) = RuleSet::from_yaml(Path::new("inline.yml"), SSHD_BRUTE_FORCE);
    assert!(problems.is_empty());
    let engine = Engine::with_limits(set, secmon_rules::Limits { max_groups: 100, ..Default::default() });
    let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap();
    // 1000 sources within one window: none expires, so only the cap bounds state.
    for i in 0..1000u64 {
        let ip = format!("10.0.{}.{}", i / 256, i % 256);
        engine.evaluate(&sshd_failure(i + 1, &ip, t0 + Duration::milliseconds(i as i64)));
        assert!(engine.correlation_groups() <= 100, "{} groups", engine.correlation_groups());
    }
    assert!(engine.correlation_groups() >= 50);
    assert!(engine.correlation_cap_reached() > 0);
}
