//! The socket's `flat` format: the classic one-object-per-event shape
//! `{timestamp, event_type: {type}, path, details: {severity, description, metadata}}`
//! that older file-monitoring consumers read.
//!
//! Only `file` and `device` events (a [`FileActivity`] payload) and `agent`/`event_loss`
//! have a flat form; every other event (agent lifecycle, baseline and coverage
//! notices, future classes) is not sent in this format.

use chrono::{DateTime, SecondsFormat, Utc};
use secmon_proto::payload::{EventLoss, FileActivity, FileState};
use secmon_proto::{Envelope, EventClass, Severity};
use serde_json::{Map, Value, json};

/// The flat form of `env`, or None when its class has none.
pub fn to_flat(env: &Envelope) -> Option<Value> {
    match env.class {
        EventClass::File | EventClass::Device => file_event(env),
        EventClass::Agent if env.activity == "event_loss" => loss_event(env),
        _ => None,
    }
}

/// The classic severity names; `info` has none and shows as `Low`.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info | Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The line a socket client gets after it fell behind and lost `lost` events.
pub fn client_loss_notice(time: DateTime<Utc>, lost: u64) -> Value {
    json!({
        "timestamp": timestamp(time),
        "event_type": {"type": "EventLoss"},
        "path": "",
        "details": {
            "severity": "Medium",
            "description": format!("{lost} events dropped: client too slow"),
            "metadata": {"lost": lost},
        },
    })
}

fn file_event(env: &Envelope) -> Option<Value> {
    let a: FileActivity = match serde_json::from_value(env.payload.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, seq = env.seq, "file event payload is not a FileActivity; no flat form");
            return None;
        }
    };
    let event_type = if a.event_type.is_empty() { classic_type(env) } else { a.event_type.clone() };
    let mut m = Map::new();
    m.insert("activity".into(), json!(env.activity));
    m.insert("class".into(), json!(env.class));
    if let Some(old) = &a.old_path {
        m.insert("old_path".into(), json!(old));
    }
    m.insert("kind".into(), json!(a.kind));
    m.insert("watch".into(), json!(a.watch));
    if !a.watch_description.is_empty() {
        m.insert("watch_description".into(), json!(a.watch_description));
    }
    if let Some(d) = &a.detector {
        m.insert("detector".into(), json!(d));
    }
    let hash = |s: &Option<FileState>| s.as_ref().and_then(|s| s.hash.clone());
    if let Some(h) = hash(&a.before) {
        m.insert("hash_before".into(), json!(h));
    }
    if let Some(h) = hash(&a.after) {
        m.insert("hash_after".into(), json!(h));
    }
    if let Some(algo) = a.after.as_ref().or(a.before.as_ref()).and_then(|s| s.hash_algo.clone()) {
        m.insert("hash_algo".into(), json!(algo));
    }
    if let Some(b) = &a.before {
        m.insert("size_before".into(), json!(b.size));
    }
    if let Some(size) = a.after.as_ref().or(a.before.as_ref()).map(|s| s.size) {
        m.insert("size".into(), json!(size));
    }
    if let Some(st) = a.after.as_ref().or(a.before.as_ref()) {
        m.insert("mode".into(), json!(format!("{:o}", st.mode & 0o7777)));
        m.insert("uid".into(), json!(st.uid));
        m.insert("gid".into(), json!(st.gid));
    }
    if !a.changes.is_empty() {
        m.insert("changes".into(), json!(a.changes));
    }
    if let Some(diff) = &a.diff {
        m.insert("diff".into(), json!(diff));
        if a.diff_truncated {
            m.insert("diff_truncated".into(), json!(true));
        }
    }
    if let Some(p) = &a.process {
        m.insert("process".into(), serde_json::to_value(p).unwrap_or(Value::Null));
    }
    m.insert("source".into(), json!(a.source));
    m.insert("backend".into(), json!(a.backend));
    ids(env, &mut m);
    Some(json!({
        "timestamp": timestamp(env.time),
        "event_type": {"type": event_type},
        "path": a.path,
        "details": {
            "severity": severity(env.severity),
            "description": a.description,
            "metadata": m,
        },
    }))
}

/// The classic type when the payload does not say.
fn classic_type(env: &Envelope) -> String {
    let t = match (env.class, env.activity.as_str()) {
        (EventClass::Device, _) => "CameraAccess",
        (_, "created") => "FileCreate",
        (_, "deleted") => "FileDelete",
        (_, "accessed") => "FileAccess",
        _ => "FileModify",
    };
    t.to_owned()
}

fn loss_event(env: &Envelope) -> Option<Value> {
    let loss: EventLoss = serde_json::from_value(env.payload.clone()).ok()?;
    let mut m = Map::new();
    m.insert("lost".into(), json!(loss.lost));
    m.insert("reason".into(), json!(loss.reason));
    ids(env, &mut m);
    Some(json!({
        "timestamp": timestamp(env.time),
        "event_type": {"type": "EventLoss"},
        "path": "",
        "details": {
            "severity": severity(env.severity),
            "description": format!("{} events lost by the agent ({})", loss.lost, loss.reason),
            "metadata": m,
        },
    }))
}

fn ids(env: &Envelope, m: &mut Map<String, Value>) {
    m.insert("event_id".into(), json!(env.id));
    m.insert("seq".into(), json!(env.seq));
    m.insert("agent_id".into(), json!(env.agent_id));
    m.insert("observed".into(), json!(timestamp(env.observed)));
}

#[cfg(test)]
mod tests {
    use secmon_proto::AgentId;
    use secmon_proto::payload::{AgentLifecycle, FileKind, ProcessInfo};

    use super::*;

    fn state(hash: &str, size: u64) -> FileState {
        FileState { mtime: 1.5, ctime: 1.5, inode: 42, ..FileState::sha256_file(size, hash) }
    }

    fn activity(event_type: &str) -> FileActivity {
        FileActivity {
            path: "/etc/ssh/sshd_config".into(),
            old_path: None,
            kind: FileKind::File,
            watch: "/etc/ssh".into(),
            watch_description: "SSH daemon configuration".into(),
            event_type: event_type.into(),
            detector: None,
            description: "sshd_config modified by vim (pid 4242)".into(),
            before: Some(state("aa", 10)),
            after: Some(state("bb", 12)),
            changes: vec!["size".into(), "hash".into()],
            diff: None,
            diff_truncated: false,
            process: Some(ProcessInfo {
                pid: 4242,
                ppid: Some(1),
                name: Some("vim".into()),
                exe: Some("/usr/bin/vim".into()),
                cmdline: Some("vim /etc/ssh/sshd_config".into()),
                uid: Some(0),
                user: Some("root".into()),
                exited: false,
            }),
            source: "realtime".into(),
            backend: "fanotify".into(),
        }
    }

    fn envelope(class: EventClass, activity: &str, severity: Severity, payload: Value) -> Envelope {
        let mut e = Envelope::new(AgentId::new("agent-1").unwrap(), 7, class, activity, severity, payload);
        e.time = "2024-05-01T10:20:30.123456Z".parse().unwrap();
        e
    }

    #[test]
    fn file_modify_has_the_classic_shape() {
        let env = envelope(
            EventClass::File,
            "modified",
            Severity::Medium,
            serde_json::to_value(activity("FileModify")).unwrap(),
        );
        let flat = to_flat(&env).expect("file events have a flat form");
        assert_eq!(flat["timestamp"], "2024-05-01T10:20:30.123456Z");
        assert_eq!(flat["event_type"], json!({"type": "FileModify"}));
        assert_eq!(flat["path"], "/etc/ssh/sshd_config");
        let d = &flat["details"];
        assert_eq!(d["severity"], "Medium");
        assert_eq!(d["description"], "sshd_config modified by vim (pid 4242)");
        let m = &d["metadata"];
        assert_eq!(m["activity"], "modified");
        assert_eq!(m["hash_before"], "aa");
        assert_eq!(m["hash_after"], "bb");
        assert_eq!(m["size_before"], 10);
        assert_eq!(m["size"], 12);
        assert_eq!(m["mode"], "644");
        assert_eq!(m["changes"], json!(["size", "hash"]));
        assert_eq!(m["process"]["pid"], 4242);
        assert_eq!(m["process"]["exe"], "/usr/bin/vim");
        assert_eq!(m["process"]["cmdline"], "vim /etc/ssh/sshd_config");
        assert_eq!(m["process"]["user"], "root");
        assert_eq!(m["event_id"], json!(env.id));
        assert_eq!(m["seq"], 7);
        assert_eq!(m["agent_id"], "agent-1");
        assert_eq!(m["watch_description"], "SSH daemon configuration");
        assert_eq!(flat.as_object().unwrap().len(), 4, "exactly timestamp, event_type, path, details");
    }

    #[test]
    fn rename_create_delete_and_device_types() {
        let mut renamed = activity("FileModify");
        renamed.old_path = Some("/etc/ssh/sshd_config.new".into());
        let env =
            envelope(EventClass::File, "renamed", Severity::Low, serde_json::to_value(renamed).unwrap());
        let flat = to_flat(&env).unwrap();
        assert_eq!(flat["details"]["metadata"]["old_path"], "/etc/ssh/sshd_config.new");
        assert_eq!(flat["details"]["severity"], "Low");

        let mut created = activity("FileCreate");
        created.before = None;
        created.process = None;
        let env =
            envelope(EventClass::File, "created", Severity::Info, serde_json::to_value(created).unwrap());
        let flat = to_flat(&env).unwrap();
        assert_eq!(flat["event_type"]["type"], "FileCreate");
        assert_eq!(flat["details"]["severity"], "Low", "info shows as Low");
        let m = flat["details"]["metadata"].as_object().unwrap();
        assert!(!m.contains_key("hash_before") && !m.contains_key("process"), "{m:?}");
        assert_eq!(m["hash_after"], "bb");

        let mut deleted = activity("");
        deleted.after = None;
        let env =
            envelope(EventClass::File, "deleted", Severity::High, serde_json::to_value(deleted).unwrap());
        let flat = to_flat(&env).unwrap();
        assert_eq!(flat["event_type"]["type"], "FileDelete", "from the activity when the payload has none");
        assert_eq!(flat["details"]["metadata"]["size"], 10, "the size before, for a deleted file");

        let mut cam = activity("CameraAccess");
        cam.path = "/dev/video0".into();
        cam.kind = FileKind::CharDevice;
        let env =
            envelope(EventClass::Device, "accessed", Severity::Critical, serde_json::to_value(cam).unwrap());
        let flat = to_flat(&env).unwrap();
        assert_eq!(flat["event_type"]["type"], "CameraAccess");
        assert_eq!(flat["details"]["severity"], "Critical");
        assert_eq!(flat["details"]["metadata"]["kind"], "char_device");
    }

    #[test]
    fn agent_events_have_no_flat_form_except_losses() {
        let lifecycle =
            AgentLifecycle { agent_version: "1".into(), config_digest: String::new(), detail: None };
        let env =
            envelope(EventClass::Agent, "started", Severity::Info, serde_json::to_value(lifecycle).unwrap());
        assert_eq!(to_flat(&env), None);
        let env = envelope(EventClass::Process, "started", Severity::Info, json!({}));
        assert_eq!(to_flat(&env), None);

        let loss = EventLoss { lost: 12, reason: "spool_full".into() };
        let env =
            envelope(EventClass::Agent, "event_loss", Severity::Medium, serde_json::to_value(loss).unwrap());
        let flat = to_flat(&env).unwrap();
        assert_eq!(flat["event_type"]["type"], "EventLoss");
        assert_eq!(flat["path"], "");
        assert_eq!(flat["details"]["metadata"]["lost"], 12);
        assert_eq!(flat["details"]["metadata"]["reason"], "spool_full");
    }

    #[test]
    fn a_file_event_with_a_foreign_payload_has_no_flat_form() {
        let env = envelope(EventClass::File, "modified", Severity::Low, json!({"path": 5}));
        assert_eq!(to_flat(&env), None);
    }

    #[test]
    fn client_notice_shape() {
        let t: DateTime<Utc> = "2024-05-01T10:20:30Z".parse().unwrap();
        assert_eq!(
            client_loss_notice(t, 3),
            json!({"timestamp": "2024-05-01T10:20:30Z", "event_type": {"type": "EventLoss"}, "path": "",
                   "details": {"severity": "Medium", "description": "3 events dropped: client too slow",
                               "metadata": {"lost": 3}}})
        );
    }
}
