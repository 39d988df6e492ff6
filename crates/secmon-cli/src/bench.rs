//! `secmon bench`: manager ingest throughput, command round-trip latency and fleet
//! status tracking, each against its own nats-server and an in-process manager
//! (see [`harness`]), with simulated agents ([`sim`]). Figures go to BENCHMARKS.md.

mod command;
mod fim;
mod fleet;
mod harness;
mod ingest;
mod raw_http;
mod rules;
mod sim;
mod stats;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Global;
use crate::http::Http;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCmd {
    /// Ingest throughput: N simulated agents publish M events through JetStream
    /// into the manager's storage.
    Ingest(ingest::IngestArgs),
    /// Command round-trip latency through the manager API (ping).
    Command(command::CommandArgs),
    /// Status tracking of a large fleet: all active, some go silent, exactly those
    /// become disconnected, then come back.
    Fleet(fleet::FleetArgs),
    /// FIM start-up baseline of a generated tree, against AIDE on the same tree.
    FimScan(fim::ScanArgs),
    /// FIM latency from a write to its event on the agent's socket.
    FimLatency(fim::LatencyArgs),
    /// FIM agent RSS and CPU, idle with 10 watches and during a file burst.
    FimLoad(fim::LoadArgs),
    /// Detection throughput of the rule engine alone on one core (SigmaHQ Linux
    /// rules plus the secmon pack, mixed corpus), beside the rsigma CLI.
    Rules(rules::RulesArgs),
}

pub fn run(a: BenchArgs, g: &Global) -> anyhow::Result<()> {
    init_logging();
    // The FIM and rules benches drive a real agent process or run on this thread;
    // only the others need a runtime.
    match a.cmd {
        BenchCmd::FimScan(s) => fim::scan(s, g.json),
        BenchCmd::FimLatency(l) => fim::latency(l, g.json),
        BenchCmd::FimLoad(l) => fim::load(l, g.json),
        BenchCmd::Rules(r) => rules::run(r, g.json),
        BenchCmd::Ingest(i) => block_on(ingest::run(i, g.json)),
        BenchCmd::Command(c) => block_on(command::run(c, g.json)),
        BenchCmd::Fleet(f) => block_on(fleet::run(f, g.json)),
    }
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(f)
}

/// The in-process manager logs through tracing: warnings and errors by default
/// (`RUST_LOG` for more), on stderr so `--json` output stays clean.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Agents in the two statuses the fleet bench watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusCounts {
    active: u64,
    disconnected: u64,
}

/// How many agents the API lists with `status` (its `total`).
fn count_with_status(http: &Http, api: &str, status: &str) -> anyhow::Result<u64> {
    let url = format!("{api}/api/agents?status={status}&limit=1");
    let (code, body) = http.get(&url)?;
    if code != 200 {
        bail!("GET {url} answered {code}: {body}");
    }
    body["total"].as_u64().with_context(|| format!("GET {url}: no total in {body}"))
}

fn status_counts(http: &Http, api: &str) -> anyhow::Result<StatusCounts> {
    Ok(StatusCounts {
        active: count_with_status(http, api, "active")?,
        disconnected: count_with_status(http, api, "disconnected")?,
    })
}

/// Ids of all agents with `status`, page by page.
fn ids_with_status(http: &Http, api: &str, status: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    loop {
        let url = format!("{api}/api/agents?status={status}&limit=1000&offset={}", ids.len());
        let (code, body) = http.get(&url)?;
        if code != 200 {
            bail!("GET {url} answered {code}: {body}");
        }
        let items = body["items"].as_array().with_context(|| format!("GET {url}: no items"))?;
        if items.is_empty() {
            return Ok(ids);
        }
        ids.extend(items.iter().filter_map(|a| a["id"].as_str().map(str::to_owned)));
    }
}

/// Polls the API until exactly `n` agents have `status`; returns how long it took.
async fn wait_for_status(api: &str, status: &str, n: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let (api, status) = (api.to_owned(), status.to_owned());
    tokio::task::spawn_blocking(move || {
        let http = Http::new(Duration::from_secs(10));
        let t = Instant::now();
        loop {
            let seen = count_with_status(&http, &api, &status)?;
            if seen == n {
                return Ok(t.elapsed());
            }
            if t.elapsed() > timeout {
                bail!("{seen} agents {status} after {timeout:?}, expected {n}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await?
}
