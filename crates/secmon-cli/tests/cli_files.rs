//! `secmon files` (the real binary) against a real manager on a real nats-server,
//! fed `file` events as an agent publishes them.

#[path = "../../secmon-manager/tests/api_support/mod.rs"]
mod api_support;
mod cli_support;

use api_support::{SimAgent, Stack};
use chrono::{Duration as Age, Utc};
use cli_support::{cells, failure, ok_stdout};
use secmon_proto::payload::{FileActivity, FileKind, FileState, ProcessInfo};
use secmon_proto::{Envelope, EventClass, Severity};
use serde_json::Value;

fn state(size: u64, hash: &str, mode: u32) -> FileState {
    FileState {
        mode,
        mtime: 1_750_000_000.5,
        ctime: 1_750_000_000.5,
        inode: 131_075,
        ..FileState::sha256_file(size, hash)
    }
}

fn file_event(a: &mut SimAgent, activity: &str, path: &str, after: Option<FileState>, secs: i64) -> Envelope {
    let fa = FileActivity {
        path: path.into(),
        old_path: None,
        kind: FileKind::File,
        watch: "/etc".into(),
        watch_description: String::new(),
        event_type: "FileModify".into(),
        detector: None,
        description: format!("{path} {activity}"),
        before: None,
        after,
        changes: vec![],
        diff: None,
        diff_truncated: false,
        process: Some(ProcessInfo {
            pid: 4242,
            ppid: Some(1),
            name: Some("vim".into()),
            exe: Some("/usr/bin/vim".into()),
            cmdline: Some(format!("vim {path}")),
            uid: Some(0),
            user: Some("root".into()),
            exited: false,
        }),
        source: "realtime".into(),
        backend: "fanotify".into(),
    };
    a.seq += 1;
    let mut e = Envelope::new(
        a.id.clone(),
        a.seq,
        EventClass::File,
        activity,
        Severity::Medium,
        serde_json::to_value(fa).unwrap(),
    );
    e.time = Utc::now() - Age::minutes(10) + Age::seconds(secs);
    e
}

#[test]
fn files_prints_the_state_of_watched_files() {
    let s = Stack::start();
    let mut a = s.sim("web-01");
    s.register(&a);
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let events = [
        file_event(&mut a, "created", "/etc/passwd", Some(state(10, "00aa", 0o100644)), 0),
        file_event(&mut a, "modified", "/etc/passwd", Some(state(1234, hash, 0o100644)), 10),
        file_event(&mut a, "created", "/etc/ssh/sshd_config", Some(state(99, "11bb", 0o100600)), 20),
        file_event(&mut a, "created", "/etc/old\n\u{1b}[31mred", Some(state(1, "22cc", 0o100644)), 30),
        file_event(&mut a, "deleted", "/etc/old\n\u{1b}[31mred", None, 40),
    ];
    s.publish_events(&events, 5);

    let out = ok_stdout(&s.base, &["files", "web-01"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["PATH", "KIND", "SIZE", "MODE", "OWNER", "HASH", "LAST CHANGE", "AT", "BY"],
        "{out}"
    );
    let row = cells(lines[1]);
    assert_eq!(
        row[..7],
        ["/etc/passwd", "file", "1234", "100644", "0:0", "9f86d081884c7d65…", "modified"],
        "{out}"
    );
    assert_eq!(row[8], "vim (pid 4242, root)", "{out}");
    assert_eq!(cells(lines[2])[0], "/etc/ssh/sshd_config");
    assert_eq!(lines[3], "showing 1-2 of 2", "deleted files are left out: {out}");

    // Deleted ones on request; a hostile name is printed escaped, on one line.
    let out = ok_stdout(&s.base, &["files", "web-01", "--include-deleted", "--prefix", "/etc/o"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("/etc/old\\n\\u{1b}[31mred  file"), "{out}");
    assert_eq!(cells(lines[1])[6], "deleted", "{out}");
    assert!(!out.contains('\u{1b}'), "raw escape sequence printed");

    let out = ok_stdout(&s.base, &["files", "web-01", "--prefix", "/etc/ssh/"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("/etc/ssh/sshd_config"), "{out}");

    // One file in full.
    let out = ok_stdout(&s.base, &["files", "web-01", "--path", "/etc/passwd"]);
    for line in [
        "PATH         /etc/passwd\n",
        "STATUS       present\n",
        "SIZE         1234\n",
        "MODE         100644\n",
        "INODE        131075\n",
        "MTIME        2025-06-15 15:06:40\n",
        &format!("HASH         sha256:{hash}\n"),
        "BY           vim (pid 4242, root) exe /usr/bin/vim cmdline vim /etc/passwd\n",
        "LAST ACCESS  -\n",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(out.contains("LAST CHANGE  modified at "), "{out}");
    assert!(out.contains(&format!("(event {}, seq 2)", events[1].id)), "{out}");

    let v: Value =
        serde_json::from_str(&ok_stdout(&s.base, &["files", "web-01", "--path", "/etc/passwd", "--json"]))
            .unwrap();
    assert_eq!((v["hash"].as_str(), v["who"]["pid"].as_u64()), (Some(hash), Some(4242)));
    let page: Value =
        serde_json::from_str(&ok_stdout(&s.base, &["files", "web-01", "--json", "--limit", "1"])).unwrap();
    assert_eq!((page["total"].as_u64(), page["items"][0]["path"].as_str()), (Some(2), Some("/etc/passwd")));

    let err = failure(&s.base, &["files", "web-01", "--path", "/etc/nope"]);
    assert_eq!(
        err.trim_end(),
        "error: API error 404 not_found: agent \"web-01\" has no recorded state for path \"/etc/nope\""
    );
    let err = failure(&s.base, &["files", "nobody"]);
    assert_eq!(err.trim_end(), "error: API error 404 not_found: no agent with id \"nobody\"");
    let err = failure(&s.base, &["files", "web-01", "--limit", "5000"]);
    assert!(err.starts_with("error: API error 400 bad_parameter: invalid parameter \"limit\""), "{err}");
    let err = failure(&s.base, &["files", "web-01", "--path", "/etc/passwd", "--prefix", "/etc"]);
    assert!(err.contains("--path") && err.contains("--prefix"), "{err}");
}
