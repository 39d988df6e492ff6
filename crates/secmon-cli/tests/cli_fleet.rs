//! The real `secmon` binary against a real manager (started in the test on a real
//! nats-server and a temp SQLite dir): tables, `--json`, errors and `--follow`.

#[path = "../../secmon-manager/tests/api_support/mod.rs"]
mod api_support;
mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use api_support::{Stack, WAIT};
use cli_support::{cells, failure, ok_stdout};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use secmon_testkit::ChildGuard;
use serde_json::{Value, json};

fn fleet() -> Stack {
    let mut s = Stack::start();
    let web = s.sim("web-01");
    s.activate(&web);
    s.answer_commands(&web.id);
    s.register(&s.sim("db-01"));
    s
}

#[test]
fn agents_table_json_and_filters() {
    let s = fleet();
    let out = ok_stdout(&s.base, &["agents"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(cells(lines[0]), ["ID", "NAME", "STATUS", "HOSTNAME", "IP", "VERSION", "LAST SEEN"], "{out}");
    assert_eq!(
        cells(lines[1])[..6],
        ["db-01", "name-db-01", "pending", "host-db-01", "10.1.2.3", "0.1.0-test"]
    );
    let web = cells(lines[2]);
    assert_eq!(
        web[..6],
        ["web-01", "name-web-01", "active", "host-web-01", "10.1.2.3", "0.1.0-test"],
        "{out}"
    );
    assert!(web[6].ends_with("s ago"), "{out}");
    // Columns line up: every row's STATUS starts where the header's does.
    let col = lines[0].find("STATUS").unwrap();
    assert_eq!(&lines[1][col..col + 7], "pending");
    assert_eq!(&lines[2][col..col + 6], "active");
    assert_eq!(lines[3], "showing 1-2 of 2");

    let page: Value = serde_json::from_str(&ok_stdout(&s.base, &["agents", "--json"])).unwrap();
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][1]["host"]["hostname"], "host-web-01");

    let out = ok_stdout(&s.base, &["agents", "--status", "active"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("web-01") && !out.contains("db-01"), "{out}");
    let out = ok_stdout(&s.base, &["agents", "--sort", "-name", "--limit", "1"]);
    assert!(out.lines().nth(1).unwrap().starts_with("web-01"), "{out}");
    assert!(out.contains("showing 1-1 of 2 (--offset 1 for more)"), "{out}");
    let out = ok_stdout(&s.base, &["agents", "--q", "nothing-matches"]);
    assert_eq!(out, "(none)\n");

    let err = failure(&s.base, &["agents", "--status", "bogus"]);
    assert!(err.starts_with("error: API error 400 bad_parameter: invalid parameter \"status\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn agent_details_and_removal() {
    let s = fleet();
    let out = ok_stdout(&s.base, &["agent", "web-01"]);
    assert!(out.contains("\nSTATUS         active since "), "{out}");
    assert!(out.contains("HOSTNAME       host-web-01"), "{out}");
    assert!(out.contains("SENSORS        fim"), "{out}");
    let history = out.split("STATUS HISTORY\n").nth(1).expect("history section");
    let rows: Vec<Vec<&str>> = history.lines().map(cells).collect();
    assert_eq!(rows[0], ["AT", "FROM", "TO", "REASON"]);
    assert_eq!(rows[1][1..], ["pending", "active", "heartbeat"], "{out}");
    assert_eq!(rows[2][1..], ["-", "pending", "registered"], "{out}");

    let v: Value = serde_json::from_str(&ok_stdout(&s.base, &["agent", "web-01", "--json"])).unwrap();
    assert_eq!((v["id"].as_str(), v["history"].as_array().map(Vec::len)), (Some("web-01"), Some(2)));

    let err = failure(&s.base, &["agent", "nobody"]);
    assert!(err.starts_with("error: API error 404 not_found: no agent with id \"nobody\""), "{err}");
    let err = failure(&s.base, &["agent", "../../etc"]);
    assert!(err.contains("API error 400 bad_parameter: invalid parameter \"id\""), "{err}");

    assert_eq!(ok_stdout(&s.base, &["agent", "db-01", "--remove"]), "removed agent db-01 (name-db-01)\n");
    let v: Value = serde_json::from_str(&ok_stdout(&s.base, &["agent", "db-01", "--json"])).unwrap();
    assert_eq!(v["status"], "removed");
}

#[test]
fn commands_print_the_agent_reply() {
    let s = fleet();
    let out = ok_stdout(&s.base, &["command", "web-01", "ping", "n=3", "path=/etc", "flag=true"]);
    let result: Value = serde_json::from_str(&out).expect("the result as JSON");
    assert_eq!(result, json!({"pong": true, "args": {"n": 3, "path": "/etc", "flag": true}}));

    let out = ok_stdout(&s.base, &["command", "web-01", "ping", "--args", r#"{"list": [1, 2]}"#, "--json"]);
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((reply["ok"].as_bool(), reply["agent_id"].as_str()), (Some(true), Some("web-01")));
    assert_eq!(reply["result"]["args"], json!({"list": [1, 2]}));

    let err = failure(&s.base, &["command", "web-01", "frobnicate"]);
    assert!(err.contains("agent web-01 answered frobnicate: unknown_command"), "{err}");
    let err = failure(&s.base, &["command", "db-01", "ping"]);
    assert!(err.starts_with("error: API error 409 agent_not_active: agent \"db-01\" is pending"), "{err}");
    let err = failure(&s.base, &["command", "web-01", "ping", "oops"]);
    assert!(err.contains("\"oops\" is not key=value"), "{err}");
}

fn event(agent: &str, seq: u64, class: EventClass) -> Envelope {
    Envelope::new(
        AgentId::new(agent).unwrap(),
        seq,
        class,
        "created",
        Severity::High,
        json!({"path": format!("/tmp/f{seq}")}),
    )
}

#[test]
fn events_list_and_follow() {
    let s = fleet();
    let first: Vec<Envelope> = (1..=3).map(|i| event("web-01", i, EventClass::File)).collect();
    s.publish_events(&first, 3);

    let out = ok_stdout(&s.base, &["events"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(cells(lines[0]), ["TIME", "AGENT", "CLASS", "ACTIVITY", "SEVERITY", "SEQ", "PAYLOAD"]);
    assert_eq!(
        cells(lines[1])[1..],
        ["web-01", "file", "created", "high", "3", r#"{"path":"/tmp/f3"}"#],
        "{out}"
    );
    assert_eq!(lines[4], "showing 1-3 of 3");
    assert_eq!(ok_stdout(&s.base, &["events", "--class", "process"]), "(none)\n");
    let page: Value =
        serde_json::from_str(&ok_stdout(&s.base, &["events", "--json", "--asc", "--limit", "2"])).unwrap();
    assert_eq!(page["items"][0]["id"], first[0].id.to_string());
    assert_eq!((page["total"].as_u64(), page["limit"].as_u64()), (Some(3), Some(2)));
    let err = failure(&s.base, &["events", "--since", "yesterday"]);
    assert!(err.contains("API error 400 bad_parameter: invalid parameter \"since\""), "{err}");

    // --follow --json: the last events first, then each new one exactly once.
    let mut child = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_secmon"))
            .args(["--api", &s.base, "events", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = rx.recv_timeout(WAIT).expect("a followed event in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
    };
    for e in &first {
        assert_eq!(next()["id"], e.id.to_string(), "existing events, oldest first");
    }
    let more: Vec<Envelope> = (4..=5).map(|i| event("web-01", i, EventClass::Process)).collect();
    s.publish_events(&more, 5);
    for e in &more {
        let v = next();
        assert_eq!(
            (v["id"].as_str(), v["class"].as_str()),
            (Some(e.id.to_string().as_str()), Some("process"))
        );
    }
    // An event whose own time is an hour old (an agent's spool sent after an
    // outage) still shows: follow reads by arrival at the manager.
    let mut late = event("web-01", 6, EventClass::File);
    late.time -= chrono::Duration::hours(1);
    s.publish_events(std::slice::from_ref(&late), 6);
    assert_eq!(next()["id"], late.id.to_string(), "a late-arriving event is followed");
    // Two more polls (one per second) must not repeat anything.
    assert!(rx.recv_timeout(Duration::from_millis(2500)).is_err(), "an event was printed twice");
    child.kill();
}

#[test]
fn alerts_table_and_json() {
    let s = Stack::start();
    assert_eq!(ok_stdout(&s.base, &["alerts"]), "(none)\n");
    let v: Value =
        serde_json::from_str(&ok_stdout(&s.base, &["alerts", "--json", "--severity", "high"])).unwrap();
    assert_eq!(v, json!({"items": [], "total": 0, "offset": 0, "limit": 50}));
    let err = failure(&s.base, &["alerts", "--severity", "extreme"]);
    assert!(err.contains("API error 400 bad_parameter: invalid parameter \"severity\""), "{err}");
}

#[test]
fn unreachable_api_says_what_to_do() {
    let port = secmon_testkit::free_port();
    let api = format!("http://127.0.0.1:{port}");
    let err = failure(&api, &["agents"]);
    assert!(err.starts_with(&format!("error: cannot reach the manager API at {api}: ")), "{err}");
    assert!(err.trim_end().ends_with("(is `secmon up` running? set --api or SECMON_API)"), "{err}");

    // SECMON_API is the default for --api.
    let out =
        Command::new(env!("CARGO_BIN_EXE_secmon")).arg("alerts").env("SECMON_API", &api).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("at {api}:")));

    let err = failure("not a url", &["agents"]);
    assert!(err.contains("invalid API URL"), "{err}");
}
