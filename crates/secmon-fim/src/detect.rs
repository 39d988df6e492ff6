//! Detectors: what a change or access means (class, event type, severity) and the
//! one line a person reads. Pure functions over paths; the engine decides whether the
//! path is a camera (it knows the `camera_paths` globs).

use std::ffi::OsStr;
use std::path::{Component, Path};

use secmon_proto::payload::ProcessInfo;
use secmon_proto::{EventClass, Severity};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    Created,
    Modified,
    AttributesChanged,
    Deleted,
    Renamed,
    Accessed,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Created => "created",
            Activity::Modified => "modified",
            Activity::AttributesChanged => "attributes_changed",
            Activity::Deleted => "deleted",
            Activity::Renamed => "renamed",
            Activity::Accessed => "accessed",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Activity::Created => "created",
            Activity::Modified => "modified",
            Activity::AttributesChanged => "attributes changed",
            Activity::Deleted => "deleted",
            Activity::Renamed => "renamed",
            Activity::Accessed => "accessed",
        }
    }
}

/// SSH material, by how much a change to it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshMaterial {
    /// `authorized_keys`, `authorized_keys2`: who may log in.
    AuthorizedKeys,
    /// `id_*` (not `.pub`), `ssh_host_*_key` under `.ssh` or `etc/ssh`.
    PrivateKey,
    /// `*.pub` under `.ssh` or `etc/ssh`.
    PublicKey,
    /// `known_hosts`, `sshd_config`, `ssh_config`.
    Config,
}

/// Whether a directory component sequence puts `path` under a `.ssh` directory or an
/// `etc/ssh` directory (at any depth below it).
fn under_ssh_dir(path: &Path) -> bool {
    let dirs: Vec<&OsStr> = match path.parent() {
        Some(p) => p
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect(),
        None => return false,
    };
    dirs.iter().any(|d| *d == ".ssh") || dirs.windows(2).any(|w| w[0] == "etc" && w[1] == "ssh")
}

pub fn ssh_material(path: &Path) -> Option<SshMaterial> {
    let name = path.file_name()?.to_str()?;
    match name {
        "authorized_keys" | "authorized_keys2" => return Some(SshMaterial::AuthorizedKeys),
        "known_hosts" | "sshd_config" | "ssh_config" => return Some(SshMaterial::Config),
        _ => {}
    }
    if !under_ssh_dir(path) {
        return None;
    }
    if name.ends_with(".pub") {
        return Some(SshMaterial::PublicKey);
    }
    let host_key = name.starts_with("ssh_host_") && name.ends_with("_key");
    if name.starts_with("id_") || host_key {
        return Some(SshMaterial::PrivateKey);
    }
    None
}

/// How an event is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: EventClass,
    pub event_type: &'static str,
    pub detector: Option<&'static str>,
    pub severity: Severity,
}

fn file_event_type(activity: Activity) -> &'static str {
    match activity {
        Activity::Created => "FileCreate",
        Activity::Deleted => "FileDelete",
        Activity::Accessed => "FileAccess",
        Activity::Modified | Activity::AttributesChanged | Activity::Renamed => "FileModify",
    }
}

fn plain_severity(activity: Activity) -> Severity {
    match activity {
        Activity::Accessed | Activity::Modified | Activity::AttributesChanged => Severity::Low,
        Activity::Renamed | Activity::Created | Activity::Deleted => Severity::Medium,
    }
}

/// Classifies one event. `camera` tells whether the path matches `camera_paths`;
/// for a rename both names count (moving a file over `authorized_keys` is as bad as
/// writing it).
pub fn classify(activity: Activity, path: &Path, old_path: Option<&Path>, camera: bool) -> Verdict {
    if camera {
        if activity == Activity::Accessed {
            return Verdict {
                class: EventClass::Device,
                event_type: "CameraAccess",
                detector: Some("camera"),
                severity: Severity::High,
            };
        }
        return Verdict {
            class: EventClass::Device,
            event_type: file_event_type(activity),
            detector: Some("camera"),
            severity: plain_severity(activity),
        };
    }
    let ssh = [Some(path), old_path].into_iter().flatten().filter_map(ssh_material).max_by_key(|m| match m {
        SshMaterial::AuthorizedKeys | SshMaterial::PrivateKey => 2,
        SshMaterial::PublicKey | SshMaterial::Config => 1,
    });
    if let Some(m) = ssh {
        if activity == Activity::Accessed {
            return Verdict {
                class: EventClass::File,
                event_type: "SshAccess",
                detector: Some("ssh"),
                severity: Severity::High,
            };
        }
        let severity = match m {
            SshMaterial::AuthorizedKeys | SshMaterial::PrivateKey => Severity::Critical,
            SshMaterial::PublicKey | SshMaterial::Config => Severity::High,
        };
        return Verdict {
            class: EventClass::File,
            event_type: file_event_type(activity),
            detector: Some("ssh"),
            severity,
        };
    }
    Verdict {
        class: EventClass::File,
        event_type: file_event_type(activity),
        detector: None,
        severity: plain_severity(activity),
    }
}

/// One readable line: "/root/.ssh/authorized_keys modified by vim (pid 4242, uid 0)",
/// "/etc/hosts created", "/a renamed to /b", "/etc/shadow attributes changed (mode)".
pub fn describe(
    activity: Activity,
    path: &Path,
    old_path: Option<&Path>,
    changes: &[String],
    process: Option<&ProcessInfo>,
    camera: bool,
) -> String {
    let mut s = String::new();
    if camera {
        s.push_str("camera ");
    }
    match (activity, old_path) {
        (Activity::Renamed, Some(old)) => {
            s.push_str(&format!("{} renamed to {}", old.display(), path.display()));
        }
        _ => {
            s.push_str(&format!("{} {}", path.display(), activity.verb()));
        }
    }
    let shown_changes: Vec<&str> = changes.iter().map(String::as_str).filter(|c| *c != "ctime").collect();
    if matches!(activity, Activity::AttributesChanged | Activity::Renamed) && !shown_changes.is_empty() {
        s.push_str(&format!(" ({})", shown_changes.join(", ")));
    }
    if let Some(p) = process {
        let name = p.name.as_deref().unwrap_or("process");
        match p.uid {
            Some(uid) => s.push_str(&format!(" by {name} (pid {}, uid {uid})", p.pid)),
            None => s.push_str(&format!(" by {name} (pid {})", p.pid)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activity::*;
    use Severity::*;

    #[test]
    fn ssh_material_by_name_and_place() {
        let table: &[(&str, Option<SshMaterial>)] = &[
            ("/root/.ssh/authorized_keys", Some(SshMaterial::AuthorizedKeys)),
            ("/srv/keys/authorized_keys2", Some(SshMaterial::AuthorizedKeys)),
            ("/home/a/.ssh/known_hosts", Some(SshMaterial::Config)),
            ("/etc/ssh/sshd_config", Some(SshMaterial::Config)),
            ("/opt/x/ssh_config", Some(SshMaterial::Config)),
            ("/home/a/.ssh/id_ed25519", Some(SshMaterial::PrivateKey)),
            ("/home/a/.ssh/id_ed25519.pub", Some(SshMaterial::PublicKey)),
            ("/etc/ssh/ssh_host_rsa_key", Some(SshMaterial::PrivateKey)),
            ("/etc/ssh/ssh_host_rsa_key.pub", Some(SshMaterial::PublicKey)),
            ("/chroot/etc/ssh/ssh_host_ed25519_key", Some(SshMaterial::PrivateKey)),
            ("/home/a/.ssh/old/id_rsa", Some(SshMaterial::PrivateKey)),
            // Key-like names elsewhere are not SSH material.
            ("/tmp/id_rsa", None),
            ("/home/a/project/key.pub", None),
            ("/etc/sshkeys/id_rsa", None),
            ("/home/a/.ssh/config", None),
            ("/home/a/.ssh", None),
        ];
        for (path, want) in table {
            assert_eq!(ssh_material(Path::new(path)), *want, "{path}");
        }
    }

    #[test]
    fn classification_table() {
        let f = EventClass::File;
        let d = EventClass::Device;
        #[allow(clippy::type_complexity)]
        let table: &[(
            Activity,
            &str,
            Option<&str>,
            bool,
            EventClass,
            &str,
            Option<&str>,
            Severity,
        )] = &[
            // camera
            (Accessed, "/dev/video0", None, true, d, "CameraAccess", Some("camera"), High),
            (Created, "/dev/video0", None, true, d, "FileCreate", Some("camera"), Medium),
            // SSH access
            (Accessed, "/home/a/.ssh/id_ed25519", None, false, f, "SshAccess", Some("ssh"), High),
            (Accessed, "/root/.ssh/authorized_keys", None, false, f, "SshAccess", Some("ssh"), High),
            // SSH changes to who may log in / private keys: critical
            (Modified, "/root/.ssh/authorized_keys", None, false, f, "FileModify", Some("ssh"), Critical),
            (Created, "/root/.ssh/authorized_keys2", None, false, f, "FileCreate", Some("ssh"), Critical),
            (Deleted, "/etc/ssh/ssh_host_rsa_key", None, false, f, "FileDelete", Some("ssh"), Critical),
            (AttributesChanged, "/home/a/.ssh/id_rsa", None, false, f, "FileModify", Some("ssh"), Critical),
            (
                Renamed,
                "/root/.ssh/authorized_keys",
                Some("/tmp/k"),
                false,
                f,
                "FileModify",
                Some("ssh"),
                Critical,
            ),
            (
                Renamed,
                "/tmp/k",
                Some("/root/.ssh/authorized_keys"),
                false,
                f,
                "FileModify",
                Some("ssh"),
                Critical,
            ),
            // other SSH material: high
            (Modified, "/home/a/.ssh/known_hosts", None, false, f, "FileModify", Some("ssh"), High),
            (Modified, "/etc/ssh/sshd_config", None, false, f, "FileModify", Some("ssh"), High),
            (Created, "/home/a/.ssh/id_rsa.pub", None, false, f, "FileCreate", Some("ssh"), High),
            // everything else
            (Accessed, "/etc/hosts", None, false, f, "FileAccess", None, Low),
            (Modified, "/etc/hosts", None, false, f, "FileModify", None, Low),
            (AttributesChanged, "/etc/hosts", None, false, f, "FileModify", None, Low),
            (Renamed, "/etc/b", Some("/etc/a"), false, f, "FileModify", None, Medium),
            (Created, "/etc/hosts", None, false, f, "FileCreate", None, Medium),
            (Deleted, "/etc/hosts", None, false, f, "FileDelete", None, Medium),
        ];
        for (act, path, old, camera, class, ty, det, sev) in table {
            let v = classify(*act, Path::new(path), old.map(Path::new), *camera);
            assert_eq!(
                v,
                Verdict { class: *class, event_type: ty, detector: *det, severity: *sev },
                "{act:?} {path} {old:?}"
            );
        }
    }

    #[test]
    fn descriptions_read_as_one_line() {
        let vim = ProcessInfo {
            pid: 4242,
            ppid: None,
            name: Some("vim".into()),
            exe: None,
            cmdline: None,
            uid: Some(0),
            user: None,
            exited: false,
        };
        let p = Path::new("/root/.ssh/authorized_keys");
        assert_eq!(
            describe(Modified, p, None, &["hash".into()], Some(&vim), false),
            "/root/.ssh/authorized_keys modified by vim (pid 4242, uid 0)"
        );
        assert_eq!(describe(Created, Path::new("/etc/hosts"), None, &[], None, false), "/etc/hosts created");
        assert_eq!(
            describe(
                AttributesChanged,
                Path::new("/etc/shadow"),
                None,
                &["mode".into(), "ctime".into()],
                None,
                false
            ),
            "/etc/shadow attributes changed (mode)"
        );
        assert_eq!(
            describe(Renamed, Path::new("/b"), Some(Path::new("/a")), &[], None, false),
            "/a renamed to /b"
        );
        assert_eq!(
            describe(Accessed, Path::new("/dev/video0"), None, &[], Some(&vim), true),
            "camera /dev/video0 accessed by vim (pid 4242, uid 0)"
        );
    }
}
