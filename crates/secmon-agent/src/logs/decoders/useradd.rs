//! useradd and groupadd: new users and groups.

use super::{Finding, usermod};

/// `new user: name=bob, UID=1001, GID=1001, home=/home/bob, shell=/bin/bash, from=/dev/pts/0`,
/// `new group: name=bob, GID=1001`; useradd also logs group memberships like usermod.
pub(super) fn decode(m: &str) -> Option<Finding> {
    let (activity, rest) = if let Some(rest) = m.strip_prefix("new user: ") {
        ("user_added", rest)
    } else if let Some(rest) =
        m.strip_prefix("new group: ").or_else(|| m.strip_prefix("group added to /etc/group: "))
    {
        ("group_added", rest)
    } else {
        return usermod::decode_as(m, "useradd");
    };
    let mut f = Finding::new("useradd", activity);
    for part in rest.split(", ") {
        let Some((k, v)) = part.split_once('=') else { continue };
        let v = v.trim();
        f = match (k.trim(), activity) {
            ("name", "user_added") => f.with("user", v),
            ("name", _) => f.with("group", v),
            ("UID", _) => f.with("uid", v.parse::<u64>().ok()?),
            ("GID", _) => f.with("gid", v.parse::<u64>().ok()?),
            ("home", _) => f.with("home", v),
            ("shell", _) => f.with("shell", v),
            ("from", _) => f.with("from", v),
            _ => f,
        };
    }
    f.fields.contains_key(if activity == "user_added" { "user" } else { "group" }).then_some(f)
}
