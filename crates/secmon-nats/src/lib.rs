//! The NATS connection every secmon daemon uses: the `[nats]` config section and a
//! connect function with unbounded reconnects, exponential backoff and full jitter
//! (plus `connect_once`, for a caller that makes a new client per connection).
//! Optional authentication (user/password, token, JWT creds file) and TLS (custom
//! CA, client certificate) apply the same way to both.
//!
//! Invariant: the only place that builds `async_nats::ConnectOptions`, so reconnect
//! behaviour, TLS and credentials are the same in every daemon. Secrets (password,
//! token, creds seed) never appear in Debug output or in our logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A tracing directive daemons add to their log filter: async-nats logs the whole
/// CONNECT line, password and token included, at `trace` level in this module.
pub const QUIET_SECRETS_DIRECTIVE: &str = "async_nats::connection=debug";

/// `[nats]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// JWT + NKey seed creds file (`nsc` format); must not be readable by group or
    /// others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// PEM CA certificate(s) the server's certificate must chain to (instead of the
    /// system roots). Setting it requires TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; goes with `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; must not be readable by group or others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Refuse a connection without TLS (implied by `tls_ca`, `tls_cert` or a
    /// `tls://` URL).
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
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
            credentials_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            user: None,
            password: None,
            token: None,
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    // Hand-written so the password, the token and a password in the URL never print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .field("reconnect_base_delay", &self.reconnect_base_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .finish()
    }
}

/// The URL list with any `user:password@` (or `token@`) userinfo replaced, for logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let (scheme, rest) = match u.find("://") {
                Some(i) => (&u[..i + 3], &u[i + 3..]),
                None => ("", u),
            };
            // Userinfo ends at the last '@' before the path.
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}<redacted>@{}", &rest[at + 1..]),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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
                return Err(ConfigError::invalid(
                    "nats.url",
                    format!("unsupported scheme in {:?}", redact_url(u)),
                ));
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
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::invalid("nats.tls_key", "tls_cert and tls_key go together"));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConfigError::invalid("nats.password", "user and password go together"));
        }
        let methods = [self.user.is_some(), self.token.is_some(), self.credentials_file.is_some()];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError::invalid(
                "nats.credentials_file",
                "choose one of user/password, token or credentials_file",
            ));
        }
        if self.token.as_deref() == Some("") {
            return Err(ConfigError::invalid("nats.token", "must not be empty"));
        }
        let files = [
            ("nats.credentials_file", &self.credentials_file, true),
            ("nats.tls_ca", &self.tls_ca, false),
            ("nats.tls_cert", &self.tls_cert, false),
            ("nats.tls_key", &self.tls_key, true),
        ];
        for (key, path, secret) in files {
            if let Some(path) = path {
                check_file(key, path, secret)?;
            }
        }
        Ok(())
    }

    /// Whether connections must use TLS.
    pub fn tls_required(&self) -> bool {
        self.tls_required
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.url.split(',').any(|u| u.trim().starts_with("tls://"))
    }
}

/// The file must exist; a secret (key, creds) must not be readable by group or
/// others, as ssh does for private keys.
fn check_file(key: &str, path: &Path, secret: bool) -> Result<(), secmon_config::ConfigError> {
    use secmon_config::ConfigError;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ConfigError::invalid(key, format!("{} is not a file", path.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Err(ConfigError::invalid(
            key,
            format!("{} is accessible by group or others (mode {mode:o}); chmod 600 it", path.display()),
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `url` is redacted (no userinfo).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("cannot use NATS credentials file {path}: {source}")]
    Credentials { path: PathBuf, source: std::io::Error },
}

impl ConnectError {
    fn connect(cfg: &NatsConfig, source: async_nats::ConnectError) -> Self {
        ConnectError::Connect { url: redact_url(&cfg.url), source }
    }
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
    let mut opts = options(async_nats::ConnectOptions::new(), cfg, client_name, inbox_prefix, true)
        .await?
        .max_reconnects(None);
    if retry_initial {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(cfg.url.as_str()).await.map_err(|source| ConnectError::connect(cfg, source))
}

/// Connects once and never reconnects: at the first disconnect the client stops for
/// good, and whatever was still queued in it is dropped instead of being sent on a
/// later connection. For callers that must know which connection carried which
/// message (the agent's ordered event publisher, the bridge's publisher); they own
/// the retry loop (with [`backoff`]) and make a new client per connection.
///
/// async-nats has no "never reconnect" setting (`max_reconnects(0)` means
/// unlimited), so the client gets one reconnect attempt, which its auth callback
/// refuses; its task then ends. Because an auth callback replaces every other
/// credential, the callback itself supplies user/password, token or the creds
/// file's JWT and nonce signature on the first connection.
pub async fn connect_once(
    cfg: &NatsConfig,
    client_name: &str,
    inbox_prefix: Option<String>,
) -> Result<async_nats::Client, ConnectError> {
    let creds = match &cfg.credentials_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConnectError::Credentials { path: path.clone(), source })?;
            let (jwt, key) = parse_creds(&text).map_err(|e| ConnectError::Credentials {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            Some((jwt, Arc::new(key)))
        }
        None => None,
    };
    let (user, password, token) = (cfg.user.clone(), cfg.password.clone(), cfg.token.clone());
    let connected = Arc::new(AtomicBool::new(false));
    let only_once = async_nats::ConnectOptions::with_auth_callback(move |nonce: Vec<u8>| {
        let again = connected.swap(true, Ordering::SeqCst);
        let mut auth = async_nats::Auth::new();
        auth.username = user.clone();
        auth.password = password.clone();
        auth.token = token.clone();
        let creds = creds.clone();
        async move {
            if again {
                return Err(async_nats::AuthError::new("connect_once client: not reconnecting"));
            }
            if let Some((jwt, key)) = creds {
                auth.jwt = Some(jwt);
                auth.signature = Some(key.sign(&nonce).map_err(async_nats::AuthError::new)?);
            }
            Ok(auth)
        }
    });
    options(only_once, cfg, client_name, inbox_prefix, false)
        .await?
        .max_reconnects(1)
        .connect(cfg.url.as_str())
        .await
        .map_err(|source| ConnectError::connect(cfg, source))
}

/// The user JWT and the NKey seed of a creds file (`nsc` format: each value between
/// two `-----...-----` marker lines, the JWT first).
pub fn parse_creds(text: &str) -> Result<(String, nkeys::KeyPair), String> {
    let is_marker = |l: &str| {
        let l = l.trim();
        l.len() >= 6 && l.starts_with("---") && l.ends_with("---")
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    for w in lines.windows(3) {
        if is_marker(w[0]) && is_marker(w[2]) && !w[1].trim().is_empty() && !is_marker(w[1]) {
            values.push(w[1].trim());
        }
    }
    let [jwt, seed, ..] = values[..] else {
        return Err("expected a user JWT and an NKey seed block".into());
    };
    // The nkeys error text never contains the seed.
    let key = nkeys::KeyPair::from_seed(seed).map_err(|e| format!("invalid NKey seed: {e}"))?;
    Ok((jwt.to_owned(), key))
}

/// The options every secmon client shares: name, timeouts, backoff, logging, TLS,
/// and (with `with_auth`) the credentials.
async fn options(
    base_opts: async_nats::ConnectOptions,
    cfg: &NatsConfig,
    client_name: &str,
    inbox_prefix: Option<String>,
    with_auth: bool,
) -> Result<async_nats::ConnectOptions, ConnectError> {
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
    if with_auth {
        if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &cfg.token {
            opts = opts.token(token.clone());
        }
        if let Some(path) = &cfg.credentials_file {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials { path: path.clone(), source })?;
        }
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(opts.require_tls(cfg.tls_required()))
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

    #[test]
    fn debug_redacts_password_token_and_url_userinfo() {
        let c = NatsConfig {
            url: "nats://alice:hunter2-url@127.0.0.1:4222,nats://10.0.0.2:4222".into(),
            user: Some("alice".into()),
            password: Some("hunter2-pass".into()),
            token: Some("s3cr3t-token".into()),
            ..Default::default()
        };
        let text = format!("{c:?} {c:#?}");
        for secret in ["hunter2-url", "hunter2-pass", "s3cr3t-token"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("alice") && text.contains("<redacted>") && text.contains("10.0.0.2:4222"));
        assert_eq!(redact_url("tls://tok@h:1/x"), "tls://<redacted>@h:1/x");
        assert_eq!(redact_url("h:4222"), "h:4222");
    }

    #[test]
    fn old_configs_load_new_fields_are_optional_and_unknown_keys_still_fail() {
        let old: NatsConfig = toml::from_str("url = \"nats://h:1\"\nsubject_prefix = \"x\"").unwrap();
        assert_eq!(
            old,
            NatsConfig { url: "nats://h:1".into(), subject_prefix: "x".into(), ..Default::default() }
        );
        let text = toml::to_string(&old).unwrap();
        for absent in ["credentials_file", "tls_", "user", "password", "token"] {
            assert!(!text.contains(absent), "{absent} serialized: {text}");
        }
        let with: NatsConfig = toml::from_str("user = \"u\"\npassword = \"p\"\ntls_required = true").unwrap();
        assert_eq!(
            (with.user.as_deref(), with.password.as_deref(), with.tls_required),
            (Some("u"), Some("p"), true)
        );
        assert!(toml::from_str::<NatsConfig>("passwd = \"p\"").is_err());
    }

    #[test]
    fn validates_auth_and_tls_settings() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let key = dir.path().join("client.key");
        std::fs::write(&pem, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = |c: NatsConfig| c.validate().unwrap_err().to_string();

        let ok = NatsConfig {
            tls_ca: Some(pem.clone()),
            tls_cert: Some(pem.clone()),
            tls_key: Some(key.clone()),
            ..Default::default()
        };
        ok.validate().unwrap();
        assert!(ok.tls_required(), "a CA or client certificate requires TLS");
        assert!(!NatsConfig::default().tls_required());

        assert!(
            err(NatsConfig { tls_cert: Some(pem.clone()), ..Default::default() }).contains("nats.tls_key")
        );
        let missing = dir.path().join("nope.pem");
        assert!(err(NatsConfig { tls_ca: Some(missing), ..Default::default() }).contains("nats.tls_ca"));
        assert!(
            err(NatsConfig { tls_ca: Some(dir.path().into()), ..Default::default() }).contains("not a file")
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open_key =
            err(NatsConfig { tls_cert: Some(pem.clone()), tls_key: Some(key.clone()), ..Default::default() });
        assert!(open_key.contains("nats.tls_key") && open_key.contains("chmod 600"), "{open_key}");
        assert!(
            err(NatsConfig { credentials_file: Some(key.clone()), ..Default::default() })
                .contains("nats.credentials_file")
        );

        assert!(err(NatsConfig { user: Some("u".into()), ..Default::default() }).contains("nats.password"));
        let both = NatsConfig {
            user: Some("u".into()),
            password: Some("p".into()),
            token: Some("t".into()),
            ..Default::default()
        };
        assert!(err(both).contains("choose one"));
        NatsConfig { token: Some("t".into()), ..Default::default() }.validate().unwrap();
    }

    #[test]
    fn parses_a_creds_file_and_signs_with_its_seed() {
        let kp = nkeys::KeyPair::new_user();
        let seed = kp.seed().unwrap();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let (jwt, key) = parse_creds(&creds).unwrap();
        assert_eq!(jwt, "eyJhbGciOiJlZDI1NTE5In0.e30.c2ln");
        assert_eq!(key.public_key(), kp.public_key());
        let sig = key.sign(b"nonce").unwrap();
        kp.verify(b"nonce", &sig).unwrap();
        let e =
            parse_creds("-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n").unwrap_err();
        assert!(e.contains("NKey seed"), "{e}");
        let bad = creds.replace(&seed, "SUNOTASEED");
        let e = parse_creds(&bad).unwrap_err();
        assert!(!e.contains(&seed));
    }

    fn auth_server(block: &str) -> secmon_testkit::NatsServer {
        secmon_testkit::NatsServer::start_with(secmon_testkit::NatsServerOptions {
            jetstream: false,
            extra_config: format!("authorization {{\n{block}\n}}\n"),
        })
    }

    async fn round_trip(c: &async_nats::Client) {
        c.flush().await.expect("flush on an authenticated connection");
        assert_eq!(c.connection_state(), async_nats::connection::State::Connected);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn user_password_and_token_work_for_connect_and_connect_once() {
        let server = auth_server("  user: bridge\n  password: \"pw-right-1\"");
        let good = NatsConfig {
            url: server.url(),
            user: Some("bridge".into()),
            password: Some("pw-right-1".into()),
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        round_trip(&connect(&good, "t", None, false).await.unwrap()).await;
        round_trip(&connect_once(&good, "t", None).await.unwrap()).await;
        let wrong = NatsConfig { password: Some("pw-wrong-2".into()), ..good.clone() };
        let e1 = connect(&wrong, "t", None, false).await.unwrap_err().to_string();
        let e2 = connect_once(&wrong, "t", None).await.unwrap_err().to_string();
        assert!(!e1.contains("pw-wrong-2") && !e2.contains("pw-wrong-2"), "{e1} {e2}");
        let anonymous = NatsConfig { user: None, password: None, ..good.clone() };
        assert!(connect_once(&anonymous, "t", None).await.is_err(), "the server requires a password");

        let server = auth_server("  token: \"tok-right-3\"");
        let good = NatsConfig { url: server.url(), token: Some("tok-right-3".into()), ..Default::default() };
        round_trip(&connect(&good, "t", None, false).await.unwrap()).await;
        round_trip(&connect_once(&good, "t", None).await.unwrap()).await;
        let wrong = NatsConfig { token: Some("tok-wrong-4".into()), ..good };
        assert!(connect_once(&wrong, "t", None).await.is_err());
        assert!(connect(&wrong, "t", None, false).await.is_err());
    }
}
