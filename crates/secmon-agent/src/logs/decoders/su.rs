//! su: user switches, successful and failed.

use super::{Finding, strip_uid};

pub(super) fn decode(m: &str) -> Option<Finding> {
    // util-linux: "(to root) alice on pts/0", "FAILED SU (to root) alice on pts/0".
    if let Some(rest) = m.strip_prefix("FAILED SU (to ") {
        return to_line(Finding::new("su", "su_failed"), rest);
    }
    if let Some(rest) = m.strip_prefix("(to ") {
        return to_line(Finding::new("su", "su"), rest);
    }
    // "FAILED su for root by alice"
    if let Some(rest) = m.strip_prefix("FAILED su for ") {
        let (target, user) = rest.split_once(" by ")?;
        return Some(Finding::new("su", "su_failed").with("user", user.trim()).with("target_user", target));
    }
    // shadow-utils: "+ pts/0 alice:root" (success), "- pts/0 alice:root" (failure).
    if let Some((sign, rest)) = m.split_at_checked(2).filter(|(s, _)| *s == "+ " || *s == "- ") {
        let (tty, users) = rest.split_once(' ')?;
        let (user, target) = users.trim().split_once(':')?;
        let activity = if sign == "+ " { "su" } else { "su_failed" };
        return Some(
            Finding::new("su", activity).with("user", user).with("target_user", target).with("tty", tty),
        );
    }
    // PAM: "pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)",
    // "pam_unix(su:auth): authentication failure; logname=alice uid=1000 ... user=root".
    let (_, text) = m.strip_prefix("pam_unix(su")?.split_once("): ")?;
    if let Some(rest) = text.strip_prefix("session opened for user ") {
        let (target, by) = rest.split_once(" by ")?;
        return Some(
            Finding::new("su", "su")
                .with("user", strip_uid(by.trim()))
                .with("target_user", strip_uid(target)),
        );
    }
    if let Some(rest) = text.strip_prefix("authentication failure;") {
        let kv = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
                .unwrap_or("")
        };
        let user = if kv("ruser").is_empty() { kv("logname") } else { kv("ruser") };
        return Some(
            Finding::new("su", "su_failed")
                .with_str("user", user)
                .with_str("target_user", kv("user"))
                .with_str("tty", kv("tty")),
        );
    }
    None
}

/// `root) alice on pts/0`
fn to_line(f: Finding, rest: &str) -> Option<Finding> {
    let (target, rest) = rest.split_once(") ")?;
    let (user, tty) = match rest.split_once(" on ") {
        Some((u, t)) => (u, t),
        None => (rest, ""),
    };
    Some(f.with("user", user.trim()).with("target_user", target).with_str("tty", tty.trim()))
}
