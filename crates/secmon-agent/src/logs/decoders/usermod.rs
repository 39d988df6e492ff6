//! usermod and gpasswd: group memberships, shells, homes, names, locks.

use super::{Finding, quoted};

pub(super) fn decode(m: &str) -> Option<Finding> {
    decode_as(m, "usermod")
}

/// `add 'bob' to group 'sudo'`, `add 'bob' to shadow group 'sudo'`,
/// `delete 'bob' from group 'sudo'`, `change user 'bob' shell from '/bin/sh' to '/bin/bash'`,
/// `change user name 'bob' to 'rob'`, `lock user 'bob' password`.
pub(super) fn decode_as(m: &str, decoder: &'static str) -> Option<Finding> {
    let f = Finding::new(decoder, "user_modified");
    if m.starts_with("add '") || m.starts_with("delete '") {
        let (user, rest) = quoted(m)?;
        let (group, _) = quoted(rest)?;
        let change = if m.starts_with("add") { "group_added" } else { "group_removed" };
        let shadow = rest.contains(" shadow group ");
        let f = f.with("user", user).with("change", change).with("group", group);
        return Some(if shadow { f.with("shadow", true) } else { f });
    }
    if let Some(rest) = m.strip_prefix("change user name ") {
        let (old, rest) = quoted(rest)?;
        let (new, _) = quoted(rest)?;
        return Some(f.with("user", old).with("change", "name").with("to", new));
    }
    if let Some(rest) = m.strip_prefix("change user ") {
        let (user, rest) = quoted(rest)?;
        let what = rest.split_whitespace().next()?;
        let f = f.with("user", user).with("change", what);
        return Some(match rest.split_once(" from ") {
            Some((_, fromto)) => {
                let (from, rest) = quoted(fromto)?;
                let f = f.with("from", from);
                match quoted(rest) {
                    Some((to, _)) => f.with("to", to),
                    None => f,
                }
            }
            None => f,
        });
    }
    for (prefix, change) in [("lock user ", "lock"), ("unlock user ", "unlock")] {
        if let Some(rest) = m.strip_prefix(prefix) {
            let (user, _) = quoted(rest)?;
            return Some(f.with("user", user).with("change", change));
        }
    }
    None
}
