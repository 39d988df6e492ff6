//! Blocking HTTP(S) client for the manager API. Sends `Authorization: Bearer` from
//! `SECMON_TOKEN` or the stored login (only to the API that login is for), trusts the
//! deployment's CA from the stored login or `SECMON_CA`, and turns the API's error JSON
//! into one line (`API error 409 agent_not_active: ...`; 401 and 403 into what to do
//! about them) and a refused connection into a hint about `secmon up` and `--api`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::credentials::{self, Credentials};

/// Connect timeout: the manager is usually local or near; fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout: above the API's longest command wait (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest response read (a page of 1000 events of up to 1 MiB each is the worst case).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// What the CLI shows for a 401 from any route but the login itself.
pub const NOT_LOGGED_IN: &str = "not logged in or the session expired: run `secmon login`";

/// How requests authenticate and which CA the API's certificate must chain to.
#[derive(Clone, Default)]
pub struct Auth {
    pub token: Option<String>,
    /// PEM; `None`: the system's (webpki) roots.
    pub ca_pem: Option<String>,
    /// The logged-in role, for the 403 message.
    pub role: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("role", &self.role)
            .finish()
    }
}

impl Auth {
    /// From the environment and the stored login for `base`: `SECMON_TOKEN` wins over
    /// the stored token, `SECMON_CA` (a PEM file) over the stored CA.
    pub fn resolve(base: &str) -> anyhow::Result<Self> {
        let stored = credentials::load(&credentials::default_path()?)?.filter(|c| c.is_for(base));
        Self::from_parts(stored, env("SECMON_TOKEN"), env("SECMON_CA"))
    }

    fn from_parts(
        stored: Option<Credentials>,
        env_token: Option<String>,
        env_ca: Option<String>,
    ) -> anyhow::Result<Self> {
        let ca_pem = match env_ca {
            Some(path) => Some(
                std::fs::read_to_string(&path).with_context(|| format!("cannot read SECMON_CA {path}"))?,
            ),
            None => stored.as_ref().and_then(|c| c.ca_pem.clone()),
        };
        let (token, role) = match (env_token, stored) {
            (Some(t), _) => (Some(t), None),
            (None, Some(c)) => (Some(c.token), Some(c.role)),
            (None, None) => (None, None),
        };
        Ok(Self { token, ca_pem, role })
    }

    pub fn from_credentials(c: &Credentials) -> Self {
        Self { token: Some(c.token.clone()), ca_pem: c.ca_pem.clone(), role: Some(c.role.clone()) }
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
    auth: Auth,
    /// Why the stored login or the CA could not be used; reported at the first call,
    /// so `new` stays infallible for the commands that build a client up front.
    setup_error: Option<String>,
}

/// A response as status and text, for callers that handle statuses themselves.
pub struct RawResponse {
    pub status: u16,
    pub text: String,
    /// `Retry-After` in seconds, when the API sent it (lockouts).
    pub retry_after: Option<u64>,
}

enum Method {
    Get,
    Post(Value),
    Patch(Value),
    Delete,
}

impl Method {
    fn name(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post(_) => "POST",
            Method::Patch(_) => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl ApiClient {
    /// A client for `base` with the authentication of [`Auth::resolve`].
    pub fn new(base: &str) -> Self {
        match Auth::resolve(base) {
            Ok(auth) => Self::with_auth(base, auth),
            Err(e) => {
                let mut c = Self::with_auth(base, Auth::default());
                c.setup_error = Some(format!("{e:#}"));
                c
            }
        }
    }

    /// A client for `base` with exactly `auth`.
    pub fn with_auth(base: &str, auth: Auth) -> Self {
        let mut setup_error = None;
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("secmon-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &auth.ca_pem {
            match root_certs(pem) {
                Ok(roots) => {
                    builder = builder.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
                }
                Err(e) => setup_error = Some(format!("{e:#}")),
            }
        }
        let agent = builder.build().into();
        Self { base: base.trim_end_matches('/').to_owned(), agent, auth, setup_error }
    }

    pub fn base(&self) -> &str {
        &self.base
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

    /// DELETE `path`; a 204 answers `Value::Null`.
    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::Delete, path, &[])
    }

    /// POST `body` and return the answer as text (for routes that answer a file).
    pub fn post_text(&self, path: &str, body: Value) -> anyhow::Result<String> {
        let r = self.send(Method::Post(body), path, &[])?;
        self.check(&r, "POST", path)?;
        Ok(r.text)
    }

    /// POST without the error mapping: the status and body as they came.
    pub fn post_raw(&self, path: &str, body: Value) -> anyhow::Result<RawResponse> {
        self.send(Method::Post(body), path, &[])
    }

    fn call(&self, method: Method, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let name = method.name();
        let r = self.send(method, path, query)?;
        self.check(&r, name, path)?;
        if r.text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&r.text)
            .with_context(|| format!("the manager API at {} answered something that is not JSON", self.base))
    }

    fn check(&self, r: &RawResponse, method: &str, path: &str) -> anyhow::Result<()> {
        if (200..300).contains(&r.status) {
            return Ok(());
        }
        Err(anyhow!(match r.status {
            401 => NOT_LOGGED_IN.to_owned(),
            403 => forbidden_line(self.auth.role.as_deref(), method, path, &r.text),
            s => error_line(s, &r.text),
        }))
    }

    fn send(&self, method: Method, path: &str, query: &[(&str, &str)]) -> anyhow::Result<RawResponse> {
        if let Some(e) = &self.setup_error {
            bail!("{e}");
        }
        let url = format!("{}{path}", self.base);
        let bearer = self.auth.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! auth {
            ($req:expr) => {
                match &bearer {
                    Some(b) => $req.header("Authorization", b.as_str()),
                    None => $req,
                }
            };
        }
        let result = match method {
            Method::Get => auth!(self.agent.get(&url)).query_pairs(query.iter().copied()).call(),
            Method::Delete => auth!(self.agent.delete(&url)).call(),
            Method::Post(body) => auth!(self.agent.post(&url)).send_json(body),
            Method::Patch(body) => auth!(self.agent.patch(&url)).send_json(body),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the response of {url}"))?;
        Ok(RawResponse { status, text, retry_after })
    }

    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        let text = e.to_string();
        match e {
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                anyhow!("invalid API URL {:?}: {e} (expected e.g. https://127.0.0.1:8443)", self.base)
            }
            ureq::Error::Timeout(_) => {
                anyhow!("the manager API at {} did not answer in time ({e})", self.base)
            }
            _ if is_tls_problem(&text) => anyhow!(
                "TLS with the manager API at {} failed: {text} (its certificate must chain to the \
                 deployment's CA: `secmon login --ca PATH`, or set SECMON_CA)",
                self.base
            ),
            e => anyhow!(
                "cannot reach the manager API at {}: {e} (is `secmon up` running? set --api or SECMON_API)",
                self.base
            ),
        }
    }
}

fn is_tls_problem(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["certificate", "unknownissuer", "tls", "handshake"].iter().any(|k| t.contains(k))
}

/// The certificates of a PEM text, as ureq's root set.
fn root_certs(pem: &str) -> anyhow::Result<ureq::tls::RootCerts> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem.as_bytes()) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.context("the stored CA certificate is not valid PEM")?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("the CA (SECMON_CA or the stored login) holds no certificate");
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// The API's error code and message: `{"error": {"code", "message"}}`, or the flat
/// `{"error": code, "message"?}` some routes answer.
fn parse_error(body: &str) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    if let Some(code) = e.as_str() {
        return Some((code.to_owned(), v.get("message").and_then(Value::as_str).map(str::to_owned)));
    }
    Some((e.get("code")?.as_str()?.to_owned(), e.get("message").and_then(Value::as_str).map(str::to_owned)))
}

/// `API error 409 agent_not_active: agent ... is disconnected` from the API's error
/// JSON, or the status and the start of the body when it is not that JSON.
pub fn error_line(status: u16, body: &str) -> String {
    match parse_error(body) {
        Some((code, Some(message))) => format!("API error {status} {code}: {message}"),
        Some((code, None)) => format!("API error {status} {code}"),
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

/// `forbidden: your role (analyst) may not POST /api/users: <the API's reason>`.
fn forbidden_line(role: Option<&str>, method: &str, path: &str, body: &str) -> String {
    let who = role.map(|r| format!(" ({r})")).unwrap_or_default();
    let why = parse_error(body).and_then(|(_, m)| m).map(|m| format!(": {m}")).unwrap_or_default();
    format!("forbidden: your role{who} may not {method} {path}{why}")
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
        assert_eq!(error_line(401, r#"{"error":"unauthorized"}"#), "API error 401 unauthorized");
        assert_eq!(
            error_line(502, "<html>bad gateway</html>\nmore"),
            "API error 502: <html>bad gateway</html>"
        );
        assert_eq!(error_line(500, ""), "API error 500");
    }

    #[test]
    fn forbidden_says_role_and_request() {
        let body = r#"{"error":{"code":"forbidden","message":"analyst may not send reload-config"}}"#;
        assert_eq!(
            forbidden_line(Some("analyst"), "POST", "/api/agents/a/command", body),
            "forbidden: your role (analyst) may not POST /api/agents/a/command: analyst may not send reload-config"
        );
        assert_eq!(
            forbidden_line(None, "GET", "/api/audit", ""),
            "forbidden: your role may not GET /api/audit"
        );
    }

    #[test]
    fn env_token_wins_and_stored_ca_is_kept() {
        let stored = Credentials {
            api: "https://h:1".into(),
            token: "stored".into(),
            expires_at: None,
            username: "u".into(),
            role: "analyst".into(),
            ca_pem: Some("pem".into()),
        };
        let a = Auth::from_parts(Some(stored.clone()), None, None).unwrap();
        assert_eq!((a.token.as_deref(), a.role.as_deref()), (Some("stored"), Some("analyst")));
        let a = Auth::from_parts(Some(stored), Some("env".into()), None).unwrap();
        assert_eq!((a.token.as_deref(), a.ca_pem.as_deref()), (Some("env"), Some("pem")));
        assert!(!format!("{a:?}").contains("env\""));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web-01_a"), "web-01_a");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b*"), "a%20b%2A");
    }
}
