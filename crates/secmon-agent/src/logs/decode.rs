//! One log line to one event: the syslog header, then the program's decoder.
//! Pure: the golden tests run it on sample lines.

use chrono::{DateTime, TimeZone, Utc};
use secmon_proto::Severity;
use secmon_proto::payload::LogRecord;
use serde::Serialize;

use super::decoders;
use super::syslog::{self, Header};
use crate::config::LogFormat;

/// A decoded line: the event's time (from the header, when it has one), activity,
/// severity and payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedLine {
    pub time: Option<DateTime<Utc>>,
    pub activity: String,
    pub severity: Severity,
    pub record: LogRecord,
}

/// The severity of an activity: failures low, account changes medium, the rest info.
pub fn severity_of(activity: &str) -> Severity {
    match activity {
        "auth_failed" | "invalid_user" | "sudo_failed" | "su_failed" => Severity::Low,
        "user_added" | "group_added" | "user_modified" | "password_changed" => Severity::Medium,
        _ => Severity::Info,
    }
}

/// Decodes `raw` (one line without its newline) from the file `path`. `now` and `tz`
/// date RFC 3164 timestamps (no year, local time).
pub fn decode_line<Tz: TimeZone>(
    path: &str,
    raw: &str,
    format: LogFormat,
    now: DateTime<Utc>,
    tz: &Tz,
) -> DecodedLine {
    let header = match format {
        LogFormat::Auto => syslog::parse_5424(raw).or_else(|| syslog::parse_3164(raw, now, tz)),
        LogFormat::Syslog3164 => syslog::parse_3164(raw, now, tz),
        LogFormat::Syslog5424 => syslog::parse_5424(raw),
        LogFormat::Raw => None,
    };
    let Header { format, time, host, program, pid, message } = header.unwrap_or(Header {
        format: "raw",
        time: None,
        host: None,
        program: None,
        pid: None,
        message: raw,
    });
    let finding = program.and_then(|p| decoders::decode(p, message));
    let activity = finding.as_ref().map_or("line", |f| f.activity);
    DecodedLine {
        time,
        activity: activity.to_owned(),
        severity: severity_of(activity),
        record: LogRecord {
            path: path.to_owned(),
            raw: raw.to_owned(),
            message: message.to_owned(),
            format: format.to_owned(),
            host: host.map(str::to_owned),
            program: program.map(str::to_owned),
            pid,
            decoder: finding.as_ref().map(|f| f.decoder.to_owned()),
            fields: finding.map(|f| f.fields).unwrap_or_default(),
        },
    }
}
