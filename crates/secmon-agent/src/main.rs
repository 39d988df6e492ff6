//! `secmon-agent [--config PATH]`: loads the config (writing the commented default one
//! first when there is none), starts the agent, and maps signals: SIGTERM/SIGINT stop
//! it cleanly, SIGHUP reloads the config.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use secmon_agent::default_config::{self, DEFAULT_PATH};
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
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_PATH)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = &args.config;
    let wrote = default_config::write_if_missing(path).with_context(|| {
        format!(
            "no config file at {} and the default one cannot be written there; \
             create it, or pass --config PATH",
            path.display()
        )
    })?;
    let config: AgentConfig =
        secmon_config::load(Some(path)).with_context(|| format!("bad config {}", path.display()))?;
    let log_level_hook = init_tracing(&config.log.level)?;
    if wrote {
        tracing::info!(
            path = %path.display(),
            "no config file found: wrote the default configuration there and starting with it"
        );
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
