//! Fleet subcommands: agents, agent, command, events, alerts. Each one is a thin
//! layer over one API call: parameters pass through unchanged, so the API's 400
//! messages name the same flags the user typed.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::Global;
use crate::api_client::{ApiClient, segment};
use crate::output::{
    self, Table, ago, field, page_footer, print, print_json, print_json_line, time, truncate,
};

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Only agents with this status (never_connected, pending, active, disconnected, removed).
    #[arg(long)]
    pub status: Option<String>,
    /// Only agents with exactly this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Search: substring of the id, name, hostname or an IP address.
    #[arg(long, visible_alias = "search")]
    pub q: Option<String>,
    /// Sort by name, status, last_seen or registered_at; a leading - for descending.
    #[arg(long, allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Rows to show (at most 1000; the API's default is 50).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[arg(long)]
    pub offset: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Agent id.
    pub id: String,
    /// Remove the agent: it becomes `removed` and its events are refused from now on.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Agent id.
    pub id: String,
    /// Command name (ping, status, reload-config, ...).
    pub name: String,
    /// Arguments as key=value; a value that parses as JSON is sent as JSON
    /// (`count=3`, `on=true`), otherwise as a string.
    #[arg(value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// Arguments as one JSON object; key=value pairs are added to it.
    #[arg(long = "args", value_name = "JSON")]
    pub args_json: Option<String>,
    /// How long the manager waits for the agent's reply, in milliseconds (1-60000).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Stream this host's events from the agent's local socket (e.g.
    /// /run/secmon/agent.sock) until the agent closes it, instead of asking the
    /// manager; with --json, the agent's lines unchanged.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["agent", "class", "since", "until", "limit", "offset", "asc", "follow"]
    )]
    pub socket: Option<std::path::PathBuf>,
    /// Only events of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events of this class (file, process, network, log, device, agent).
    #[arg(long)]
    pub class: Option<String>,
    /// Event time at or after: RFC 3339 or an age like 15m, 2h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Event time before: RFC 3339 or an age.
    #[arg(long, conflicts_with = "follow")]
    pub until: Option<String>,
    /// Rows to show (at most 1000; default 50, or the last 10 with --follow).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[arg(long, conflicts_with = "follow")]
    pub offset: Option<u64>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub asc: bool,
    /// Keep polling for new events (every second) until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Last seen at or after: RFC 3339 or an age like 15m, 2h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Last seen before: RFC 3339 or an age.
    #[arg(long)]
    pub until: Option<String>,
    /// Minimum severity (info, low, medium, high, critical).
    #[arg(long)]
    pub severity: Option<String>,
    /// Only alerts of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// open, acknowledged or closed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only alerts of this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Rows to show (at most 1000; default 50).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[arg(long)]
    pub offset: Option<u64>,
}

fn num(n: Option<u64>) -> Option<String> {
    n.map(|n| n.to_string())
}

fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map_or(&[], Vec::as_slice)
}

pub fn agents(a: AgentsArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let page = api.get(
        "/api/agents",
        &[
            ("status", a.status),
            ("name", a.name),
            ("q", a.q),
            ("sort", a.sort),
            ("limit", num(a.limit)),
            ("offset", num(a.offset)),
        ],
    )?;
    if g.json {
        print_json(&page);
        return Ok(());
    }
    let now = Utc::now();
    let mut t = Table::new(&["ID", "NAME", "STATUS", "HOSTNAME", "IP", "VERSION", "LAST SEEN"]);
    for ag in items(&page) {
        let ips = ag["host"]["ips"].as_array().map(Vec::as_slice).unwrap_or_default();
        let ip = match ips {
            [] => "-".to_owned(),
            [one] => one.as_str().unwrap_or("?").to_owned(),
            [first, rest @ ..] => format!("{} (+{})", first.as_str().unwrap_or("?"), rest.len()),
        };
        t.row(vec![
            field(ag, "id"),
            field(ag, "name"),
            field(ag, "status"),
            field(&ag["host"], "hostname"),
            ip,
            field(ag, "agent_version"),
            ago(&ag["last_seen"], now),
        ]);
    }
    print(&(if t.is_empty() { String::new() } else { t.render() } + &page_footer(&page)));
    Ok(())
}

pub fn agent(a: AgentArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let path = format!("/api/agents/{}", segment(&a.id));
    if a.remove {
        let rec = api.delete(&path)?;
        if g.json {
            print_json(&rec);
        } else {
            print(&format!("removed agent {} ({})\n", field(&rec, "id"), field(&rec, "name")));
        }
        return Ok(());
    }
    let ag = api.get(&path, &[])?;
    if g.json {
        print_json(&ag);
        return Ok(());
    }
    print(&agent_details(&ag, Utc::now()));
    Ok(())
}

fn agent_details(ag: &Value, now: DateTime<Utc>) -> String {
    let host = &ag["host"];
    let list = |v: &Value| {
        let xs: Vec<String> =
            v.as_array().map_or(vec![], |a| a.iter().map(|x| x.as_str().unwrap_or("?").to_owned()).collect());
        if xs.is_empty() { "-".to_owned() } else { xs.join(", ") }
    };
    let seq = &ag["seq"];
    let missing = seq["missing"].as_array().map_or(0, Vec::len);
    let rows: Vec<(&str, String)> = vec![
        ("ID", field(ag, "id")),
        ("NAME", field(ag, "name")),
        (
            "STATUS",
            format!(
                "{} since {} ({})",
                field(ag, "status"),
                time(&ag["status_changed_at"]),
                field(ag, "status_reason")
            ),
        ),
        ("HOSTNAME", field(host, "hostname")),
        ("OS", field(host, "os")),
        ("KERNEL", field(host, "kernel")),
        ("ARCH", field(host, "arch")),
        ("IPS", list(&host["ips"])),
        ("VERSION", field(ag, "agent_version")),
        ("SENSORS", list(&ag["sensors"])),
        ("CONFIG DIGEST", field(ag, "config_digest")),
        ("HEARTBEAT", format!("every {} ms", field(ag, "heartbeat_interval_ms"))),
        ("REGISTERED", time(&ag["registered_at"])),
        ("LAST SEEN", format!("{} ({})", time(&ag["last_seen"]), ago(&ag["last_seen"], now))),
        (
            "EVENTS",
            format!(
                "last seq {}, {} missed in gaps, {} late, {} replays, {missing} open gaps",
                field(seq, "last_seq"),
                field(seq, "gap_events"),
                field(seq, "late_events"),
                field(seq, "replays"),
            ),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:width$}  {v}\n")).collect();
    out += "\nSTATUS HISTORY\n";
    let mut t = Table::new(&["AT", "FROM", "TO", "REASON"]);
    for h in ag["history"].as_array().map(Vec::as_slice).unwrap_or_default() {
        t.row(vec![time(&h["at"]), field(h, "from"), field(h, "to"), field(h, "reason")]);
    }
    out += &if t.is_empty() { "(none)\n".to_owned() } else { t.render() };
    out
}

/// The command's arguments: `--args` JSON (must be an object), then each
/// `key=value`, whose value is JSON when it parses as JSON, a string otherwise.
pub fn command_args(json_args: Option<&str>, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut args = match json_args {
        None => Map::new(),
        Some(s) => match serde_json::from_str::<Value>(s).context("--args is not valid JSON")? {
            Value::Object(m) => m,
            _ => bail!("--args must be a JSON object, like '{{\"path\": \"/etc\"}}'"),
        },
    };
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("argument {p:?} is not key=value");
        };
        if k.is_empty() {
            bail!("argument {p:?} has an empty key");
        }
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        args.insert(k.to_owned(), value);
    }
    Ok(args)
}

pub fn command(a: CommandArgs, g: &Global) -> anyhow::Result<()> {
    let args = command_args(a.args_json.as_deref(), &a.args)?;
    let mut body = json!({ "command": a.name, "args": args });
    if let Some(ms) = a.timeout_ms {
        body["timeout_ms"] = json!(ms);
    }
    let api = ApiClient::new(&g.api);
    let reply = api.post(&format!("/api/agents/{}/command", segment(&a.id)), body)?;
    let ok = reply["ok"].as_bool().unwrap_or(false);
    if g.json {
        print_json(&reply);
    } else if ok {
        let result = &reply["result"];
        print(&match result {
            Value::String(s) => format!("{s}\n"),
            v => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
        });
    }
    if !ok {
        let e = &reply["error"];
        bail!("agent {} answered {}: {}: {}", a.id, a.name, field(e, "code"), field(e, "message"));
    }
    Ok(())
}

fn event_row(e: &Value) -> Vec<String> {
    let payload = match &e["payload"] {
        Value::Null => String::new(),
        p => serde_json::to_string(p).unwrap_or_default(),
    };
    vec![
        time(&e["time"]),
        field(e, "agent_id"),
        field(e, "class"),
        field(e, "activity"),
        field(e, "severity"),
        field(e, "seq"),
        truncate(&payload, 100),
    ]
}

const EVENT_HEADERS: [&str; 7] = ["TIME", "AGENT", "CLASS", "ACTIVITY", "SEVERITY", "SEQ", "PAYLOAD"];

pub fn events(a: EventsArgs, g: &Global) -> anyhow::Result<()> {
    if let Some(path) = &a.socket {
        let output = if g.json { secmon_client::Output::Json } else { secmon_client::Output::Pretty };
        return Ok(secmon_client::follow(path, output, &mut std::io::stdout().lock())?);
    }
    let api = ApiClient::new(&g.api);
    if a.follow {
        return follow(&api, a, g);
    }
    let page = api.get(
        "/api/events",
        &[
            ("agent", a.agent),
            ("class", a.class),
            ("since", a.since),
            ("until", a.until),
            ("order", a.asc.then(|| "asc".to_owned())),
            ("limit", num(a.limit)),
            ("offset", num(a.offset)),
        ],
    )?;
    if g.json {
        print_json(&page);
        return Ok(());
    }
    let mut t = Table::new(&EVENT_HEADERS);
    for e in items(&page) {
        t.row(event_row(e));
    }
    print(&(if t.is_empty() { String::new() } else { t.render() } + &page_footer(&page)));
    Ok(())
}

/// `--follow` reads by arrival time at the manager (`received_since`), so events
/// whose own time is long past (an agent's spool sent after an outage) still show.
/// Each poll looks back this far (batches stored out of order by two managers, clock
/// steps) and skips ids it has printed.
const FOLLOW_OVERLAP: chrono::Duration = chrono::Duration::seconds(5);
const FOLLOW_PAGE: u64 = 500;
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Fixed column widths for `--follow`, whose rows arrive one by one.
const FOLLOW_WIDTHS: [usize; 6] = [19, 36, 7, 12, 8, 8];

/// Event ids already printed by `--follow`, with their arrival time.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl Seen {
    /// True the first time an event is offered.
    fn fresh(&mut self, e: &Value) -> bool {
        let t = e["received"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        if self.ids.insert(field(e, "id"), t).is_some() {
            return false;
        }
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        true
    }

    /// Forgets ids older than the look-back window: they cannot come back.
    fn prune(&mut self) {
        if let Some(n) = self.newest {
            self.ids.retain(|_, t| *t >= n - FOLLOW_OVERLAP);
        }
    }
}

/// Prints each event once, in arrival order, polling the API every second with
/// `received_since` = newest arrival seen and `order=asc`, until interrupted.
fn follow(api: &ApiClient, a: EventsArgs, g: &Global) -> anyhow::Result<()> {
    let emit = |e: &Value| {
        if g.json {
            print_json_line(e);
        } else {
            print(&output::fixed_row(&event_row(e), &FOLLOW_WIDTHS));
        }
    };
    let query = |received: Option<String>, order: &str, offset: u64, limit: u64| {
        vec![
            ("agent", a.agent.clone()),
            ("class", a.class.clone()),
            ("since", a.since.clone()),
            ("received_since", received),
            ("order", Some(order.to_owned())),
            ("offset", Some(offset.to_string())),
            ("limit", Some(limit.to_string())),
        ]
    };
    let mut seen = Seen::default();
    if !g.json {
        let headers: Vec<String> = EVENT_HEADERS.iter().map(|h| h.to_string()).collect();
        print(&output::fixed_row(&headers, &FOLLOW_WIDTHS));
    }
    if a.since.is_none() {
        // Like `tail -f`: the last few events first.
        let page = api.get("/api/events", &query(None, "desc", 0, a.limit.unwrap_or(10)))?;
        for e in items(&page).iter().rev() {
            if seen.fresh(e) {
                emit(e);
            }
        }
    }
    let mut failing = false;
    loop {
        let cursor = seen.newest.map(|n| (n - FOLLOW_OVERLAP).to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let mut offset = 0;
        let polled: anyhow::Result<()> = loop {
            let page = match api.get("/api/events", &query(cursor.clone(), "asc", offset, FOLLOW_PAGE)) {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            let batch = items(&page);
            for e in batch {
                if seen.fresh(e) {
                    emit(e);
                }
            }
            if (batch.len() as u64) < FOLLOW_PAGE {
                break Ok(());
            }
            offset += FOLLOW_PAGE;
        };
        match polled {
            Ok(()) if failing => {
                eprintln!("secmon: the manager API answers again");
                failing = false;
            }
            Ok(()) => {}
            // A bad parameter will not get better: stop. Anything else (a manager
            // restarting) is retried.
            Err(e) if e.to_string().starts_with("API error 400 ") => return Err(e),
            Err(e) if !failing => {
                eprintln!("secmon: {e:#}; retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
        seen.prune();
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

pub fn alerts(a: AlertsArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let page = api.get(
        "/api/alerts",
        &[
            ("since", a.since),
            ("until", a.until),
            ("severity", a.severity),
            ("agent", a.agent),
            ("status", a.status),
            ("rule", a.rule),
            ("limit", num(a.limit)),
            ("offset", num(a.offset)),
        ],
    )?;
    if g.json {
        print_json(&page);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "SEVERITY", "STATUS", "RULE", "TITLE", "AGENT", "COUNT", "LAST SEEN"]);
    for al in items(&page) {
        t.row(vec![
            field(al, "id"),
            field(al, "severity"),
            field(al, "status"),
            field(al, "rule_id"),
            truncate(&field(al, "title"), 60),
            field(al, "agent_id"),
            field(al, "count"),
            time(&al["last_seen"]),
        ]);
    }
    print(&(if t.is_empty() { String::new() } else { t.render() } + &page_footer(&page)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_args_from_pairs_and_json() {
        let pairs =
            vec!["count=3".to_owned(), "path=/etc".to_owned(), "on=true".to_owned(), "eq=a=b".to_owned()];
        let m = command_args(Some(r#"{"x": [1], "count": 1}"#), &pairs).unwrap();
        assert_eq!(Value::Object(m), json!({"x": [1], "count": 3, "path": "/etc", "on": true, "eq": "a=b"}));
        assert!(command_args(None, &["novalue".to_owned()]).is_err());
        assert!(command_args(None, &["=1".to_owned()]).is_err());
        assert!(command_args(Some("[1]"), &[]).is_err());
        assert!(command_args(Some("{"), &[]).is_err());
    }

    #[test]
    fn details_show_history() {
        let ag = json!({
            "id": "a1", "name": "web", "status": "active", "status_reason": "heartbeat",
            "status_changed_at": "2025-01-31T12:00:00Z",
            "host": {"hostname": "web.example", "os": "Debian", "kernel": "6.1", "arch": "x86_64", "ips": ["10.0.0.1"]},
            "agent_version": "0.1.0", "sensors": [], "config_digest": "abc", "heartbeat_interval_ms": 1000,
            "registered_at": "2025-01-31T11:00:00Z", "last_seen": "2025-01-31T12:00:00Z",
            "seq": {"last_seq": 5, "missing": [], "gap_events": 0, "late_events": 0, "replays": 0},
            "history": [{"agent_id": "a1", "from": "pending", "to": "active", "at": "2025-01-31T12:00:00Z", "reason": "heartbeat"}]
        });
        let now = DateTime::parse_from_rfc3339("2025-01-31T12:00:10Z").unwrap().with_timezone(&Utc);
        let s = agent_details(&ag, now);
        assert!(s.contains("STATUS         active since 2025-01-31 12:00:00 (heartbeat)"), "{s}");
        assert!(s.contains("IPS            10.0.0.1"), "{s}");
        assert!(s.contains("SENSORS        -"), "{s}");
        assert!(s.contains("LAST SEEN      2025-01-31 12:00:00 (10s ago)"), "{s}");
        assert!(s.contains("2025-01-31 12:00:00  pending  active  heartbeat"), "{s}");
    }
}
