//! `secmon-manager --config PATH`: loads the configuration, starts the manager and
//! runs it until SIGTERM or SIGINT; SIGHUP reloads the rules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use secmon_manager::app::Manager;
use secmon_manager::config::ManagerConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// secmon manager: ingest, fleet registry and lifecycle, storage, REST API.
#[derive(Parser)]
#[command(name = "secmon-manager", version, about)]
struct Args {
    /// Configuration file (TOML); defaults apply when absent. Any key can be set
    /// with SECMON_<SECTION>_<KEY>.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg: ManagerConfig = match secmon_config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("secmon-manager: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.log.level),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("secmon-manager: bad log filter (RUST_LOG or [log] level): {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secmon-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secmon-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: ManagerConfig) -> anyhow::Result<()> {
    tracing::warn!(
        "LOCAL MODE: NATS connections and the REST API are NOT authenticated; \
         anyone who can reach them can act as an agent or an operator. \
         Authentication comes with the security issue; do not expose this manager."
    );
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let manager = Manager::start(cfg).await?;
    tracing::info!(api = %format!("http://{}", manager.api_addr()), version = env!("CARGO_PKG_VERSION"), "secmon-manager ready");
    let rules = manager.rules();
    let sig = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading rules");
                // The outcome (or why the old rules stay) is logged by reload.
                let _ = rules.reload().await;
            }
        }
    };
    tracing::info!(signal = sig, "stopping");
    manager.shutdown().await;
    Ok(())
}
