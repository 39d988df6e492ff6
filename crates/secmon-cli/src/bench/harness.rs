//! What every bench runs against: its own `nats-server` (JetStream, temp store, free
//! port) and an in-process manager (temp SQLite database, API on a free port), so a
//! bench measures the real ingest and API paths and never touches a running stack.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use secmon_config::Validate;
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_manager::init::{AdminInit, CA_CERT, InitOptions};
use secmon_proto::AgentId;
use secmon_proto::Subjects;
use serde_json::{Value, json};

use crate::api_client::{ApiClient, Auth};
use crate::login::authenticate;
use crate::nats_child::NatsChild;

use super::sim::{AgentKey, SimAgent};

/// The HTTPS API of a secure harness. (No Debug: it holds the admin password.)
#[derive(Clone)]
struct SecureApi {
    /// The init CA (PEM) the API's certificate chains to.
    ca_pem: String,
    admin_password: String,
}

/// Runs `secmon-manager init` into the manager's default pki dir; returns the first
/// admin's password.
fn init_pki(cfg: &ManagerConfig, nats_port: u16) -> anyhow::Result<String> {
    let out = secmon_manager::init::init(&InitOptions {
        dir: cfg.pki_dir(),
        names: vec!["localhost".into(), "127.0.0.1".into()],
        nats_listen: format!("127.0.0.1:{nats_port}"),
        force: false,
        data_dir: Some(cfg.storage.data_dir.clone()),
        mutual_tls: false,
    })
    .context("secmon-manager init in the bench's temp dir")?;
    match out.admin {
        AdminInit::Created { password, .. } => Ok(password),
        AdminInit::Exists { .. } => bail!("the bench's fresh security database already had users"),
    }
}

/// A field of an API answer; the error names the call, never the body (it may hold a
/// token).
fn field(v: &Value, name: &str, what: &str) -> anyhow::Result<String> {
    v[name].as_str().map(str::to_owned).with_context(|| format!("{what}: no {name} in the answer"))
}

fn enroll_all(api: &str, s: &SecureApi, agents: Vec<SimAgent>) -> anyhow::Result<Vec<SimAgent>> {
    let creds = authenticate(api, Some(s.ca_pem.clone()), "admin", &s.admin_password)?;
    let admin = ApiClient::with_auth(api, Auth::from_credentials(&creds));
    let v = admin
        .post("/api/enrollment-tokens", json!({"uses": agents.len(), "expires_in": "1h"}))
        .context("POST /api/enrollment-tokens")?;
    let token = field(&v, "token", "POST /api/enrollment-tokens")?;
    // Enrollment authenticates with the token in the body, not a session.
    let anon = ApiClient::with_auth(api, Auth { ca_pem: Some(s.ca_pem.clone()), ..Auth::default() });
    let mut out = Vec::with_capacity(agents.len());
    for a in agents {
        let key = nkeys::KeyPair::new_user();
        let body = json!({
            "token": token, "public_key": key.public_key(), "hostname": a.name, "os": "simulated",
            "arch": std::env::consts::ARCH, "agent_version": format!("bench-{}", env!("CARGO_PKG_VERSION")),
            "name": a.name,
        });
        let v = anon.post("/api/enroll", body).with_context(|| format!("POST /api/enroll of {}", a.name))?;
        let id =
            AgentId::new(field(&v, "agent_id", "POST /api/enroll")?).context("agent id from /api/enroll")?;
        out.push(SimAgent { id, name: a.name, key: Some(AgentKey::new(key)) });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct HarnessOptions {
    pub heartbeat_timeout: Duration,
    pub check_interval: Duration,
    /// `[ingest] batch_size` of the manager; `None` keeps its default.
    pub batch_size: Option<usize>,
    /// Parent of the temp dir (default: the system temp dir). Put it on the disk
    /// you want to measure.
    pub dir: Option<PathBuf>,
    /// `[rules] dirs` of the manager: the Sigma rules run over every stored event.
    pub rules_dirs: Vec<PathBuf>,
}

pub struct Harness {
    dir: tempfile::TempDir,
    /// Secure mode only: the HTTPS API client and the first admin's password.
    secure: Option<SecureApi>,
    nats: NatsChild,
    pub manager: ManagerHandle,
    pub subjects: Subjects,
    /// Manager API base URL.
    pub api: String,
}

impl Harness {
    pub async fn start(o: &HarnessOptions) -> anyhow::Result<Self> {
        Self::start_with(o, false).await
    }

    /// Like [`Harness::start`], with the manager in secure mode (`[security] enabled`,
    /// `require_signatures`) on material from `secmon-manager init` in the temp dir:
    /// the API serves HTTPS with the init CA and agents must enroll and sign their
    /// events. The nats-server stays the plain one (the manager's revocation push to
    /// it fails and is retried; no bench revokes anything).
    pub async fn start_secure(o: &HarnessOptions) -> anyhow::Result<Self> {
        Self::start_with(o, true).await
    }

    async fn start_with(o: &HarnessOptions, secure: bool) -> anyhow::Result<Self> {
        let mut b = tempfile::Builder::new();
        b.prefix("secmon-bench-");
        let dir = match &o.dir {
            Some(d) => b.tempdir_in(d),
            None => b.tempdir(),
        }
        .context("cannot create the bench's temp dir")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let nats =
            NatsChild::start(dir.path(), IpAddr::V4(Ipv4Addr::LOCALHOST), port, Duration::from_secs(20))
                .await
                .context("cannot start the bench's nats-server")?;

        let mut cfg = ManagerConfig::default();
        cfg.nats.url = nats.url.clone();
        cfg.api.listen = "127.0.0.1:0".into();
        cfg.storage.data_dir = dir.path().join("manager");
        cfg.agents.heartbeat_timeout = o.heartbeat_timeout;
        cfg.agents.check_interval = o.check_interval;
        if let Some(b) = o.batch_size {
            cfg.ingest.batch_size = b;
        }
        cfg.rules.dirs = o.rules_dirs.clone();
        let admin_password = if secure {
            cfg.security.enabled = true;
            cfg.security.require_signatures = true;
            Some(init_pki(&cfg, port)?)
        } else {
            None
        };
        cfg.validate().context("bench manager config")?;
        let subjects = Subjects::new(cfg.nats.subject_prefix.clone());
        let ca = cfg.pki_dir().join(CA_CERT);
        let manager = Manager::start(cfg).await.context("cannot start the manager")?;
        let (api, secure) = match admin_password {
            Some(pw) => {
                let ca_pem =
                    std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
                (manager.api_url(), Some(SecureApi { ca_pem, admin_password: pw }))
            }
            None => (crate::http::api_base(manager.api_addr()), None),
        };
        Ok(Self { dir, secure, nats, manager, subjects, api })
    }

    /// A new NATS connection to the bench's server (a simulated agent's uplink).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .name("secmon-bench")
            .connect(self.nats.url.as_str())
            .await
            .with_context(|| format!("cannot connect to {}", self.nats.url))
    }

    /// The nats-server's pid (for its CPU time).
    pub fn nats_pid(&self) -> u32 {
        self.nats.proc.pid()
    }

    /// Where the bench keeps its data (for the report).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Secure mode: logs in as the first admin, creates one enrollment token for
    /// `agents` and enrolls each of them over `POST /api/enroll` with its own NKey;
    /// the agents take the ids the manager gives them.
    pub async fn enroll(&self, agents: Vec<SimAgent>) -> anyhow::Result<Vec<SimAgent>> {
        let Some(s) = &self.secure else { bail!("enrollment needs the secure harness") };
        let s = s.clone();
        let api = self.api.clone();
        tokio::task::spawn_blocking(move || enroll_all(&api, &s, agents)).await?
    }

    pub async fn stop(mut self) {
        self.manager.shutdown().await;
        self.nats.proc.stop(Duration::from_secs(10)).await;
    }
}
