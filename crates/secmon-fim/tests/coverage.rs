//! What FIM cannot see in real time or cannot read: unreadable files and directories
//! (as an unprivileged user, since root bypasses permissions) and the inotify watch
//! limit (lowered inside a user namespace). Both re-run this test binary as a child
//! in the needed situation; the child does the checks and its exit status says.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use secmon_proto::payload::{FimBaseline, FimCoverage};

const ROLE: &str = "SECMON_FIM_TEST_ROLE";

/// Runs test `name` of this binary again as a child (set up by `prepare`), with the
/// role variable set, and fails if the child fails.
fn rerun(name: &str, role: &str, prepare: impl FnOnce(&mut Command)) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]).env(ROLE, role);
    prepare(&mut cmd);
    let out = cmd.output().expect("re-run the test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child {role} failed:\n{text}");
    assert!(text.contains("1 passed"), "child {role} ran no test:\n{text}");
}

#[test]
fn unreadable_files_and_dirs_are_reported_without_a_crash() {
    if std::env::var(ROLE).as_deref() == Ok("unreadable") {
        return unreadable_child();
    }
    if !secmon_testkit::require_root("unreadable_files_and_dirs_are_reported_without_a_crash") {
        return;
    }
    rerun("unreadable_files_and_dirs_are_reported_without_a_crash", "unreadable", |cmd| {
        // std drops the supplementary groups when it changes the uid from root.
        cmd.uid(65534).gid(65534);
    });
}

/// As uid 65534: a directory it may not list and a file it may not read.
fn unreadable_child() {
    assert_ne!(nix::unistd::Uid::effective().as_raw(), 0, "the child must not be root");
    let (_t, root) = tempdir();
    let (_s, state) = tempdir();
    let locked = root.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("inside"), b"x").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let mut run = start(vec![watch(&root)], section(), &state);
    let ev = run.events.wait_for("unreadable_dir coverage", |e| e.activity == "fim_coverage");
    let cov: FimCoverage = serde_json::from_value(ev.payload).unwrap();
    assert_eq!(cov.reason, "unreadable_dir");
    assert_eq!(cov.path, locked.to_string_lossy());
    assert_eq!(cov.uncovered_dirs, 1);

    let secret = root.join("secret");
    fs::write(&secret, b"s").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let created = run.events.wait_file("created", &secret);
    let after = created.after.unwrap();
    assert!(after.hash.is_none());
    // Reported once its writer closed it: by then it may already be mode 000, or the
    // chmod comes as its own change.
    let skipped = match after.hash_skipped.as_deref() {
        Some(s) if s.starts_with("unreadable: ") => s.to_string(),
        _ => {
            let ch = run.events.wait_file("modified", &secret);
            ch.after.unwrap().hash_skipped.expect("no hash for an unreadable file")
        }
    };
    assert!(skipped.starts_with("unreadable: ") && skipped.contains("denied"), "{skipped}");
    // Still running: a later change is seen.
    fs::write(root.join("after"), b"a").unwrap();
    run.events.wait_file("created", &root.join("after"));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    run.stop();
}

#[test]
fn watch_limit_is_reported_and_left_to_scans() {
    if std::env::var(ROLE).as_deref() == Ok("watch_limit") {
        return watch_limit_child();
    }
    if !secmon_testkit::require_root("watch_limit_is_reported_and_left_to_scans") {
        return;
    }
    let unshare = Path::new("/usr/bin/unshare");
    if !unshare.exists() {
        assert!(!secmon_testkit::in_ci(), "unshare (util-linux) is needed and CI=true");
        eprintln!("SKIPPED watch_limit_is_reported_and_left_to_scans: no unshare");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(unshare)
        .args(["-U", "-r"])
        .arg(exe)
        .args(["watch_limit_is_reported_and_left_to_scans", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "watch_limit")
        .output()
        .expect("run unshare");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

/// In a new user namespace: at most 5 inotify watches, a tree of 20 directories.
fn watch_limit_child() {
    fs::write("/proc/sys/user/max_inotify_watches", "5")
        .expect("lower the per-namespace inotify watch limit (needs a user namespace)");
    let (_t, root) = tempdir();
    let (_s, state) = tempdir();
    let mut dirs = Vec::new();
    for i in 0..19 {
        let d = root.join(format!("d{i:02}"));
        fs::create_dir(&d).unwrap();
        dirs.push(d);
    }
    let mut run = start(vec![watch(&root)], section(), &state);
    let ev = run.events.wait_for("watch_limit coverage", |e| e.activity == "fim_coverage");
    let cov: FimCoverage = serde_json::from_value(ev.payload).unwrap();
    assert_eq!(cov.reason, "watch_limit");
    assert_eq!(ev.severity, secmon_proto::Severity::Medium);
    assert!(cov.uncovered_dirs >= 15, "{cov:?}");
    let b: FimBaseline =
        serde_json::from_value(run.events.wait_for("baseline", |e| e.activity == "fim_baseline").payload)
            .unwrap();
    assert_eq!(b.files, 20);
    let st = run.handle().status();
    assert_eq!(st.uncovered_dirs, cov.uncovered_dirs);
    assert!(st.realtime_dirs <= 5, "{st:?}");

    // A file in every directory: the covered ones report in real time, the rest only
    // when a scan looks.
    for d in &dirs {
        fs::write(d.join("new"), b"n").unwrap();
    }
    run.events.settle(Duration::from_millis(500));
    let realtime = run.events.history.iter().filter_map(file).filter(|f| f.source == "realtime").count();
    assert!(realtime < 19, "some directories are uncovered");
    run.handle().scan_now();
    for d in &dirs {
        run.events.wait_file("created", &d.join("new"));
    }
    let scanned: Vec<String> =
        run.events.history.iter().filter_map(file).filter(|f| f.source == "scan").map(|f| f.path).collect();
    assert_eq!(realtime + scanned.len(), 19, "each file once:\n{}", run.events.dump());
    assert!(!scanned.is_empty());
    let until = Instant::now() + DEADLINE;
    while run.handle().status().scans < 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only one coverage event for the limit.
    let limit_events = run.events.history.iter().filter(|e| e.activity == "fim_coverage").count();
    assert_eq!(limit_events, 1, "\n{}", run.events.dump());
    run.stop();
}

/// The sink blocks (back-pressure): the engine stops reading, the kernel queue
/// overflows, and the rescan that follows still reports every file exactly once.
#[test]
fn a_blocked_sink_loses_nothing_even_past_a_queue_overflow() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_t, root) = tempdir();
    let (_s, state) = tempdir();
    let gate_closed = Arc::new(AtomicBool::new(false));
    let gate = gate_closed.clone();
    let stuck = Arc::new(AtomicBool::new(false));
    let stuck_in_sink = stuck.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Box::new(move |e: secmon_fim::FimEvent| {
        if gate.load(Ordering::SeqCst) {
            stuck_in_sink.store(true, Ordering::SeqCst);
        }
        while gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = tx.send(e);
    });
    let opts =
        secmon_fim::FimOptions { watches: vec![watch(&root)], fim: section(), state_dir: state.clone() };
    let fim = secmon_fim::Fim::start(opts, sink).unwrap();
    assert!(fim.wait_ready(DEADLINE));

    gate_closed.store(true, Ordering::SeqCst);
    fs::write(root.join("first"), b"1").unwrap();
    // Wait until the engine is stuck in the sink with that first event.
    let until = Instant::now() + DEADLINE;
    while !stuck.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Three notifications per file: well past the kernel's queue.
    let queue: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    assert!(queue <= 60_000, "fs.inotify.max_queued_events is {queue}: too large for this test");
    let n = queue / 3 + 1500;
    for i in 0..n {
        fs::write(root.join(format!("f{i:04}")), b"x").unwrap();
    }
    gate_closed.store(false, Ordering::SeqCst);
    let t0 = Instant::now();

    let mut created: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut overflow_events = 0;
    let until = Instant::now() + Duration::from_secs(60);
    while created.len() < n + 1 && Instant::now() < until {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(e) if e.activity == "fim_coverage" => {
                let cov: FimCoverage = serde_json::from_value(e.payload).unwrap();
                assert_eq!(cov.reason, "queue_overflow");
                overflow_events += 1;
            }
            Ok(e) => {
                if let Some(f) = file(&e) {
                    assert_eq!(e.activity, "created", "{} {}", e.activity, f.path);
                    *created.entry(f.path).or_default() += 1;
                }
            }
            Err(_) => {}
        }
    }
    eprintln!("{} files reported {:?} after the sink unblocked", n + 1, t0.elapsed());
    // Nothing more arrives late.
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(500)) {
        if let Some(f) = file(&e) {
            *created.entry(f.path).or_default() += 1;
        }
    }
    assert_eq!(created.len(), n + 1, "every file reported");
    assert!(created.values().all(|c| *c == 1), "each once");
    let st = fim.status();
    assert!(st.overflows >= 1 && overflow_events >= 1, "the queue overflowed: {st:?}");
    assert!(st.scans >= 1, "and a rescan followed: {st:?}");
    fim.stop();
}

#[test]
fn a_watch_root_removed_and_made_again_is_followed() {
    let (_t, base) = tempdir();
    let (_s, state) = tempdir();
    let root = base.join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("sub/f"), b"f").unwrap();
    let mut run = start(vec![watch(&root)], section(), &state);
    fs::remove_dir_all(&root).unwrap();
    for p in [root.join("sub/f"), root.join("sub"), root.clone()] {
        run.events.wait_file("deleted", &p);
    }
    fs::create_dir(&root).unwrap();
    run.events.wait_file("created", &root);
    fs::write(root.join("again"), b"a").unwrap();
    run.events.wait_file("created", &root.join("again"));
    fs::write(base.join("beside"), b"b").unwrap();
    let all = run.events.files_after(Duration::from_millis(300));
    assert_eq!(all.len(), 5, "nothing from beside the root:\n{}", run.events.dump());
    run.stop();
}
