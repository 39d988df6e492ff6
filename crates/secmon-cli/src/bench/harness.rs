//! What every bench runs against: its own `nats-server` (JetStream, temp store, free
//! port) and an in-process manager (temp SQLite database, API on a free port), so a
//! bench measures the real ingest and API paths and never touches a running stack.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use secmon_config::Validate;
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_proto::Subjects;

use crate::nats_child::NatsChild;

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
    nats: NatsChild,
    pub manager: ManagerHandle,
    pub subjects: Subjects,
    /// Manager API base URL.
    pub api: String,
}

impl Harness {
    pub async fn start(o: &HarnessOptions) -> anyhow::Result<Self> {
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
        cfg.validate().context("bench manager config")?;
        let subjects = Subjects::new(cfg.nats.subject_prefix.clone());
        let manager = Manager::start(cfg).await.context("cannot start the manager")?;
        let api = crate::http::api_base(manager.api_addr());
        Ok(Self { dir, nats, manager, subjects, api })
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

    pub async fn stop(mut self) {
        self.manager.shutdown().await;
        self.nats.proc.stop(Duration::from_secs(10)).await;
    }
}
