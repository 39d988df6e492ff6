//! sshd: logins accepted and failed, invalid users, disconnections.

use super::{Finding, ip_port};

pub(super) fn decode(m: &str) -> Option<Finding> {
    if let Some(rest) = m.strip_prefix("Accepted ") {
        return auth(Finding::new("sshd", "auth_accepted"), rest);
    }
    if let Some(rest) = m.strip_prefix("Failed ") {
        return auth(Finding::new("sshd", "auth_failed"), rest);
    }
    if let Some(rest) = m.strip_prefix("Invalid user ") {
        let (user, addr) = rest.rsplit_once(" from ")?;
        return ip_port(Finding::new("sshd", "invalid_user").with("user", user), addr);
    }
    let rest = m.strip_prefix("Disconnected from ").or_else(|| m.strip_prefix("Connection closed by "))?;
    let f = Finding::new("sshd", "disconnected");
    let (f, rest) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        (f.with("stage", "authenticating"), r)
    } else if let Some(r) = rest.strip_prefix("invalid user ") {
        (f.with("invalid_user", true), r)
    } else if let Some(r) = rest.strip_prefix("user ") {
        (f, r)
    } else {
        return ip_port(f, rest);
    };
    // The user name comes before the address; split at the last word that is an IP.
    let words: Vec<&str> = rest.split(' ').collect();
    let at = words.iter().rposition(|w| w.parse::<std::net::IpAddr>().is_ok())?;
    let user = words[..at].join(" ");
    ip_port(f.with("user", user), &words[at..].join(" "))
}

/// `METHOD for [invalid user ]USER from IP port P ssh2[: key info]`.
fn auth(f: Finding, rest: &str) -> Option<Finding> {
    let (method, rest) = rest.split_once(" for ")?;
    let (user, addr) = rest.rsplit_once(" from ")?;
    let f = f.with("method", method);
    let f = match user.strip_prefix("invalid user ") {
        Some(u) => f.with("user", u).with("invalid_user", true),
        None => f.with("user", user),
    };
    ip_port(f, addr)
}
