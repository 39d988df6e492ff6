//! Who-data: the process behind a file event, read from `/proc`.
//!
//! [`process_info`] describes one pid (what fanotify reports with each event);
//! [`holders_of`] finds the processes that have a path open right now (what inotify
//! users call for camera devices, since inotify does not say who acted).
//!
//! Invariants: never panics on odd `/proc` content (every field is optional and
//! parsed leniently); every read is bounded (the command line to [`CMDLINE_MAX`]
//! bytes, the scan of [`holders_of`] to [`SCAN_MAX_PROCS`] processes and
//! [`SCAN_MAX_FDS`] descriptors each); the user-name cache is bounded.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secmon_proto::payload::ProcessInfo;

/// Longest command line kept, in bytes (longer ones end with `…`).
pub const CMDLINE_MAX: usize = 4096;
/// Processes looked at by one [`holders_of`] call.
pub const SCAN_MAX_PROCS: usize = 65_536;
/// Descriptors looked at per process by one [`holders_of`] call.
pub const SCAN_MAX_FDS: usize = 16_384;
/// Holders returned by one [`holders_of`] call.
pub const HOLDERS_MAX: usize = 64;

const USER_CACHE_MAX: usize = 1024;
const USER_CACHE_TTL: Duration = Duration::from_secs(60);

/// Describes process `pid` from `/proc`. When `/proc/<pid>` is gone the process had
/// exited: only the pid is known (`exited: true`). Fields that cannot be read (a
/// kernel thread has no exe, a zombie no command line) are left empty.
pub fn process_info(pid: u32) -> ProcessInfo {
    process_info_in(Path::new("/proc"), pid)
}

fn process_info_in(proc_root: &Path, pid: u32) -> ProcessInfo {
    let dir = proc_root.join(pid.to_string());
    let status = match std::fs::read(dir.join("status")) {
        Ok(s) => s,
        // ENOENT (gone) and ESRCH (exiting while read) both mean it exited.
        Err(_) => return exited(pid),
    };
    let st = parse_status(&String::from_utf8_lossy(&status));
    let exe = std::fs::read_link(dir.join("exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let cmdline = read_bounded(&dir.join("cmdline"), CMDLINE_MAX)
        .map(|(raw, cut)| format_cmdline(&raw, cut))
        .filter(|s| !s.is_empty());
    let user = st.uid.and_then(user_name);
    ProcessInfo { pid, ppid: st.ppid, name: st.name, exe, cmdline, uid: st.uid, user, exited: false }
}

/// What is known of a process that had already exited: its pid.
pub fn exited(pid: u32) -> ProcessInfo {
    ProcessInfo { pid, ppid: None, name: None, exe: None, cmdline: None, uid: None, user: None, exited: true }
}

/// The fields of `/proc/<pid>/status` who-data needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    pub name: Option<String>,
    pub ppid: Option<u32>,
    /// Real uid (the first of the four `Uid:` columns).
    pub uid: Option<u32>,
}

/// Parses `/proc/<pid>/status` text; unknown or malformed lines are ignored.
pub(crate) fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Name" if !value.is_empty() => st.name = Some(value.to_string()),
            "PPid" => st.ppid = value.parse().ok(),
            "Uid" => st.uid = value.split_whitespace().next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    st
}

/// Reads up to `max` bytes; the flag tells whether the file had more.
fn read_bounded(path: &Path, max: usize) -> Option<(Vec<u8>, bool)> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(256);
    f.take(max as u64 + 1).read_to_end(&mut buf).ok()?;
    let cut = buf.len() > max;
    buf.truncate(max);
    Some((buf, cut))
}

/// NUL-separated arguments joined by spaces, lossy UTF-8; `cut` adds `…`.
pub(crate) fn format_cmdline(raw: &[u8], cut: bool) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let mut s = String::with_capacity(raw.len());
    for (i, arg) in raw.split(|b| *b == 0).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&String::from_utf8_lossy(arg));
    }
    if cut {
        s.push('…');
    }
    s
}

/// uid → (when looked up, name).
type UserCache = HashMap<u32, (Instant, Option<String>)>;

static USERS: Mutex<Option<UserCache>> = Mutex::new(None);

/// User name of `uid` (passwd lookup), cached for a minute in a bounded map so a
/// burst of events does not hit NSS for each.
pub fn user_name(uid: u32) -> Option<String> {
    let now = Instant::now();
    if let Ok(guard) = USERS.lock()
        && let Some((at, name)) = guard.as_ref().and_then(|m| m.get(&uid))
        && now.duration_since(*at) < USER_CACHE_TTL
    {
        return name.clone();
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
    if let Ok(mut guard) = USERS.lock() {
        let map = guard.get_or_insert_with(HashMap::new);
        if map.len() >= USER_CACHE_MAX {
            map.clear();
        }
        map.insert(uid, (now, name.clone()));
    }
    name
}

/// The processes that have `path` open right now (an open descriptor whose target
/// is `path`), the calling process left out. Bounded: see [`SCAN_MAX_PROCS`],
/// [`SCAN_MAX_FDS`], [`HOLDERS_MAX`]. Processes whose descriptors cannot be read
/// (they exited, or the caller lacks the right) are skipped.
pub fn holders_of(path: &Path) -> Vec<ProcessInfo> {
    let target: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let target = target.as_os_str().as_bytes();
    let own = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for entry in procs.flatten().take(SCAN_MAX_PROCS) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds
            .flatten()
            .take(SCAN_MAX_FDS)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str().as_bytes() == target));
        if holds {
            let info = process_info(pid);
            if !info.exited {
                found.push(info);
            }
            if found.len() >= HOLDERS_MAX {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_parsed() {
        let text = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t7\n\
                    Uid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status(text), Status { name: Some("sleep".into()), ppid: Some(7), uid: Some(1000) });
    }

    #[test]
    fn odd_status_content_gives_empty_fields_not_a_panic() {
        for text in
            ["", "garbage", "Uid:", "Uid:\tx\t0", "PPid: -1", "Name:\n:::\n\0\0\0", "PPid:99999999999"]
        {
            let st = parse_status(text);
            assert_eq!(st.uid, None, "{text:?}");
            assert_eq!(st.ppid, None, "{text:?}");
        }
    }

    #[test]
    fn cmdline_is_joined_with_spaces_and_lossy() {
        assert_eq!(format_cmdline(b"sh\0-c\0echo x\0", false), "sh -c echo x");
        assert_eq!(format_cmdline(b"a\xffb\0c", false), "a\u{fffd}b c");
        assert_eq!(format_cmdline(b"", false), "");
        assert_eq!(format_cmdline(b"long", true), "long…");
    }

    #[test]
    fn own_process_is_described() {
        let me = process_info(std::process::id());
        assert!(!me.exited);
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.uid, Some(nix::unistd::getuid().as_raw()));
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe.as_deref(), Some(exe.to_str().unwrap()));
        assert!(me.cmdline.unwrap().starts_with(exe.to_str().unwrap()));
    }

    #[test]
    fn a_fake_proc_tree_with_garbage_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("77");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("status"), b"\xff\xfe\0Name:\t\xffx\nUid:\t\t\n").unwrap();
        std::fs::write(p.join("cmdline"), vec![0u8; CMDLINE_MAX * 2]).unwrap();
        let info = process_info_in(dir.path(), 77);
        assert!(!info.exited);
        assert_eq!(info.uid, None);
        assert!(info.cmdline.unwrap().ends_with('…'));
        let gone = process_info_in(dir.path(), 78);
        assert_eq!(gone, exited(78));
    }
}
