//! `secmon`, the operator CLI.

use clap::{Parser, Subcommand};

mod admin_cmds;
mod alerts_cmd;
mod api_client;
mod bench;
mod child_proc;
mod credentials;
mod files;
mod fleet;
mod http;
mod login;
mod nats_child;
mod output;
mod rules;
mod up;

/// Options every API-facing subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Manager API base URL [default: the API of the stored login (`secmon login`),
    /// else http://127.0.0.1:8080].
    #[arg(long = "api", global = true, env = "SECMON_API", value_name = "URL")]
    api_flag: Option<String>,
    /// The API base URL in use: `--api`, else the stored login's, else the local default.
    #[arg(skip)]
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
    /// Log in to a secure-mode manager and store the session for the other commands.
    Login(login::LoginArgs),
    /// End the stored session and forget it.
    Logout,
    /// Users of the API (admin).
    Users(admin_cmds::UsersArgs),
    /// API tokens for scripts (admin).
    Tokens(admin_cmds::TokensArgs),
    /// Enrollment tokens for new agents (admin).
    EnrollToken(admin_cmds::EnrollTokenArgs),
    /// Print a complete agent config with a fresh enrollment token (admin): > agent.toml
    AgentConfig(admin_cmds::AgentConfigArgs),
    /// The audit log of state-changing requests and commands (admin).
    Audit(admin_cmds::AuditArgs),
}

/// Without `--api`/SECMON_API the stored login's API is used, so `secmon login --api
/// URL` once is enough.
const LOCAL_API: &str = "http://127.0.0.1:8080";

fn resolve_api(flag: Option<String>) -> String {
    if let Some(a) = flag.filter(|a| !a.trim().is_empty()) {
        return a;
    }
    credentials::default_path()
        .ok()
        .and_then(|p| credentials::load(&p).ok().flatten())
        .map(|c| c.api)
        .unwrap_or_else(|| LOCAL_API.to_owned())
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.global.api = resolve_api(cli.global.api_flag.take());
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
        Cmd::Login(a) => login::login(a, &cli.global),
        Cmd::Logout => login::logout(),
        Cmd::Users(a) => admin_cmds::users(a, &cli.global),
        Cmd::Tokens(a) => admin_cmds::tokens(a, &cli.global),
        Cmd::EnrollToken(a) => admin_cmds::enroll_token(a, &cli.global),
        Cmd::AgentConfig(a) => admin_cmds::agent_config(a, &cli.global),
        Cmd::Audit(a) => admin_cmds::audit(a, &cli.global),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
