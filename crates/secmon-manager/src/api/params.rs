//! Query and path parameter parsing. Every endpoint declares its query parameters
//! once, as a struct deriving `IntoParams` (for the OpenAPI document) and
//! `Deserialize` (for parsing), with every field an `Option<String>` so that all
//! value checks happen here and name the parameter in the 400 they return.
//!
//! Invariant: a parameter an endpoint does not declare, or one given twice, is a
//! 400 — never silently ignored, so a typo (`stauts=active`) cannot widen a query.

use std::collections::HashSet;
use std::str::FromStr;

use axum::extract::Query;
use axum::http::Uri;
use chrono::{DateTime, Duration, Utc};
use secmon_proto::AgentId;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

use super::error::{ApiError, echo};
use crate::file_state::MAX_PATH_BYTES;
use crate::store::AgentSortField;

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 1000;
pub const MAX_OFFSET: u64 = 1_000_000;
/// Longest free-text filter (`q`, `name`, `rule`).
pub const MAX_TEXT: usize = 256;
/// Furthest back a relative time (`since=30d`) may reach.
const MAX_RELATIVE_SECS: i64 = 100 * 366 * 24 * 3600;

/// Parses the query string into `T`, refusing unknown and repeated parameters, and
/// values that are not UTF-8 once percent-decoded (which the parser below would
/// silently turn into U+FFFD, so `path=%FF` would look up a different path).
pub fn query<T: DeserializeOwned + IntoParams>(uri: &Uri) -> Result<T, ApiError> {
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_parameter("query", format!("unparseable query string: {e}")))?
        .0;
    let known: Vec<String> =
        T::into_params(|| Some(ParameterIn::Query)).into_iter().map(|p| p.name).collect();
    let mut seen = HashSet::new();
    for (key, _) in &pairs {
        if !known.iter().any(|k| k == key) {
            let accepted = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(ApiError::bad_parameter(
                key,
                format!("unknown query parameter {} (accepted: {accepted})", echo(key)),
            ));
        }
        if !seen.insert(key.as_str()) {
            return Err(ApiError::bad_parameter(key, "given more than once"));
        }
    }
    // After the names are checked, so the name a 400 quotes is a known, short one.
    check_utf8(uri.query().unwrap_or(""))?;
    // Every field is an optional string and the names were checked above, so this
    // only fails on a mismatch between the struct and its IntoParams derive.
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_parameter("query", format!("unparseable query string: {e}")))
}

fn check_utf8(raw: &str) -> Result<(), ApiError> {
    for pair in raw.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s).decode_utf8().map(|c| c.into_owned())
        };
        if decode(value).is_err() {
            let key = decode(key).unwrap_or_default();
            return Err(ApiError::bad_parameter(&key, "the value is not UTF-8 after percent-decoding"));
        }
    }
    Ok(())
}

fn number(name: &str, value: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(v) = value else { return Ok(default) };
    let n: u64 = v.parse().map_err(|_| {
        ApiError::bad_parameter(name, format!("expected an integer from 0 to {max}, got {}", echo(v)))
    })?;
    if n > max {
        return Err(ApiError::bad_parameter(name, format!("{n} is more than the maximum of {max}")));
    }
    Ok(n)
}

/// `offset` and `limit`: defaults 0 and [`DEFAULT_LIMIT`], at most [`MAX_OFFSET`]
/// and [`MAX_LIMIT`] so one request cannot ask for the whole table.
pub fn paging(offset: Option<&str>, limit: Option<&str>) -> Result<(u64, u64), ApiError> {
    Ok((number("offset", offset, 0, MAX_OFFSET)?, number("limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?))
}

/// A value of one of the protocol's enums (status, class, severity, ...), whose
/// `FromStr` error already lists the accepted values.
pub fn choice<T: FromStr<Err = String>>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError> {
    value.map(|v| T::from_str(v).map_err(|e| ApiError::bad_parameter(name, echo_err(&e, v)))).transpose()
}

/// The enums' errors quote the whole value; re-quote it truncated.
fn echo_err(err: &str, value: &str) -> String {
    err.replace(&format!("{value:?}"), &echo(value))
}

pub fn agent_id(name: &str, value: &str) -> Result<AgentId, ApiError> {
    AgentId::new(value).map_err(|_| {
        ApiError::bad_parameter(
            name,
            format!("{} is not an agent id (1 to 64 characters of A-Z a-z 0-9 _ -)", echo(value)),
        )
    })
}

pub fn opt_agent_id(name: &str, value: Option<&str>) -> Result<Option<AgentId>, ApiError> {
    value.map(|v| agent_id(name, v)).transpose()
}

/// Free text: at most [`MAX_TEXT`] bytes, no control characters. Empty means no
/// filter.
pub fn text(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    if v.len() > MAX_TEXT {
        return Err(ApiError::bad_parameter(name, format!("{} bytes is longer than {MAX_TEXT}", v.len())));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_parameter(name, "control characters are not allowed"));
    }
    Ok(if v.is_empty() { None } else { Some(v) })
}

/// A file path as agents report it: at most [`MAX_PATH_BYTES`] bytes, no NUL (no
/// other character is refused: Linux paths may hold any other byte). Empty is
/// `None`.
pub fn file_path(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    if v.len() > MAX_PATH_BYTES {
        return Err(ApiError::bad_parameter(
            name,
            format!("{} bytes is longer than the longest path ({MAX_PATH_BYTES})", v.len()),
        ));
    }
    if v.contains('\0') {
        return Err(ApiError::bad_parameter(name, "a path cannot contain a NUL byte"));
    }
    Ok(if v.is_empty() { None } else { Some(v) })
}

/// `true` or `false`.
pub fn flag(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_parameter(name, format!("expected true or false, got {}", echo(v)))),
    }
}

/// A point in time: RFC 3339 (`2025-01-31T12:00:00Z`) or an age such as `15m`,
/// `2h`, `1d12h`, meaning that long before `now`.
pub fn time(name: &str, value: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    match relative_secs(v) {
        Some(secs) if secs <= MAX_RELATIVE_SECS => Ok(Some(now - Duration::seconds(secs))),
        _ => Err(ApiError::bad_parameter(
            name,
            format!(
                "{} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor an age like 30s, 15m, 2h, 7d (at most 100 years)",
                echo(v)
            ),
        )),
    }
}

/// `1d12h30m` -> seconds; units s, m, h, d, w. `None` when malformed or overflowing.
fn relative_secs(v: &str) -> Option<i64> {
    if v.is_empty() || v.len() > 32 {
        return None;
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    digits.is_empty().then_some(total)
}

/// Checks `since < until` when both are given.
pub fn time_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ApiError::bad_parameter("until", "must be later than since")),
        _ => Ok(()),
    }
}

/// `sort` for agents: a field name, `-` in front for descending.
pub fn agent_sort(value: Option<&str>) -> Result<(AgentSortField, bool), ApiError> {
    let Some(v) = value else { return Ok((AgentSortField::Name, false)) };
    let (field, descending) = match v.strip_prefix('-') {
        Some(f) => (f, true),
        None => (v, false),
    };
    let field = match field {
        "name" => AgentSortField::Name,
        "status" => AgentSortField::Status,
        "last_seen" => AgentSortField::LastSeen,
        "registered_at" => AgentSortField::RegisteredAt,
        _ => {
            return Err(ApiError::bad_parameter(
                "sort",
                format!(
                    "unknown sort {}: expected name, status, last_seen or registered_at, with a leading - for descending",
                    echo(v)
                ),
            ));
        }
    };
    Ok((field, descending))
}

/// `order` for events: `asc` (oldest first) or `desc` (default). Returns ascending.
pub fn order(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(v) => {
            Err(ApiError::bad_parameter("order", format!("unknown order {}: expected asc or desc", echo(v))))
        }
    }
}

/// A query struct for endpoints that take no query parameters.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use secmon_proto::{AgentStatus, Severity};

    #[derive(Debug, serde::Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct Sample {
        limit: Option<String>,
        status: Option<String>,
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn query_refuses_unknown_and_repeated_parameters() {
        let ok: Sample = query(&uri("/x?limit=5&status=active")).unwrap();
        assert_eq!(ok.limit.as_deref(), Some("5"));
        assert_eq!(ok.status.as_deref(), Some("active"));
        let none: Sample = query(&uri("/x")).unwrap();
        assert!(none.limit.is_none());

        let e = query::<Sample>(&uri("/x?limt=5")).unwrap_err();
        assert_eq!(e.code, "bad_parameter");
        assert_eq!(e.parameter.as_deref(), Some("limt"));
        assert!(e.message.contains("accepted: limit, status"), "{}", e.message);

        let e = query::<Sample>(&uri("/x?limit=1&limit=2")).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("limit"));
        assert!(e.message.contains("more than once"));

        let e = query::<NoParams>(&uri("/x?a=1")).unwrap_err();
        assert!(e.message.contains("accepted: none"), "{}", e.message);
    }

    #[test]
    fn paging_bounds() {
        assert_eq!(paging(None, None).unwrap(), (0, DEFAULT_LIMIT));
        assert_eq!(paging(Some("10"), Some("0")).unwrap(), (10, 0));
        assert_eq!(paging(None, Some("1000")).unwrap(), (0, 1000));
        for (off, lim, bad) in [
            (None, Some("-1"), "limit"),
            (None, Some("abc"), "limit"),
            (None, Some("1001"), "limit"),
            (None, Some("99999999999999999999999"), "limit"),
            (None, Some(""), "limit"),
            (Some("-5"), None, "offset"),
            (Some("1000001"), None, "offset"),
            (Some("1e3"), None, "offset"),
        ] {
            let e = paging(off, lim).unwrap_err();
            assert_eq!(e.parameter.as_deref(), Some(bad), "{off:?} {lim:?}");
            assert!(e.message.starts_with(&format!("invalid parameter \"{bad}\"")), "{}", e.message);
        }
    }

    #[test]
    fn times_absolute_and_relative() {
        let now = Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
        let t = time("since", Some("2025-01-30T10:00:00+01:00"), now).unwrap().unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2025, 1, 30, 9, 0, 0).unwrap());
        assert_eq!(time("since", Some("15m"), now).unwrap().unwrap(), now - Duration::minutes(15));
        assert_eq!(time("since", Some("1d2h"), now).unwrap().unwrap(), now - Duration::hours(26));
        assert_eq!(time("since", None, now).unwrap(), None);
        for bad in
            ["yesterday", "15", "m", "15x", "", "-5m", "2025-01-30", "99999999999999999999s", "1000000w"]
        {
            let e = time("until", Some(bad), now).unwrap_err();
            assert_eq!(e.parameter.as_deref(), Some("until"), "{bad}");
        }
        assert!(time_range(Some(now), Some(now - Duration::seconds(1))).is_err());
        assert!(time_range(Some(now - Duration::seconds(1)), Some(now)).is_ok());
    }

    #[test]
    fn enums_agent_ids_and_text() {
        assert_eq!(choice::<AgentStatus>("status", Some("active")).unwrap(), Some(AgentStatus::Active));
        let e = choice::<AgentStatus>("status", Some("bogus")).unwrap_err();
        assert!(e.message.contains("never_connected"), "{}", e.message);
        let long = "z".repeat(5000);
        let e = choice::<Severity>("severity", Some(&long)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);

        assert!(agent_id("agent", "web-01").is_ok());
        for bad in ["a.b", "*", ">", "a b", ""] {
            assert_eq!(agent_id("agent", bad).unwrap_err().parameter.as_deref(), Some("agent"));
        }

        assert_eq!(text("q", Some(String::new())).unwrap(), None);
        assert_eq!(text("q", Some("%' OR 1=1 --".into())).unwrap().as_deref(), Some("%' OR 1=1 --"));
        assert!(text("q", Some("x".repeat(MAX_TEXT + 1))).is_err());
        assert!(text("name", Some("a\u{0}b".into())).is_err());
    }

    #[test]
    fn values_must_be_utf8_once_decoded() {
        let ok: Sample = query(&uri("/x?status=%C3%A9+x")).unwrap();
        assert_eq!(ok.status.as_deref(), Some("é x"));
        for bad in ["/x?status=%FF%FE", "/x?status=a%C0%AF", "/x?limit=1&status=%E9"] {
            let e = query::<Sample>(&uri(bad)).unwrap_err();
            assert_eq!(e.parameter.as_deref(), Some("status"), "{bad}");
            assert!(e.message.contains("not UTF-8"), "{}", e.message);
        }
        // A name that is not UTF-8 is an unknown name.
        let e = query::<Sample>(&uri("/x?%FF=1")).unwrap_err();
        assert!(e.message.contains("unknown query parameter"), "{}", e.message);
        // A stray % is kept as it is (no valid escape), not refused.
        let ok: Sample = query(&uri("/x?status=100%25%ZZ")).unwrap();
        assert_eq!(ok.status.as_deref(), Some("100%%ZZ"));
    }

    #[test]
    fn file_paths_and_flags() {
        assert_eq!(file_path("path", Some("/etc/ä\nb".into())).unwrap().as_deref(), Some("/etc/ä\nb"));
        assert_eq!(file_path("path", Some(String::new())).unwrap(), None);
        assert_eq!(file_path("path", None).unwrap(), None);
        let e = file_path("prefix", Some("/".repeat(MAX_PATH_BYTES + 1))).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("prefix"));
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(file_path("path", Some("/".repeat(MAX_PATH_BYTES))).is_ok());
        assert!(file_path("path", Some("/a\0b".into())).is_err());
        assert_eq!(flag("f", Some("true")).unwrap(), Some(true));
        assert_eq!(flag("f", Some("false")).unwrap(), Some(false));
        assert_eq!(flag("f", None).unwrap(), None);
        for bad in ["1", "TRUE", "yes", ""] {
            assert_eq!(flag("f", Some(bad)).unwrap_err().parameter.as_deref(), Some("f"), "{bad}");
        }
    }

    #[test]
    fn sort_and_order() {
        assert_eq!(agent_sort(None).unwrap(), (AgentSortField::Name, false));
        assert_eq!(agent_sort(Some("-last_seen")).unwrap(), (AgentSortField::LastSeen, true));
        assert_eq!(agent_sort(Some("registered_at")).unwrap(), (AgentSortField::RegisteredAt, false));
        assert!(agent_sort(Some("bogus")).is_err());
        assert!(agent_sort(Some("--name")).is_err());
        assert!(!order(None).unwrap());
        assert!(order(Some("asc")).unwrap());
        assert_eq!(order(Some("up")).unwrap_err().parameter.as_deref(), Some("order"));
    }
}
