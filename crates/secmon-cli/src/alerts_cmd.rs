//! `secmon alerts`: list alerts (the flags of [`fleet::AlertsArgs`]), or act on
//! one: `show`, `ack`, `close`, `reopen`. The actions are `PATCH
//! /api/alerts/{id}`; the manager checks the transition and keeps the history.

use serde_json::{Value, json};

use crate::Global;
use crate::api_client::{ApiClient, segment};
use crate::fleet;
use crate::output::{Table, field, print, print_json, time};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsCommand {
    #[command(subcommand)]
    pub action: Option<AlertAction>,
    #[command(flatten)]
    pub list: fleet::AlertsArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertAction {
    /// Show one alert: its events and status history.
    Show { id: String },
    /// Acknowledge an open alert (someone is on it).
    Ack(ChangeArgs),
    /// Close an open or acknowledged alert.
    Close(ChangeArgs),
    /// Reopen an acknowledged or closed alert.
    Reopen(ChangeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Alert id.
    pub id: String,
    /// Why, kept in the alert's history (at most 4096 bytes).
    #[arg(long, short = 'm')]
    pub comment: Option<String>,
    /// Who makes the change (the manager's default is `local`).
    #[arg(long)]
    pub by: Option<String>,
}

pub fn run(a: AlertsCommand, g: &Global) -> anyhow::Result<()> {
    match a.action {
        None => fleet::alerts(a.list, g),
        Some(AlertAction::Show { id }) => {
            let al = ApiClient::new(&g.api).get(&format!("/api/alerts/{}", segment(&id)), &[])?;
            if g.json {
                print_json(&al);
            } else {
                print(&details(&al));
            }
            Ok(())
        }
        Some(AlertAction::Ack(c)) => change(c, "acknowledged", g),
        Some(AlertAction::Close(c)) => change(c, "closed", g),
        Some(AlertAction::Reopen(c)) => change(c, "open", g),
    }
}

fn change(c: ChangeArgs, status: &str, g: &Global) -> anyhow::Result<()> {
    let mut body = json!({"status": status, "comment": c.comment.unwrap_or_default()});
    if let Some(by) = c.by {
        body["by"] = Value::String(by);
    }
    let al = ApiClient::new(&g.api).patch(&format!("/api/alerts/{}", segment(&c.id)), body)?;
    if g.json {
        print_json(&al);
    } else {
        print(&format!("alert {} is now {}\n", field(&al, "id"), field(&al, "status")));
    }
    Ok(())
}

fn details(al: &Value) -> String {
    let list = |v: &Value| {
        let xs: Vec<String> =
            v.as_array().map_or(vec![], |a| a.iter().map(|x| x.as_str().unwrap_or("?").to_owned()).collect());
        if xs.is_empty() { "-".to_owned() } else { xs.join(", ") }
    };
    let rows: Vec<(&str, String)> = vec![
        ("ID", field(al, "id")),
        ("RULE", format!("{} ({})", field(al, "rule_id"), field(al, "title"))),
        ("SEVERITY", field(al, "severity")),
        ("STATUS", field(al, "status")),
        ("AGENT", field(al, "agent_id")),
        ("KEY", field(al, "key")),
        ("TAGS", list(&al["tags"])),
        ("COUNT", format!("{} matches, {} events", field(al, "count"), field(al, "event_count"))),
        ("FIRST SEEN", time(&al["first_seen"])),
        ("LAST SEEN", time(&al["last_seen"])),
        ("EVENTS", list(&al["event_ids"])),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:width$}  {v}\n")).collect();
    out += "\nSTATUS HISTORY\n";
    let mut t = Table::new(&["AT", "BY", "FROM", "TO", "COMMENT"]);
    for h in al["history"].as_array().map(Vec::as_slice).unwrap_or_default() {
        t.row(vec![time(&h["at"]), field(h, "by"), field(h, "from"), field(h, "to"), field(h, "comment")]);
    }
    out += &if t.is_empty() { "(none)\n".to_owned() } else { t.render() };
    out
}
