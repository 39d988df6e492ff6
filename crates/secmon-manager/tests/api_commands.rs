//! `POST /api/agents/{id}/command` over a real manager and nats-server, with
//! simulated agents answering (or not) on their command subject.

mod api_support;

use std::time::{Duration, Instant};

use api_support::Stack;
use secmon_proto::{AgentStatus, CommandReply};
use serde_json::json;

fn command_count(s: &Stack, result: &str) -> u64 {
    let needle = format!("secmon_commands_total{{result=\"{result}\"}} ");
    s.metrics_text().lines().find_map(|l| l.strip_prefix(&needle).map(|v| v.parse().unwrap())).unwrap_or(0)
}

#[test]
fn command_round_trip_with_agent_reply() {
    let mut s = Stack::start();
    let a = s.sim("cmd-agent");
    s.activate(&a);
    s.answer_commands(&a.id);

    let r = s.post_json("/api/agents/cmd-agent/command", &json!({"command": "ping", "args": {"x": 1}}));
    assert_eq!(r.status, 200, "{}", r.text);
    let reply: CommandReply = serde_json::from_str(&r.text).expect("the agent's CommandReply");
    assert!(reply.ok);
    assert_eq!(reply.agent_id.as_str(), "cmd-agent");
    assert_eq!(reply.result, json!({"pong": true, "args": {"x": 1}}));

    // No args: the agent gets an empty object.
    let r = s.post_json("/api/agents/cmd-agent/command", &json!({"command": "ping"}));
    assert_eq!(r.json()["result"]["args"], json!({}));

    // An unknown command is the agent's answer, not an API error.
    let r = s.post_json("/api/agents/cmd-agent/command", &json!({"command": "frobnicate", "args": {}}));
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "unknown_command");

    assert_eq!(command_count(&s, "ok"), 2);
    assert_eq!(command_count(&s, "error"), 1);
}

#[test]
fn command_to_unknown_inactive_silent_or_absent_agents() {
    let mut s = Stack::start_with(|c| c.api.command_timeout = Duration::from_secs(1));
    let (code, _) = s.post_json("/api/agents/ghost/command", &json!({"command": "ping"})).error(404);
    assert_eq!(code, "not_found");

    // Registered but no heartbeat yet: pending.
    s.register(&s.sim("pending-1"));
    let (code, msg) = s.post_json("/api/agents/pending-1/command", &json!({"command": "ping"})).error(409);
    assert_eq!(code, "agent_not_active");
    assert!(msg.contains("pending"), "{msg}");

    // Disconnected by a shutdown notice, even though something still listens.
    let gone = s.sim("gone-1");
    s.activate(&gone);
    s.answer_commands(&gone.id);
    s.block_on(gone.shutdown("SIGTERM"));
    s.wait_status(&gone.id, AgentStatus::Disconnected);
    let (code, msg) = s.post_json("/api/agents/gone-1/command", &json!({"command": "ping"})).error(409);
    assert_eq!(code, "agent_not_active");
    assert!(msg.contains("disconnected"), "{msg}");

    // Active, but nobody subscribed to its command subject.
    s.activate(&s.sim("deaf-1"));
    let (code, _) = s.post_json("/api/agents/deaf-1/command", &json!({"command": "ping"})).error(504);
    assert_eq!(code, "agent_unreachable");

    // Active and subscribed, but never answers: the configured timeout applies...
    let mute = s.sim("mute-1");
    s.activate(&mute);
    s.respond(&mute.id, |_| None);
    let t = Instant::now();
    let (code, msg) = s.post_json("/api/agents/mute-1/command", &json!({"command": "ping"})).error(504);
    let took = t.elapsed();
    assert_eq!(code, "agent_timeout");
    assert!(msg.contains("1000 ms"), "{msg}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    // ...or the request's own timeout_ms.
    let t = Instant::now();
    let (code, _) =
        s.post_json("/api/agents/mute-1/command", &json!({"command": "ping", "timeout_ms": 200})).error(504);
    assert_eq!(code, "agent_timeout");
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());

    // A reply that is not a CommandReply, or answers another request: 502.
    let liar = s.sim("liar-1");
    s.activate(&liar);
    let liar_id = liar.id.clone();
    s.respond(&liar.id, move |req| {
        Some(match req.command.as_str() {
            "garbage" => b"this is not json".to_vec(),
            _ => serde_json::to_vec(&CommandReply::success(uuid::Uuid::now_v7(), liar_id.clone(), json!(1)))
                .unwrap(),
        })
    });
    let (code, _) = s.post_json("/api/agents/liar-1/command", &json!({"command": "garbage"})).error(502);
    assert_eq!(code, "bad_agent_reply");
    let (code, msg) = s.post_json("/api/agents/liar-1/command", &json!({"command": "other"})).error(502);
    assert_eq!(code, "bad_agent_reply");
    assert!(msg.contains("not"), "{msg}");

    for (result, n) in
        [("unknown_agent", 1), ("not_active", 2), ("unreachable", 1), ("timeout", 2), ("bad_reply", 2)]
    {
        assert_eq!(command_count(&s, result), n, "{result}");
    }
}

#[test]
fn command_requests_are_validated() {
    let mut s = Stack::start();
    let a = s.sim("v-1");
    s.activate(&a);
    s.answer_commands(&a.id);
    let path = "/api/agents/v-1/command";

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("text/plain", br#"{"command":"ping"}"#.to_vec(), 400, "bad_request"),
        ("application/json", b"{not json".to_vec(), 400, "bad_request"),
        ("application/json", b"".to_vec(), 400, "bad_request"),
        ("application/json", br#"{"args":{}}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"ping","bogus":1}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"ping","args":[1,2]}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"ping","args":"x"}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"Ping!"}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"a.b"}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":""}"#.to_vec(), 400, "bad_request"),
        (
            "application/json",
            format!(r#"{{"command":"{}"}}"#, "x".repeat(65)).into_bytes(),
            400,
            "bad_request",
        ),
        ("application/json", br#"{"command":"ping","timeout_ms":0}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"ping","timeout_ms":3600000}"#.to_vec(), 400, "bad_request"),
        ("application/json", br#"{"command":"ping","timeout_ms":-1}"#.to_vec(), 400, "bad_request"),
        (
            "application/json",
            format!(r#"{{"command":"ping","args":{{"pad":"{}"}}}}"#, "x".repeat(100 * 1024)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (ct, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let r = s.post(path, ct, body);
        assert_eq!(r.error(status).0, code, "{ct} {shown}");
    }

    let (code, msg) = s.post_json("/api/agents/a.b/command", &json!({"command": "ping"})).error(400);
    assert_eq!((code.as_str(), msg.contains("\"id\"")), ("bad_parameter", true), "{msg}");
    let (code, msg) = s.post_json("/api/agents/v-1/command?x=1", &json!({"command": "ping"})).error(400);
    assert_eq!((code.as_str(), msg.contains("\"x\"")), ("bad_parameter", true), "{msg}");
    let (code, _) = s.get(path).error(405);
    assert_eq!(code, "method_not_allowed");

    // charset parameters are fine, and a valid request still works after all that.
    let r =
        s.post(path, "application/json; charset=utf-8", br#"{"command":"ping","timeout_ms":5000}"#.to_vec());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["ok"], true);
}
