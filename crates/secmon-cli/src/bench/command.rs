//! `secmon bench command`: `ping` round trips through the manager's API
//! (`POST /api/agents/{id}/command` → NATS request → simulated agent → reply),
//! first one at a time, then with several clients at once; latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use super::harness::{Harness, HarnessOptions};
use super::raw_http::KeepAlive;
use super::sim::{self, SimAgent};
use super::stats::{Latency, rate, thousands};

#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Simulated agents answering commands (round trips go to each in turn).
    #[arg(long, default_value_t = 10)]
    pub agents: usize,
    /// Round trips per series.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// API clients sending at once in the concurrent series.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Parent directory of the temp NATS store and database [default: system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct CommandReport {
    pub bench: &'static str,
    pub agents: usize,
    pub count: usize,
    pub sequential: Latency,
    pub sequential_per_sec: f64,
    pub concurrency: usize,
    pub concurrent: Latency,
    pub concurrent_per_sec: f64,
}

const HEARTBEAT: Duration = Duration::from_secs(1);

pub async fn run(a: CommandArgs, json_out: bool) -> anyhow::Result<()> {
    if a.agents == 0 || a.count == 0 || a.concurrency == 0 {
        bail!("--agents, --count and --concurrency must be at least 1");
    }
    let opts = HarnessOptions {
        heartbeat_timeout: Duration::from_secs(10),
        check_interval: Duration::from_secs(1),
        batch_size: None,
        dir: a.dir.clone(),
        rules_dirs: Vec::new(),
    };
    let h = Harness::start(&opts).await?;
    let result = measure(&h, &a).await;
    h.stop().await;
    let r = result?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("command: ping round trips through the API to {} simulated agents", r.agents);
        println!(
            "  sequential     {:>6} in a row:   {}  = {} round trips/s",
            r.count,
            r.sequential.line(),
            thousands(r.sequential_per_sec)
        );
        println!(
            "  concurrent     {:>6} by {:>3} clients: {}  = {} round trips/s",
            r.count,
            r.concurrency,
            r.concurrent.line(),
            thousands(r.concurrent_per_sec)
        );
    }
    Ok(())
}

async fn measure(h: &Harness, a: &CommandArgs) -> anyhow::Result<CommandReport> {
    let client = h.connect().await?;
    let agents = sim::fleet(a.agents);
    let _responders = sim::spawn_responders(&client, &h.subjects, &agents).await?;
    sim::register_all(&client, &h.subjects, &agents, HEARTBEAT).await?;
    let alive = Arc::new(agents.iter().map(|_| true.into()).collect::<Vec<_>>());
    let heartbeats =
        sim::spawn_heartbeats(client.clone(), h.subjects.clone(), Arc::new(agents.clone()), alive, HEARTBEAT);
    super::wait_for_status(&h.api, "active", a.agents as u64, Duration::from_secs(30)).await?;

    let api = h.api.clone();
    let (count, conc) = (a.count, a.concurrency);
    let agents = Arc::new(agents);
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<CommandReport> {
        let mut client = KeepAlive::new(&api)?;
        // Warm up the manager's code paths.
        round_trips(&mut client, &agents, 0, count.min(20))?;
        let t = Instant::now();
        let mut seq = round_trips(&mut client, &agents, 0, count)?;
        let seq_elapsed = t.elapsed();

        let t = Instant::now();
        let per = count.div_ceil(conc);
        let mut conc_samples = std::thread::scope(|s| -> anyhow::Result<Vec<Duration>> {
            let workers: Vec<_> = (0..conc)
                .map(|w| {
                    let (api, agents) = (&api, &agents);
                    let n = per.min(count.saturating_sub(w * per));
                    s.spawn(move || round_trips(&mut KeepAlive::new(api)?, agents, w * per, n))
                })
                .collect();
            let mut all = Vec::with_capacity(count);
            for w in workers {
                all.extend(w.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
            }
            Ok(all)
        })?;
        let conc_elapsed = t.elapsed();
        Ok(CommandReport {
            bench: "command",
            agents: agents.len(),
            count,
            sequential_per_sec: rate(seq.len() as u64, seq_elapsed),
            sequential: Latency::of(&mut seq),
            concurrency: conc,
            concurrent_per_sec: rate(conc_samples.len() as u64, conc_elapsed),
            concurrent: Latency::of(&mut conc_samples),
        })
    })
    .await
    .context("bench thread")?;
    heartbeats.abort();
    r
}

/// `n` pings, to agent `start`, `start + 1`, ... in turn; each must come back `ok`.
fn round_trips(
    client: &mut KeepAlive,
    agents: &[SimAgent],
    start: usize,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let body = serde_json::to_vec(&json!({"command": "ping"}))?;
    let mut out = Vec::with_capacity(n);
    for i in start..start + n {
        let agent = &agents[i % agents.len()];
        let path = format!("/api/agents/{}/command", agent.id);
        let t = Instant::now();
        let (status, reply) = client.post_json(&path, &body)?;
        let d = t.elapsed();
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        if status != 200 || reply["ok"] != true {
            bail!("ping to {} answered {status}: {reply}", agent.id);
        }
        out.push(d);
    }
    Ok(out)
}
