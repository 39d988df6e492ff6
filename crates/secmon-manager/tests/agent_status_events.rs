//! Agent status changes as events, end to end: a real nats-server, a real manager
//! loading the repository's rule pack (`rules/`), and simulated agents. An agent
//! that goes silent gets an `agent`/`disconnected` event (reason
//! `heartbeat_timeout`) in its history and a high alert from "Agent disconnected
//! without a shutdown notice"; one that says it stops gets the event (reason
//! `shutdown_notice`) and no alert. Manager-made events stay out of the agents'
//! sequence tracking.

mod api_support;

use std::path::PathBuf;
use std::time::Duration;

use api_support::{Stack, enc};
use secmon_proto::AgentStatus;
use secmon_testkit::wait_until;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);
const RULE_ID: &str = "4ed1a0bb-0ab3-4752-a638-76e105d711bd";

fn rule_pack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules")
}

/// The `agent`-class events of `agent`, once `want` holds for them.
fn wait_agent_events(s: &Stack, agent: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = vec![];
    let ok = wait_until(DEADLINE, || {
        last = s.get_ok(&format!("/api/events?agent={}&class=agent", enc(agent)))["items"]
            .as_array()
            .unwrap()
            .clone();
        want(&last)
    });
    assert!(ok, "agent events of {agent} never as expected; last: {last:?}");
    last
}

fn alerts_of(s: &Stack, agent: &str) -> Vec<Value> {
    s.get_ok(&format!("/api/alerts?agent={}", enc(agent)))["items"].as_array().unwrap().clone()
}

#[test]
fn silent_agent_raises_a_disconnect_alert_and_a_clean_shutdown_does_not() {
    let s = Stack::start_with(|c| {
        c.rules.dirs = vec![rule_pack()];
        c.agents.heartbeat_timeout = Duration::from_secs(3);
        c.agents.check_interval = Duration::from_millis(100);
    });
    let rules = s.get_ok(&format!("/api/rules/{RULE_ID}"));
    assert_eq!(rules["id"], RULE_ID, "the rule pack's disconnect rule is loaded: {rules}");

    // A clean stop first: shutdown notice while active.
    let mut calm = s.sim("calm-1");
    s.activate(&calm);
    let events: Vec<_> = (0..2).map(|_| calm.next_event()).collect();
    s.publish_events(&events, 2);
    s.block_on(calm.shutdown("SIGTERM"));
    s.wait_status(&calm.id, AgentStatus::Disconnected);
    let got = wait_agent_events(&s, "calm-1", |v| !v.is_empty());
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!((e["class"].as_str(), e["activity"].as_str()), (Some("agent"), Some("disconnected")));
    assert_eq!((e["agent_id"].as_str(), e["severity"].as_str()), (Some("calm-1"), Some("medium")));
    assert_eq!((e["seq"].as_u64(), e["origin"].as_str()), (Some(0), Some("manager")));
    assert_eq!(e["payload"]["reason"], "shutdown_notice");
    assert_eq!(e["payload"]["from"], "active");
    assert_eq!(e["payload"]["detail"], "shutdown notice: SIGTERM");
    assert_eq!(e["payload"]["timeout_secs"], 3);
    assert!(e["payload"]["last_seen"].is_string(), "{e}");
    let id = e["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    // Then a host that vanishes: registered, one heartbeat, silence.
    let mut gone = s.sim("gone-1");
    s.activate(&gone);
    let events: Vec<_> = (0..3).map(|_| gone.next_event()).collect();
    s.publish_events(&events, 2 + 3 + 1);
    s.wait_status(&gone.id, AgentStatus::Disconnected);
    let got = wait_agent_events(&s, "gone-1", |v| !v.is_empty());
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!((e["class"].as_str(), e["activity"].as_str()), (Some("agent"), Some("disconnected")));
    assert_eq!((e["seq"].as_u64(), e["origin"].as_str()), (Some(0), Some("manager")));
    assert_eq!(e["payload"]["reason"], "heartbeat_timeout");
    assert_eq!(e["payload"]["from"], "active");
    assert_eq!(e["payload"]["detail"], "heartbeat timeout");
    assert_eq!(e["payload"]["timeout_secs"], 3);
    let last_seen = s.manager().registry().get(&gone.id).unwrap().last_seen.unwrap();
    let in_event: chrono::DateTime<chrono::Utc> =
        e["payload"]["last_seen"].as_str().unwrap().parse().expect("RFC 3339 last_seen");
    assert_eq!(in_event, last_seen);

    // The silent agent gets a high alert from the rule, naming the event.
    let mut alerts = vec![];
    let ok = wait_until(DEADLINE, || {
        alerts = alerts_of(&s, "gone-1");
        !alerts.is_empty()
    });
    assert!(ok, "no alert for the silent agent");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!((a["rule_id"].as_str(), a["severity"].as_str()), (Some(RULE_ID), Some("high")), "{a}");
    assert_eq!(a["title"], "Agent disconnected without a shutdown notice", "{a}");
    let detail = s.get_ok(&format!("/api/alerts/{}", a["id"].as_str().unwrap()));
    assert!(detail.to_string().contains(e["id"].as_str().unwrap()), "alert names the event: {detail}");

    // Events are evaluated in order, so the clean stop was evaluated before: no alert.
    assert_eq!(alerts_of(&s, "calm-1"), Vec::<Value>::new());

    // Neither agent's sequence tracking saw the manager-made events.
    let m = s.manager();
    let seq = s.block_on(m.store().load_seq_states()).unwrap();
    for (agent, last) in [("calm-1", 2), ("gone-1", 3)] {
        let st = &seq.iter().find(|(id, _)| id.as_str() == agent).expect("seq state").1;
        assert_eq!((st.last_seq, st.gap_events, st.replays), (last, 0, 0), "{agent}");
        assert!(st.missing.is_empty(), "{agent}: {:?}", st.missing);
    }
    assert_eq!(m.metrics().rejected("replay"), 0);
    assert_eq!(m.metrics().seq_gap_events.get(), 0);
    let text = s.metrics_text();
    assert!(text.contains("secmon_agent_status_events_total 2"), "{text}");
    assert!(text.contains("secmon_agent_status_events_dropped_total 0"), "{text}");

    // The agent comes back with its next sequence number: still no gap, no replay.
    s.activate(&gone);
    s.publish_events(&[gone.next_event()], 2 + 3 + 2 + 1);
    let seq = s.block_on(m.store().load_seq_states()).unwrap();
    let st = &seq.iter().find(|(id, _)| id.as_str() == "gone-1").unwrap().1;
    assert_eq!((st.last_seq, st.gap_events, st.replays), (4, 0, 0));
}
