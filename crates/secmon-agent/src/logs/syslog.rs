//! Syslog headers: RFC 3164 (`Nov 23 21:45:01 host prog[pid]: msg`, also with the
//! RFC 3339 timestamp rsyslog writes by default on current distributions) and RFC 5424
//! (`<pri>1 2026-11-23T21:45:01.123Z host app procid msgid [sd] msg`). Pure functions.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// What a header told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// `rfc3164` or `rfc5424`.
    pub format: &'static str,
    pub time: Option<DateTime<Utc>>,
    pub host: Option<&'a str>,
    pub program: Option<&'a str>,
    pub pid: Option<u32>,
    /// The message after the header.
    pub message: &'a str,
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Strips a `<pri>` prefix (1 to 3 digits).
fn strip_pri(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<')
        && let Some(end) = rest.find('>')
        && (1..=3).contains(&end)
        && rest[..end].bytes().all(|b| b.is_ascii_digit())
    {
        return &rest[end + 1..];
    }
    line
}

/// Splits at the first space: (token, rest after the space).
fn token(s: &str) -> Option<(&str, &str)> {
    let (t, rest) = s.split_once(' ')?;
    (!t.is_empty()).then_some((t, rest))
}

/// Parses an RFC 3164 line. The timestamp has no year and no zone: it is read in
/// `tz`, in the year that puts it no more than a day after `now` (a December line read
/// in January belongs to last year).
pub fn parse_3164<'a, Tz: TimeZone>(line: &'a str, now: DateTime<Utc>, tz: &Tz) -> Option<Header<'a>> {
    let s = strip_pri(line);
    let (time, rest) = if s.len() >= 16 && MONTHS.contains(&s.get(..3)?) {
        let month = MONTHS.iter().position(|m| *m == &s[..3])? as u32 + 1;
        let day: u32 = s.get(4..6)?.trim_start().parse().ok()?;
        let hms = s.get(7..15)?;
        if s.as_bytes()[3] != b' ' || s.as_bytes()[15] != b' ' {
            return None;
        }
        let t = chrono::NaiveTime::parse_from_str(hms, "%H:%M:%S").ok()?;
        // A real day of that month (in a leap year, so Feb 29 passes).
        NaiveDate::from_ymd_opt(2000, month, day)?;
        let at = |year| NaiveDate::from_ymd_opt(year, month, day).map(|d| NaiveDateTime::new(d, t));
        let local = |n: NaiveDateTime| tz.from_local_datetime(&n).earliest().map(|d| d.with_timezone(&Utc));
        let this_year = at(now.year()).and_then(local);
        let time = match this_year {
            Some(t) if t <= now + Duration::days(1) => Some(t),
            _ => at(now.year() - 1).and_then(local),
        };
        (time, &s[16..])
    } else {
        // rsyslog's RFC 3339 form: 2026-11-23T21:45:01.123456+00:00
        let (ts, rest) = token(s)?;
        if ts.len() < 19 || ts.as_bytes()[4] != b'-' || ts.as_bytes()[10] != b'T' {
            return None;
        }
        (Some(DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc)), rest)
    };
    let (host, rest) = token(rest)?;
    let (program, pid, message) = split_tag(rest);
    Some(Header { format: "rfc3164", time, host: Some(host), program, pid, message })
}

/// `prog[pid]: msg` or `prog: msg`; without a tag the whole text is the message.
fn split_tag(s: &str) -> (Option<&str>, Option<u32>, &str) {
    let Some(colon) = s.find(": ").or_else(|| s.strip_suffix(':').map(str::len)) else {
        return (None, None, s);
    };
    let tag = &s[..colon];
    let message = s.get(colon + 2..).unwrap_or("");
    if tag.is_empty() || tag.contains(' ') {
        return (None, None, s);
    }
    match tag.split_once('[') {
        Some((prog, pid)) if !prog.is_empty() => match pid.strip_suffix(']').and_then(|p| p.parse().ok()) {
            Some(pid) => (Some(prog), Some(pid), message),
            None => (None, None, s),
        },
        Some(_) => (None, None, s),
        None => (Some(tag), None, message),
    }
}

/// Parses an RFC 5424 line (`<pri>1 ...`).
pub fn parse_5424(line: &str) -> Option<Header<'_>> {
    let s = line.strip_prefix('<')?;
    let end = s.find('>')?;
    if !(1..=3).contains(&end) || !s[..end].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let s = s[end + 1..].strip_prefix("1 ")?;
    let (ts, s) = token(s)?;
    let time = match nil(ts) {
        None => None,
        Some(ts) => Some(DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc)),
    };
    let (host, s) = token(s)?;
    let (app, s) = token(s)?;
    let (procid, s) = token(s)?;
    let (_msgid, s) = token(s)?;
    let rest = match s.strip_prefix('-') {
        Some(rest) => rest,
        None => &s[structured_data_len(s)?..],
    };
    let message = rest.strip_prefix(' ').unwrap_or(rest);
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Some(Header {
        format: "rfc5424",
        time,
        host: nil(host),
        program: nil(app),
        pid: nil(procid).and_then(|p| p.parse().ok()),
        message,
    })
}

/// None for the RFC 5424 nil value `-`.
fn nil(t: &str) -> Option<&str> {
    if t == "-" { None } else { Some(t) }
}

/// Length of the structured data elements at the start of `s` (`[id k="v"]...`),
/// honouring `\"`, `\]` and `\\` inside quoted values.
fn structured_data_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() != Some(&b'[') {
        return None;
    }
    while b.get(i) == Some(&b'[') {
        let mut in_quotes = false;
        i += 1;
        loop {
            match b.get(i)? {
                b'\\' if in_quotes => i += 2,
                b'"' => {
                    in_quotes = !in_quotes;
                    i += 1;
                }
                b']' if !in_quotes => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 22, 0, 0).unwrap()
    }

    #[test]
    fn rfc3164_with_and_without_pid() {
        let h = parse_3164("Nov 23 21:45:01 web1 sshd[812]: Accepted password", now(), &Utc).unwrap();
        assert_eq!(h.time, Some(Utc.with_ymd_and_hms(2026, 11, 23, 21, 45, 1).unwrap()));
        assert_eq!(
            (h.host, h.program, h.pid, h.message),
            (Some("web1"), Some("sshd"), Some(812), "Accepted password")
        );
        let h = parse_3164("Nov  3 01:02:03 web1 kernel: x: y", now(), &Utc).unwrap();
        assert_eq!((h.program, h.pid, h.message), (Some("kernel"), None, "x: y"));
        assert_eq!(h.time.unwrap().day(), 3);
        let h = parse_3164("<38>Nov 23 21:45:01 web1 no tag here", now(), &Utc).unwrap();
        assert_eq!((h.program, h.message), (None, "no tag here"));
    }

    #[test]
    fn rfc3164_year_is_inferred() {
        let jan = Utc.with_ymd_and_hms(2027, 1, 1, 0, 10, 0).unwrap();
        let h = parse_3164("Dec 31 23:59:59 h cron[1]: x", jan, &Utc).unwrap();
        assert_eq!(h.time.unwrap().year(), 2026);
        let h = parse_3164("Jan  1 00:09:00 h cron[1]: x", jan, &Utc).unwrap();
        assert_eq!(h.time.unwrap().year(), 2027);
    }

    #[test]
    fn rfc3164_with_rfc3339_timestamp() {
        let h = parse_3164("2026-11-23T21:45:01.123456+01:00 web1 sudo: x", now(), &Utc).unwrap();
        assert_eq!(h.time.unwrap().to_rfc3339(), "2026-11-23T20:45:01.123456+00:00");
        assert_eq!(h.program, Some("sudo"));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let h =
            parse_5424(r#"<34>1 2026-11-23T21:45:01.123Z web1 sshd 812 ID47 [a@1 k="v \] x"][b@2] hi there"#)
                .unwrap();
        assert_eq!(
            (h.host, h.program, h.pid, h.message),
            (Some("web1"), Some("sshd"), Some(812), "hi there")
        );
        let h = parse_5424("<13>1 - - - - - -").unwrap();
        assert_eq!((h.time, h.host, h.program, h.message), (None, None, None, ""));
        assert!(parse_5424("<13>1 2026-11-23T21:45:01Z h a p m [unterminated").is_none());
        assert!(parse_5424("Nov 23 21:45:01 h a: b").is_none());
    }

    #[test]
    fn junk_is_not_a_header() {
        for s in ["", "Nov", "Nov 23 2", "Nov 99 21:45:01 h p: m", "\u{fffd}\u{fffd} x", "<999999>1 x"] {
            assert!(parse_3164(s, now(), &Utc).is_none(), "{s:?}");
            assert!(parse_5424(s).is_none(), "{s:?}");
        }
    }
}
