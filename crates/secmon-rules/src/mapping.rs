//! The mapping from secmon envelopes to Sigma logsources and field names, as data.
//!
//! Each [`SourceMapping`] row says which envelopes (class + activities) form a Sigma
//! logsource and where each Sigma field comes from (a dotted path into the envelope's
//! JSON form). The crate docs render the same table for people; keep both in step.

use std::collections::BTreeSet;

use secmon_proto::{Envelope, EventClass};
use serde_json::{Map, Value};

/// Every secmon event is a Linux event.
pub const PRODUCT: &str = "linux";

/// One Sigma field and the envelope path it is read from.
#[derive(Debug, Clone, Copy)]
pub struct FieldMap {
    pub sigma: &'static str,
    /// Dotted path into the envelope JSON, e.g. `payload.parent.exe`.
    pub source: &'static str,
}

/// One row of the mapping table: envelopes of `class` with one of `activities`
/// become Sigma events of logsource `category` (product `linux`).
#[derive(Debug, Clone, Copy)]
pub struct SourceMapping {
    pub class: EventClass,
    /// Empty means every activity.
    pub activities: &'static [&'static str],
    /// Sigma category; `None` for the `log` class, which is matched by service.
    pub category: Option<&'static str>,
    pub fields: &'static [FieldMap],
    /// Envelope paths whose strings keyword (field-less) detections search.
    pub keyword_sources: &'static [&'static str],
}

const fn f(sigma: &'static str, source: &'static str) -> FieldMap {
    FieldMap { sigma, source }
}

/// The mapping table. Process and network payload names are defined here for the
/// kernel sensor that will produce them.
pub const MAPPINGS: &[SourceMapping] = &[
    SourceMapping {
        class: EventClass::Process,
        activities: &["started"],
        category: Some("process_creation"),
        fields: &[
            f("Image", "payload.exe"),
            f("CommandLine", "payload.cmdline"),
            f("ParentImage", "payload.parent.exe"),
            f("ParentCommandLine", "payload.parent.cmdline"),
            f("User", "payload.user"),
            f("CurrentDirectory", "payload.cwd"),
            f("ProcessId", "payload.pid"),
            f("ParentProcessId", "payload.ppid"),
            // The audit login uid (`/proc/<pid>/loginuid`): SigmaHQ's Linux rules use
            // `LogonId: 0` for "started from a root login session".
            f("LogonId", "payload.login_uid"),
        ],
        keyword_sources: &[],
    },
    SourceMapping {
        class: EventClass::File,
        // Sysmon's FileCreate (the model of `file_event`) fires on create and
        // overwrite; a rename creates the new name.
        activities: &["created", "modified", "renamed"],
        category: Some("file_event"),
        fields: &[
            f("TargetFilename", "payload.path"),
            f("SourceFilename", "payload.old_path"),
            f("Image", "payload.process.exe"),
            f("CommandLine", "payload.process.cmdline"),
            f("User", "payload.process.user"),
            f("ProcessId", "payload.process.pid"),
        ],
        keyword_sources: &[],
    },
    SourceMapping {
        class: EventClass::File,
        activities: &["deleted"],
        category: Some("file_delete"),
        fields: &[
            f("TargetFilename", "payload.path"),
            f("Image", "payload.process.exe"),
            f("CommandLine", "payload.process.cmdline"),
            f("User", "payload.process.user"),
            f("ProcessId", "payload.process.pid"),
        ],
        keyword_sources: &[],
    },
    SourceMapping {
        class: EventClass::Network,
        // `connected`: this host opened the connection; `accepted`: it was accepted.
        activities: &["connected", "accepted"],
        category: Some("network_connection"),
        fields: &[
            f("DestinationIp", "payload.dst_ip"),
            f("DestinationPort", "payload.dst_port"),
            f("DestinationHostname", "payload.dst_host"),
            f("SourceIp", "payload.src_ip"),
            f("SourcePort", "payload.src_port"),
            f("Protocol", "payload.protocol"),
            f("Initiated", "payload.initiated"),
            f("Image", "payload.process.exe"),
            f("CommandLine", "payload.process.cmdline"),
            f("User", "payload.process.user"),
            f("ProcessId", "payload.process.pid"),
        ],
        keyword_sources: &[],
    },
    SourceMapping {
        class: EventClass::Log,
        activities: &[],
        category: None,
        // Decoded fields (`payload.fields.*`) are added under their own names too.
        fields: &[
            f("message", "payload.message"),
            f("raw", "payload.raw"),
            f("program", "payload.program"),
            f("host", "payload.host"),
            f("pid", "payload.pid"),
        ],
        keyword_sources: &["payload.message", "payload.raw"],
    },
];

/// Log services: a Sigma `service` and the syslog programs (or decoders) that
/// produce it, compared case-insensitively. Besides these, every line carries the
/// service `syslog` when it had a syslog header, and `auth` when its program is in
/// [`AUTH_PROGRAMS`] or its file is `auth.log` / `secure`.
pub const LOG_SERVICES: &[(&str, &[&str])] = &[
    ("sshd", &["sshd"]),
    ("sudo", &["sudo"]),
    ("su", &["su"]),
    ("cron", &["cron", "crond", "anacron"]),
    ("clamav", &["clamd", "freshclam", "clamav", "clamscan"]),
    ("guacamole", &["guacd", "guacamole"]),
    ("vsftpd", &["vsftpd"]),
    ("useradd", &["useradd"]),
    ("usermod", &["usermod"]),
    ("passwd", &["passwd"]),
    ("systemd", &["systemd"]),
];

/// Programs whose lines also belong to the `auth` service.
pub const AUTH_PROGRAMS: &[&str] =
    &["sshd", "sudo", "su", "login", "passwd", "useradd", "usermod", "userdel", "groupadd", "systemd-logind"];

/// Services a rule may name: the table's plus the derived `syslog` and `auth`.
pub fn known_services() -> impl Iterator<Item = &'static str> {
    LOG_SERVICES.iter().map(|(s, _)| *s).chain(["syslog", "auth"])
}

/// Categories the table produces.
pub fn known_categories() -> impl Iterator<Item = &'static str> {
    MAPPINGS.iter().filter_map(|m| m.category)
}

/// The mapping row for a category.
pub fn for_category(category: &str) -> Option<&'static SourceMapping> {
    MAPPINGS.iter().find(|m| m.category.is_some_and(|c| c.eq_ignore_ascii_case(category)))
}

/// The logsource an event belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLogsource {
    pub category: Option<&'static str>,
    pub product: &'static str,
    /// Lower-case; empty for non-log events.
    pub services: BTreeSet<String>,
}

/// An envelope as the rule engine sees it.
#[derive(Debug, Clone)]
pub struct MappedEvent {
    /// The envelope's JSON plus the Sigma field names at the top level.
    pub doc: Value,
    pub logsource: EventLogsource,
    /// Strings keyword detections search.
    pub keywords: Vec<String>,
}

/// Map an envelope through [`MAPPINGS`].
pub fn map_envelope(env: &Envelope) -> MappedEvent {
    let root = serde_json::to_value(env).unwrap_or(Value::Null);
    let row = MAPPINGS.iter().find(|m| {
        m.class == env.class && (m.activities.is_empty() || m.activities.contains(&env.activity.as_str()))
    });
    let mut logsource = EventLogsource { product: PRODUCT, ..Default::default() };
    let mut keywords = Vec::new();
    let mut added = Vec::new();
    if let Some(row) = row {
        logsource.category = row.category;
        for fm in row.fields {
            if let Some(v) = lookup(&root, fm.source)
                && !v.is_null()
            {
                added.push((fm.sigma.to_owned(), v.clone()));
            }
        }
        for src in row.keyword_sources {
            if let Some(Value::String(s)) = lookup(&root, src) {
                keywords.push(s.clone());
            }
        }
        if env.class == EventClass::Log {
            logsource.services = log_services(&env.payload);
        }
    }
    let mut doc = match root {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    doc.extend(added);
    if env.class == EventClass::File {
        add_file_flags(&mut doc);
    }
    if row.is_some()
        && env.class == EventClass::Log
        && let Some(Value::Object(fields)) = env.payload.get("fields")
    {
        // Decoded fields by their own names, never shadowing envelope keys.
        for (k, v) in fields {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    MappedEvent { doc: Value::Object(doc), logsource, keywords }
}

/// Facts about a file change that Sigma cannot compute (it has no bit test and no
/// comparison between two fields), added to every `file` class event as booleans:
/// `payload.after.setuid` / `payload.after.setgid` (mode bits 0o4000 / 0o2000 of the
/// state after the change) and `payload.shrunk` (the size after is smaller than the
/// size before: truncation). Each is set only when the states it needs are present.
fn add_file_flags(doc: &mut Map<String, Value>) {
    let Some(Value::Object(payload)) = doc.get_mut("payload") else { return };
    let size = |p: &Map<String, Value>, state: &str| p.get(state)?.get("size")?.as_u64();
    let shrunk = size(payload, "before").zip(size(payload, "after")).map(|(b, a)| a < b);
    if let Some(shrunk) = shrunk {
        payload.insert("shrunk".into(), Value::Bool(shrunk));
    }
    if let Some(Value::Object(after)) = payload.get_mut("after")
        && let Some(mode) = after.get("mode").and_then(Value::as_u64)
    {
        after.insert("setuid".into(), Value::Bool(mode & 0o4000 != 0));
        after.insert("setgid".into(), Value::Bool(mode & 0o2000 != 0));
    }
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key))
}

fn log_services(payload: &Value) -> BTreeSet<String> {
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_ascii_lowercase);
    let program = text("program");
    let decoder = text("decoder");
    let mut services = BTreeSet::new();
    for name in program.iter().chain(decoder.iter()) {
        services.insert(name.clone());
        for (service, programs) in LOG_SERVICES {
            if programs.contains(&name.as_str()) {
                services.insert((*service).to_owned());
            }
        }
        if AUTH_PROGRAMS.contains(&name.as_str()) {
            services.insert("auth".to_owned());
        }
    }
    if text("format").is_some_and(|f| f != "raw") {
        services.insert("syslog".to_owned());
    }
    if let Some(path) = text("path") {
        let file = path.rsplit('/').next().unwrap_or_default();
        if file.starts_with("auth.log") || file == "secure" {
            services.insert("auth".to_owned());
        }
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;
    use secmon_proto::{AgentId, Severity};
    use serde_json::json;

    #[test]
    fn process_started_gets_sigma_names_and_keeps_native_ones() {
        let env = Envelope::new(
            AgentId::new("a1").unwrap(),
            1,
            EventClass::Process,
            "started",
            Severity::Info,
            json!({"exe": "/usr/bin/id", "cmdline": "id -u", "parent": {"exe": "/bin/bash"}, "pid": 7}),
        );
        let m = map_envelope(&env);
        assert_eq!(m.logsource.category, Some("process_creation"));
        assert_eq!(m.doc["Image"], "/usr/bin/id");
        assert_eq!(m.doc["ParentImage"], "/bin/bash");
        assert_eq!(m.doc["ProcessId"], 7);
        assert_eq!(m.doc["class"], "process");
        assert_eq!(m.doc["payload"]["cmdline"], "id -u");
        assert!(m.doc.get("ParentCommandLine").is_none());
    }

    #[test]
    fn file_events_get_setid_and_shrunk_flags() {
        let file = |activity: &str, payload| {
            map_envelope(&Envelope::new(
                AgentId::new("a1").unwrap(),
                1,
                EventClass::File,
                activity,
                Severity::Info,
                payload,
            ))
        };
        let m = file(
            "attributes_changed",
            json!({"path": "/usr/local/bin/x", "before": {"mode": 0o100755, "size": 10},
                   "after": {"mode": 0o104755, "size": 10}}),
        );
        assert_eq!(m.doc["payload"]["after"]["setuid"], true);
        assert_eq!(m.doc["payload"]["after"]["setgid"], false);
        assert_eq!(m.doc["payload"]["shrunk"], false);
        let m = file("created", json!({"path": "/tmp/g", "after": {"mode": 0o102750, "size": 3}}));
        assert_eq!(m.doc["payload"]["after"]["setuid"], false);
        assert_eq!(m.doc["payload"]["after"]["setgid"], true);
        assert!(m.doc["payload"].get("shrunk").is_none(), "no before state, no comparison");
        let m = file(
            "modified",
            json!({"path": "/var/log/auth.log", "before": {"mode": 0o100640, "size": 9000},
                   "after": {"mode": 0o100640, "size": 0}}),
        );
        assert_eq!(m.doc["payload"]["shrunk"], true);
        let m = file("deleted", json!({"path": "/var/log/syslog", "before": {"mode": 0o100640, "size": 5}}));
        assert!(m.doc["payload"].get("shrunk").is_none());
        assert!(m.doc["payload"].get("after").is_none());
    }

    #[test]
    fn log_services_come_from_program_format_and_file() {
        let s = log_services(&json!({"program": "CRON", "format": "rfc3164", "path": "/var/log/auth.log"}));
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["auth", "cron", "syslog"]);
    }
}
