//! sudo: commands run, and refusals (wrong passwords, not allowed).

use super::Finding;

/// `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id`; a
/// refusal has its reason first (`3 incorrect password attempts ; TTY=...`).
pub(super) fn decode(m: &str) -> Option<Finding> {
    let (user, rest) = m.trim_start().split_once(" : ")?;
    let user = user.trim();
    if user.is_empty() || user.contains(' ') {
        return None;
    }
    // COMMAND is last and may itself hold " ; ".
    let (head, command) = match rest.find("COMMAND=") {
        Some(i) => (&rest[..i], Some(&rest[i + "COMMAND=".len()..])),
        None => (rest, None),
    };
    let mut parts = head.split(';').map(str::trim).filter(|p| !p.is_empty()).peekable();
    let reason = match parts.peek() {
        Some(p) if !p.contains('=') => parts.next(),
        _ => None,
    };
    let mut f = match reason {
        Some(reason) => Finding::new("sudo", "sudo_failed").with("user", user).with("reason", reason),
        None => Finding::new("sudo", "sudo").with("user", user),
    };
    for p in parts {
        let Some((k, v)) = p.split_once('=') else { continue };
        let key = match k {
            "TTY" => "tty",
            "PWD" => "pwd",
            "USER" => "target_user",
            "GROUP" => "target_group",
            _ => continue,
        };
        f = f.with(key, v);
    }
    if let Some(c) = command {
        f = f.with("command", c.trim());
    }
    Some(f)
}
