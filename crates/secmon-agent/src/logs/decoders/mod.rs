//! Decoders by program: each reads one message (the text after the syslog header)
//! and says what happened. Pure functions; unknown messages give `None`.

mod cron;
mod passwd;
mod sshd;
mod su;
mod sudo;
mod useradd;
mod usermod;

use serde_json::{Map, Value};

/// What a decoder understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The decoder's name (`sshd`, `sudo`, ...).
    pub decoder: &'static str,
    /// The event activity (`auth_failed`, `sudo`, ...).
    pub activity: &'static str,
    pub fields: Map<String, Value>,
}

impl Finding {
    fn new(decoder: &'static str, activity: &'static str) -> Self {
        Finding { decoder, activity, fields: Map::new() }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Adds `key` unless `value` is empty.
    fn with_str(self, key: &str, value: &str) -> Self {
        if value.is_empty() { self } else { self.with(key, value) }
    }
}

/// Runs the decoder for `program` (the syslog tag, any case) over `message`.
pub fn decode(program: &str, message: &str) -> Option<Finding> {
    let program = program.to_ascii_lowercase();
    match program.as_str() {
        "sshd" | "sshd-session" => sshd::decode(message),
        "sudo" => sudo::decode(message),
        "su" => su::decode(message),
        "useradd" | "groupadd" => useradd::decode(message),
        "usermod" | "gpasswd" => usermod::decode(message),
        "passwd" | "chpasswd" => passwd::decode(message),
        "cron" | "crond" => cron::decode(message),
        _ => None,
    }
}

/// The text between the first pair of single quotes after `start`, and what follows.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let rest = &s[s.find('\'')? + 1..];
    let end = rest.find('\'')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Strips a trailing `(uid=N)` from a user name.
fn strip_uid(user: &str) -> &str {
    user.split_once('(').map_or(user, |(u, _)| u)
}

/// Reads `IP port P` at the start of `s` (the rest, e.g. `ssh2` or `[preauth]`, is
/// ignored).
fn ip_port(finding: Finding, s: &str) -> Option<Finding> {
    let mut words = s.split_whitespace();
    let ip = words.next()?;
    if ip.parse::<std::net::IpAddr>().is_err() {
        return None;
    }
    let f = finding.with("src_ip", ip);
    Some(match (words.next(), words.next().and_then(|p| p.parse::<u16>().ok())) {
        (Some("port"), Some(port)) => f.with("src_port", port),
        _ => f,
    })
}
