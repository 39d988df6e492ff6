//! What a stored event does to the file state of its agent: pure functions from an
//! envelope to [`FileUpdate`]s, tested without storage. The store applies them in
//! the events' transaction, each only where it is newer than what a path holds.
//!
//! `file` events must carry a [`FileActivity`]; `device` events carry one when the
//! FIM reports a camera access, and other device payloads are not file activity.

use secmon_proto::payload::FileActivity;
use secmon_proto::{Envelope, EventClass};
use serde::Deserialize;

use crate::log_limit::clip;
use crate::store::{FileChange, FileUpdate};

/// Longest path kept (Linux `PATH_MAX`); the API refuses longer ones too.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why an event, stored anyway, does not change the file state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Metric label: `malformed_payload`, `bad_path` or `unknown_activity`.
    pub reason: &'static str,
    pub detail: String,
}

/// The updates `env` makes: none for classes without file activity, one per path
/// it touches otherwise (two for a rename).
pub fn updates(env: &Envelope) -> Result<Vec<FileUpdate>, Skip> {
    let activity = match env.class {
        EventClass::File => FileActivity::deserialize(&env.payload).map_err(|e| Skip {
            reason: "malformed_payload",
            detail: clip(format!("payload is not a file activity: {e}")),
        })?,
        EventClass::Device => match FileActivity::deserialize(&env.payload) {
            Ok(a) => a,
            Err(_) => return Ok(Vec::new()),
        },
        _ => return Ok(Vec::new()),
    };
    check_path("path", &activity.path)?;
    if let Some(old) = &activity.old_path {
        check_path("old_path", old)?;
    }
    let FileActivity { path, old_path, kind, before, after, process, .. } = activity;
    let update = |path: String, kind, change| FileUpdate {
        event_id: env.id,
        agent_id: env.agent_id.clone(),
        path,
        kind,
        activity: env.activity.clone(),
        time: env.time,
        seq: env.seq,
        process: process.clone(),
        change,
    };
    let content = |attrs, deleted, renamed_to, renamed_from| FileChange::Content {
        attrs,
        deleted,
        renamed_to,
        renamed_from,
    };
    Ok(match env.activity.as_str() {
        "created" | "modified" | "attributes_changed" => {
            vec![update(path, kind, content(after, false, None, None))]
        }
        // The attributes the file had when it went (the agent's baseline), else the
        // ones recorded stay.
        "deleted" => vec![update(path, kind, content(before, true, None, None))],
        "renamed" => {
            let mut out = Vec::with_capacity(2);
            if let Some(old) = old_path.filter(|o| *o != path) {
                let old_kind = before.as_ref().map_or(kind, |b| b.kind);
                out.push(update(
                    old.clone(),
                    old_kind,
                    content(before.clone(), true, Some(path.clone()), None),
                ));
                out.push(update(path, kind, content(after.or(before), false, None, Some(old))));
            } else {
                out.push(update(path, kind, content(after.or(before), false, None, None)));
            }
            out
        }
        "accessed" => vec![update(path, kind, FileChange::Access)],
        other => {
            return Err(Skip {
                reason: "unknown_activity",
                detail: clip(format!(
                    "activity {other:?} is not one of created, modified, attributes_changed, deleted, renamed, accessed"
                )),
            });
        }
    })
}

fn check_path(field: &str, p: &str) -> Result<(), Skip> {
    let bad = |why: String| Err(Skip { reason: "bad_path", detail: clip(format!("{field}: {why}")) });
    if p.is_empty() {
        return bad("empty".into());
    }
    if p.len() > MAX_PATH_BYTES {
        return bad(format!("{} bytes is longer than {MAX_PATH_BYTES}", p.len()));
    }
    if p.contains('\0') {
        return bad("contains a NUL byte".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secmon_proto::payload::{FileKind, FileState, ProcessInfo};
    use secmon_proto::{AgentId, Severity};
    use serde_json::json;

    fn state(size: u64, hash: &str) -> FileState {
        FileState { mtime: 1.5, ctime: 1.5, inode: 42, ..FileState::sha256_file(size, hash) }
    }

    fn activity(path: &str, before: Option<FileState>, after: Option<FileState>) -> FileActivity {
        FileActivity {
            path: path.into(),
            old_path: None,
            kind: FileKind::File,
            watch: "/etc".into(),
            watch_description: String::new(),
            event_type: "FileModify".into(),
            detector: None,
            description: "test".into(),
            before,
            after,
            changes: vec![],
            diff: None,
            diff_truncated: false,
            process: Some(ProcessInfo {
                pid: 7,
                ppid: None,
                name: Some("vim".into()),
                exe: Some("/usr/bin/vim".into()),
                cmdline: None,
                uid: Some(0),
                user: Some("root".into()),
                exited: false,
            }),
            source: "realtime".into(),
            backend: "fanotify".into(),
        }
    }

    fn env(class: EventClass, act: &str, payload: serde_json::Value) -> Envelope {
        Envelope::new(AgentId::new("a1").unwrap(), 3, class, act, Severity::Low, payload)
    }

    fn file_env(act: &str, a: &FileActivity) -> Envelope {
        env(EventClass::File, act, serde_json::to_value(a).unwrap())
    }

    #[test]
    fn content_changes_take_the_after_state() {
        for act in ["created", "modified", "attributes_changed"] {
            let e = file_env(act, &activity("/etc/x", Some(state(1, "a")), Some(state(2, "b"))));
            let u = updates(&e).unwrap();
            assert_eq!(u.len(), 1);
            assert_eq!((u[0].path.as_str(), u[0].activity.as_str(), u[0].seq), ("/etc/x", act, 3));
            assert_eq!((u[0].event_id, u[0].time), (e.id, e.time));
            assert_eq!(u[0].process.as_ref().unwrap().pid, 7);
            assert_eq!(
                u[0].change,
                FileChange::Content {
                    attrs: Some(state(2, "b")),
                    deleted: false,
                    renamed_to: None,
                    renamed_from: None
                }
            );
        }
    }

    #[test]
    fn deleted_keeps_the_before_state_and_renamed_touches_both_paths() {
        let u = updates(&file_env("deleted", &activity("/etc/x", Some(state(1, "a")), None))).unwrap();
        assert_eq!(
            u[0].change,
            FileChange::Content {
                attrs: Some(state(1, "a")),
                deleted: true,
                renamed_to: None,
                renamed_from: None
            }
        );
        let u = updates(&file_env("deleted", &activity("/etc/x", None, None))).unwrap();
        assert!(matches!(u[0].change, FileChange::Content { attrs: None, deleted: true, .. }));

        let mut a = activity("/etc/new", Some(state(1, "a")), Some(state(1, "a")));
        a.old_path = Some("/etc/old".into());
        let u = updates(&file_env("renamed", &a)).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].path, "/etc/old");
        assert_eq!(
            u[0].change,
            FileChange::Content {
                attrs: Some(state(1, "a")),
                deleted: true,
                renamed_to: Some("/etc/new".into()),
                renamed_from: None
            }
        );
        assert_eq!(u[1].path, "/etc/new");
        assert_eq!(
            u[1].change,
            FileChange::Content {
                attrs: Some(state(1, "a")),
                deleted: false,
                renamed_to: None,
                renamed_from: Some("/etc/old".into())
            }
        );
        // A rename onto itself, or without the old path, only writes the path.
        a.old_path = Some("/etc/new".into());
        assert_eq!(updates(&file_env("renamed", &a)).unwrap().len(), 1);
        a.old_path = None;
        assert_eq!(updates(&file_env("renamed", &a)).unwrap().len(), 1);
    }

    #[test]
    fn accessed_only_touches_the_access() {
        let mut a = activity("/dev/video0", None, None);
        a.kind = FileKind::CharDevice;
        let u = updates(&env(EventClass::Device, "accessed", serde_json::to_value(&a).unwrap())).unwrap();
        assert_eq!((u[0].change.clone(), u[0].kind), (FileChange::Access, FileKind::CharDevice));
    }

    #[test]
    fn other_classes_and_other_device_payloads_make_no_updates() {
        assert_eq!(updates(&env(EventClass::Process, "started", json!({"pid": 1}))).unwrap(), vec![]);
        assert_eq!(updates(&env(EventClass::Device, "connected", json!({"usb": "x"}))).unwrap(), vec![]);
        let a = activity("/etc/x", None, None);
        assert_eq!(
            updates(&env(EventClass::Agent, "modified", serde_json::to_value(&a).unwrap())).unwrap(),
            vec![]
        );
    }

    #[test]
    fn bad_file_payloads_are_skipped_with_a_reason() {
        for payload in [json!({"path": "/etc/x"}), json!("text"), json!(null), json!({"path": 5})] {
            let s = updates(&env(EventClass::File, "modified", payload.clone())).unwrap_err();
            assert_eq!(s.reason, "malformed_payload", "{payload}");
            assert!(s.detail.len() < 210, "{}", s.detail);
        }
        let s = updates(&file_env("exploded", &activity("/etc/x", None, None))).unwrap_err();
        assert_eq!(s.reason, "unknown_activity");
        for path in [String::new(), "a\0b".into(), "/".repeat(MAX_PATH_BYTES + 1)] {
            let s = updates(&file_env("modified", &activity(&path, None, None))).unwrap_err();
            assert_eq!(s.reason, "bad_path");
        }
        let mut a = activity("/etc/x", None, None);
        a.old_path = Some(String::new());
        assert_eq!(updates(&file_env("renamed", &a)).unwrap_err().reason, "bad_path");
    }
}
