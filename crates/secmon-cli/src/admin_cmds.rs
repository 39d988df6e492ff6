//! Administration subcommands over the secure-mode API: users, API tokens,
//! enrollment tokens, agent config downloads and the audit log. Each one is one API
//! call; secrets the API shows once (a generated password, a token) are printed once,
//! on stdout only, and never logged.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::Global;
use crate::api_client::{ApiClient, segment};
use crate::output::{Table, field, page_footer, print, print_json, time, truncate};

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub cmd: UsersCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCmd {
    /// List users and their roles.
    List,
    /// Add a user. Without --password-stdin the manager generates a password, shown once.
    Add {
        name: String,
        /// admin, analyst or readonly.
        #[arg(long)]
        role: String,
        /// Read the new user's password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user (its sessions end).
    Delete { name: String },
}

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub cmd: TokensCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Create an API token (for scripts); the token is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// admin, analyst or readonly.
        #[arg(long)]
        role: String,
        /// Lifetime (`30d`, `12h`) [default: the manager's].
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List API tokens (no secrets).
    List,
    /// Delete (revoke) an API token.
    Delete { id: String },
}

#[derive(Debug, clap::Args)]
pub struct EnrollTokenArgs {
    #[command(subcommand)]
    pub cmd: EnrollTokenCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum EnrollTokenCmd {
    /// Create an enrollment token; prints it and the CA fingerprint agents pin.
    Create {
        /// How many agents may enroll with it.
        #[arg(long)]
        uses: Option<u32>,
        /// Lifetime (`24h`, `7d`) [default: the manager's].
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Group the enrolled agents join (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Label of the enrolled agents (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List enrollment tokens (no secrets).
    List,
    /// Delete (revoke) an enrollment token.
    Delete { id: String },
}

#[derive(Debug, clap::Args)]
pub struct AgentConfigArgs {
    /// The agent's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Group of the agent (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Label of the agent (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Lifetime of the enrollment token inside the config (`24h`).
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only records of this user or token.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only records of this action.
    #[arg(long)]
    pub action: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Rows to show.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[arg(long)]
    pub offset: Option<u64>,
}

/// The rows of a list answer: a bare array or a page's `items`.
fn rows(v: &Value) -> &[Value] {
    v.as_array().or_else(|| v["items"].as_array()).map(Vec::as_slice).unwrap_or_default()
}

fn footer(v: &Value) -> String {
    if v.is_array() {
        if rows(v).is_empty() { "(none)\n".into() } else { String::new() }
    } else {
        page_footer(v)
    }
}

fn table_or_none(t: &Table, v: &Value) -> String {
    (if t.is_empty() { String::new() } else { t.render() }) + &footer(v)
}

/// `KEY=VALUE` flags as a JSON object; a repeated key is an error.
fn labels(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else { bail!("--label {p:?}: expected KEY=VALUE") };
        if k.is_empty() {
            bail!("--label {p:?}: empty key");
        }
        if out.insert(k.to_owned(), Value::from(v)).is_some() {
            bail!("--label {k} given twice");
        }
    }
    Ok(out.into_iter().collect())
}

pub fn users(a: UsersArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    match a.cmd {
        UsersCmd::List => {
            let v = api.get("/api/users", &[])?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["USER", "ROLE", "CREATED", "LAST LOGIN"]);
            for u in rows(&v) {
                let name = if u.get("username").is_some() { field(u, "username") } else { field(u, "name") };
                t.row(vec![name, field(u, "role"), time(&u["created_at"]), time(&u["last_login"])]);
            }
            print(&table_or_none(&t, &v));
        }
        UsersCmd::Add { name, role, password_stdin } => {
            let mut body = json!({ "username": name, "role": role });
            if password_stdin {
                let mut pw = String::new();
                std::io::stdin().read_to_string(&mut pw).context("cannot read the password from stdin")?;
                let pw = pw.lines().next().unwrap_or("").to_owned();
                if pw.is_empty() {
                    bail!("--password-stdin: stdin held no password");
                }
                body["password"] = pw.into();
            }
            let v = api.post("/api/users", body)?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            print(&format!("added user {} ({})\n", field(&v, "username"), field(&v, "role")));
            if let Some(pw) = v["password"].as_str() {
                print(&format!("password (shown once): {pw}\n"));
            }
        }
        UsersCmd::Delete { name } => {
            api.delete(&format!("/api/users/{}", segment(&name)))?;
            if !g.json {
                print(&format!("deleted user {name}\n"));
            }
        }
    }
    Ok(())
}

pub fn tokens(a: TokensArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    match a.cmd {
        TokensCmd::Create { name, role, expires } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(e) = expires {
                body["expires_in"] = e.into();
            }
            let v = api.post("/api/tokens", body)?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            print(&format!(
                "created API token {} ({}, role {}, expires {})\ntoken (shown once): {}\n\
                 use it with: SECMON_TOKEN=<token> secmon --api {} ...\n",
                field(&v, "id"),
                field(&v, "name"),
                field(&v, "role"),
                expiry(&v["expires_at"]),
                field(&v, "token"),
                api.base()
            ));
        }
        TokensCmd::List => {
            let v = api.get("/api/tokens", &[])?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED"]);
            for k in rows(&v) {
                t.row(vec![
                    field(k, "id"),
                    field(k, "name"),
                    field(k, "role"),
                    time(&k["created_at"]),
                    expiry(&k["expires_at"]),
                    time(&k["last_used"]),
                ]);
            }
            print(&table_or_none(&t, &v));
        }
        TokensCmd::Delete { id } => {
            api.delete(&format!("/api/tokens/{}", segment(&id)))?;
            if !g.json {
                print(&format!("deleted API token {id}\n"));
            }
        }
    }
    Ok(())
}

fn expiry(v: &Value) -> String {
    if v.is_null() { "never".into() } else { time(v) }
}

pub fn enroll_token(a: EnrollTokenArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    match a.cmd {
        EnrollTokenCmd::Create { uses, expires, groups, labels: l } => {
            let mut body = Map::new();
            if let Some(u) = uses {
                body.insert("uses".into(), u.into());
            }
            if let Some(e) = expires {
                body.insert("expires_in".into(), e.into());
            }
            if !groups.is_empty() {
                body.insert("groups".into(), groups.into());
            }
            if !l.is_empty() {
                body.insert("labels".into(), labels(&l)?.into());
            }
            let v = api.post("/api/enrollment-tokens", Value::Object(body))?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            print(&format!(
                "created enrollment token {} ({} use(s), expires {})\n\
                 token (shown once): {}\nCA SHA-256 fingerprint: {}\n\
                 enroll an agent with: secmon-agent enroll --manager {} --token <token>\n",
                field(&v, "id"),
                field(&v, "uses"),
                expiry(&v["expires_at"]),
                field(&v, "token"),
                field(&v, "ca_fingerprint"),
                api.base()
            ));
        }
        EnrollTokenCmd::List => {
            let v = api.get("/api/enrollment-tokens", &[])?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "USES LEFT", "EXPIRES", "GROUPS", "LABELS"]);
            for k in rows(&v) {
                let groups = k["groups"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
                let labels = k["labels"].as_object().map(|m| {
                    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?"))).collect::<Vec<_>>()
                });
                t.row(vec![
                    field(k, "id"),
                    format!("{}/{}", field(k, "uses_left"), field(k, "uses")),
                    expiry(&k["expires_at"]),
                    groups.filter(|g| !g.is_empty()).unwrap_or_else(|| "-".into()),
                    truncate(
                        &labels.map(|l| l.join(",")).filter(|l| !l.is_empty()).unwrap_or("-".into()),
                        60,
                    ),
                ]);
            }
            print(&table_or_none(&t, &v));
        }
        EnrollTokenCmd::Delete { id } => {
            api.delete(&format!("/api/enrollment-tokens/{}", segment(&id)))?;
            if !g.json {
                print(&format!("deleted enrollment token {id}\n"));
            }
        }
    }
    Ok(())
}

/// Prints a complete agent config (with a fresh single-use enrollment token) to stdout,
/// for `secmon agent-config > agent.toml`.
pub fn agent_config(a: AgentConfigArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let mut body = Map::new();
    if let Some(n) = a.name {
        body.insert("name".into(), n.into());
    }
    if !a.groups.is_empty() {
        body.insert("groups".into(), a.groups.into());
    }
    if !a.labels.is_empty() {
        body.insert("labels".into(), labels(&a.labels)?.into());
    }
    if let Some(e) = a.expires {
        body.insert("expires_in".into(), e.into());
    }
    let text = api.post_text("/api/agent-config", Value::Object(body))?;
    print(&text);
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!(
            "secmon: this config holds a single-use enrollment token: redirect it to a file (> agent.toml)"
        );
    }
    Ok(())
}

pub fn audit(a: AuditArgs, g: &Global) -> anyhow::Result<()> {
    let api = ApiClient::new(&g.api);
    let num = |n: Option<u64>| n.map(|n| n.to_string());
    let v = api.get(
        "/api/audit",
        &[
            ("actor", a.actor),
            ("action", a.action),
            ("since", a.since),
            ("until", a.until),
            ("limit", num(a.limit)),
            ("offset", num(a.offset)),
        ],
    )?;
    if g.json {
        print_json(&v);
        return Ok(());
    }
    let mut t =
        Table::new(&["TIME", "ACTOR", "ROLE", "FROM", "ACTION", "TARGET", "STATUS", "RESULT", "DETAIL"]);
    for r in rows(&v) {
        t.row(vec![
            time(&r["time"]),
            field(r, "actor"),
            field(r, "role"),
            field(r, "remote_addr"),
            field(r, "action"),
            truncate(&field(r, "target"), 40),
            field(r, "status"),
            field(r, "result"),
            truncate(&field(r, "detail"), 60),
        ]);
    }
    print(&table_or_none(&t, &v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value_pairs() {
        let l = labels(&["env=prod".into(), "team=a=b".into()]).unwrap();
        assert_eq!(Value::Object(l), json!({"env": "prod", "team": "a=b"}));
        assert!(labels(&["novalue".into()]).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(labels(&["=x".into()]).is_err());
        assert!(labels(&["a=1".into(), "a=2".into()]).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn rows_of_arrays_and_pages() {
        assert_eq!(rows(&json!([1, 2])).len(), 2);
        assert_eq!(rows(&json!({"items": [1], "total": 1})).len(), 1);
        assert!(rows(&json!({})).is_empty());
        assert_eq!(footer(&json!([])), "(none)\n");
    }
}
