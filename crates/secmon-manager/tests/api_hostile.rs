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

// ---- injection and traversal (issue 6, point 9) ------------------------------------
//
// Documented answers: a malformed value or path segment is a 400 `bad_parameter`
// naming it; a well-formed but unknown one is a 404 `not_found` (an agent id nobody
// registered, a file path with no recorded state, a rule id no rule has); a literal
// search that matches nothing is a 200 with no items. Never a 500, never anything
// from the file system, SQLite or the process in the body.

/// Text that must never appear in an answer: file content, SQLite's error text, a
/// panic or backtrace.
const LEAKS: [&str; 10] = [
    "root:x:0:0",
    "sqlite",
    "syntax error",
    // SQLite's; the API's own 404 says "no such endpoint".
    "no such table",
    "no such column",
    "panicked",
    "backtrace",
    ".rs:",
    "unrecognized token",
    "near \"",
];

/// Asserts the body leaks nothing: none of [`LEAKS`] and not the data directory.
fn assert_nothing_leaked(s: &Stack, what: &str, a: &api_support::Answer) {
    let lower = a.text.to_lowercase();
    for leak in LEAKS {
        assert!(!lower.contains(leak), "{what}: answer {} contains {leak:?}: {}", a.status, a.text);
    }
    let dir = s.dir.path().to_string_lossy().into_owned();
    assert!(!a.text.contains(&dir), "{what}: answer names the data dir {dir}: {}", a.text);
    assert!(a.status < 500, "{what}: {} {}", a.status, a.text);
}

/// A 400 `bad_parameter` naming `param`, bounded, leaking nothing.
fn assert_bad_parameter(s: &Stack, url: &str, a: &api_support::Answer, param: &str) {
    let shown = &url[..url.len().min(120)];
    let (code, msg) = a.error(400);
    assert_eq!(code, "bad_parameter", "{shown}: {msg}");
    assert_eq!(a.json()["error"]["parameter"], json!(param), "{shown}: {msg}");
    assert!(msg.len() < 400, "{shown}: message echoes too much: {} bytes", msg.len());
    assert_nothing_leaked(s, shown, a);
}

/// A stack with one active agent and a few stored events (with file states), and
/// the counts to compare with afterwards.
fn stack_with_data(id: &str) -> (Stack, u64, u64) {
    let s = Stack::start();
    let mut a = s.sim(id);
    s.activate(&a);
    let events: Vec<_> = (0..5).map(|_| a.next_event()).collect();
    s.publish_events(&events, 5);
    let files = s.get_ok(&format!("/api/agents/{id}/files"))["total"].as_u64().unwrap();
    assert_eq!(files, 5, "one file state per event");
    (s, 5, files)
}

/// The tables still hold what they held: nothing dropped or deleted.
fn assert_data_intact(s: &Stack, id: &str, events: u64, files: u64) {
    assert_eq!(s.get_ok("/api/agents")["total"], 1, "the agents table survived");
    assert_eq!(s.get_ok("/api/events")["total"], events, "the events table survived");
    assert_eq!(s.get_ok(&format!("/api/agents/{id}/files"))["total"], files, "file_states survived");
    assert_eq!(s.block_on(s.manager().store().count_events()).unwrap(), events);
    assert_eq!(s.get_ok(&format!("/api/agents/{id}/files?path=%2Fetc%2Ffile-1"))["path"], "/etc/file-1");
}

const SQL: [&str; 7] = [
    "' OR 1=1 --",
    "\"; DROP TABLE events; --",
    "'; DROP TABLE agents; --",
    "x'); DELETE FROM file_states; --",
    "1; DROP TABLE file_states",
    "%' UNION SELECT name, name FROM pragma_table_list --",
    "') OR ('a'='a",
];

#[test]
fn sql_injection_in_filters_is_inert_and_tables_survive() {
    let (s, events, files) = stack_with_data("inj-1");
    for sql in SQL {
        let v = enc(sql);
        // Free-text filters are literal: they match nothing and drop nothing.
        for url in [
            format!("/api/agents?q={v}"),
            format!("/api/agents?name={v}"),
            format!("/api/agents/inj-1/files?prefix={v}"),
            format!("/api/alerts?rule={v}"),
        ] {
            let a = s.get(&url);
            assert_eq!(a.status, 200, "{url}: {}", a.text);
            assert_eq!(a.json()["total"], 0, "{url}: a literal filter matched: {}", a.text);
            assert_nothing_leaked(&s, &url, &a);
        }
        // A well-formed path with no recorded state: 404, the path quoted escaped.
        let url = format!("/api/agents/inj-1/files?path={v}");
        let a = s.get(&url);
        let (code, _) = a.error(404);
        assert_eq!(code, "not_found", "{url}");
        assert_nothing_leaked(&s, &url, &a);
        // Closed vocabularies and ids refuse it outright.
        for (url, param) in [
            (format!("/api/agents?sort={v}"), "sort"),
            (format!("/api/agents?status={v}"), "status"),
            (format!("/api/events?agent={v}"), "agent"),
            (format!("/api/events?class={v}"), "class"),
            (format!("/api/events?order={v}"), "order"),
            (format!("/api/events?since={v}"), "since"),
            (format!("/api/alerts?severity={v}"), "severity"),
            (format!("/api/agents/inj-1/files?limit={v}"), "limit"),
            (format!("/api/agents/{v}"), "id"),
            (format!("/api/alerts/{v}"), "id"),
        ] {
            assert_bad_parameter(&s, &url, &s.get(&url), param);
        }
        let url = format!("/api/rules/{v}");
        let a = s.get(&url);
        assert_eq!(a.error(404).0, "not_found", "{url}");
        assert_nothing_leaked(&s, &url, &a);
        let url = format!("/api/agents/{v}");
        assert_bad_parameter(&s, &url, &s.delete(&url), "id");
    }
    assert_data_intact(&s, "inj-1", events, files);
}

#[test]
fn path_traversal_reads_no_file_and_escapes_no_route() {
    let (s, events, files) = stack_with_data("trav-1");
    // Query values (already encoded): decoded, they are paths the agent never
    // reported, so there is no state to answer; nothing is read from disk.
    let values = [
        enc("../../etc/passwd"),
        enc("/etc/../../../../etc/passwd"),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "..%2f..%2fetc%2fpasswd".to_owned(),
        "%252e%252e%252fetc%252fpasswd".to_owned(),
        enc("..\\..\\..\\etc\\passwd"),
        "%5C..%5C..%5Cetc%5Cpasswd".to_owned(),
        enc("/proc/self/environ"),
        enc("file:///etc/passwd"),
    ];
    for v in &values {
        let url = format!("/api/agents/trav-1/files?path={v}");
        let a = s.get(&url);
        assert_eq!(a.error(404).0, "not_found", "{url}");
        assert_nothing_leaked(&s, &url, &a);
        let url = format!("/api/agents/trav-1/files?prefix={v}");
        let a = s.get(&url);
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        assert_eq!(a.json()["total"], 0, "{url}");
        assert_nothing_leaked(&s, &url, &a);
    }
    // NUL ends a C path: refused, as are values that are not UTF-8.
    for v in [
        "%2Fetc%2Fpasswd%00",
        "%00",
        "%2Fetc%2Ffile-1%00.txt",
        "%2Fetc%2F%FF",
        "%C0%AF%C0%AFetc",
        "%2Fetc%ED%A0%80",
    ] {
        for param in ["path", "prefix"] {
            let url = format!("/api/agents/trav-1/files?{param}={v}");
            assert_bad_parameter(&s, &url, &s.get(&url), param);
        }
    }
    // Traversal in path segments: not an id (400), or no route (404).
    for seg in [
        "..",
        "%2e%2e",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%5C..%5Cetc%5Cpasswd",
        "trav-1%2F..%2F..%2Fetc",
        "trav-1%00",
        "%00",
        "%FF",
        "trav-1%C0%AF",
    ] {
        for url in [
            format!("/api/agents/{seg}"),
            format!("/api/agents/{seg}/files"),
            format!("/api/agents/{seg}/files?path=%2Fetc%2Fpasswd"),
            format!("/api/alerts/{seg}"),
        ] {
            assert_bad_parameter(&s, &url, &s.get(&url), "id");
        }
        let url = format!("/api/rules/{seg}");
        let a = s.get(&url);
        assert!(a.status == 400 || a.status == 404, "{url}: {} {}", a.status, a.text);
        a.error(a.status);
        assert_nothing_leaked(&s, &url, &a);
    }
    // Dot segments sent as they are: the router matches no route.
    for url in [
        "/api/agents/../../etc/passwd",
        "/api/agents/trav-1/files/../../../../etc/passwd",
        "/api/../../../etc/passwd",
        "/api/agents/trav-1/..%2F..%2F..%2Fetc%2Fpasswd",
    ] {
        let a = s.get(url);
        assert!(a.status == 400 || a.status == 404, "{url}: {} {}", a.status, a.text);
        a.error(a.status);
        assert_nothing_leaked(&s, url, &a);
    }
    assert_data_intact(&s, "trav-1", events, files);
}

#[test]
fn agent_ids_that_are_not_ids_never_reach_nats() {
    let mut s = Stack::start();
    let a = s.sim("nats-1");
    s.activate(&a);
    s.answer_commands(&a.id);
    // Everything published on a command subject, seen from a task on the stack's
    // runtime (the subscriber must live and die there).
    let (seen_tx, seen) = std::sync::mpsc::channel::<String>();
    let mut sub = s.block_on(s.client.subscribe("secmon.cmd.>")).unwrap();
    s.block_on(s.client.flush()).unwrap();
    s.rt.spawn(async move {
        while let Some(m) = futures::StreamExt::next(&mut sub).await {
            let _ = seen_tx.send(m.subject.to_string());
        }
    });

    // A control: a real command goes out on the agent's subject.
    let ok = s.post_json("/api/agents/nats-1/command", &json!({"command": "ping"}));
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        seen.recv_timeout(api_support::WAIT).expect("the control command is seen"),
        "secmon.cmd.nats-1"
    );

    let body = json!({"command": "ping"});
    for seg in [
        "*",
        "%2A",
        "%3E",
        "nats-1.%3E",
        "nats-1.*",
        "a.b",
        "..",
        ".",
        "%2E",
        "a%20b",
        "%20nats-1",
        "nats-1%09",
        "nats-1%0D%0AUNSUB%201",
        "nats-1%00",
        "%FF",
        "secmon.cmd.nats-1",
        "_INBOX.x",
        "nats%E2%80%901",
        &"n".repeat(65),
    ] {
        let url = format!("/api/agents/{seg}/command");
        assert_bad_parameter(&s, &url, &s.post_json(&url, &body), "id");
        let url = format!("/api/agents/{seg}");
        assert_bad_parameter(&s, &url, &s.delete(&url), "id");
        assert_bad_parameter(&s, &url, &s.get(&url), "id");
    }
    // Command names are a closed alphabet too: nothing resembling a shell line or a
    // subject goes out.
    for command in ["ping; rm -rf /", "../../bin/sh", "ping\r\nPUB x 1", "ping.>", "$(id)", "PING", ""] {
        let a = s.post_json("/api/agents/nats-1/command", &json!({ "command": command }));
        assert_eq!(a.error(400).0, "bad_request", "{command:?}");
        assert_nothing_leaked(&s, command, &a);
    }
    // Nothing more was published on any command subject.
    let extra = seen.recv_timeout(std::time::Duration::from_millis(500));
    assert!(extra.is_err(), "a hostile request reached NATS on {extra:?}");
    assert_eq!(s.get_ok("/api/agents")["total"], 1, "no hostile DELETE removed the agent");
    assert_eq!(s.get_ok("/api/agents/nats-1")["status"], "active");
}

#[test]
fn crlf_in_values_stays_escaped_in_the_body_and_out_of_the_headers() {
    let s = Stack::start();
    s.activate(&s.sim("crlf-1"));
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let inject = "%0D%0ASet-Cookie:%20evil=1%0D%0AX-Injected:%20yes";
    for (url, status) in [
        (format!("/api/agents?q=x{inject}"), 400),
        (format!("/api/agents?sort=name{inject}"), 400),
        (format!("/api/agents?status=active{inject}"), 400),
        (format!("/api/agents/crlf-1/files?path=%2Fetc{inject}"), 404),
        (format!("/api/agents/crlf-1{inject}"), 400),
        (format!("/api/rules/x{inject}"), 404),
        (format!("/api/nowhere{inject}"), 404),
        (format!("/api/agents?x{inject}=1"), 400),
    ] {
        let mut resp = http.get(format!("{}{url}", s.base)).call().expect("HTTP exchange");
        assert_eq!(resp.status().as_u16(), status, "{url}");
        for (name, value) in resp.headers() {
            let value = value.to_str().unwrap_or("");
            assert!(
                !matches!(name.as_str(), "set-cookie" | "x-injected") && !value.contains("evil"),
                "{url}: injected header {name}: {value}"
            );
        }
        let text = resp.body_mut().read_to_string().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON error body");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.contains('\r') && !msg.contains('\n'), "{url}: raw CR/LF in {msg:?}");
    }
}

#[test]
fn very_long_and_invalid_utf8_values_are_refused_briefly() {
    let s = Stack::start();
    s.activate(&s.sim("long-1"));
    for n in [300, 8 * 1024, 60 * 1024] {
        let long = "A".repeat(n);
        for (url, param) in [
            (format!("/api/agents?q={long}"), "q"),
            (format!("/api/agents?name={long}"), "name"),
            (format!("/api/agents?sort={long}"), "sort"),
            (format!("/api/events?agent={long}"), "agent"),
            (format!("/api/alerts?rule={long}"), "rule"),
            (format!("/api/agents/{long}"), "id"),
        ] {
            let a = s.get(&url);
            assert_bad_parameter(&s, &url, &a, param);
            assert!(!a.text.contains(&"A".repeat(65)), "{param}: the {n}-byte value is echoed whole");
        }
        // Paths may be long, up to 4096 bytes.
        let url = format!("/api/agents/long-1/files?path=%2F{long}");
        let a = s.get(&url);
        if n < 4096 {
            assert_eq!(a.error(404).0, "not_found");
        } else {
            assert_bad_parameter(&s, &url, &a, "path");
        }
        assert!(a.text.len() < 600, "{n}: {} bytes of answer", a.text.len());
        // A name nobody declared, however long, is quoted back bounded.
        let url = format!("/api/agents?{long}=1");
        let a = s.get(&url);
        assert_eq!(a.error(400).0, "bad_parameter");
        assert!(a.text.len() < 600, "{n}: {} bytes of answer", a.text.len());
    }
    // Beyond what a URI may hold (64 KiB), the HTTP layer refuses before the API:
    // still a 4xx, with nothing of the request in it. Raw HTTP, as no client
    // library builds such a URI.
    let (status, answer) = raw_get(&s, &format!("/api/agents?q={}", "B".repeat(100 * 1024)));
    assert!((400..500).contains(&status), "{status} {}", &answer[..answer.len().min(300)]);
    assert!(!answer.contains("BBBB"), "the oversized value is echoed");
    for leak in LEAKS {
        assert!(!answer.to_lowercase().contains(leak), "{leak}: {answer}");
    }

    for bad in
        ["%FF", "%FE%FF", "%C0%AF", "%E0%80%AF", "%ED%A0%80", "%F8%88%80%80%80", "%F4%90%80%80", "a%C3"]
    {
        for (path, param) in [
            ("/api/agents", "q"),
            ("/api/agents", "name"),
            ("/api/agents", "sort"),
            ("/api/agents/long-1/files", "path"),
            ("/api/agents/long-1/files", "prefix"),
            ("/api/events", "agent"),
            ("/api/alerts", "rule"),
        ] {
            let url = format!("{path}?{param}={bad}");
            let a = s.get(&url);
            assert_bad_parameter(&s, &url, &a, param);
            assert!(a.error(400).1.contains("not UTF-8"), "{url}: {}", a.text);
        }
        let url = format!("/api/agents/{bad}");
        assert_bad_parameter(&s, &url, &s.get(&url), "id");
    }
    assert_eq!(s.get_ok("/api/agents")["total"], 1);
}

/// GET over a plain socket: (status, whole answer with headers).
fn raw_get(s: &Stack, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = write!(conn, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    // The server may close while the request is still being sent; what it answered
    // before that is what counts.
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}
