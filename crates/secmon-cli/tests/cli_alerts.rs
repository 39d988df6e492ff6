//! `secmon alerts show|ack|close|reopen` with the real binary against a real
//! manager on a real nats-server: the alert is raised inside the manager, the
//! CLI changes its status, the API shows the history.

#[path = "../../secmon-manager/tests/api_support/mod.rs"]
mod api_support;
mod cli_support;

use api_support::Stack;
use chrono::Utc;
use cli_support::{cells, failure, ok_stdout};
use secmon_manager::alerts::AlertDraft;
use secmon_proto::{AgentId, Severity};
use serde_json::Value;
use uuid::Uuid;

fn raise(s: &Stack) -> String {
    let d = AlertDraft {
        rule_id: "usb-storage".into(),
        rule_title: "USB storage attached".into(),
        severity: Severity::Medium,
        tags: vec!["attack.t1052".into()],
        agent_id: AgentId::new("web-01").unwrap(),
        event_ids: vec![Uuid::now_v7()],
        key: String::new(),
        time: Utc::now(),
    };
    s.block_on(s.manager().alerts().raise(d)).unwrap().alert.id.to_string()
}

#[test]
fn ack_close_reopen_and_show() {
    let s = Stack::start();
    let id = raise(&s);

    let out = ok_stdout(&s.base, &["alerts", "--status", "open"]);
    let row = cells(out.lines().nth(1).unwrap());
    assert_eq!(row[..5], [id.as_str(), "medium", "open", "usb-storage", "USB storage attached"], "{out}");

    let out = ok_stdout(&s.base, &["alerts", "ack", &id, "--comment", "on it"]);
    assert_eq!(out, format!("alert {id} is now acknowledged\n"));
    let out = ok_stdout(&s.base, &["alerts", "close", &id, "-m", "known device", "--by", "alice"]);
    assert_eq!(out, format!("alert {id} is now closed\n"));

    // Closed -> acknowledged is refused by the manager, with its message.
    let err = failure(&s.base, &["alerts", "ack", &id]);
    assert!(
        err.contains("API error 409 invalid_transition: a closed alert cannot become acknowledged"),
        "{err}"
    );

    let shown: Value = serde_json::from_str(&ok_stdout(&s.base, &["alerts", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["status"], "closed");
    let history: Vec<(String, String)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["to"].as_str().unwrap().to_owned(), h["comment"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        history[1..],
        [("acknowledged".into(), "on it".into()), ("closed".into(), "known device".into())]
    );

    let out = ok_stdout(&s.base, &["alerts", "reopen", &id]);
    assert_eq!(out, format!("alert {id} is now open\n"));
    let out = ok_stdout(&s.base, &["alerts", "show", &id]);
    assert!(out.contains("RULE        usb-storage (USB storage attached)"), "{out}");
    assert!(out.contains("TAGS        attack.t1052"), "{out}");
    let hist: Vec<Vec<&str>> =
        out.lines().skip_while(|l| *l != "STATUS HISTORY").skip(2).map(cells).collect();
    assert_eq!(hist.len(), 4, "{out}");
    assert_eq!(hist[2][1..], ["alice", "acknowledged", "closed", "known device"], "{out}");
    assert_eq!(hist[3][1..], ["local", "closed", "open"], "{out}");

    let err = failure(&s.base, &["alerts", "show", &Uuid::now_v7().to_string()]);
    assert!(err.contains("API error 404 not_found"), "{err}");
    let err = failure(&s.base, &["alerts", "close", "nope"]);
    assert!(err.contains("API error 400 bad_parameter"), "{err}");
}
