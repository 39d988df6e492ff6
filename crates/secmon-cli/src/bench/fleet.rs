//! `secmon bench fleet`: many simulated agents register and heartbeat; then some go
//! silent (as if killed: no shutdown notice). Checks through the API that exactly
//! those become `disconnected` within heartbeat timeout + one interval, that the
//! rest stay `active`, and that the silent ones come back `active` when they return.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::harness::{Harness, HarnessOptions};
use super::sim;
use super::{StatusCounts, ids_with_status, status_counts, wait_for_status};
use crate::http::Http;

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// How many of them go silent.
    #[arg(long, default_value_t = 100)]
    pub stop: usize,
    /// Heartbeat interval of the simulated agents.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// The manager's heartbeat timeout.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Parent directory of the temp NATS store and database [default: system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub bench: &'static str,
    pub agents: usize,
    pub stopped: usize,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// From the first registration until the API shows all agents active.
    pub all_active_secs: f64,
    /// From the moment the agents went silent until all of them are disconnected.
    pub all_disconnected_secs: f64,
    /// Heartbeat timeout + one interval: the bound the issue sets.
    pub limit_secs: f64,
    /// The disconnected agents are exactly the silent ones.
    pub exact: bool,
    /// Statuses held steady for one more heartbeat timeout.
    pub stable: bool,
    /// From the silent agents' return until all agents are active again.
    pub all_back_secs: f64,
    pub ok: bool,
}

pub async fn run(a: FleetArgs, json_out: bool) -> anyhow::Result<()> {
    if a.agents == 0 || a.stop > a.agents {
        bail!("--agents must be at least 1 and --stop at most --agents");
    }
    if a.heartbeat_interval.is_zero() || a.heartbeat_timeout <= a.heartbeat_interval {
        bail!(
            "--heartbeat-timeout must be longer than --heartbeat-interval, which must be greater than zero"
        );
    }
    let opts = HarnessOptions {
        heartbeat_timeout: a.heartbeat_timeout,
        check_interval: (a.heartbeat_interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
        batch_size: None,
        dir: a.dir.clone(),
        rules_dirs: Vec::new(),
    };
    let h = Harness::start(&opts).await?;
    let result = measure(&h, &a, json_out).await;
    h.stop().await;
    let r = result?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "fleet: {} simulated agents, heartbeat every {:?}, timeout {:?}",
            r.agents, a.heartbeat_interval, a.heartbeat_timeout
        );
        println!("  all {} active {:.2} s after registration began", r.agents, r.all_active_secs);
        println!(
            "  {} went silent: {} disconnected {:.2} s later (limit {:.2} s); the other {} active",
            r.stopped,
            if r.exact { "exactly those" } else { "NOT exactly those" },
            r.all_disconnected_secs,
            r.limit_secs,
            r.agents - r.stopped
        );
        println!("  statuses {} for one more timeout", if r.stable { "held steady" } else { "CHANGED" });
        println!(
            "  the {} came back: all {} active again after {:.2} s",
            r.stopped, r.agents, r.all_back_secs
        );
        println!("  {}", if r.ok { "OK" } else { "FAILED" });
    }
    if !r.ok {
        bail!("fleet bench failed: statuses were not as expected");
    }
    Ok(())
}

async fn measure(h: &Harness, a: &FleetArgs, quiet: bool) -> anyhow::Result<FleetReport> {
    let log = |m: String| {
        if !quiet {
            eprintln!("  .. {m}");
        }
    };
    let client = h.connect().await?;
    let agents = Arc::new(sim::fleet(a.agents));
    let alive: Arc<Vec<AtomicBool>> = Arc::new(agents.iter().map(|_| AtomicBool::new(true)).collect());
    let n = a.agents as u64;
    let k = a.stop as u64;
    let settle = Duration::from_secs(30) + a.heartbeat_timeout * 2;

    let t = Instant::now();
    sim::register_all(&client, &h.subjects, &agents, a.heartbeat_interval).await?;
    let heartbeats = sim::spawn_heartbeats(
        client.clone(),
        h.subjects.clone(),
        agents.clone(),
        alive.clone(),
        a.heartbeat_interval,
    );
    wait_for_status(&h.api, "active", n, settle).await?;
    let all_active = t.elapsed();
    log(format!("all {n} active after {all_active:.2?}"));

    // Silence the first `stop` agents, as if killed: no shutdown notice.
    let silenced = Instant::now();
    for on in alive.iter().take(a.stop) {
        on.store(false, Ordering::Relaxed);
    }
    wait_for_status(&h.api, "disconnected", k, settle).await?;
    let all_disconnected = silenced.elapsed();
    let limit = a.heartbeat_timeout + a.heartbeat_interval;
    log(format!("{k} disconnected {all_disconnected:.2?} after they went silent"));

    let api = h.api.clone();
    let expected: BTreeSet<String> = agents.iter().take(a.stop).map(|a| a.id.to_string()).collect();
    let want = StatusCounts { active: n - k, disconnected: k };
    let timeout = a.heartbeat_timeout;
    let (exact, stable) = tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, bool)> {
        let http = Http::new(Duration::from_secs(30));
        let exact =
            ids_with_status(&http, &api, "disconnected")? == expected && status_counts(&http, &api)? == want;
        // Hold for one more timeout: no flapping of the live ones, no false return.
        let end = Instant::now() + timeout;
        let mut stable = true;
        while Instant::now() < end {
            stable &= status_counts(&http, &api)? == want;
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok((exact, stable))
    })
    .await??;
    log(format!("exact: {exact}, stable: {stable}"));

    // They come back: a restarted agent registers, then heartbeats.
    let t = Instant::now();
    sim::register_all(&client, &h.subjects, &agents[..a.stop], a.heartbeat_interval).await?;
    for on in alive.iter().take(a.stop) {
        on.store(true, Ordering::Relaxed);
    }
    wait_for_status(&h.api, "active", n, settle).await?;
    let all_back = t.elapsed();
    heartbeats.abort();

    let in_time = all_disconnected <= limit;
    Ok(FleetReport {
        bench: "fleet",
        agents: a.agents,
        stopped: a.stop,
        heartbeat_interval_ms: a.heartbeat_interval.as_millis() as u64,
        heartbeat_timeout_ms: a.heartbeat_timeout.as_millis() as u64,
        all_active_secs: all_active.as_secs_f64(),
        all_disconnected_secs: all_disconnected.as_secs_f64(),
        limit_secs: limit.as_secs_f64(),
        exact,
        stable,
        all_back_secs: all_back.as_secs_f64(),
        ok: exact && stable && in_time,
    })
}
