//! Reads the secmon agent's local event socket (`[socket] path` in the agent's
//! config): one JSON object per line, in the agent's `envelope` or `flat` format.
//!
//! [`follow`] connects, then copies every line to an output until the agent closes
//! the socket: unchanged ([`Output::Json`]) or as one readable line per event
//! ([`Output::Pretty`], see [`pretty_line`]). The `secmon-client` binary and
//! `secmon events --socket` are both this function.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde_json::Value;

/// Why reading the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no socket at {0} (is secmon-agent running, with [socket] path set to it?)")]
    NotFound(PathBuf),
    #[error(
        "permission denied on {0}: run as root, or as a member of the socket's group ([socket] group and mode in the agent's config)"
    )]
    PermissionDenied(PathBuf),
    #[error("{0} is not a socket")]
    NotASocket(PathBuf),
    #[error(
        "nobody is listening on {0} (the agent is not running; the socket file is left from an earlier run)"
    )]
    NotListening(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the agent refused the connection: {0}")]
    Refused(String),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the output: {0}")]
    Write(io::Error),
}

/// How [`follow`] writes what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The lines exactly as the agent sent them.
    Json,
    /// One readable line per event.
    Pretty,
}

/// Connects to the agent's socket, telling apart the usual mistakes.
pub fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NotFound(path.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_owned()),
        // Linux answers a connect to a file that is not a socket like one to a socket
        // nobody listens on.
        io::ErrorKind::ConnectionRefused => match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_socket() => ClientError::NotASocket(path.to_owned()),
            _ => ClientError::NotListening(path.to_owned()),
        },
        _ => ClientError::Connect { path: path.to_owned(), source: e },
    })
}

/// Reads the socket at `path` and writes every line to `out` until the agent closes
/// it (Ok). A line the agent sends instead of events (`{"error": ...}`, e.g. too many
/// clients) ends it with [`ClientError::Refused`]. A closed output (`| head`) ends it
/// quietly.
pub fn follow(path: &Path, output: Output, out: &mut impl Write) -> Result<(), ClientError> {
    let stream = connect(path)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Not UTF-8: show it anyway rather than stop.
                line = String::from("<line that is not UTF-8>\n");
            }
            Err(e) => return Err(ClientError::Read { path: path.to_owned(), source: e }),
        }
        let text = line.trim_end_matches(['\n', '\r']);
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        if let Some(err) = parsed.as_ref().and_then(refusal) {
            return Err(ClientError::Refused(err));
        }
        let written = match output {
            Output::Json => writeln!(out, "{text}"),
            Output::Pretty => {
                writeln!(out, "{}", parsed.as_ref().map_or_else(|| format!("? {text}"), pretty_line))
            }
        }
        .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(ClientError::Write(e)),
        }
    }
}

/// The message of an `{"error": "..."}` line.
fn refusal(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    (obj.len() == 1).then(|| obj.get("error")?.as_str().map(str::to_owned)).flatten()
}

/// One readable line for an event in either format: local time, severity,
/// class/activity (or the classic event type), the path (`old → new` for renames),
/// the process when known, and the sequence number. Agent events are summarised.
pub fn pretty_line(v: &Value) -> String {
    if v.get("event_type").is_some() && v.get("details").is_some() {
        return pretty_flat(v);
    }
    let time = local_time(v.get("time"));
    let severity = str_of(v, "severity").to_uppercase();
    let what = format!("{}/{}", str_of(v, "class"), str_of(v, "activity"));
    let p = &v["payload"];
    let mut text = match str_of(v, "class") {
        "file" | "device" => file_summary(p),
        "agent" => agent_summary(str_of(v, "activity"), p),
        _ => compact(p, 120),
    };
    if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
        text.push_str(&format!("  #{seq}"));
    }
    format!("{time}  {severity:<8}  {what:<22}  {text}").trim_end().to_owned()
}

fn pretty_flat(v: &Value) -> String {
    let time = local_time(v.get("timestamp"));
    let d = &v["details"];
    let severity = str_of(d, "severity").to_uppercase();
    let what = str_of(&v["event_type"], "type").to_owned();
    let m = &d["metadata"];
    let mut text = match str_of(v, "path") {
        "" => str_of(d, "description").to_owned(),
        path => match m.get("old_path").and_then(Value::as_str) {
            Some(old) => format!("{old} → {path}"),
            None => path.to_owned(),
        },
    };
    text.push_str(&process_of(&m["process"]));
    if let Some(seq) = m.get("seq").and_then(Value::as_u64) {
        text.push_str(&format!("  #{seq}"));
    }
    format!("{time}  {severity:<8}  {what:<22}  {text}").trim_end().to_owned()
}

fn file_summary(p: &Value) -> String {
    let path = str_of(p, "path");
    let mut s = match p.get("old_path").and_then(Value::as_str) {
        Some(old) => format!("{old} → {path}"),
        None => path.to_owned(),
    };
    s.push_str(&process_of(&p["process"]));
    s
}

/// `  by vim (pid 4242, user root)`, or nothing when no process is known.
fn process_of(p: &Value) -> String {
    let Some(pid) = p.get("pid").and_then(Value::as_u64) else { return String::new() };
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| p.get("exe").and_then(Value::as_str).map(|e| e.rsplit('/').next().unwrap_or(e)));
    let Some(name) = name else {
        // Gone before the agent could look: only the pid is known.
        let exited = p.get("exited").and_then(Value::as_bool) == Some(true);
        return format!("  by pid {pid}{}", if exited { " (exited)" } else { "" });
    };
    let mut s = format!("  by {name} (pid {pid}");
    if let Some(user) = p.get("user").and_then(Value::as_str) {
        s.push_str(&format!(", user {user}"));
    } else if let Some(uid) = p.get("uid").and_then(Value::as_u64) {
        s.push_str(&format!(", uid {uid}"));
    }
    s.push(')');
    s
}

fn agent_summary(activity: &str, p: &Value) -> String {
    let num = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    match activity {
        "started" => format!("agent {} started", str_of(p, "agent_version")),
        "stopped" => {
            format!("agent stopped ({})", p.get("detail").and_then(Value::as_str).unwrap_or("no reason"))
        }
        "event_loss" if str_of(p, "reason") == "socket_client" => {
            format!("{} events dropped for this client (it read too slowly)", num("lost"))
        }
        "event_loss" => format!("{} events lost by the agent ({})", num("lost"), str_of(p, "reason")),
        "fim_baseline" => format!(
            "FIM baseline ready: {} paths in {} ms, {} changed while the agent was down{}",
            num("files"),
            num("duration_ms"),
            num("offline_changes"),
            if p.get("first_run").and_then(Value::as_bool) == Some(true) { " (first run)" } else { "" }
        ),
        "fim_coverage" => {
            format!(
                "FIM coverage reduced ({}): {}: {}",
                str_of(p, "reason"),
                str_of(p, "path"),
                str_of(p, "detail")
            )
        }
        _ => match p.get("detail").and_then(Value::as_str) {
            Some(detail) => detail.to_owned(),
            None => compact(p, 120),
        },
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// RFC 3339 in local time with milliseconds; the raw value when it does not parse.
fn local_time(v: Option<&Value>) -> String {
    let raw = v.and_then(Value::as_str).unwrap_or("");
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        Err(_) if raw.is_empty() => "-".into(),
        Err(_) => raw.to_owned(),
    }
}

fn compact(v: &Value, max_chars: usize) -> String {
    let s = match v {
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.chars().count() <= max_chars {
        return s;
    }
    let mut cut: String = s.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(t: &str) -> String {
        local_time(Some(&json!(t)))
    }

    #[test]
    fn file_event_with_process_and_rename() {
        let v = json!({
            "v": 1, "seq": 17, "time": "2024-05-01T10:20:30.123Z", "class": "file", "activity": "renamed",
            "severity": "medium",
            "payload": {"path": "/etc/ssh/sshd_config", "old_path": "/etc/ssh/sshd_config.tmp",
                        "process": {"pid": 4242, "name": "vim", "user": "root"}}
        });
        assert_eq!(
            pretty_line(&v),
            format!(
                "{}  MEDIUM    file/renamed            /etc/ssh/sshd_config.tmp → /etc/ssh/sshd_config  by vim (pid 4242, user root)  #17",
                at("2024-05-01T10:20:30.123Z")
            )
        );
    }

    #[test]
    fn agent_events_are_summarised() {
        let line = |activity: &str, payload: Value| {
            pretty_line(&json!({"time": "2024-05-01T10:20:30Z", "class": "agent", "activity": activity,
                                "severity": "info", "payload": payload, "seq": 1}))
        };
        assert!(line("started", json!({"agent_version": "0.1.0"})).contains("agent 0.1.0 started  #1"));
        assert!(line("stopped", json!({"detail": "SIGTERM"})).contains("agent stopped (SIGTERM)"));
        assert!(
            line("event_loss", json!({"lost": 5, "reason": "spool_full"}))
                .contains("5 events lost by the agent (spool_full)")
        );
        assert!(
            line(
                "fim_baseline",
                json!({"files": 10, "duration_ms": 3, "offline_changes": 1, "first_run": true})
            )
            .contains("FIM baseline ready: 10 paths in 3 ms, 1 changed while the agent was down (first run)")
        );
        assert!(
            line("fim_error", json!({"detail": "fanotify unavailable"})).contains("fanotify unavailable")
        );
        let notice = pretty_line(
            &json!({"v": 1, "class": "agent", "activity": "event_loss", "severity": "medium",
                                         "time": "2024-05-01T10:20:30Z", "payload": {"lost": 9, "reason": "socket_client"}}),
        );
        assert!(notice.contains("9 events dropped for this client") && !notice.contains('#'), "{notice}");
    }

    #[test]
    fn flat_lines_and_other_classes() {
        let flat = json!({"timestamp": "2024-05-01T10:20:30Z", "event_type": {"type": "FileModify"},
                          "path": "/etc/passwd", "details": {"severity": "High", "description": "passwd modified",
                          "metadata": {"seq": 3, "process": {"pid": 7, "exe": "/usr/sbin/useradd", "uid": 0}}}});
        assert_eq!(
            pretty_line(&flat),
            format!(
                "{}  HIGH      FileModify              /etc/passwd  by useradd (pid 7, uid 0)  #3",
                at("2024-05-01T10:20:30Z")
            )
        );
        let loss = json!({"timestamp": "2024-05-01T10:20:30Z", "event_type": {"type": "EventLoss"}, "path": "",
                          "details": {"severity": "Medium", "description": "4 events dropped: client too slow",
                          "metadata": {"lost": 4}}});
        assert!(pretty_line(&loss).ends_with("EventLoss               4 events dropped: client too slow"));
        let gone = json!({"time": "2024-05-01T10:20:30Z", "class": "file", "activity": "deleted",
                          "severity": "low", "payload": {"path": "/tmp/x", "process": {"pid": 9, "exited": true}}});
        assert!(pretty_line(&gone).ends_with("/tmp/x  by pid 9 (exited)"), "{}", pretty_line(&gone));
        let other = json!({"time": "bad", "class": "process", "activity": "started", "severity": "low",
                           "payload": {"pid": 1, "cmd": "x".repeat(300)}});
        let line = pretty_line(&other);
        assert!(line.starts_with("bad  LOW       process/started"), "{line}");
        assert!(line.ends_with('…') && line.chars().count() < 200, "{line}");
    }

    #[test]
    fn refusal_lines_are_recognised() {
        assert_eq!(refusal(&json!({"error": "too many clients"})), Some("too many clients".into()));
        assert_eq!(refusal(&json!({"error": "x", "v": 1})), None);
        assert_eq!(refusal(&json!(["error"])), None);
    }
}
