//! Conversions between Rust values and SQLite columns.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// RFC 3339 UTC with 9 fraction digits: exact, and sorts as text.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

/// Nanoseconds since the epoch, clamped to the i64 range (years 1677 to 2262):
/// event times outside it are bogus, and clamping keeps them orderable.
pub fn nanos(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

pub fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(format!("cannot encode: {e}")))
}

pub fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad {what}: {e}")))
}

pub fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

/// u64 counters and limits as SQLite integers (saturating: SQLite has no u64).
pub fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `%text%` for `LIKE ... ESCAPE '\'`, with the wildcards of `text` escaped.
pub fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A WHERE clause built from optional filters, with positional parameters.
#[derive(Default)]
pub struct Filter {
    clauses: Vec<String>,
    pub params: Vec<Value>,
}

impl Filter {
    /// Adds `clause`, whose `?` placeholders take `params` in order.
    pub fn and(&mut self, clause: &str, params: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(params);
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    pub fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }

    /// Runs `sql` (which ends in `LIMIT ? OFFSET ?`) with the filter's parameters
    /// followed by `limit` and `offset`, mapping each row with `row`.
    pub fn page<T>(
        &self,
        c: &Connection,
        sql: &str,
        limit: u64,
        offset: u64,
        mut row: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut params = self.params.clone();
        params.push(Value::Integer(int(limit)));
        params.push(Value::Integer(int(offset)));
        let mut st = c.prepare_cached(sql)?;
        let mut rows = st.query(params_from_iter(params.iter()))?;
        let mut items = Vec::new();
        while let Some(r) = rows.next()? {
            items.push(row(r)?);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
    }

    #[test]
    fn timestamps_round_trip_exactly_and_sort_as_text() {
        let a = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.000000001Z").unwrap().with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.1Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_ts(&ts(&a)).unwrap(), a);
        assert!(ts(&a) < ts(&b));
        assert_eq!(from_nanos(nanos(&a)), a);
        let far = DateTime::parse_from_rfc3339("9999-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(nanos(&far), i64::MAX);
    }
}
