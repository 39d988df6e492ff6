//! `secmon`, the operator CLI.

use clap::{Parser, Subcommand};

mod alerts_cmd;
mod api_client;
mod bench;
mod child_proc;
mod files;
mod fleet;
mod http;
mod nats_child;
mod output;
mod rules;
mod up;

/// Options every API-facing subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Manager API base URL.
    #[arg(long, global = true, env = "SECMON_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Parser)]
#[command(name = "secmon", version, about = "secmon operator CLI")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List agents.
    Agents(fleet::AgentsArgs),
    /// Show one agent with its recent status history.
    Agent(fleet::AgentArgs),
    /// Send a command to an agent and print its reply.
    Command(fleet::CommandArgs),
    /// List events, or follow new ones.
    Events(fleet::EventsArgs),
    /// List alerts, or show, acknowledge, close or reopen one.
    Alerts(alerts_cmd::AlertsCommand),
    /// Show the last known state of an agent's watched files.
    Files(files::FilesArgs),
    /// Run the whole stack on this machine: NATS, manager and an agent.
    Up(up::UpArgs),
    /// Benchmarks: manager ingest throughput and command round-trip latency.
    Bench(bench::BenchArgs),
    /// Sigma rules: check that rule directories load, and run their test cases.
    Rules(rules::RulesArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Agents(a) => fleet::agents(a, &cli.global),
        Cmd::Agent(a) => fleet::agent(a, &cli.global),
        Cmd::Command(a) => fleet::command(a, &cli.global),
        Cmd::Events(a) => fleet::events(a, &cli.global),
        Cmd::Alerts(a) => alerts_cmd::run(a, &cli.global),
        Cmd::Files(a) => files::run(a, &cli.global),
        Cmd::Up(a) => up::run(a),
        Cmd::Bench(a) => bench::run(a, &cli.global),
        Cmd::Rules(a) => rules::run(a, &cli.global),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
