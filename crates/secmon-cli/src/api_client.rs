//! Blocking HTTP client for the manager API. Turns the API's error JSON into one
//! line (`API error 409 agent_not_active: ...`) and a refused connection into a hint
//! about `secmon up` and `--api`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

/// Connect timeout: the manager is usually local or near; fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout: above the API's longest command wait (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest response read (a page of 1000 events of up to 1 MiB each is the worst case).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
}

enum Method {
    Get,
    Post(Value),
    Patch(Value),
    Delete,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("secmon-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_owned(), agent }
    }

    /// GET `path` with the query pairs; `None` values are left out.
    pub fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> anyhow::Result<Value> {
        let pairs: Vec<(&str, &str)> =
            query.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
        self.call(Method::Get, path, &pairs)
    }

    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::Post(body), path, &[])
    }

    pub fn patch(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::Patch(body), path, &[])
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::Delete, path, &[])
    }

    fn call(&self, method: Method, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            Method::Get => self.agent.get(&url).query_pairs(query.iter().copied()).call(),
            Method::Delete => self.agent.delete(&url).call(),
            Method::Post(body) => self.agent.post(&url).send_json(body),
            Method::Patch(body) => self.agent.patch(&url).send_json(body),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the response of {url}"))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).with_context(|| {
                format!("the manager API at {} answered something that is not JSON", self.base)
            });
        }
        Err(anyhow!(error_line(status, &text)))
    }

    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                anyhow!("invalid API URL {:?}: {e} (expected e.g. http://127.0.0.1:8080)", self.base)
            }
            ureq::Error::Timeout(_) => {
                anyhow!("the manager API at {} did not answer in time ({e})", self.base)
            }
            e => anyhow!(
                "cannot reach the manager API at {}: {e} (is `secmon up` running? set --api or SECMON_API)",
                self.base
            ),
        }
    }
}

/// `API error 409 agent_not_active: agent ... is disconnected` from the API's error
/// JSON, or the status and the start of the body when it is not that JSON.
fn error_line(status: u16, body: &str) -> String {
    let parsed: Option<(String, String)> = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        Some((e.get("code")?.as_str()?.to_owned(), e.get("message")?.as_str()?.to_owned()))
    });
    match parsed {
        Some((code, message)) => format!("API error {status} {code}: {message}"),
        None => {
            let first: String = body.lines().next().unwrap_or("").chars().take(200).collect();
            if first.is_empty() {
                format!("API error {status}")
            } else {
                format!("API error {status}: {first}")
            }
        }
    }
}

/// Percent-encodes one path segment (an agent id typed by the user), so `a/b` or
/// `..` cannot address another route; the API then rejects it as an invalid id.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        let body = r#"{"error":{"code":"agent_not_active","message":"agent a1 is disconnected"}}"#;
        assert_eq!(error_line(409, body), "API error 409 agent_not_active: agent a1 is disconnected");
        assert_eq!(
            error_line(502, "<html>bad gateway</html>\nmore"),
            "API error 502: <html>bad gateway</html>"
        );
        assert_eq!(error_line(500, ""), "API error 500");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web-01_a"), "web-01_a");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b*"), "a%20b%2A");
    }
}
