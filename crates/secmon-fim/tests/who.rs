//! Who-data from /proc with real child processes.

use std::process::{Command, Stdio};

use secmon_fim::who::{holders_of, process_info};
use std::time::Duration;

use secmon_testkit::{ChildGuard, wait_until};

fn spawn(cmd: &mut Command) -> ChildGuard {
    ChildGuard::new(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn child"))
}

#[test]
fn a_live_child_is_described() {
    let child = spawn(Command::new("sleep").arg("30"));
    let pid = child.pid();
    // exe and cmdline are set once the child has exec'ed sleep.
    let exe_now = || std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    // The exe link switches before the new arguments are in place: wait for both.
    let args_now = || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || {
        exe_now().file_name().is_some_and(|n| n == "sleep") && args_now().starts_with(b"sleep\0")
    }));
    let info = process_info(pid);
    assert!(!info.exited);
    assert_eq!(info.pid, pid);
    assert_eq!(info.ppid, Some(std::process::id()));
    assert_eq!(info.name.as_deref(), Some("sleep"));
    assert_eq!(info.exe.as_deref(), Some(exe_now().to_str().unwrap()));
    assert_eq!(info.cmdline.as_deref(), Some("sleep 30"));
    let uid = nix::unistd::getuid();
    assert_eq!(info.uid, Some(uid.as_raw()));
    let user = nix::unistd::User::from_uid(uid).unwrap().unwrap().name;
    assert_eq!(info.user.as_deref(), Some(user.as_str()));
    if uid.is_root() {
        assert_eq!(info.user.as_deref(), Some("root"));
    }
}

#[test]
fn an_exited_pid_gives_exited_with_only_the_pid() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let info = process_info(pid);
    assert!(info.exited, "{info:?}");
    assert_eq!(info.pid, pid);
    assert_eq!((info.exe, info.cmdline, info.uid, info.user, info.name), (None, None, None, None, None));
}

#[test]
fn a_child_holding_a_file_open_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let held = dir.path().join("held");
    let other = dir.path().join("other");
    std::fs::write(&held, b"x").unwrap();
    std::fs::write(&other, b"x").unwrap();
    // The child gets the file as its stdin; the test closes its own copy at once.
    let file = std::fs::File::open(&held).unwrap();
    let child = ChildGuard::new(Command::new("sleep").arg("30").stdin(file).spawn().unwrap());
    // Until the child has exec'ed `sleep` its command line is still empty: retry.
    let pid = child.pid();
    let described = || holders_of(&held).into_iter().find(|p| p.pid == pid);
    assert!(
        wait_until(Duration::from_secs(10), || described()
            .is_some_and(|p| p.cmdline.as_deref() == Some("sleep 30"))),
        "{:?}",
        holders_of(&held)
    );
    // Anything else is a child a parallel test thread forked meanwhile (it holds
    // copies of this process's descriptors until it execs): it goes away.
    assert!(wait_until(Duration::from_secs(10), || holders_of(&held).len() == 1));
    assert!(wait_until(Duration::from_secs(10), || holders_of(&other).is_empty()));
    // A path that does not exist has no holders (and is no error).
    assert!(holders_of(&dir.path().join("missing")).is_empty());
}

#[test]
fn the_calling_process_is_never_its_own_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine");
    std::fs::write(&path, b"x").unwrap();
    let _open = std::fs::File::open(&path).unwrap();
    assert!(!holders_of(&path).iter().any(|p| p.pid == std::process::id()));
    // (Not at once: see above for children forked by parallel tests.)
    assert!(wait_until(Duration::from_secs(10), || holders_of(&path).is_empty()));
}
