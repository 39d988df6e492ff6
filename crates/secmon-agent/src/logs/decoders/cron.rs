//! cron: commands run by the cron daemon.

use super::Finding;

/// `(root) CMD (command)`.
pub(super) fn decode(m: &str) -> Option<Finding> {
    let rest = m.strip_prefix('(')?;
    let (user, rest) = rest.split_once(") CMD (")?;
    let command = rest.trim_end().strip_suffix(')').unwrap_or(rest);
    Some(Finding::new("cron", "cron").with("user", user).with("command", command))
}
