//! `secmon-wazuh-bridge`: Wazuh agent status changes from `global.db` to NATS.

mod app;
mod bench;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secmon_wazuh_bridge::config::BridgeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "secmon-wazuh-bridge",
    version,
    about = "Publishes Wazuh agent status changes from global.db to NATS"
)]
struct Cli {
    /// Config file (YAML or TOML, by extension). Without one, defaults + env.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Overrides applied after the file and the `SECMON_*` environment.
#[derive(clap::Args, Debug, Default)]
struct RunFlags {
    /// wazuh.db_path
    #[arg(long)]
    db_path: Option<PathBuf>,
    /// wazuh.manager_node
    #[arg(long)]
    manager_node: Option<String>,
    /// wazuh.poll_interval (`5s`)
    #[arg(long, value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    /// nats.url
    #[arg(long)]
    nats_url: Option<String>,
    /// nats.subject_prefix
    #[arg(long)]
    subject_prefix: Option<String>,
    /// monitoring.metrics_port (0: any free port)
    #[arg(long)]
    metrics_port: Option<u16>,
    /// monitoring.log_level
    #[arg(long)]
    log_level: Option<String>,
    /// state.dir
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the bridge (the default).
    Run,
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig,
    /// Create a global.db with Wazuh's schema and N agents (demo, tests, benchmarks).
    Fixture(secmon_wazuh_bridge::cli_sim::FixtureArgs),
    /// Mutate a global.db the way wazuh-db does (keepalives, batched commits, ...).
    Simulate(secmon_wazuh_bridge::cli_sim::SimulateArgs),
    /// Verify the signature of a published message (file or `-`).
    Verify(secmon_wazuh_bridge::cli_tools::VerifyArgs),
    /// Decrypt (and decompress) a published message.
    Decrypt(secmon_wazuh_bridge::cli_tools::DecryptArgs),
    /// Example subscriber: prints events and verifies their signatures.
    Subscribe(secmon_wazuh_bridge::cli_tools::SubscribeArgs),
    /// Benchmarks: poll + diff time and RSS, change → publish latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn load_config(cli: &Cli) -> anyhow::Result<BridgeConfig> {
    let mut cfg: BridgeConfig = secmon_config::load(cli.config.as_deref()).with_context(|| {
        format!("loading {}", cli.config.as_deref().unwrap_or("<defaults>".as_ref()).display())
    })?;
    let f = &cli.flags;
    if let Some(v) = &f.db_path {
        cfg.wazuh.db_path = v.clone();
    }
    if let Some(v) = &f.manager_node {
        cfg.wazuh.manager_node = v.clone();
    }
    if let Some(v) = f.poll_interval {
        cfg.wazuh.poll_interval = v;
    }
    if let Some(v) = &f.nats_url {
        cfg.nats.url = v.clone();
    }
    if let Some(v) = &f.subject_prefix {
        cfg.nats.subject_prefix = v.clone();
    }
    if let Some(v) = f.metrics_port {
        cfg.monitoring.metrics_port = v;
    }
    if let Some(v) = &f.log_level {
        cfg.monitoring.log_level = v.clone();
    }
    if let Some(v) = &f.state_dir {
        cfg.state.dir = v.clone();
    }
    secmon_config::Validate::validate(&cfg).context("invalid configuration after command-line flags")?;
    Ok(cfg)
}

/// glibc's defaults (an arena per thread, a large-allocation threshold that grows
/// after frees) keep the freed buffers of big reads mapped: with 100,000 agents that
/// was 100+ MB of RSS for a 20 MB snapshot. Two arenas and a fixed threshold (so
/// snapshot-sized buffers are mmapped and really returned) keep RSS near what is live.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    let cli = Cli::parse();
    match &cli.cmd {
        None | Some(Cmd::Run) => {
            let cfg = load_config(&cli)?;
            secmon_wazuh_bridge::logging::init(&cfg.monitoring.log_level, &cfg.monitoring.log_format)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(app::run(cfg))
        }
        Some(Cmd::CheckConfig) => {
            let cfg = load_config(&cli)?;
            let mut shown = cfg.clone();
            shown.nats.password = shown.nats.password.map(|_| "<redacted>".into());
            shown.nats.token = shown.nats.token.map(|_| "<redacted>".into());
            println!("{}", toml::to_string_pretty(&shown).context("rendering the configuration")?);
            Ok(())
        }
        Some(Cmd::Fixture(a)) => secmon_wazuh_bridge::cli_sim::fixture_cmd(a),
        Some(Cmd::Simulate(a)) => secmon_wazuh_bridge::cli_sim::simulate_cmd(a),
        Some(Cmd::Verify(a)) => secmon_wazuh_bridge::cli_tools::verify_cmd(a),
        Some(Cmd::Decrypt(a)) => secmon_wazuh_bridge::cli_tools::decrypt_cmd(a),
        Some(Cmd::Subscribe(a)) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(secmon_wazuh_bridge::cli_tools::subscribe_cmd(a))
        }
        Some(Cmd::Bench(b)) => bench::run(b),
    }
}
