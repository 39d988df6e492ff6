//! REST API over a real manager (real nats-server, real SQLite in a temp dir):
//! agents, agent details and removal, events, alerts, health, metrics, OpenAPI.

mod api_support;

use api_support::{Stack, WAIT, enc};
use chrono::{Duration as Age, SecondsFormat, Utc};
use secmon_manager::store::{AlertRecord, AlertStatus};
use secmon_proto::{AgentId, AgentStatus, Envelope, EventClass, Severity};
use secmon_testkit::wait_until;
use serde_json::{Value, json};
use uuid::Uuid;

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn agents_list_filters_sorts_and_paginates() {
    let s = Stack::start();
    for id in ["web-01", "web-02"] {
        s.activate(&s.sim(id));
    }
    s.register(&s.sim("db-01"));
    let old = s.sim("old-01");
    s.activate(&old);
    s.block_on(old.shutdown("SIGTERM"));
    s.wait_status(&old.id, AgentStatus::Disconnected);

    let all = s.get_ok("/api/agents");
    assert_eq!(ids(&all), ["db-01", "old-01", "web-01", "web-02"], "sorted by name");
    assert_eq!(
        (all["total"].as_u64(), all["offset"].as_u64(), all["limit"].as_u64()),
        (Some(4), Some(0), Some(50))
    );
    let web = &all["items"][2];
    assert_eq!(web["name"], "name-web-01");
    assert_eq!(web["status"], "active");
    assert_eq!(web["host"]["hostname"], "host-web-01");
    assert_eq!(web["host"]["ips"], json!(["10.1.2.3"]));
    assert!(web["last_seen"].is_string(), "{web}");

    for (query, expected) in [
        ("status=active", vec!["web-01", "web-02"]),
        ("status=pending", vec!["db-01"]),
        ("status=disconnected", vec!["old-01"]),
        ("status=removed", vec![]),
        ("name=name-web-02", vec!["web-02"]),
        ("name=web", vec![]),
        ("q=WEB", vec!["web-01", "web-02"]),
        ("q=host-db", vec!["db-01"]),
        ("q=10.1.2", vec!["db-01", "old-01", "web-01", "web-02"]),
        ("status=active&q=02", vec!["web-02"]),
        // LIKE wildcards and quotes are searched for literally.
        ("q=%25", vec![]),
        ("q=_", vec![]),
        (&format!("q={}", enc("%' OR 1=1 --")), vec![]),
        ("sort=-name", vec!["web-02", "web-01", "old-01", "db-01"]),
        ("sort=-registered_at", vec!["old-01", "db-01", "web-02", "web-01"]),
        ("sort=registered_at&limit=2", vec!["web-01", "web-02"]),
        ("limit=2&offset=2", vec!["web-01", "web-02"]),
        ("offset=4", vec![]),
    ] {
        let page = s.get_ok(&format!("/api/agents?{query}"));
        assert_eq!(ids(&page), expected, "{query}");
    }
    let page = s.get_ok("/api/agents?limit=2&offset=1");
    assert_eq!(
        (page["total"].as_u64(), page["offset"].as_u64(), page["limit"].as_u64()),
        (Some(4), Some(1), Some(2))
    );
    let by_seen = s.get_ok("/api/agents?sort=-last_seen&status=active");
    assert_eq!(by_seen["total"], 2);
}

#[test]
fn agent_details_carry_recent_history_and_removal_works() {
    let s = Stack::start();
    let a = s.sim("flappy");
    s.activate(&a);
    // 7 more cycles of shutdown -> register -> heartbeat: 2 + 21 = 23 transitions.
    for _ in 0..7 {
        s.block_on(a.shutdown("restart"));
        s.wait_status(&a.id, AgentStatus::Disconnected);
        s.activate(&a);
    }
    let mut details = Value::Null;
    let stored_all = wait_until(WAIT, || {
        details = s.get_ok("/api/agents/flappy");
        details["history"].as_array().unwrap().len() == 20 && details["history"][0]["to"] == "active"
    });
    assert!(stored_all, "history: {details}");
    assert_eq!(details["id"], "flappy");
    assert_eq!(details["status"], "active");
    assert_eq!(details["host"]["hostname"], "host-flappy");
    assert!(details["seq"].is_object(), "{details}");
    let history = details["history"].as_array().unwrap();
    let tos: Vec<&str> = history.iter().take(4).map(|h| h["to"].as_str().unwrap()).collect();
    assert_eq!(tos, ["active", "pending", "disconnected", "active"], "most recent first");
    assert_eq!(history[2]["reason"], "shutdown notice: restart");
    let times: Vec<&str> = history.iter().map(|h| h["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let (code, msg) = s.get("/api/agents/nobody").error(404);
    assert_eq!(code, "not_found");
    assert!(msg.contains("nobody"), "{msg}");

    let removed = s.delete("/api/agents/flappy");
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(removed.json()["status"], "removed");
    let details = s.get_ok("/api/agents/flappy");
    assert_eq!(details["status"], "removed");
    assert_eq!(details["history"][0]["to"], "removed");
    assert_eq!(details["history"][0]["reason"], "removed: by an operator through the API");
    assert_eq!(s.get_ok("/api/agents?status=removed")["total"], 1);
    let (code, _) = s.delete("/api/agents/nobody").error(404);
    assert_eq!(code, "not_found");
}

fn event_at(agent: &str, seq: u64, class: EventClass, minutes_ago: i64) -> Envelope {
    let mut e =
        Envelope::new(AgentId::new(agent).unwrap(), seq, class, "created", Severity::Low, json!({"n": seq}));
    e.time = Utc::now() - Age::minutes(minutes_ago);
    e
}

#[test]
fn events_filter_order_and_paginate() {
    let s = Stack::start();
    s.activate(&s.sim("a1"));
    s.activate(&s.sim("a2"));
    let mut events: Vec<Envelope> =
        (1..=5).map(|i| event_at("a1", i, EventClass::File, 60 - 10 * i as i64)).collect(); // 50..10 min ago
    events.extend((1..=3).map(|i| event_at("a2", i, EventClass::Process, 6 - i as i64))); // 5..3 min ago
    s.publish_events(&events, 8);

    let all = s.get_ok("/api/events");
    assert_eq!(all["total"], 8);
    let first = &all["items"][0];
    assert_eq!(first["id"], events[7].id.to_string(), "newest first");
    assert_eq!(first["agent_id"], "a2");
    assert_eq!(first["class"], "process");
    assert_eq!(first["payload"], json!({"n": 3}));
    assert!(first["received"].is_string() && first["seq"] == 3, "{first}");

    let asc = s.get_ok("/api/events?order=asc&limit=1");
    assert_eq!(asc["items"][0]["id"], events[0].id.to_string(), "oldest first");

    let since_45m = enc(&(Utc::now() - Age::minutes(45)).to_rfc3339_opts(SecondsFormat::Millis, true));
    for (query, total) in [
        ("agent=a1", 5),
        ("agent=a2", 3),
        ("agent=nobody", 0),
        ("class=process", 3),
        ("class=file&agent=a2", 0),
        ("since=25m", 5),
        ("since=25m&until=8m", 2),
        ("until=1h", 0),
        (&format!("since={since_45m}"), 7),
        ("since=1d&class=file", 5),
    ] {
        assert_eq!(s.get_ok(&format!("/api/events?{query}"))["total"], total, "{query}");
    }

    let p1 = s.get_ok("/api/events?order=asc&limit=3");
    let p3 = s.get_ok("/api/events?order=asc&limit=3&offset=6");
    assert_eq!((p1["items"].as_array().unwrap().len(), p1["total"].as_u64()), (3, Some(8)));
    assert_eq!(p3["items"].as_array().unwrap().len(), 2);
    assert_eq!(p3["items"][1]["id"], events[7].id.to_string());
    assert_eq!((p3["offset"].as_u64(), p3["limit"].as_u64()), (Some(6), Some(3)));
}

fn alert(rule: &str, severity: Severity, status: AlertStatus, agent: &str, minutes_ago: i64) -> AlertRecord {
    let t = Utc::now() - Age::minutes(minutes_ago);
    AlertRecord {
        id: Uuid::now_v7(),
        rule_id: rule.into(),
        title: format!("{rule} fired"),
        severity,
        agent_id: Some(AgentId::new(agent).unwrap()),
        status,
        tags: vec![],
        key: String::new(),
        event_ids: vec![],
        event_count: 0,
        first_seen: t,
        last_seen: t,
        count: 1,
    }
}

#[test]
fn alerts_are_real_queries() {
    let s = Stack::start();
    let empty = s.get_ok("/api/alerts");
    assert_eq!(empty, json!({"items": [], "total": 0, "offset": 0, "limit": 50}));

    let store = s.manager().store();
    for a in [
        alert("ssh-brute", Severity::High, AlertStatus::Open, "a1", 5),
        alert("ssh-brute", Severity::Critical, AlertStatus::Closed, "a2", 30),
        alert("usb-device", Severity::Low, AlertStatus::Acknowledged, "a1", 120),
    ] {
        s.block_on(store.insert_alert(&a)).unwrap();
    }
    for (query, total) in [
        ("", 3),
        ("severity=high", 2),
        ("severity=critical", 1),
        ("severity=info", 3),
        ("status=closed", 1),
        ("status=open&severity=high", 1),
        ("agent=a1", 2),
        ("rule=ssh-brute", 2),
        ("rule=nope", 0),
        ("since=1h", 2),
        ("since=1h&until=10m", 1),
    ] {
        assert_eq!(s.get_ok(&format!("/api/alerts?{query}"))["total"], total, "{query}");
    }
    let newest = s.get_ok("/api/alerts?limit=1");
    assert_eq!(newest["items"][0]["severity"], "high");
    assert_eq!(newest["items"][0]["status"], "open");
}

#[test]
fn health_follows_nats_and_metrics_and_openapi_are_served() {
    let mut s = Stack::start();
    let h = s.get("/api/health");
    assert_eq!(h.status, 200, "{}", h.text);
    let h = h.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["nats"], json!({"connected": true, "state": "connected"}));
    assert_eq!(h["storage"], json!({"ok": true}));
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_secs"].is_u64());

    s.nats.kill();
    let mut last = None;
    assert!(
        wait_until(WAIT, || {
            let a = s.get("/api/health");
            let down = a.status == 503;
            last = Some(a);
            down
        }),
        "health stayed up without NATS: {last:?}"
    );
    let down = last.unwrap().json();
    assert_eq!(down["status"], "degraded");
    assert_eq!(down["nats"]["connected"], false);
    assert_eq!(down["storage"]["ok"], true);
    s.nats.restart();
    assert!(wait_until(WAIT, || s.get("/api/health").status == 200), "health did not recover");

    // Requests to label: a matched route with a path parameter, and an unknown one.
    assert_eq!(s.get("/api/agents/some-agent").status, 404);
    assert_eq!(s.get("/nope/secret-path").status, 404);
    // A rejected event and a refused command, so their families have a sample.
    s.block_on(api_support::common::publish_raw(
        &s.js,
        "secmon.agent.x1.event.file".into(),
        b"{oops".to_vec(),
    ));
    assert!(
        wait_until(WAIT, || s
            .metrics_text()
            .contains("secmon_events_rejected_total{reason=\"malformed\"} 1")),
        "malformed event not counted"
    );
    assert_eq!(s.post_json("/api/agents/ghost/command", &json!({"command": "ping"})).status, 404);
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
    for name in [
        "secmon_events_ingested_total",
        "secmon_agents",
        "secmon_consumer_pending_messages",
        "secmon_consumer_ack_pending_messages",
        "secmon_events_rejected_total{reason=\"malformed\"} 1",
        "secmon_commands_total{result=\"unknown_agent\"} 1",
        "secmon_registrations_total",
        "secmon_heartbeats_total",
        "secmon_api_request_duration_seconds_bucket{",
        "route=\"/api/agents/{id}\"",
        "route=\"/api/health\",status=\"503\"",
        "route=\"unmatched\"",
    ] {
        assert!(m.text.contains(name), "{name} missing from /metrics:\n{}", m.text);
    }
    assert!(
        !m.text.contains("some-agent") && !m.text.contains("secret-path"),
        "raw paths leaked into labels"
    );

    let doc = s.get("/api/openapi.json");
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/api/health",
        "/api/agents",
        "/api/agents/{id}",
        "/api/agents/{id}/command",
        "/api/events",
        "/api/alerts",
        "/api/openapi.json",
        "/metrics",
    ] {
        assert!(paths.iter().any(|k| *k == p), "{p} not in {paths:?}");
    }
    assert!(doc["paths"]["/api/agents/{id}"]["delete"].is_object());
    assert!(doc["paths"]["/api/agents/{id}/command"]["post"]["requestBody"].is_object());
}
