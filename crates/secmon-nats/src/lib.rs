//! The NATS connection every secmon daemon uses: the `[nats]` config section and a
//! connect function with unbounded reconnects, exponential backoff and full jitter
//! (plus `connect_once`, for a caller that makes a new client per connection).
//!
//! Invariant: the only place that builds `async_nats::ConnectOptions`, so reconnect
//! behaviour (and, later, TLS and credentials) is the same in every daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[nats]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// Subject prefix (`secmon` gives `secmon.agent.<id>...`).
    pub subject_prefix: String,
    /// First reconnect delay; doubles per attempt up to `reconnect_max_delay`.
    #[serde(with = "secmon_config::duration")]
    pub reconnect_base_delay: Duration,
    #[serde(with = "secmon_config::duration")]
    pub reconnect_max_delay: Duration,
    /// Timeout for one connection attempt.
    #[serde(with = "secmon_config::duration")]
    pub connect_timeout: Duration,
    /// Timeout for request/reply exchanges (registration, commands).
    #[serde(with = "secmon_config::duration")]
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "secmon".into(),
            reconnect_base_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    /// Checks the section; errors name the key (`nats.url`).
    pub fn validate(&self) -> Result<(), secmon_config::ConfigError> {
        use secmon_config::ConfigError;
        if self.url.trim().is_empty() {
            return Err(ConfigError::invalid("nats.url", "must not be empty"));
        }
        for u in self.url.split(',') {
            let u = u.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"].iter().any(|p| u.starts_with(p))
                || !u.contains("://");
            if !ok {
                return Err(ConfigError::invalid("nats.url", format!("unsupported scheme in {u:?}")));
            }
        }
        let p = &self.subject_prefix;
        if p.is_empty() || p.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' '])) {
            return Err(ConfigError::invalid(
                "nats.subject_prefix",
                format!("{p:?} is not a valid subject prefix"),
            ));
        }
        if self.reconnect_base_delay.is_zero() || self.reconnect_max_delay < self.reconnect_base_delay {
            return Err(ConfigError::invalid(
                "nats.reconnect_max_delay",
                "must be at least reconnect_base_delay, which must be greater than zero",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
}

/// Delay before reconnect attempt `attempt` (1-based): exponential from `base`,
/// capped at `max`, with full jitter so a fleet does not reconnect in lockstep.
pub fn backoff(attempt: usize, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    // Full jitter, but never below a tenth of the cap so we do not spin.
    let lo = cap / 10;
    let span = cap.saturating_sub(lo).as_millis() as u64;
    lo + Duration::from_millis(if span == 0 { 0 } else { rand::random_range(0..=span) })
}

/// Connects to NATS. With `retry_initial`, returns at once and keeps trying in the
/// background (an agent must start, and spool, while NATS is down); without it, the
/// first failure is returned. Reconnects are unbounded either way.
pub async fn connect(
    cfg: &NatsConfig,
    client_name: &str,
    inbox_prefix: Option<String>,
    retry_initial: bool,
) -> Result<async_nats::Client, ConnectError> {
    let mut opts =
        options(async_nats::ConnectOptions::new(), cfg, client_name, inbox_prefix).max_reconnects(None);
    if retry_initial {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(cfg.url.as_str())
        .await
        .map_err(|source| ConnectError::Connect { url: cfg.url.clone(), source })
}

/// Connects once and never reconnects: at the first disconnect the client stops for
/// good, and whatever was still queued in it is dropped instead of being sent on a
/// later connection. For callers that must know which connection carried which
/// message (the agent's ordered event publisher); they own the retry loop (with
/// [`backoff`]) and make a new client per connection.
///
/// async-nats has no "never reconnect" setting (`max_reconnects(0)` means
/// unlimited), so the client gets one reconnect attempt, which its auth callback
/// refuses; its task then ends. (When credentials arrive, that callback must supply
/// them on the first connection.)
pub async fn connect_once(
    cfg: &NatsConfig,
    client_name: &str,
    inbox_prefix: Option<String>,
) -> Result<async_nats::Client, ConnectError> {
    let connected = Arc::new(AtomicBool::new(false));
    let only_once = async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
        let again = connected.swap(true, Ordering::SeqCst);
        async move {
            if again {
                Err(async_nats::AuthError::new("connect_once client: not reconnecting"))
            } else {
                Ok(async_nats::Auth::new())
            }
        }
    });
    options(only_once, cfg, client_name, inbox_prefix)
        .max_reconnects(1)
        .connect(cfg.url.as_str())
        .await
        .map_err(|source| ConnectError::Connect { url: cfg.url.clone(), source })
}

/// The options every secmon client shares: name, timeouts, backoff, logging.
fn options(
    base_opts: async_nats::ConnectOptions,
    cfg: &NatsConfig,
    client_name: &str,
    inbox_prefix: Option<String>,
) -> async_nats::ConnectOptions {
    let base = cfg.reconnect_base_delay;
    let max = cfg.reconnect_max_delay;
    let name = client_name.to_owned();
    let mut opts = base_opts
        .name(client_name)
        .connection_timeout(cfg.connect_timeout)
        .request_timeout(Some(cfg.request_timeout))
        .reconnect_delay_callback(move |attempt| backoff(attempt, base, max))
        .event_callback(move |event| {
            let name = name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(client = %name, "connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!(client = %name, "disconnected from NATS")
                    }
                    other => tracing::debug!(client = %name, event = %other, "NATS event"),
                }
            }
        });
    if let Some(p) = inbox_prefix {
        opts = opts.custom_inbox_prefix(p);
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 1..40 {
            let d = backoff(attempt, base, max);
            assert!(d <= max, "attempt {attempt}: {d:?}");
            let cap = base.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(d >= cap / 10, "attempt {attempt}: {d:?} below floor");
        }
        let late: std::collections::HashSet<_> = (0..50).map(|_| backoff(30, base, max)).collect();
        assert!(late.len() > 10, "no jitter: {late:?}");
    }

    #[test]
    fn validates_url_and_prefix() {
        let mut c = NatsConfig::default();
        assert!(c.validate().is_ok());
        c.url = "http://x".into();
        assert!(c.validate().unwrap_err().to_string().contains("nats.url"));
        c = NatsConfig { subject_prefix: "a.*".into(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("nats.subject_prefix"));
    }
}
