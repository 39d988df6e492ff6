//! Hostile input against a real manager: every bad parameter gets a 400 that
//! names it, unknown routes a JSON 404, and nothing a client sends gets a 500.

mod api_support;

use api_support::{Stack, enc};
use serde_json::json;

#[test]
fn bad_parameters_get_400_naming_the_parameter() {
    let s = Stack::start();
    s.activate(&s.sim("h-1"));
    let big_q = "x".repeat(10 * 1024);
    let cases: Vec<(String, &str)> = vec![
        ("/api/agents?limit=-1".into(), "limit"),
        ("/api/agents?limit=abc".into(), "limit"),
        ("/api/agents?limit=1000000".into(), "limit"),
        ("/api/agents?limit=1001".into(), "limit"),
        ("/api/agents?limit=".into(), "limit"),
        ("/api/agents?limit=1.5".into(), "limit"),
        ("/api/agents?limit=18446744073709551616".into(), "limit"),
        ("/api/agents?offset=-5".into(), "offset"),
        ("/api/agents?offset=99999999".into(), "offset"),
        ("/api/agents?status=bogus".into(), "status"),
        ("/api/agents?status=ACTIVE".into(), "status"),
        ("/api/agents?sort=bogus".into(), "sort"),
        ("/api/agents?sort=name;DROP%20TABLE%20agents".into(), "sort"),
        (format!("/api/agents?q={big_q}"), "q"),
        (format!("/api/agents?name={big_q}"), "name"),
        ("/api/agents?q=a%00b".into(), "q"),
        ("/api/agents?stauts=active".into(), "stauts"),
        ("/api/agents?limit=1&limit=2".into(), "limit"),
        ("/api/agents/h-1?history=100".into(), "history"),
        ("/api/agents/a.b".into(), "id"),
        ("/api/agents/a*".into(), "id"),
        ("/api/agents/%2A".into(), "id"),
        ("/api/agents/%3E".into(), "id"),
        ("/api/agents/a%20b".into(), "id"),
        ("/api/agents/..%2F..%2Fetc".into(), "id"),
        (format!("/api/agents/{}", "x".repeat(65)), "id"),
        ("/api/events?since=yesterday".into(), "since"),
        ("/api/events?since=2025-13-45T99:00:00Z".into(), "since"),
        ("/api/events?since=-15m".into(), "since"),
        ("/api/events?since=15".into(), "since"),
        ("/api/events?until=1000000w".into(), "until"),
        ("/api/events?since=1h&until=2h".into(), "until"),
        ("/api/events?class=bogus".into(), "class"),
        ("/api/events?agent=a.b".into(), "agent"),
        ("/api/events?agent=secmon.%3E".into(), "agent"),
        ("/api/events?order=sideways".into(), "order"),
        ("/api/events?offset=x".into(), "offset"),
        ("/api/events?sort=time".into(), "sort"),
        ("/api/alerts?severity=bogus".into(), "severity"),
        ("/api/alerts?severity=HIGH".into(), "severity"),
        ("/api/alerts?status=bogus".into(), "status"),
        ("/api/alerts?since=last%20week".into(), "since"),
        ("/api/alerts?agent=*".into(), "agent"),
        (format!("/api/alerts?rule={big_q}"), "rule"),
        ("/api/alerts?limit=-1".into(), "limit"),
        ("/api/alerts?class=file".into(), "class"),
        ("/api/health?verbose=1".into(), "verbose"),
    ];
    for (url, param) in &cases {
        let shown = &url[..url.len().min(80)];
        let a = s.get(url);
        let (code, msg) = a.error(400);
        assert_eq!(code, "bad_parameter", "{shown}");
        assert!(msg.contains(&format!("\"{param}\"")), "{shown}: message does not name {param}: {msg}");
        assert_eq!(a.json()["error"]["parameter"], json!(param), "{shown}");
        assert!(msg.len() < 400, "{shown}: message echoes too much: {} bytes", msg.len());
    }
}

#[test]
fn hostile_values_never_cause_a_server_error() {
    let s = Stack::start();
    s.activate(&s.sim("h-2"));
    let values = [
        "%' OR 1=1 --",
        "' OR ''='",
        "\"; DROP TABLE agents; --",
        "%",
        "_",
        "\\",
        "\u{202e}rtl",
        "../../etc/passwd",
        "${jndi:ldap://x}",
        "0",
        "-0",
        "9223372036854775807",
        "1e999",
        "NaN",
        "",
        " ",
    ];
    let params = [
        ("/api/agents", ["status", "name", "q", "sort", "offset", "limit"].as_slice()),
        ("/api/events", ["agent", "class", "since", "until", "order", "offset", "limit"].as_slice()),
        (
            "/api/alerts",
            ["since", "until", "severity", "agent", "status", "rule", "offset", "limit"].as_slice(),
        ),
    ];
    // Sent raw: invalid UTF-8, invalid escapes, NUL.
    let raw = ["%FF%FE", "%ZZ", "%00", "%C0%AF"];
    for (path, names) in params {
        for name in names {
            for v in values.iter().map(|v| enc(v)).chain(raw.iter().map(|v| v.to_string())) {
                let a = s.get(&format!("{path}?{name}={v}"));
                assert!(a.status == 200 || a.status == 400, "{path}?{name}={v}: {} {}", a.status, a.text);
                if a.status == 400 {
                    a.error(400);
                }
            }
        }
    }
    // Searches are literal: none of these match the one agent.
    for q in ["%' OR 1=1 --", "' OR ''='", "%", "_"] {
        assert_eq!(s.get_ok(&format!("/api/agents?q={}", enc(q)))["total"], 0, "{q}");
    }
    assert_eq!(s.get_ok("/api/agents")["total"], 1, "the agents table survived");
}

#[test]
fn unknown_routes_and_methods_answer_json_errors() {
    let s = Stack::start();
    for path in ["/", "/api", "/api/agent", "/api/agents/x/y/z", "/api/events/1", "/admin", "/api/health/"] {
        let (code, _) = s.get(path).error(404);
        assert_eq!(code, "not_found", "{path}");
    }
    let (code, _) = s.delete("/api/agents").error(405);
    assert_eq!(code, "method_not_allowed");
    let (code, _) = s.post_json("/api/events", &json!({})).error(405);
    assert_eq!(code, "method_not_allowed");
}
