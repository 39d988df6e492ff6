//! A small blocking JSON-over-HTTP helper for `secmon up` and `secmon bench`, which
//! need status codes as values (not errors) and a pooled connection.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// A client whose every call is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(64)
            .build();
        Self { agent: ureq::Agent::new_with_config(config) }
    }

    /// GET `url`: the status code and the body as JSON (`Null` when it is not JSON).
    pub fn get(&self, url: &str) -> anyhow::Result<(u16, Value)> {
        let mut resp = self.agent.get(url).call().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().with_context(|| format!("GET {url}: reading body"))?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }
}

/// The base URL a client uses for an API listening on `listen`: an unspecified
/// address (`0.0.0.0`, `::`) is reached through loopback.
pub fn api_base(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}
