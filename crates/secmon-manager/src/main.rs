//! `secmon-manager --config PATH`: loads the configuration, starts the manager and
//! runs it until SIGTERM or SIGINT; SIGHUP reloads the rules.
//! `secmon-manager init`: generates the secure deployment material ([`secmon_manager::init`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secmon_manager::app::Manager;
use secmon_manager::config::ManagerConfig;
use secmon_manager::init::{InitOptions, check_secrets, default_names, init};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// secmon manager: ingest, fleet registry and lifecycle, storage, REST API.
#[derive(Parser)]
#[command(name = "secmon-manager", version, about)]
struct Args {
    /// Configuration file (TOML); defaults apply when absent. Any key can be set
    /// with SECMON_<SECTION>_<KEY>.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Without a subcommand, the manager runs.
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the CA, the server certificate, the NATS operator/account keys and JWTs,
    /// the manager's NATS creds and an operator-mode nats-server config.
    Init {
        /// Output directory [default: <storage.data_dir>/pki].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// DNS name or IP address for the server certificate (repeatable)
        /// [default: this hostname, localhost, 127.0.0.1, ::1].
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
        /// Address nats-server listens on.
        #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:4222")]
        nats_listen: String,
        /// Overwrite an initialised directory (new CA and keys: agents must enroll again).
        #[arg(long)]
        force: bool,
    },
}

/// Loads the configuration or says why not (exit code 2).
fn load_config(path: Option<&std::path::Path>) -> Result<ManagerConfig, ExitCode> {
    secmon_config::load(path).map_err(|e| {
        eprintln!("secmon-manager: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::Init { dir, names, nats_listen, force }) = args.command {
        return run_init(args.config.as_deref(), dir, names, nats_listen, force);
    }
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A key file others can read may already be copied: refuse to run with it.
    let pki = cfg.storage.data_dir.join("pki");
    if pki.is_dir()
        && let Err(e) = check_secrets(&pki)
    {
        eprintln!("secmon-manager: {e}");
        return ExitCode::from(2);
    }
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

fn run_init(
    config: Option<&std::path::Path>,
    dir: Option<PathBuf>,
    names: Vec<String>,
    nats_listen: String,
    force: bool,
) -> ExitCode {
    // Only the library's own logs, and only warnings unless RUST_LOG asks for more: the
    // summary on stdout is the output.
    let filter = std::env::var("RUST_LOG").ok().and_then(|v| EnvFilter::try_new(v).ok());
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let dir = match dir {
        Some(d) => d,
        None => match load_config(config) {
            Ok(cfg) => cfg.storage.data_dir.join("pki"),
            Err(code) => return code,
        },
    };
    let names = if names.is_empty() { default_names() } else { names };
    match init(&InitOptions { dir, names, nats_listen, force }) {
        Ok(out) => {
            print!("{}", out.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secmon-manager init: {e}");
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
