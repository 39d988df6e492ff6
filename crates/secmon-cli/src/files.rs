//! `secmon files AGENT`: the last known state of an agent's watched files, from
//! `GET /api/agents/{id}/files`. A table of files by default, one file's details
//! with `--path`, the API's JSON with `--json`.
//!
//! Paths come from the monitored hosts and may hold any byte but NUL, so control
//! characters are shown escaped: a file name cannot forge table rows or send
//! escape sequences to the operator's terminal.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Global;
use crate::api_client::{ApiClient, segment};
use crate::output::{Table, field, page_footer, print, print_json, time};

#[derive(Debug, clap::Args)]
pub struct FilesArgs {
    /// Agent id.
    pub agent: String,
    /// One file: its full state, deleted or not.
    #[arg(long, conflicts_with_all = ["prefix", "include_deleted", "limit", "offset"])]
    pub path: Option<String>,
    /// Only paths that start with this text, e.g. /etc/.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Also list deleted and renamed-away files.
    #[arg(long)]
    pub include_deleted: bool,
    /// Rows to show (at most 1000; the API's default is 50).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[arg(long)]
    pub offset: Option<u64>,
}

pub fn run(a: FilesArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let route = format!("/api/agents/{}/files", segment(&a.agent));
    if let Some(path) = a.path {
        let file = api.get(&route, &[("path", Some(path))])?;
        if g.json {
            print_json(&file);
        } else {
            print(&details(&file));
        }
        return Ok(());
    }
    let page = api.get(
        &route,
        &[
            ("prefix", a.prefix),
            ("include_deleted", a.include_deleted.then(|| "true".to_owned())),
            ("limit", a.limit.map(|n| n.to_string())),
            ("offset", a.offset.map(|n| n.to_string())),
        ],
    )?;
    if g.json {
        print_json(&page);
        return Ok(());
    }
    let mut t = Table::new(&["PATH", "KIND", "SIZE", "MODE", "OWNER", "HASH", "LAST CHANGE", "AT", "BY"]);
    for f in page["items"].as_array().map_or(&[][..], Vec::as_slice) {
        t.row(vec![
            shown(&field(f, "path")),
            field(f, "kind"),
            field(f, "size"),
            field(f, "mode_octal"),
            owner(f),
            short_hash(f),
            change(f),
            time(&f["last_change"]),
            process(&f["who"]),
        ]);
    }
    print(&(if t.is_empty() { String::new() } else { t.render() } + &page_footer(&page)));
    Ok(())
}

/// Control characters escaped (`\n`, `\u{1b}`); everything else as it is.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn owner(f: &Value) -> String {
    match (f["uid"].as_u64(), f["gid"].as_u64()) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        _ => "-".to_owned(),
    }
}

/// The first 16 hex digits: enough to tell versions apart in a table.
fn short_hash(f: &Value) -> String {
    match f["hash"].as_str() {
        Some(h) if h.chars().count() > 16 => format!("{}…", h.chars().take(16).collect::<String>()),
        Some(h) => shown(h),
        None => "-".to_owned(),
    }
}

/// The last change, with where a renamed file went.
fn change(f: &Value) -> String {
    let activity = field(f, "last_activity");
    match f["renamed_to"].as_str() {
        Some(to) if f["deleted"] == true => format!("{activity} to {}", shown(to)),
        _ => activity,
    }
}

/// `vim (pid 4242, uid 0)`, or `-`.
fn process(p: &Value) -> String {
    if p.is_null() {
        return "-".to_owned();
    }
    let name = p["name"].as_str().or_else(|| p["exe"].as_str()).map_or_else(|| "?".to_owned(), shown);
    let mut s = format!("{name} (pid {}", field(p, "pid"));
    match (p["user"].as_str(), p["uid"].as_u64()) {
        (Some(user), _) => s += &format!(", {}", shown(user)),
        (None, Some(uid)) => s += &format!(", uid {uid}"),
        (None, None) => {}
    }
    s + ")"
}

/// A process in full for the details view.
fn process_details(p: &Value) -> String {
    if p.is_null() {
        return "-".to_owned();
    }
    let mut s = process(p);
    if let Some(exe) = p["exe"].as_str() {
        s += &format!(" exe {}", shown(exe));
    }
    if let Some(cmd) = p["cmdline"].as_str() {
        s += &format!(" cmdline {}", shown(cmd));
    }
    if p["exited"] == true {
        s += " (had exited)";
    }
    s
}

/// File times are seconds since the epoch with a fraction.
fn epoch(v: &Value) -> String {
    let Some(secs) = v.as_f64() else { return "-".to_owned() };
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9) as u32;
    DateTime::<Utc>::from_timestamp(whole as i64, nanos.min(999_999_999))
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn details(f: &Value) -> String {
    let status = if f["deleted"] == true {
        match f["renamed_to"].as_str() {
            Some(to) => format!("renamed to {}", shown(to)),
            None => "deleted".to_owned(),
        }
    } else {
        "present".to_owned()
    };
    let hash = match (f["hash_algo"].as_str(), f["hash"].as_str()) {
        (Some(algo), Some(h)) => format!("{algo}:{}", shown(h)),
        (None, Some(h)) => shown(h),
        _ => match f["hash_skipped"].as_str() {
            Some(why) => format!("- ({})", shown(why)),
            None => "-".to_owned(),
        },
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("PATH", shown(&field(f, "path"))),
        ("AGENT", field(f, "agent_id")),
        ("KIND", field(f, "kind")),
        ("STATUS", status),
        ("SIZE", field(f, "size")),
        ("MODE", field(f, "mode_octal")),
        ("OWNER", owner(f)),
        ("INODE", field(f, "inode")),
        ("MTIME", epoch(&f["mtime"])),
        ("CTIME", epoch(&f["ctime"])),
        ("HASH", hash),
    ];
    if let Some(target) = f["target"].as_str() {
        rows.push(("TARGET", shown(target)));
    }
    if let Some(from) = f["renamed_from"].as_str() {
        rows.push(("RENAMED FROM", shown(from)));
    }
    rows.push((
        "LAST CHANGE",
        format!(
            "{} at {} (event {}, seq {})",
            field(f, "last_activity"),
            time(&f["last_change"]),
            field(f, "last_event_id"),
            field(f, "last_seq")
        ),
    ));
    rows.push(("BY", process_details(&f["who"])));
    let access = &f["last_access"];
    rows.push((
        "LAST ACCESS",
        if access.is_null() {
            "-".to_owned()
        } else {
            format!("{} by {}", time(&access["time"]), process_details(&access["process"]))
        },
    ));
    rows.push(("UPDATED", time(&f["updated_at"])));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:width$}  {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("/etc/a\nb\u{1b}[31m"), "/etc/a\\nb\\u{1b}[31m");
        assert_eq!(shown("/etc/é x"), "/etc/é x");
    }

    #[test]
    fn cells() {
        let p = json!({"pid": 7, "name": "vim", "exe": "/usr/bin/vim", "user": "root", "uid": 0});
        assert_eq!(process(&p), "vim (pid 7, root)");
        assert_eq!(process(&json!({"pid": 9, "uid": 1000})), "? (pid 9, uid 1000)");
        assert_eq!(process(&Value::Null), "-");
        assert_eq!(process_details(&p), "vim (pid 7, root) exe /usr/bin/vim");
        let f = json!({"hash": "0123456789abcdef0123", "uid": 0, "gid": 4, "deleted": true,
            "renamed_to": "/etc/b", "last_activity": "renamed"});
        assert_eq!(short_hash(&f), "0123456789abcdef…");
        assert_eq!(owner(&f), "0:4");
        assert_eq!(change(&f), "renamed to /etc/b");
        assert_eq!(epoch(&json!(1_750_000_000.5)), "2025-06-15 15:06:40");
        assert_eq!(epoch(&Value::Null), "-");
    }
}
