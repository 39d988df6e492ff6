//! `secmon-agent [--config PATH]`: loads the config (writing the commented default one
//! first when there is none), enrolls first when `[enrollment]` says so and there are
//! no creds yet, starts the agent, and maps signals: SIGTERM/SIGINT stop it cleanly,
//! SIGHUP reloads the config.
//!
//! `secmon-agent enroll --manager https://HOST:PORT --token T`: enrolls and exits.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secmon_agent::default_config::{self, DEFAULT_PATH};
use secmon_agent::enroll::{self, EnrollRequest};
use secmon_agent::{Agent, AgentConfig, AgentOptions, LogLevelHook};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// secmon host agent: registers with the manager over NATS, sends heartbeats,
/// answers commands and publishes events through an on-disk spool.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML). When it does not exist, a commented default config is
    /// written there first (directories created, mode 0640) and used.
    /// SECMON_<SECTION>_<KEY> environment variables override its values.
    #[arg(long, short, global = true, value_name = "PATH", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this host with the manager: pins the manager's CA by the token's
    /// fingerprint, generates the agent's key here, and writes the NATS creds
    /// (state dir, mode 0600), the CA and the [nats] keys of the config.
    Enroll(EnrollArgs),
}

#[derive(clap::Args)]
struct EnrollArgs {
    /// The manager's API, https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    manager: String,
    /// Enrollment token from the manager (SE1.<ca fingerprint>.<secret>); the
    /// environment variable keeps it out of the process list.
    #[arg(long, value_name = "TOKEN", env = "SECMON_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// SHA-256 fingerprint of the manager's CA; must agree with the token's.
    #[arg(long, value_name = "HEX")]
    ca_fingerprint: Option<String>,
    /// Name of this agent in the fleet (default: the config's name, or the host name).
    #[arg(long)]
    name: Option<String>,
    /// Enroll again even though this host is enrolled (a new agent id and key).
    #[arg(long)]
    force: bool,
}

impl std::fmt::Debug for EnrollArgs {
    // Hand-written so the token never prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("manager", &self.manager)
            .field("token", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("name", &self.name)
            .field("force", &self.force)
            .finish()
    }
}

fn run_enroll(config: PathBuf, a: EnrollArgs) -> anyhow::Result<()> {
    init_tracing("warn")?;
    let req = EnrollRequest {
        manager: a.manager,
        token: a.token,
        ca_fingerprint: a.ca_fingerprint,
        config_path: config,
        name: a.name,
        force: a.force,
    };
    let done = enroll::enroll(&req).context("enrollment failed")?;
    print!("{}", enroll::summary(&done));
    println!("Start (or restart) secmon-agent to connect with this identity.");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Enroll(a)) = args.command {
        return run_enroll(args.config, a);
    }
    let path = &args.config;
    let wrote = default_config::write_if_missing(path).with_context(|| {
        format!(
            "no config file at {} and the default one cannot be written there; \
             create it, or pass --config PATH",
            path.display()
        )
    })?;
    let mut config: AgentConfig =
        secmon_config::load(Some(path)).with_context(|| format!("bad config {}", path.display()))?;
    let log_level_hook = init_tracing(&config.log.level)?;
    if wrote {
        tracing::info!(
            path = %path.display(),
            "no config file found: wrote the default configuration there and starting with it"
        );
    }
    if config.enrollment.is_configured() {
        let creds = enroll::creds_path(&config.agent.state_dir);
        if creds.exists() {
            tracing::debug!(creds = %creds.display(), "already enrolled; [enrollment] not used");
        } else {
            config = enroll_on_first_start(path, &config)?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(
        config,
        AgentOptions { config_path: Some(args.config), sensors: Vec::new(), log_level_hook },
    ))
}

/// `[enrollment]` with no creds yet: enrolls (as `secmon-agent enroll` does), then
/// starts with the config enrollment updated.
fn enroll_on_first_start(path: &std::path::Path, config: &AgentConfig) -> anyhow::Result<AgentConfig> {
    let e = &config.enrollment;
    tracing::info!(manager = %e.manager, "not enrolled yet: enrolling with the manager from [enrollment]");
    let req = EnrollRequest {
        manager: e.manager.clone(),
        token: e.token.clone(),
        ca_fingerprint: Some(e.ca_fingerprint.clone()).filter(|f| !f.trim().is_empty()),
        config_path: path.to_owned(),
        name: None,
        force: false,
    };
    enroll::enroll(&req).context("enrollment from [enrollment] failed")?;
    secmon_config::load(Some(path)).with_context(|| format!("bad config {} after enrollment", path.display()))
}

async fn run(config: AgentConfig, opts: AgentOptions) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let state_dir = config.agent.state_dir.clone();
    let agent = Agent::start(config, opts)
        .await
        .with_context(|| format!("cannot start the agent (state dir {})", state_dir.display()))?;
    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match agent.reload_config().await {
                Ok(o) => tracing::info!(changed = ?o.changed, restart_required = ?o.restart_required, "SIGHUP: config reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded; keeping the running config"),
            },
        }
    };
    agent.shutdown(reason).await;
    Ok(())
}

/// Logs to stderr with `log.level`, or `RUST_LOG` when set. Returns the hook that
/// makes `log.level` reloadable, unless `RUST_LOG` pins the filter.
fn init_tracing(level: &str) -> anyhow::Result<Option<LogLevelHook>> {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match &from_env {
        Some(v) => EnvFilter::try_new(v).with_context(|| format!("RUST_LOG={v:?} is not a valid filter"))?,
        None => EnvFilter::try_new(with_quiet_nats(level))
            .with_context(|| format!("log.level {level:?} is not a valid filter"))?,
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    if from_env.is_some() {
        return Ok(None);
    }
    let hook: LogLevelHook = Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(with_quiet_nats(level)).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    Ok(Some(hook))
}

/// async-nats logs each connection event itself, and an ERROR "max reconnection
/// attempts reached" whenever a connection ends: the agent makes a new client per
/// connection on purpose and logs its own lines, so those are hidden unless
/// `log.level` (or `RUST_LOG`) names `async_nats`.
fn with_quiet_nats(level: &str) -> String {
    if level.contains("async_nats") {
        level.to_owned()
    } else {
        format!("{level},async_nats=warn,async_nats::connector=off")
    }
}
