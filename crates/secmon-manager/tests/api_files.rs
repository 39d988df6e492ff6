//! File integrity state through a real manager: `file` events published as an agent
//! would (JetStream on a real nats-server), stored in real SQLite, read back through
//! `GET /api/events?class=file` and `GET /api/agents/{id}/files`.

mod api_support;

use api_support::{SimAgent, Stack, enc};
use chrono::{DateTime, Duration as Age, Utc};
use secmon_proto::payload::{FileActivity, FileKind, FileState, ProcessInfo};
use secmon_proto::{Envelope, EventClass, Severity};
use serde_json::{Value, json};

fn state(size: u64, hash: &str, mode: u32, inode: u64) -> FileState {
    FileState {
        kind: FileKind::File,
        size,
        mode,
        uid: 0,
        gid: 42,
        mtime: 1_750_000_000.123_456_7,
        ctime: 1_750_000_001.5,
        inode,
        hash: Some(hash.into()),
        hash_algo: Some("sha256".into()),
        hash_skipped: None,
        target: None,
    }
}

fn process(pid: u32, exe: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: Some(1),
        name: exe.rsplit('/').next().map(Into::into),
        exe: Some(exe.into()),
        cmdline: Some(format!("{exe} --test")),
        uid: Some(0),
        user: Some("root".into()),
        exited: false,
    }
}

fn activity(path: &str, event_type: &str) -> FileActivity {
    FileActivity {
        path: path.into(),
        old_path: None,
        kind: FileKind::File,
        watch: "/etc".into(),
        watch_description: "system configuration".into(),
        event_type: event_type.into(),
        detector: None,
        description: format!("{path} changed"),
        before: None,
        after: None,
        changes: vec![],
        diff: None,
        diff_truncated: false,
        process: None,
        source: "realtime".into(),
        backend: "fanotify".into(),
    }
}

/// The agent's next event with this activity and payload, `secs` after `base`.
fn event(
    a: &mut SimAgent,
    class: EventClass,
    act: &str,
    payload: Value,
    base: DateTime<Utc>,
    secs: i64,
) -> Envelope {
    a.seq += 1;
    let mut e = Envelope::new(a.id.clone(), a.seq, class, act, Severity::Medium, payload);
    e.time = base + Age::seconds(secs);
    e.observed = e.time;
    e
}

fn file_event(a: &mut SimAgent, act: &str, fa: &FileActivity, base: DateTime<Utc>, secs: i64) -> Envelope {
    event(a, EventClass::File, act, serde_json::to_value(fa).unwrap(), base, secs)
}

fn file_url(agent: &str, path: &str) -> String {
    format!("/api/agents/{agent}/files?path={}", enc(path))
}

fn paths(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn file_events_are_listed_with_their_payload_intact() {
    let s = Stack::start();
    let mut a = s.sim("fim-01");
    s.register(&a);
    let base = Utc::now() - Age::minutes(5);
    let mut fa = activity("/etc/ssh/sshd_config", "FileModify");
    fa.before = Some(state(100, "aa", 0o100600, 7));
    fa.after = Some(state(120, "bb", 0o100600, 7));
    fa.changes = vec!["size".into(), "hash".into(), "mtime".into()];
    fa.diff = Some("--- a\n+++ b\n@@ -1 +1 @@\n-PermitRootLogin no\n+PermitRootLogin yes\n".into());
    fa.process = Some(process(4242, "/usr/bin/vim"));
    let modified = file_event(&mut a, "modified", &fa, base, 0);
    let mut cam = activity("/dev/video0", "CameraAccess");
    cam.kind = FileKind::CharDevice;
    cam.detector = Some("camera".into());
    cam.process = Some(process(77, "/usr/bin/cheese"));
    let camera = event(&mut a, EventClass::Device, "accessed", serde_json::to_value(&cam).unwrap(), base, 1);
    s.publish_events(&[modified.clone(), camera.clone()], 2);

    let page = s.get_ok("/api/events?class=file");
    assert_eq!(page["total"], 1, "{page}");
    let got = &page["items"][0];
    assert_eq!(got["id"], modified.id.to_string());
    assert_eq!((got["class"].as_str(), got["activity"].as_str()), (Some("file"), Some("modified")));
    assert_eq!(got["payload"], serde_json::to_value(&fa).unwrap(), "payload stored and served unchanged");
    let back: FileActivity = serde_json::from_value(got["payload"].clone()).expect("still a FileActivity");
    assert_eq!(back, fa);

    let page = s.get_ok("/api/events?class=device");
    assert_eq!(page["items"][0]["payload"], serde_json::to_value(&cam).unwrap());
    // The camera access is in the file state too, as an access.
    let dev = s.get_ok(&file_url("fim-01", "/dev/video0"));
    assert_eq!((dev["kind"].as_str(), dev["last_activity"].as_str()), (Some("char_device"), None));
    assert_eq!(dev["last_access"]["process"]["exe"], "/usr/bin/cheese");
    assert_eq!(dev["last_access"]["event_id"], camera.id.to_string());
}

#[test]
fn file_state_follows_each_activity_and_ignores_late_events() {
    let s = Stack::start();
    let mut a = s.sim("fim-02");
    s.register(&a);
    let base = Utc::now() - Age::hours(1);
    let get = |path: &str| s.get_ok(&file_url("fim-02", path));
    let mut stored = 0;
    let mut publish = |s: &Stack, e: &Envelope| {
        stored += 1;
        s.publish_events(std::slice::from_ref(e), stored);
    };

    // created
    let mut fa = activity("/etc/app.conf", "FileCreate");
    fa.after = Some(state(10, "h1", 0o100644, 1001));
    fa.process = Some(process(100, "/usr/bin/install"));
    let created = file_event(&mut a, "created", &fa, base, 10);
    publish(&s, &created);
    let st = get("/etc/app.conf");
    assert_eq!(st["agent_id"], "fim-02");
    assert_eq!(st["path"], "/etc/app.conf");
    assert_eq!(
        (st["kind"].as_str(), st["hash"].as_str(), st["hash_algo"].as_str()),
        (Some("file"), Some("h1"), Some("sha256"))
    );
    assert_eq!(
        (st["size"].as_u64(), st["mode"].as_u64(), st["mode_octal"].as_str()),
        (Some(10), Some(0o100644), Some("100644"))
    );
    assert_eq!(
        (st["uid"].as_u64(), st["gid"].as_u64(), st["inode"].as_u64()),
        (Some(0), Some(42), Some(1001))
    );
    assert_eq!(
        (st["mtime"].as_f64(), st["ctime"].as_f64()),
        (Some(1_750_000_000.123_456_7), Some(1_750_000_001.5))
    );
    assert_eq!((st["deleted"].as_bool(), st["last_activity"].as_str()), (Some(false), Some("created")));
    assert_eq!(st["last_event_id"], created.id.to_string());
    assert_eq!(st["last_seq"], created.seq);
    let last_change: DateTime<Utc> = serde_json::from_value(st["last_change"].clone()).unwrap();
    assert_eq!(last_change, created.time, "last change is the event time");
    assert_eq!(st["who"]["pid"], 100);
    assert_eq!(st["who"]["exe"], "/usr/bin/install");
    assert_eq!(st["who"]["cmdline"], "/usr/bin/install --test");
    assert_eq!((st["who"]["uid"].as_u64(), st["who"]["user"].as_str()), (Some(0), Some("root")));
    assert_eq!(st["last_access"], Value::Null);
    assert!(st["updated_at"].is_string(), "{st}");

    // modified
    fa.event_type = "FileModify".into();
    fa.before = fa.after.take();
    fa.after = Some(state(25, "h2", 0o100644, 1001));
    fa.process = Some(process(200, "/usr/bin/vim"));
    let modified = file_event(&mut a, "modified", &fa, base, 20);
    publish(&s, &modified);
    let st = get("/etc/app.conf");
    assert_eq!(
        (st["hash"].as_str(), st["size"].as_u64(), st["last_activity"].as_str()),
        (Some("h2"), Some(25), Some("modified"))
    );
    assert_eq!((st["who"]["pid"].as_u64(), st["last_seq"].as_u64()), (Some(200), Some(modified.seq)));

    // attributes_changed, by a process the agent could not see
    fa.before = fa.after.take();
    fa.after = Some(FileState { uid: 1000, ..state(25, "h2", 0o100600, 1001) });
    fa.process = None;
    let chmod = file_event(&mut a, "attributes_changed", &fa, base, 30);
    publish(&s, &chmod);
    let st = get("/etc/app.conf");
    assert_eq!(
        (st["mode_octal"].as_str(), st["uid"].as_u64(), st["hash"].as_str()),
        (Some("100600"), Some(1000), Some("h2"))
    );
    assert_eq!((st["last_activity"].as_str(), &st["who"]), (Some("attributes_changed"), &Value::Null));

    // A late event (older event time, sent late from a spool) is stored but does not
    // roll the state back: seq N+2 arrives before N+1, whose time is older.
    let mut late_fa = fa.clone();
    late_fa.after = Some(state(1, "stale", 0o100777, 1001));
    let mut newer_fa = fa.clone();
    newer_fa.after = Some(FileState { uid: 1000, ..state(30, "h3", 0o100600, 1001) });
    let late = file_event(&mut a, "modified", &late_fa, base, 35);
    let newer = file_event(&mut a, "modified", &newer_fa, base, 40);
    publish(&s, &newer);
    publish(&s, &late); // waits until it is stored
    let st = get("/etc/app.conf");
    assert_eq!(
        (st["hash"].as_str(), st["size"].as_u64(), st["last_seq"].as_u64()),
        (Some("h3"), Some(30), Some(newer.seq))
    );

    // renamed: the old path is marked deleted (renamed away), the new one written.
    let mut mv = activity("/etc/app.conf.bak", "FileModify");
    mv.old_path = Some("/etc/app.conf".into());
    mv.before = Some(FileState { uid: 1000, ..state(30, "h3", 0o100600, 1001) });
    mv.after = mv.before.clone();
    mv.process = Some(process(300, "/usr/bin/mv"));
    let renamed = file_event(&mut a, "renamed", &mv, base, 50);
    publish(&s, &renamed);
    let old = get("/etc/app.conf");
    assert_eq!(
        (old["deleted"].as_bool(), old["renamed_to"].as_str(), old["last_activity"].as_str()),
        (Some(true), Some("/etc/app.conf.bak"), Some("renamed"))
    );
    assert_eq!((old["hash"].as_str(), old["size"].as_u64()), (Some("h3"), Some(30)), "last attributes kept");
    assert_eq!(old["who"]["exe"], "/usr/bin/mv");
    let new = get("/etc/app.conf.bak");
    assert_eq!(
        (new["deleted"].as_bool(), new["renamed_from"].as_str(), new["hash"].as_str()),
        (Some(false), Some("/etc/app.conf"), Some("h3"))
    );
    assert_eq!(new["last_event_id"], renamed.id.to_string());

    // deleted: flagged, the last attributes stay.
    let mut rm = activity("/etc/app.conf.bak", "FileDelete");
    rm.process = Some(process(400, "/usr/bin/rm"));
    let deleted = file_event(&mut a, "deleted", &rm, base, 60);
    publish(&s, &deleted);
    let gone = get("/etc/app.conf.bak");
    assert_eq!((gone["deleted"].as_bool(), gone["last_activity"].as_str()), (Some(true), Some("deleted")));
    assert_eq!(
        (gone["hash"].as_str(), gone["size"].as_u64(), gone["mode_octal"].as_str()),
        (Some("h3"), Some(30), Some("100600"))
    );
    assert_eq!((gone["who"]["pid"].as_u64(), gone["last_seq"].as_u64()), (Some(400), Some(deleted.seq)));

    // accessed: only the last access moves.
    let mut read = activity("/etc/app.conf.bak", "FileAccess");
    read.process = Some(process(500, "/usr/bin/cat"));
    let accessed = file_event(&mut a, "accessed", &read, base, 70);
    publish(&s, &accessed);
    let st = get("/etc/app.conf.bak");
    assert_eq!(
        (st["deleted"].as_bool(), st["last_activity"].as_str(), st["last_seq"].as_u64()),
        (Some(true), Some("deleted"), Some(deleted.seq))
    );
    let acc = &st["last_access"];
    assert_eq!(
        (acc["event_id"].as_str(), acc["process"]["exe"].as_str()),
        (Some(accessed.id.to_string().as_str()), Some("/usr/bin/cat"))
    );
    let t: DateTime<Utc> = serde_json::from_value(acc["time"].clone()).unwrap();
    assert_eq!(t, accessed.time);

    // Deleted paths are listed only when asked for.
    assert_eq!(s.get_ok("/api/agents/fim-02/files")["total"], 0);
    let all = s.get_ok("/api/agents/fim-02/files?include_deleted=true");
    assert_eq!(paths(&all), ["/etc/app.conf", "/etc/app.conf.bak"]);
}

#[test]
fn a_malformed_file_payload_is_stored_and_counted_and_changes_no_state() {
    let s = Stack::start();
    let mut a = s.sim("fim-03");
    s.register(&a);
    let base = Utc::now();
    let mut fa = activity("/etc/hosts", "FileCreate");
    fa.after = Some(state(5, "good", 0o100644, 9));
    let good = file_event(&mut a, "created", &fa, base, 0);
    // Names the same path, but is no FileActivity (kind is a number, no watch...).
    let bad_payload = json!({"path": "/etc/hosts", "kind": 12, "after": {"hash": "evil"}});
    let bad = event(&mut a, EventClass::File, "modified", bad_payload.clone(), base, 10);
    let odd = file_event(&mut a, "exploded", &fa, base, 20);
    s.publish_events(&[good, bad.clone(), odd.clone()], 3);

    let page = s.get_ok("/api/events?class=file&agent=fim-03");
    assert_eq!(page["total"], 3, "every event is stored");
    let stored = page["items"].as_array().unwrap().iter().find(|e| e["id"] == bad.id.to_string()).unwrap();
    assert_eq!(stored["payload"], bad_payload);
    let m = s.metrics_text();
    for line in [
        "secmon_file_state_skipped_total{reason=\"malformed_payload\"} 1",
        "secmon_file_state_skipped_total{reason=\"unknown_activity\"} 1",
    ] {
        assert!(m.contains(line), "{line} missing from /metrics:\n{m}");
    }
    assert_eq!(s.manager().metrics().file_state_skips("malformed_payload"), 1);
    let st = s.get_ok(&file_url("fim-03", "/etc/hosts"));
    assert_eq!(
        (st["hash"].as_str(), st["last_activity"].as_str()),
        (Some("good"), Some("created")),
        "state untouched"
    );
    assert_eq!(s.get_ok("/api/agents/fim-03/files?include_deleted=true")["total"], 1);

    // Ingest goes on: a later good event still updates the state.
    fa.after = Some(state(6, "better", 0o100644, 9));
    let next = file_event(&mut a, "modified", &fa, base, 30);
    s.publish_events(&[next], 4);
    assert_eq!(s.get_ok(&file_url("fim-03", "/etc/hosts"))["hash"], "better");
}

#[test]
fn file_lists_filter_by_prefix_and_deleted_and_paginate() {
    let s = Stack::start();
    let mut a = s.sim("fim-04");
    s.register(&a);
    let base = Utc::now() - Age::minutes(10);
    let mut events = Vec::new();
    let names = [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/ssh/sshd_config",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etcx",
        "/usr/bin/sudo",
    ];
    for (i, p) in names.iter().enumerate() {
        let mut fa = activity(p, "FileCreate");
        fa.after = Some(state(i as u64, &format!("h{i}"), 0o100644, i as u64));
        events.push(file_event(&mut a, "created", &fa, base, i as i64));
    }
    events.push(file_event(&mut a, "deleted", &activity("/etc/shadow", "FileDelete"), base, 100));
    // Another agent's file does not show.
    let mut b = s.sim("fim-05");
    let mut other = activity("/etc/other", "FileCreate");
    other.after = Some(state(1, "x", 0o100644, 1));
    events.push(file_event(&mut b, "created", &other, base, 0));
    s.publish_events(&events, 8);

    let all = s.get_ok("/api/agents/fim-04/files");
    assert_eq!(
        paths(&all),
        ["/etc/passwd", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/sshd_config", "/etcx", "/usr/bin/sudo"]
    );
    assert_eq!(
        (all["total"].as_u64(), all["offset"].as_u64(), all["limit"].as_u64()),
        (Some(5), Some(0), Some(50))
    );
    for (query, expected) in [
        ("prefix=/etc/", vec!["/etc/passwd", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/sshd_config"]),
        (
            "prefix=/etc/&include_deleted=true",
            vec!["/etc/passwd", "/etc/shadow", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/sshd_config"],
        ),
        ("prefix=/etc/ssh/&limit=1&offset=1", vec!["/etc/ssh/sshd_config"]),
        (
            "prefix=/etc",
            vec!["/etc/passwd", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/sshd_config", "/etcx"],
        ),
        ("prefix=/etc/%25", vec![]),
        ("prefix=/etc/_", vec![]),
        ("prefix=/nothing/", vec![]),
        ("include_deleted=false&limit=2", vec!["/etc/passwd", "/etc/ssh/ssh_host_ed25519_key"]),
        (
            "prefix=",
            vec![
                "/etc/passwd",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/sshd_config",
                "/etcx",
                "/usr/bin/sudo",
            ],
        ),
    ] {
        let url = format!("/api/agents/fim-04/files?{}", query.replace('/', "%2F"));
        assert_eq!(paths(&s.get_ok(&url)), expected, "{query}");
    }
    let page = s.get_ok("/api/agents/fim-04/files?prefix=%2Fetc%2Fssh%2F&limit=1");
    assert_eq!((page["total"].as_u64(), page["limit"].as_u64()), (Some(2), Some(1)));
    // An agent known only from its events (never registered) has its files too.
    assert_eq!(paths(&s.get_ok("/api/agents/fim-05/files")), ["/etc/other"]);
}

#[test]
fn unknown_agents_and_paths_get_404_and_bad_parameters_400() {
    let s = Stack::start();
    let mut a = s.sim("fim-06");
    s.register(&a);
    let mut fa = activity("/etc/motd", "FileCreate");
    fa.after = Some(state(1, "h", 0o100644, 1));
    s.publish_events(&[file_event(&mut a, "created", &fa, Utc::now(), 0)], 1);
    // Registered, no files yet: an empty list, not a 404.
    s.register(&s.sim("fim-07"));
    assert_eq!(
        s.get_ok("/api/agents/fim-07/files"),
        json!({"items": [], "total": 0, "offset": 0, "limit": 50})
    );

    for url in [
        "/api/agents/nobody/files",
        "/api/agents/nobody/files?path=%2Fetc%2Fmotd",
        "/api/agents/nobody/files?prefix=%2Fetc",
    ] {
        let (code, msg) = s.get(url).error(404);
        assert_eq!((code.as_str(), msg.as_str()), ("not_found", "no agent with id \"nobody\""), "{url}");
    }
    let (code, msg) = s.get(&file_url("fim-06", "/etc/nope")).error(404);
    assert_eq!(code, "not_found");
    assert_eq!(msg, "agent \"fim-06\" has no recorded state for path \"/etc/nope\"");
    let (_, msg) = s.get(&file_url("fim-07", "/etc/motd")).error(404);
    assert!(msg.contains("has no recorded state"), "{msg}");

    let long = "/a".repeat(2100);
    let cases: Vec<(String, &str)> = vec![
        ("/api/agents/fim-06/files?limit=100000000".into(), "limit"),
        ("/api/agents/fim-06/files?limit=1001".into(), "limit"),
        ("/api/agents/fim-06/files?limit=-1".into(), "limit"),
        ("/api/agents/fim-06/files?offset=abc".into(), "offset"),
        ("/api/agents/fim-06/files?path=%FF%FE".into(), "path"),
        ("/api/agents/fim-06/files?path=%2Fetc%2F%C0%AF".into(), "path"),
        ("/api/agents/fim-06/files?prefix=%E9".into(), "prefix"),
        (format!("/api/agents/fim-06/files?path={}", enc(&long)), "path"),
        (format!("/api/agents/fim-06/files?prefix={}", enc(&long)), "prefix"),
        ("/api/agents/fim-06/files?path=%2Fetc%00x".into(), "path"),
        ("/api/agents/fim-06/files?path=".into(), "path"),
        ("/api/agents/fim-06/files?path=%2Fetc%2Fmotd&prefix=%2Fetc".into(), "prefix"),
        ("/api/agents/fim-06/files?path=%2Fetc%2Fmotd&limit=5".into(), "limit"),
        ("/api/agents/fim-06/files?path=%2Fetc%2Fmotd&include_deleted=true".into(), "include_deleted"),
        ("/api/agents/fim-06/files?include_deleted=yes".into(), "include_deleted"),
        ("/api/agents/fim-06/files?path=a&path=b".into(), "path"),
        ("/api/agents/fim-06/files?glob=*".into(), "glob"),
        ("/api/agents/a.b/files".into(), "id"),
        ("/api/agents/%2A/files?path=%2Fetc".into(), "id"),
    ];
    for (url, param) in &cases {
        let shown = &url[..url.len().min(90)];
        let a = s.get(url);
        let (code, msg) = a.error(400);
        assert_eq!(code, "bad_parameter", "{shown}");
        assert_eq!(a.json()["error"]["parameter"], json!(param), "{shown}: {msg}");
        assert!(msg.contains(&format!("\"{param}\"")), "{shown}: {msg}");
        assert!(msg.len() < 400, "{shown}: message echoes too much: {msg}");
    }
    // A 4096-byte path is a path (just not a known one).
    let max = format!("/{}", "x".repeat(4095));
    assert_eq!(s.get(&file_url("fim-06", &max)).status, 404);
    // Hostile values are answered, never with a 500.
    for v in ["%' OR 1=1 --", "' OR ''='", "*", "..%2F..", "\u{202e}", "../../etc/passwd", "%", "_", "\\"] {
        for name in ["path", "prefix"] {
            let a = s.get(&format!("/api/agents/fim-06/files?{name}={}", enc(v)));
            assert!(a.status == 200 || a.status == 404, "{name}={v}: {} {}", a.status, a.text);
        }
    }
    assert_eq!(s.get_ok("/api/agents/fim-06/files")["total"], 1, "the table survived");
}
