//! The fanotify backend against the real kernel, on real files in temp dirs under
//! /tmp. Needs root (CAP_SYS_ADMIN); with CI=true a missing capability fails.
//!
//! The backend ignores the agent's own process, and here the agent is this test
//! process: every change the tests expect to see is therefore made by a child
//! process (`sh -c`, `mkdir`, `mv`, `chmod`, …), never by the test itself. What the
//! test process does itself (creating the temp dirs) is, by the same rule, unseen.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secmon_fim::fanotify::{self, FanotifyBackend, FanotifyOptions};
use secmon_fim::raw::{Backend, RawEvent, RawKind};
use secmon_testkit::{ChildGuard, require_root};

const DEADLINE: Duration = Duration::from_secs(20);

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("secmon-fan-").tempdir_in("/tmp").unwrap()
}

/// Runs a shell script in a child process and waits for it.
fn sh(script: &str) {
    let st = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(st.success(), "{script}: {st}");
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Reads until `done` holds over everything read so far, or the deadline.
fn read_until(
    b: &mut FanotifyBackend,
    events: &mut Vec<RawEvent>,
    mut done: impl FnMut(&[RawEvent]) -> bool,
) {
    let end = Instant::now() + DEADLINE;
    while !done(events) {
        assert!(Instant::now() < end, "deadline passed; {:?}; events so far:\n{}", b.stats(), show(events));
        b.read(events, Duration::from_millis(100)).unwrap();
    }
}

/// Reads for a while, for tests that check something did not arrive.
fn read_for(b: &mut FanotifyBackend, events: &mut Vec<RawEvent>, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        b.read(events, Duration::from_millis(50)).unwrap();
    }
}

fn show(events: &[RawEvent]) -> String {
    events
        .iter()
        .map(|e| {
            let who = e.process.as_ref().map(|p| format!("{} {:?} {:?}", p.pid, p.name, p.cmdline));
            format!("  {:?} {} dir={} by {}\n", e.kind, e.path.display(), e.is_dir, who.unwrap_or_default())
        })
        .collect()
}

fn has(events: &[RawEvent], path: &Path, kind: &RawKind) -> bool {
    events.iter().any(|e| e.path == path && e.kind == *kind)
}

fn has_dir(events: &[RawEvent], path: &Path, kind: &RawKind) -> bool {
    events.iter().any(|e| e.path == path && e.kind == *kind && e.is_dir)
}

/// Cookies of the `MovedFrom` at `from` and the `MovedTo` at `to`: asserts they are
/// the same and not zero, and returns how many such pairs there are.
fn pair_cookies(ev: &[RawEvent], from: &Path, to: &Path) -> usize {
    let froms: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e.kind {
            RawKind::MovedFrom { cookie } if e.path == from => Some(cookie),
            _ => None,
        })
        .collect();
    let tos: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e.kind {
            RawKind::MovedTo { cookie } if e.path == to => Some(cookie),
            _ => None,
        })
        .collect();
    froms.iter().filter(|c| **c != 0 && tos.contains(c)).count()
}

/// Every cookie of a move half in `ev` at `path`.
fn cookies_at(ev: &[RawEvent], path: &Path) -> Vec<u32> {
    ev.iter()
        .filter(|e| e.path == path)
        .filter_map(|e| match e.kind {
            RawKind::MovedFrom { cookie } | RawKind::MovedTo { cookie } => Some(cookie),
            _ => None,
        })
        .collect()
}

fn backend() -> FanotifyBackend {
    FanotifyBackend::new().expect("fanotify backend as root")
}

#[test]
fn available_as_root() {
    if !require_root("available_as_root") {
        return;
    }
    fanotify::available().unwrap();
}

#[test]
fn changes_in_a_nested_tree_come_from_one_filesystem_mark() {
    if !require_root("changes_in_a_nested_tree_come_from_one_filesystem_mark") {
        return;
    }
    let root_dir = tmpdir();
    let outside = tmpdir();
    let r = root_dir.path().to_path_buf();
    let c = r.join("a/b/c");
    std::fs::create_dir_all(&c).unwrap();
    let mut b = backend();
    let cov = b.watch(&r, true, false);
    assert_eq!(cov.uncovered, vec![]);
    assert_eq!(cov.dirs, 1, "one filesystem mark");
    let stats = b.stats();
    assert_eq!((stats.filesystem_marks, stats.inode_marks), (1, 0), "no per-directory marks");

    let (f, g, nd, md) = (c.join("f"), r.join("a/g"), c.join("new_dir"), r.join("a/moved_dir"));
    sh(&format!(
        "mkdir {nd} && echo x > {f} && chmod 600 {f} && mv {f} {g} && mv {nd} {md} && rm {g} && rmdir {md} \
         && echo y > {out} && mkdir {outd}",
        nd = q(&nd),
        f = q(&f),
        g = q(&g),
        md = q(&md),
        out = q(&outside.path().join("f")),
        outd = q(&outside.path().join("d")),
    ));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has_dir(ev, &md, &RawKind::Deleted));
    // Give stray events of the outside tree time to show up, were they not filtered.
    read_for(&mut b, &mut ev, Duration::from_millis(300));
    let shown = show(&ev);
    assert!(has_dir(&ev, &nd, &RawKind::Created), "{shown}");
    assert!(has(&ev, &f, &RawKind::Created), "{shown}");
    assert!(has(&ev, &f, &RawKind::Modified), "{shown}");
    assert!(has(&ev, &f, &RawKind::Attrib), "{shown}");
    if b.stats().rename_events {
        assert!(has(&ev, &g, &RawKind::Renamed { from: f.clone() }), "{shown}");
        assert!(has_dir(&ev, &md, &RawKind::Renamed { from: nd.clone() }), "{shown}");
    } else {
        assert_eq!(pair_cookies(&ev, &f, &g), 1, "{shown}");
    }
    assert!(has(&ev, &g, &RawKind::Deleted), "{shown}");
    assert!(!ev.iter().any(|e| e.path.starts_with(outside.path())), "outside events leaked:\n{shown}");
    assert!(!ev.iter().any(|e| e.kind == RawKind::Overflow), "{shown}");
    assert!(ev.iter().all(|e| e.path.starts_with(&r)), "{shown}");
    assert!(b.stats().outside > 0, "the outside changes were seen and filtered: {:?}", b.stats());
}

#[test]
fn a_non_recursive_watch_sees_direct_children_only() {
    if !require_root("a_non_recursive_watch_sees_direct_children_only") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    std::fs::create_dir_all(r.join("sub")).unwrap();
    let mut b = backend();
    b.watch(&r, false, false);
    let (top, deep) = (r.join("top"), r.join("sub/deep"));
    sh(&format!("echo x > {} && echo x > {} && touch {}", q(&deep), q(&top), q(&r.join("last"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &r.join("last"), &RawKind::Created));
    let shown = show(&ev);
    assert!(has(&ev, &top, &RawKind::Created), "{shown}");
    assert!(!ev.iter().any(|e| e.path == deep), "{shown}");
}

#[test]
fn deleting_a_whole_tree_names_every_file() {
    if !require_root("deleting_a_whole_tree_names_every_file") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    let mut b = backend();
    b.watch(&r, true, false);
    let mut files = Vec::new();
    for dir in ["t", "t/x", "t/x/y", "t/x/y/z"] {
        for n in 0..5 {
            files.push(r.join(dir).join(format!("f{n}")));
        }
    }
    let list: Vec<String> = files.iter().map(|p| q(p)).collect();
    sh(&format!("mkdir -p {} && touch {}", q(&r.join("t/x/y/z")), list.join(" ")));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| files.iter().all(|f| has(ev, f, &RawKind::Created)));
    // rm -rf: by the time the events are read, the directories holding the files
    // are gone; their delete events still place every file.
    sh(&format!("rm -rf {}", q(&r.join("t"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has_dir(ev, &r.join("t"), &RawKind::Deleted));
    read_for(&mut b, &mut ev, fanotify::PENDING_MAX_AGE * 2);
    let shown = show(&ev);
    for f in &files {
        assert!(has(&ev, f, &RawKind::Deleted), "{} not reported deleted:\n{shown}", f.display());
    }
    for dir in ["t/x/y/z", "t/x/y", "t/x"] {
        assert!(has_dir(&ev, &r.join(dir), &RawKind::Deleted), "{dir}:\n{shown}");
    }
    if b.stats().target_fid {
        assert_eq!(b.stats().unresolved, 0, "{:?}", b.stats());
        assert!(!ev.iter().any(|e| e.kind == RawKind::Overflow), "{shown}");
    }
}

#[test]
fn who_data_names_the_writing_process() {
    if !require_root("who_data_names_the_writing_process") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    let file = r.join("written-by-child");
    let mut b = backend();
    b.watch(&r, true, false);
    // `; true` keeps sh from exec'ing sleep in place of itself: the writer stays
    // the same sh process, alive long enough to be read from /proc.
    let script = format!("echo x >> {}; sleep 3; true", q(&file));
    let child =
        ChildGuard::new(Command::new("sh").arg("-c").arg(&script).stdout(Stdio::null()).spawn().unwrap());
    let pid = child.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &file, &RawKind::Modified));
    let e = ev.iter().find(|e| e.path == file && e.kind == RawKind::Modified).unwrap();
    let p = e.process.as_ref().expect("who-data");
    assert_eq!(p.pid, pid);
    assert!(!p.exited);
    assert_eq!(p.exe.as_deref(), Some(exe.to_str().unwrap()));
    assert!(p.cmdline.as_deref().unwrap().contains("written-by-child"), "{p:?}");
    assert_eq!(p.ppid, Some(std::process::id()));
    assert_eq!(p.uid, Some(0));
    assert_eq!(p.user.as_deref(), Some("root"));
}

#[test]
fn access_marks_report_opens_and_reads_only_when_asked() {
    if !require_root("access_marks_report_opens_and_reads_only_when_asked") {
        return;
    }
    let with = tmpdir();
    let without = tmpdir();
    for d in [with.path(), without.path()] {
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/secret"), b"s3cret\n").unwrap();
    }
    let mut b = backend();
    let cov = b.watch(with.path(), true, true);
    assert_eq!(cov.uncovered, vec![]);
    b.watch(without.path(), true, false);
    let (s1, s2) = (with.path().join("sub/secret"), without.path().join("sub/secret"));
    // cat of the unwatched copy first: had it been reported, it would be by now.
    sh(&format!("cat {} > /dev/null", q(&s2)));
    let script = format!("cat {} > /dev/null; sleep 3; true", q(&s1));
    let child = ChildGuard::new(Command::new("sh").arg("-c").arg(&script).spawn().unwrap());
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &s1, &RawKind::Opened) && has(ev, &s1, &RawKind::Accessed));
    read_for(&mut b, &mut ev, Duration::from_millis(200));
    let shown = show(&ev);
    // (Only opens and reads: a close after writing may show up under another pid —
    // a child forked by a parallel test thread holds the test's descriptors until
    // it execs, and the last close is what the kernel reports.)
    assert!(
        !ev.iter().any(|e| e.path == s2 && matches!(e.kind, RawKind::Opened | RawKind::Accessed)),
        "access events without access=true:\n{shown}"
    );
    // The reader is cat, a child of the sh we started.
    let opened = ev.iter().find(|e| e.path == s1 && e.kind == RawKind::Opened).unwrap();
    let p = opened.process.as_ref().unwrap();
    if !p.exited {
        assert_eq!(p.ppid, Some(child.pid()), "{p:?}");
        assert_eq!(p.name.as_deref(), Some("cat"), "{p:?}");
    }
    assert_ne!(p.pid, std::process::id());
}

#[test]
fn a_watched_char_device_reports_opens_with_the_process() {
    if !require_root("a_watched_char_device_reports_opens_with_the_process") {
        return;
    }
    let d = tmpdir();
    let dev = d.path().join("video9");
    let c = std::ffi::CString::new(dev.to_str().unwrap()).unwrap();
    // SAFETY: valid path; makedev(1, 3) is /dev/null's device number.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    let mut b = backend();
    let cov = b.watch(&dev, false, true);
    assert_eq!(cov.uncovered, vec![]);
    let script = format!("exec 3< {}; sleep 3; true", q(&dev));
    let child = ChildGuard::new(Command::new("sh").arg("-c").arg(&script).spawn().unwrap());
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &dev, &RawKind::Opened));
    let e = ev.iter().find(|e| e.path == dev && e.kind == RawKind::Opened).unwrap();
    let p = e.process.as_ref().unwrap();
    assert_eq!(p.pid, child.pid());
    assert!(p.cmdline.as_deref().unwrap().contains("video9"), "{p:?}");
}

#[test]
fn directory_marks_where_no_filesystem_mark_is_used() {
    if !require_root("directory_marks_where_no_filesystem_mark_is_used") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    std::fs::create_dir_all(r.join("a/b")).unwrap();
    let mut b =
        FanotifyBackend::with_options(FanotifyOptions { filesystem_marks: false, ..Default::default() })
            .unwrap();
    let cov = b.watch(&r, true, false);
    assert_eq!(cov.uncovered, vec![]);
    assert_eq!(cov.dirs, 3, "root, a, a/b");
    assert_eq!(b.stats().filesystem_marks, 0);
    let f = r.join("a/b/f");
    sh(&format!("echo x > {} && mkdir {}", q(&f), q(&r.join("a/new"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| {
        has(ev, &f, &RawKind::Modified) && has_dir(ev, &r.join("a/new"), &RawKind::Created)
    });
    // The engine tells the backend about the new directory; then it is covered.
    let cov = b.dir_created(&r.join("a/new"), false);
    assert_eq!(cov.dirs, 1);
    let g = r.join("a/new/g");
    sh(&format!("touch {}", q(&g)));
    read_until(&mut b, &mut ev, |ev| has(ev, &g, &RawKind::Created));
}

#[test]
fn with_a_filesystem_mark_new_directories_need_nothing() {
    if !require_root("with_a_filesystem_mark_new_directories_need_nothing") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    let mut b = backend();
    b.watch(&r, true, false);
    let deep = r.join("n1/n2/n3");
    sh(&format!("mkdir -p {}", q(&deep)));
    let cov = b.dir_created(&r.join("n1"), false);
    assert_eq!(cov, Default::default());
    let f = deep.join("f");
    sh(&format!("touch {}", q(&f)));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &f, &RawKind::Created));
}

#[test]
fn a_root_that_appears_later_and_goes_away() {
    if !require_root("a_root_that_appears_later_and_goes_away") {
        return;
    }
    let d = tmpdir();
    let r = d.path().join("later");
    let mut b = backend();
    let cov = b.watch(&r, true, false);
    assert_eq!(cov.uncovered, vec![]);
    let f = r.join("f");
    sh(&format!("mkdir {} && touch {}", q(&r), q(&f)));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &f, &RawKind::Created));
    assert!(has_dir(&ev, &r, &RawKind::Created), "{}", show(&ev));
    sh(&format!("rm -r {}", q(&r)));
    read_until(&mut b, &mut ev, |ev| has(ev, &r, &RawKind::RootGone));
    assert!(has(&ev, &f, &RawKind::Deleted), "{}", show(&ev));
}

#[test]
fn a_root_named_through_a_symlink_keeps_its_name() {
    if !require_root("a_root_named_through_a_symlink_keeps_its_name") {
        return;
    }
    let d = tmpdir();
    let real = d.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut b = backend();
    b.watch(&link, true, false);
    sh(&format!("touch {}", q(&real.join("f"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &link.join("f"), &RawKind::Created));
    assert!(!ev.iter().any(|e| e.path.starts_with(&real)), "{}", show(&ev));
}

#[test]
fn the_agents_own_changes_are_ignored() {
    if !require_root("the_agents_own_changes_are_ignored") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    let mut b = backend();
    b.watch(&r, true, false);
    // Written by this (the "agent") process: ignored.
    std::fs::write(r.join("own"), b"x").unwrap();
    sh(&format!("touch {}", q(&r.join("marker"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &r.join("marker"), &RawKind::Created));
    // Its creation is this process's own act. (Its last close could come from a
    // child forked meanwhile by a parallel test thread, so that is not checked.)
    assert!(!has(&ev, &r.join("own"), &RawKind::Created), "{}", show(&ev));
    assert!(b.stats().own > 0);
}

#[test]
fn many_writers_at_once_lose_nothing_unseen() {
    if !require_root("many_writers_at_once_lose_nothing_unseen") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    let mut b = backend();
    b.watch(&r, true, false);
    sh(&format!("cd {} && for i in $(seq 1 2000); do echo $i > f$i; done", q(&r)));
    let want: HashSet<PathBuf> = (1..=2000).map(|i| r.join(format!("f{i}"))).collect();
    let mut ev = Vec::new();
    // Either every file is reported, or an overflow asks the engine to rescan.
    read_until(&mut b, &mut ev, |ev| {
        ev.iter().any(|e| e.kind == RawKind::Overflow)
            || want.iter().all(|p| ev.iter().any(|e| e.path == *p && e.kind == RawKind::Created))
    });
}

#[test]
fn renames_across_the_tree_border_are_lone_halves_and_a_renamed_root_is_gone() {
    if !require_root("renames_across_the_tree_border_are_lone_halves_and_a_renamed_root_is_gone") {
        return;
    }
    let d = tmpdir();
    let outside = tmpdir();
    let r = d.path().join("root");
    std::fs::create_dir(&r).unwrap();
    let mut b = backend();
    b.watch(&r, true, false);
    let (inside, out, back) = (r.join("f"), outside.path().join("f"), r.join("back"));
    let away = d.path().join("root-renamed");
    sh(&format!(
        "touch {i} && mv {i} {o} && mv {o} {k} && mv {r} {a}",
        i = q(&inside),
        o = q(&out),
        k = q(&back),
        r = q(&r),
        a = q(&away)
    ));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &r, &RawKind::RootGone));
    let shown = show(&ev);
    let (c_out, c_in) = (cookies_at(&ev, &inside), cookies_at(&ev, &back));
    assert_eq!((c_out.len(), c_in.len()), (1, 1), "{shown}");
    assert!(ev.iter().any(|e| e.path == inside && matches!(e.kind, RawKind::MovedFrom { .. })), "{shown}");
    assert!(ev.iter().any(|e| e.path == back && matches!(e.kind, RawKind::MovedTo { .. })), "{shown}");
    // Never paired with each other (they are different files as far as the tree
    // knows), nor with anything else.
    assert_ne!(c_out[0], c_in[0], "{shown}");
    assert!(c_out[0] != 0 && c_in[0] != 0, "{shown}");
    assert!(!ev.iter().any(|e| e.path.starts_with(outside.path())), "{shown}");
}

#[test]
fn rename_halves_on_kernels_without_fan_rename_pair_by_cookie() {
    if !require_root("rename_halves_on_kernels_without_fan_rename_pair_by_cookie") {
        return;
    }
    let d = tmpdir();
    let outside = tmpdir();
    let r = d.path().to_path_buf();
    std::fs::create_dir(r.join("sub")).unwrap();
    let opts = FanotifyOptions { rename_events: false, ..Default::default() };
    let mut b = FanotifyBackend::with_options(opts).unwrap();
    b.watch(&r, true, false);
    assert!(!b.stats().rename_events);
    let (a, c, out) = (r.join("a"), r.join("sub/c"), outside.path().join("a"));
    sh(&format!(
        "touch {a} && mv {a} {c} && mv {c} {o} && touch {m}",
        a = q(&a),
        c = q(&c),
        o = q(&out),
        m = q(&r.join("marker"))
    ));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| has(ev, &r.join("marker"), &RawKind::Created));
    let shown = show(&ev);
    assert_eq!(pair_cookies(&ev, &a, &c), 1, "{shown}");
    assert!(!ev.iter().any(|e| matches!(e.kind, RawKind::Renamed { .. })), "{shown}");
    // The move out is a lone half with a cookie of its own.
    let out_half: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e.kind {
            RawKind::MovedFrom { cookie } if e.path == c => Some(cookie),
            _ => None,
        })
        .collect();
    assert_eq!(out_half.len(), 1, "{shown}");
    assert!(!cookies_at(&ev, &a).contains(&out_half[0]), "{shown}");
}

#[test]
fn events_that_cannot_be_placed_are_counted_and_ask_for_a_rescan() {
    if !require_root("events_that_cannot_be_placed_are_counted_and_ask_for_a_rescan") {
        return;
    }
    let d = tmpdir();
    let r = d.path().to_path_buf();
    // Made by this process, so the backend has never seen (nor cached) these
    // directories when they go.
    std::fs::create_dir_all(r.join("t/x/y")).unwrap();
    for dir in ["t", "t/x", "t/x/y"] {
        std::fs::write(r.join(dir).join("f"), b"x").unwrap();
    }
    // Without FAN_REPORT_TARGET_FID (kernels before 5.17) a delete event does not
    // name the deleted directory, so the files deleted inside it cannot be placed.
    let opts = FanotifyOptions { target_fid: false, ..Default::default() };
    let mut b = FanotifyBackend::with_options(opts).unwrap();
    assert!(!b.stats().target_fid);
    b.watch(&r, true, false);
    sh(&format!("rm -rf {}", q(&r.join("t"))));
    let mut ev = Vec::new();
    read_until(&mut b, &mut ev, |ev| ev.iter().any(|e| e.kind == RawKind::Overflow));
    assert!(b.stats().unresolved > 0, "{:?}", b.stats());
    // What could be placed still is: t is named by the watched root.
    assert!(has_dir(&ev, &r.join("t"), &RawKind::Deleted), "{}", show(&ev));
}
