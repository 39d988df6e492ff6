//! Output: aligned plain-text tables for people, the API's JSON for scripts.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A table whose columns are padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns separated by two spaces; the last column is not padded, so lines
    /// carry no trailing blanks.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let last = r.len() - 1;
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i < last {
                    line.extend(std::iter::repeat_n(' ', widths[i] - width(c) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One row padded to fixed widths (for rows printed as they arrive); cells
/// beyond `widths` are not padded.
pub fn fixed_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if let Some(w) = widths.get(i).filter(|_| i + 1 < cells.len()) {
            line.extend(std::iter::repeat_n(' ', w.saturating_sub(c.chars().count()) + 2));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// Writes to stdout; a closed pipe (`secmon events | head`) ends the program
/// quietly instead of panicking.
pub fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

pub fn print_json(v: &Value) {
    print(&format!("{}\n", serde_json::to_string_pretty(v).expect("a Value always serializes")));
}

/// One compact JSON object on one line (for `--follow --json`).
pub fn print_json_line(v: &Value) {
    print(&format!("{}\n", serde_json::to_string(v).expect("a Value always serializes")));
}

/// A string field, or `-` when absent or null.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// `2025-01-31 12:00:00` (UTC), or `-`.
pub fn time(v: &Value) -> String {
    parse_time(v).map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// How long ago, compactly: `4s ago`, `12m ago`, `3h ago`, `2d ago`; `-` when absent.
pub fn ago(v: &Value, now: DateTime<Utc>) -> String {
    let Some(t) = parse_time(v) else { return "-".to_owned() };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// Cuts `s` to `max` characters, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// `Showing 1-50 of 120 (use --offset 50 for more)` under a list.
pub fn page_footer(page: &Value) -> String {
    let n = page["items"].as_array().map_or(0, Vec::len) as u64;
    let total = page["total"].as_u64().unwrap_or(n);
    let offset = page["offset"].as_u64().unwrap_or(0);
    if n == 0 {
        return if total == 0 {
            "(none)\n".to_owned()
        } else {
            format!("(no rows at offset {offset}; {total} in all)\n")
        };
    }
    let mut s = format!("showing {}-{} of {total}", offset + 1, offset + n);
    if offset + n < total {
        s += &format!(" (--offset {} for more)", offset + n);
    }
    s + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["ID", "NAME", "STATUS"]);
        t.row(vec!["a1".into(), "web-01".into(), "active".into()]);
        t.row(vec!["agent-22".into(), "db".into(), "-".into()]);
        assert_eq!(t.render(), "ID        NAME    STATUS\na1        web-01  active\nagent-22  db      -\n");
        let cells = ["a".to_owned(), "bbbbbb".to_owned(), "c".to_owned()];
        assert_eq!(fixed_row(&cells, &[3, 4]), "a    bbbbbb  c\n");
    }

    #[test]
    fn fields_times_and_footers() {
        let v = json!({"a": "x", "n": 3, "z": null, "t": "2025-01-31T12:00:00.5Z"});
        assert_eq!(field(&v, "a"), "x");
        assert_eq!(field(&v, "n"), "3");
        assert_eq!(field(&v, "z"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(time(&v["t"]), "2025-01-31 12:00:00");
        let now = DateTime::parse_from_rfc3339("2025-01-31T12:05:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(ago(&v["t"], now), "4m ago");
        assert_eq!(ago(&v["z"], now), "-");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        let page = json!({"items": [1, 2], "total": 5, "offset": 0, "limit": 2});
        assert_eq!(page_footer(&page), "showing 1-2 of 5 (--offset 2 for more)\n");
        assert_eq!(page_footer(&json!({"items": [], "total": 0, "offset": 0})), "(none)\n");
    }
}
