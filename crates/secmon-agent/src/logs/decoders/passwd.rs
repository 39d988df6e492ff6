//! passwd and chpasswd: password changes.

use super::Finding;

/// `pam_unix(passwd:chauthtok): password changed for bob`, `password for 'bob' changed by 'root'`.
pub(super) fn decode(m: &str) -> Option<Finding> {
    if let Some((_, user)) = m.split_once("password changed for ") {
        let user = user.trim();
        return (!user.is_empty()).then(|| Finding::new("passwd", "password_changed").with("user", user));
    }
    let rest = m.strip_prefix("password for '")?;
    let (user, rest) = rest.split_once('\'')?;
    let f = Finding::new("passwd", "password_changed").with("user", user);
    Some(match rest.strip_prefix(" changed by '").and_then(|r| r.strip_suffix('\'')) {
        Some(by) => f.with("by", by),
        None => f,
    })
}
