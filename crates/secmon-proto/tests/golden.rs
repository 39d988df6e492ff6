//! Golden files pin the JSON of every wire message. Regenerate after an intended
//! protocol change with `UPDATE_GOLDEN=1 cargo test -p secmon-proto`, and review
//! the diff: every change there is a wire change.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use secmon_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

fn t(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000).unwrap()
}

fn agent() -> AgentId {
    AgentId::new("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0193_a1b2_c3d4_7000_8000_0000_0000_0000 | n)
}

fn check<T>(name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Versioned,
{
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.json"));
    let json = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(json, golden, "{name}: encoding differs from {}", path.display());
    let back: T = decode(golden.as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap();
    assert_eq!(&back, value, "{name}: golden file does not decode to the same value");
}

fn envelope() -> Envelope {
    Envelope {
        v: 1,
        id: id(1),
        agent_id: agent(),
        seq: 42,
        time: t(1_795_000_000, 123_456),
        observed: t(1_795_000_000, 124_000),
        class: EventClass::Agent,
        activity: "started".into(),
        severity: Severity::Info,
        payload: serde_json::to_value(payload::AgentLifecycle {
            agent_version: "0.1.0".into(),
            config_digest: "9f86d081884c7d65".into(),
            detail: None,
        })
        .unwrap(),
        sig: None,
        extra: Default::default(),
    }
}

#[test]
fn golden_envelope() {
    check("envelope", &envelope());
}

#[test]
fn golden_envelope_signed() {
    let mut e = envelope();
    e.class = EventClass::File;
    e.activity = "modified".into();
    e.severity = Severity::High;
    e.payload = json!({"path": "/etc/ssh/sshd_config"});
    e.sig = Some("ZmFrZS1zaWduYXR1cmU".into());
    check("envelope_signed", &e);
}

#[test]
fn golden_event_loss() {
    let mut e = envelope();
    e.activity = "event_loss".into();
    e.severity = Severity::Medium;
    e.payload = serde_json::to_value(payload::EventLoss { lost: 17, reason: "spool_full".into() }).unwrap();
    check("envelope_event_loss", &e);
}

/// A FIM event as the agent sends it: the payload's typed shape pinned too.
#[test]
fn golden_file_event() {
    let state = |size: u64, hash: &str, mtime: f64| payload::FileState {
        kind: payload::FileKind::File,
        size,
        mode: 0o100600,
        uid: 1000,
        gid: 1000,
        mtime,
        ctime: mtime,
        inode: 1_311_770,
        hash: Some(hash.into()),
        hash_algo: Some("sha256".into()),
        hash_skipped: None,
        target: None,
    };
    let mut e = envelope();
    e.class = EventClass::File;
    e.activity = "modified".into();
    e.severity = Severity::Critical;
    let p = payload::FileActivity {
        path: "/home/alice/.ssh/authorized_keys".into(),
        old_path: None,
        kind: payload::FileKind::File,
        watch: "/home/alice/.ssh".into(),
        watch_description: "alice's SSH material".into(),
        event_type: "FileModify".into(),
        detector: Some("ssh".into()),
        description: "authorized_keys modified by vim (pid 4242, uid 1000)".into(),
        before: Some(state(
            96,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            1_794_999_000.5,
        )),
        after: Some(state(
            192,
            "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
            1_795_000_000.25,
        )),
        changes: vec!["size".into(), "mtime".into(), "ctime".into(), "hash".into()],
        diff: Some(
            "--- a\n+++ b\n@@ -1 +1,2 @@\n ssh-ed25519 AAAA alice\n+ssh-ed25519 BBBB mallory\n".into(),
        ),
        diff_truncated: false,
        process: Some(payload::ProcessInfo {
            pid: 4242,
            ppid: Some(4100),
            name: Some("vim".into()),
            exe: Some("/usr/bin/vim.basic".into()),
            cmdline: Some("vim /home/alice/.ssh/authorized_keys".into()),
            uid: Some(1000),
            user: Some("alice".into()),
            exited: false,
        }),
        source: "realtime".into(),
        backend: "fanotify".into(),
    };
    e.payload = serde_json::to_value(&p).unwrap();
    check("envelope_file", &e);
    let back: payload::FileActivity = serde_json::from_value(e.payload.clone()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn golden_registration() {
    check(
        "registration",
        &Registration {
            v: 1,
            agent_id: agent(),
            name: "web-01".into(),
            agent_version: "0.1.0".into(),
            host: HostFacts {
                hostname: "web-01".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0-18-amd64".into(),
                arch: "x86_64".into(),
                ips: vec!["10.0.0.5".into(), "fe80::1".into()],
            },
            started_at: t(1_795_000_000, 0),
            sensors: vec!["heartbeat".into()],
            config_digest: "9f86d081884c7d65".into(),
            heartbeat_interval_ms: 5000,
            last_seq: 41,
        },
    );
}

#[test]
fn golden_register_reply() {
    check(
        "register_reply",
        &RegisterReply { v: 1, accepted: true, status: AgentStatus::Pending, reason: None },
    );
    check(
        "register_reply_refused",
        &RegisterReply {
            v: 1,
            accepted: false,
            status: AgentStatus::Removed,
            reason: Some("agent was removed".into()),
        },
    );
}

#[test]
fn golden_heartbeat() {
    check(
        "heartbeat",
        &Heartbeat {
            v: 1,
            agent_id: agent(),
            time: t(1_795_000_005, 0),
            uptime_secs: 5,
            last_seq: 42,
            spool: SpoolStats { depth: 3, bytes: 1024, dropped: 0 },
        },
    );
}

#[test]
fn golden_shutdown() {
    check(
        "shutdown",
        &ShutdownNotice {
            v: 1,
            agent_id: agent(),
            time: t(1_795_000_010, 0),
            reason: "SIGTERM".into(),
            last_seq: 42,
        },
    );
}

#[test]
fn golden_commands() {
    check(
        "command_request",
        &CommandRequest {
            v: 1,
            id: id(2),
            command: "status".into(),
            args: json!({}),
            issued_at: t(1_795_000_020, 0),
        },
    );
    check("command_reply", &CommandReply::success(id(2), agent(), json!({"pong": true})));
    check(
        "command_reply_error",
        &CommandReply::failure(id(3), agent(), "unknown_command", "unknown command \"frobnicate\""),
    );
}

#[test]
fn golden_statuses() {
    let all: Vec<_> = AgentStatus::ALL.iter().map(|s| serde_json::to_value(s).unwrap()).collect();
    assert_eq!(
        all,
        vec![
            json!("never_connected"),
            json!("pending"),
            json!("active"),
            json!("disconnected"),
            json!("removed")
        ]
    );
    for s in AgentStatus::ALL {
        assert_eq!(s.as_str().parse::<AgentStatus>().unwrap(), s);
    }
}

#[test]
fn unknown_fields_are_kept_on_envelopes_and_ignored_elsewhere() {
    let mut v = serde_json::to_value(envelope()).unwrap();
    v["future_field"] = json!({"x": 1});
    let e: Envelope = decode(v.to_string().as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap();
    assert_eq!(e.extra.get("future_field"), Some(&json!({"x": 1})));
    assert_eq!(serde_json::to_value(&e).unwrap()["future_field"], json!({"x": 1}));

    let hb = json!({"v": 1, "agent_id": "a1", "time": "2026-11-23T10:00:00Z", "uptime_secs": 1,
                    "last_seq": 0, "new_thing": [1, 2]});
    let hb: Heartbeat = decode(hb.to_string().as_bytes(), 1024).unwrap();
    assert_eq!(hb.agent_id.as_str(), "a1");
}

#[test]
fn unknown_major_version_is_a_version_error() {
    let mut v = serde_json::to_value(envelope()).unwrap();
    v["v"] = json!(2);
    v["payload"] = json!("shape changed in v2");
    let err = decode::<Envelope>(v.to_string().as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(err.kind(), "version", "{err}");
}

#[test]
fn malformed_oversized_and_versionless_messages_are_rejected_by_kind() {
    let err = decode::<Envelope>(b"{not json", 1024).unwrap_err();
    assert_eq!(err.kind(), "malformed");
    let err = decode::<Envelope>(br#"{"id": "x"}"#, 1024).unwrap_err();
    assert_eq!(err.kind(), "malformed", "missing v: {err}");
    let big = serde_json::to_vec(&envelope()).unwrap();
    let err = decode::<Envelope>(&big, big.len() - 1).unwrap_err();
    assert_eq!(err.kind(), "oversize");
    let mut v = serde_json::to_value(envelope()).unwrap();
    v["agent_id"] = json!("evil.>");
    let err = decode::<Envelope>(v.to_string().as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(err.kind(), "malformed", "agent id with subject metacharacters: {err}");
}

#[test]
fn ocsf_class_ids() {
    assert_eq!(EventClass::File.ocsf_class_id(), 1001);
    assert_eq!(EventClass::Process.ocsf_class_id(), 1007);
    assert_eq!(EventClass::Network.ocsf_class_id(), 4001);
}

fn alert_message() -> AlertMessage {
    AlertMessage {
        v: 1,
        kind: AlertMessageKind::Raised,
        alert_id: id(7),
        rule_id: "ssh-brute-force".into(),
        title: "SSH brute force".into(),
        severity: Severity::High,
        tags: vec!["attack.t1110".into(), "attack.credential_access".into()],
        agent_id: Some(agent()),
        status: "open".into(),
        key: "10.0.0.9".into(),
        event_ids: vec![id(1), id(2)],
        event_count: 2,
        count: 1,
        first_seen: t(1_795_000_000, 0),
        last_seen: t(1_795_000_060, 0),
        change: None,
    }
}

#[test]
fn alert_messages() {
    check("alert_raised", &alert_message());
    let changed = AlertMessage {
        kind: AlertMessageKind::StatusChanged,
        status: "acknowledged".into(),
        change: Some(AlertStatusChangeWire {
            from: Some("open".into()),
            to: "acknowledged".into(),
            at: t(1_795_000_120, 0),
            by: "local".into(),
            comment: "looking into it".into(),
        }),
        ..alert_message()
    };
    check("alert_status_changed", &changed);
    let v = serde_json::to_value(alert_message()).unwrap();
    assert_eq!(v["severity"], "high");
    assert_eq!(v["kind"], "raised");
    assert!(v.get("change").is_none());
}

#[test]
fn manager_made_agent_disconnected() {
    let (k, v) = payload::MANAGER_ORIGIN;
    let env = Envelope {
        seq: 0,
        activity: "disconnected".into(),
        severity: Severity::Medium,
        payload: serde_json::to_value(payload::AgentStatusChange {
            reason: payload::DisconnectReason::HeartbeatTimeout,
            from: AgentStatus::Active,
            last_seen: Some(t(1_794_999_900, 0)),
            timeout_secs: 90,
            detail: "heartbeat timeout".into(),
        })
        .unwrap(),
        extra: [(k.to_owned(), json!(v))].into_iter().collect(),
        ..envelope()
    };
    check("envelope_agent_disconnected", &env);
    assert_eq!(env.payload["reason"], "heartbeat_timeout");
    assert_eq!(env.payload["from"], "active");
    assert_eq!(env.payload["last_seen"], "2026-11-18T11:05:00Z");
    let shutdown = payload::AgentStatusChange {
        reason: payload::DisconnectReason::ShutdownNotice,
        from: AgentStatus::Pending,
        last_seen: None,
        timeout_secs: 90,
        detail: "shutdown notice: SIGTERM".into(),
    };
    let v = serde_json::to_value(&shutdown).unwrap();
    assert_eq!(
        (&v["reason"], &v["from"], &v["last_seen"]),
        (&json!("shutdown_notice"), &json!("pending"), &json!(null))
    );
}
