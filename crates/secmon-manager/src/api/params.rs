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
            // The name is the client's: quoted back bounded, like any value.
            return Err(ApiError::bad_parameter(
                &unknown_name(key),
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

/// Longest prefix of an unknown parameter name named in a 400 (`parameter` and the
/// message's head); the message's `echo` gives its length.
const UNKNOWN_NAME_MAX: usize = 64;

fn unknown_name(key: &str) -> String {
    key.chars().take(UNKNOWN_NAME_MAX).collect()
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

    #[test]
    fn unknown_names_are_quoted_back_bounded() {
        let long = format!("/x?{}=1", "k".repeat(10_000));
        let e = query::<Sample>(&uri(&long)).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.len() < 400, "{} bytes: {}", e.message.len(), &e.message[..200]);
        assert!(e.message.ends_with("(10000 bytes) (accepted: limit, status)"), "{}", e.message);
        assert_eq!(e.parameter.as_deref(), Some("k".repeat(UNKNOWN_NAME_MAX).as_str()));
        // Control characters in a name are escaped in the message, as in values.
        let e = query::<Sample>(&uri("/x?a%0D%0ASet-Cookie:%20x=1")).unwrap_err();
        assert!(!e.message.contains('\r') && !e.message.contains('\n'), "{}", e.message);
        assert!(e.message.contains(r"a\r\nSet-Cookie: x"), "{}", e.message);
    }

    mod properties {
        //! Arbitrary query strings through the same parsing and checks the handlers
        //! run: a typed value or a 400 naming a parameter, never a panic, and a
        //! message that quotes at most a bounded prefix of what the client sent.
        //! `PROPTEST_CASES` overrides the case count.

        use super::*;
        use crate::store::AlertStatus;
        use proptest::prelude::*;
        use proptest::test_runner::TestCaseError;
        use secmon_proto::{AgentStatus, EventClass, Severity};

        /// Every checked parameter kind, under the names the endpoints use.
        #[derive(Debug, serde::Deserialize, IntoParams)]
        #[into_params(parameter_in = Query)]
        struct Everything {
            limit: Option<String>,
            offset: Option<String>,
            status: Option<String>,
            severity: Option<String>,
            class: Option<String>,
            since: Option<String>,
            until: Option<String>,
            q: Option<String>,
            name: Option<String>,
            rule: Option<String>,
            path: Option<String>,
            prefix: Option<String>,
            include_deleted: Option<String>,
            sort: Option<String>,
            order: Option<String>,
            agent: Option<String>,
        }

        const NAMES: [&str; 16] = [
            "limit",
            "offset",
            "status",
            "severity",
            "class",
            "since",
            "until",
            "q",
            "name",
            "rule",
            "path",
            "prefix",
            "include_deleted",
            "sort",
            "order",
            "agent",
        ];

        /// Values a handler accepts, so cases also get past the first check.
        const PLAUSIBLE: [&str; 16] = [
            "10",
            "0",
            "1000",
            "active",
            "high",
            "file",
            "open",
            "15m",
            "2025-01-31T12:00:00Z",
            "-last_seen",
            "asc",
            "true",
            "web-01",
            "%2Fetc%2Fpasswd",
            "%2Fetc%2F",
            "",
        ];

        const HOSTILE: [&str; 14] = [
            "' OR 1=1 --",
            "\"; DROP TABLE events; --",
            "../../etc/passwd",
            "..\\..\\windows\\win.ini",
            "secmon.agent.*.>",
            "a b",
            "x\r\nSet-Cookie: evil=1",
            "\u{0}",
            "\u{202e}gpj.exe",
            "${jndi:ldap://x}",
            "<script>alert(1)</script>",
            "1e999",
            "-9223372036854775809",
            "18446744073709551616",
        ];

        fn config() -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
            ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
        }

        /// Percent-encodes every byte but the unreserved ones.
        fn enc(s: &str) -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        }

        /// One key or value as it appears in the raw query string.
        fn piece() -> impl Strategy<Value = String> {
            let escape = prop_oneof![
                any::<u8>().prop_map(|b| format!("%{b:02X}")),
                any::<u8>().prop_map(|b| format!("%{b:02x}")),
                Just("%".to_owned()),
                Just("%Z".to_owned()),
                Just("%0".to_owned()),
                Just("+".to_owned()),
                Just("%2e%2e%2f".to_owned()),
                Just("..%2f".to_owned()),
                Just("%00".to_owned()),
                Just("%0d%0a".to_owned()),
                Just("%C0%AF".to_owned()),
                Just("%ED%A0%80".to_owned()),
                "[a-z_]{1,3}",
            ];
            prop_oneof![
                prop::collection::vec(any::<char>(), 0..40).prop_map(|c| enc(&String::from_iter(c))),
                prop::collection::vec(escape, 0..16).prop_map(|e| e.concat()),
                prop::sample::select(HOSTILE.to_vec()).prop_map(enc),
                prop::sample::select(PLAUSIBLE.to_vec()).prop_map(str::to_owned),
                // Very long: one character many times, with a valid head now and then.
                (prop::sample::select(PLAUSIBLE.to_vec()), any::<char>(), 0usize..6000)
                    .prop_map(|(head, c, n)| format!("{head}{}", enc(&c.to_string().repeat(n)))),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
                1 => piece(),
            ]
        }

        /// A query string: pairs with and without `=`, names repeated now and then,
        /// empty pairs; cut to what an `http::Uri` can hold.
        fn query_string() -> impl Strategy<Value = String> {
            prop::collection::vec((key(), piece(), 0u8..8), 0..6).prop_map(|pairs| {
                let mut parts: Vec<String> = Vec::new();
                for (k, v, shape) in pairs {
                    parts.push(match shape {
                        0 => k,
                        1 => String::new(),
                        2 => format!("{k}={v}={v}"),
                        3 if !parts.is_empty() => parts[0].clone(),
                        _ => format!("{k}={v}"),
                    });
                }
                let mut q = String::new();
                for p in parts {
                    if q.len() + p.len() > 60_000 {
                        break;
                    }
                    if !q.is_empty() {
                        q.push('&');
                    }
                    q.push_str(&p);
                }
                q
            })
        }

        /// The typed values, with what the handlers rely on.
        fn check_typed(p: Everything, now: DateTime<Utc>) -> Result<Vec<ApiError>, TestCaseError> {
            let mut errors = Vec::new();
            match paging(p.offset.as_deref(), p.limit.as_deref()) {
                Ok((offset, limit)) => prop_assert!(offset <= MAX_OFFSET && limit <= MAX_LIMIT),
                Err(e) => errors.push(e),
            }
            errors.extend(choice::<AgentStatus>("status", p.status.as_deref()).err());
            errors.extend(choice::<AlertStatus>("status", p.status.as_deref()).err());
            errors.extend(choice::<Severity>("severity", p.severity.as_deref()).err());
            errors.extend(choice::<EventClass>("class", p.class.as_deref()).err());
            let since = time("since", p.since.as_deref(), now).map_err(|e| errors.push(e)).ok().flatten();
            let until = time("until", p.until.as_deref(), now).map_err(|e| errors.push(e)).ok().flatten();
            match time_range(since, until) {
                Ok(()) => {
                    if let (Some(s), Some(u)) = (since, until) {
                        prop_assert!(s < u);
                    }
                }
                Err(e) => errors.push(e),
            }
            for (name, v) in [("q", p.q), ("name", p.name), ("rule", p.rule)] {
                match text(name, v) {
                    Ok(Some(t)) => {
                        prop_assert!(!t.is_empty() && t.len() <= MAX_TEXT && !t.chars().any(char::is_control))
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
            for (name, v) in [("path", p.path), ("prefix", p.prefix)] {
                match file_path(name, v) {
                    Ok(Some(f)) => {
                        prop_assert!(!f.is_empty() && f.len() <= MAX_PATH_BYTES && !f.contains('\0'))
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
            errors.extend(flag("include_deleted", p.include_deleted.as_deref()).err());
            errors.extend(agent_sort(p.sort.as_deref()).err());
            errors.extend(order(p.order.as_deref()).err());
            match opt_agent_id("agent", p.agent.as_deref()) {
                // What may go into a NATS subject: no `.`, `*`, `>` or space.
                Ok(Some(id)) => prop_assert!(
                    id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                ),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
            Ok(errors)
        }

        /// A 400 that names a parameter and quotes at most a bounded, escaped prefix
        /// of the input.
        fn check_error(e: &ApiError, inputs: &[String]) -> Result<(), TestCaseError> {
            prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            prop_assert_eq!(e.code, "bad_parameter");
            prop_assert!(e.message.starts_with("invalid parameter "), "{}", e.message);
            // At most two quotes (an unknown name: as `parameter` and echoed) of 64
            // characters, each at most a 10-byte escape, plus the text: whatever the
            // input's length.
            prop_assert!(e.message.len() <= 2048, "{} bytes of message", e.message.len());
            prop_assert!(
                !e.message.chars().any(char::is_control),
                "raw control character in {:?}",
                e.message
            );
            let parameter = e.parameter.as_deref().unwrap_or_default();
            prop_assert!(parameter.chars().count() <= UNKNOWN_NAME_MAX, "parameter {:?}", parameter);
            for input in inputs {
                let head: String = input.chars().take(UNKNOWN_NAME_MAX + 1).collect();
                // Only where quoting leaves the text as it is (escapes lengthen it).
                if head.chars().count() > UNKNOWN_NAME_MAX && format!("{head:?}") == format!("\"{head}\"") {
                    prop_assert!(!e.message.contains(&head), "message quotes more than a prefix");
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_query_strings_give_a_value_or_a_bounded_400(q in query_string()) {
                let now = chrono::Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
                let u: Uri = format!("/x?{q}").parse().map_err(|e| TestCaseError::fail(format!("{e}: {q}")))?;
                let inputs: Vec<String> = Query::<Vec<(String, String)>>::try_from_uri(&u)
                    .map(|p| p.0.into_iter().flat_map(|(k, v)| [k, v]).collect())
                    .unwrap_or_default();
                match query::<Everything>(&u) {
                    Ok(p) => {
                        for e in check_typed(p, now)? {
                            check_error(&e, &inputs)?;
                        }
                    }
                    Err(e) => check_error(&e, &inputs)?,
                }
            }

            /// Path segments go through `agent_id`: only the id alphabet passes.
            #[test]
            fn agent_ids_accept_only_the_id_alphabet(id in prop_oneof![
                "[A-Za-z0-9_-]{1,64}",
                prop::collection::vec(any::<char>(), 0..100).prop_map(String::from_iter),
            ]) {
                match agent_id("id", &id) {
                    Ok(a) => {
                        prop_assert_eq!(a.as_str(), id.as_str());
                        prop_assert!(!id.is_empty() && id.len() <= 64);
                        prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                    }
                    Err(e) => check_error(&e, std::slice::from_ref(&id))?,
                }
            }
        }
    }
}
