//! `secmon-wazuh-bridge bench`: figures for BENCHMARKS.md.
//!
//! - `poll`: read + diff of the agent table in this process, at each agent count,
//!   after a few status changes per round (what a cycle costs).
//! - `run`: the real bridge (this binary, as a child) against a fixture and a real
//!   nats-server: change → publish latency p50/p99 with notifications on, then the
//!   bridge's RSS (now and peak) and its CPU while wazuh-db-like keepalive commits
//!   go on at 5 s polling.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use secmon_wazuh_bridge::db::{SchemaFlavor, WazuhDb};
use secmon_wazuh_bridge::fixture::create_fixture;
use secmon_wazuh_bridge::metrics::Metrics;
use secmon_wazuh_bridge::model::{Snapshot, Status};
use secmon_wazuh_bridge::simulator::Simulator;
use secmon_wazuh_bridge::source::read_and_diff;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Read + diff time of the agent table, per agent count.
    Poll {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        agents: Vec<usize>,
        /// Status changes committed before each measured round.
        #[arg(long, default_value_t = 10)]
        changes: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// The real bridge: change → publish latency, RSS and CPU, per agent count.
    Run {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        agents: Vec<usize>,
        /// Single-agent status changes, each committed alone, measured one by one.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Seconds of keepalive commits (every 5 s, 20% of agents) for the CPU figure.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// A NATS server with JetStream; default: start one (nats-server on PATH).
        #[arg(long)]
        nats_url: Option<String>,
    },
}

pub fn run(cmd: &BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Poll { agents, changes, rounds } => {
            println!("agents,first_read_ms,cycle_p50_ms,cycle_max_ms,snapshot_agents,rss_mb");
            for &n in agents {
                poll_bench(n, *changes, *rounds)?;
            }
            Ok(())
        }
        BenchCmd::Run { agents, changes, idle_secs, nats_url } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            println!("agents,latency_p50_ms,latency_p99_ms,latency_max_ms,rss_mb,peak_rss_mb,cpu_percent");
            for &n in agents {
                rt.block_on(run_bench(n, *changes, *idle_secs, nats_url.clone()))?;
            }
            Ok(())
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn poll_bench(n: usize, changes: usize, rounds: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("global.db");
    create_fixture(&path, n, SchemaFlavor::V4, 1).context("creating the fixture")?;
    let metrics = Metrics::new();
    let db = WazuhDb::open(&path, Duration::from_secs(1))?;
    let t = Instant::now();
    let snap = read_and_diff(&db, &metrics, Snapshot::default()).map_err(|b| b.0)?.snapshot;
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let mut sim = Simulator::open(&path)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut snap = snap;
    let mut times = Vec::new();
    for _ in 0..rounds {
        sim.begin()?;
        for _ in 0..changes {
            let id = rng.random_range(1..=n as i64);
            let st = if rng.random_bool(0.5) { Status::Disconnected } else { Status::Active };
            sim.set_status(id, st)?;
        }
        sim.commit()?;
        let t = Instant::now();
        let out = read_and_diff(&db, &metrics, snap).map_err(|b| b.0)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        snap = out.snapshot;
    }
    times.sort_by(f64::total_cmp);
    drop(sim);
    let (rss, _, _) = proc_figures(std::process::id());
    println!("{n},{first:.1},{:.1},{:.1},{},{rss:.1}", pct(&times, 0.5), pct(&times, 1.0), snap.len());
    Ok(())
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_nats(dir: &Path) -> anyhow::Result<(Kill, String)> {
    let port = free_port()?;
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server (install it: apt-get install nats-server)")?;
    let url = format!("nats://127.0.0.1:{port}");
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("nats-server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((Kill(child), url))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// (VmRSS, VmHWM) in MB, and utime+stime in clock ticks.
fn proc_figures(pid: u32) -> (f64, f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (kb("VmRSS:"), kb("VmHWM:"), ticks)
}

async fn run_bench(n: usize, changes: usize, idle_secs: u64, nats_url: Option<String>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("global.db");
    create_fixture(&db, n, SchemaFlavor::V4, 1).context("creating the fixture")?;
    let (_nats, url) = match nats_url {
        Some(u) => (None, u),
        None => {
            let (k, u) = start_nats(dir.path())?;
            (Some(k), u)
        }
    };
    let metrics_port = free_port()?;
    let cfg = dir.path().join("bridge.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wazuh: {{ db_path: {db:?}, poll_interval: 5s, manager_node: bench }}\n\
             nats: {{ url: {url:?}, subject_prefix: bench{n} }}\n\
             publish: {{ create_stream: true, stream_name: BENCH{n} }}\n\
             monitoring: {{ metrics_port: {metrics_port}, log_level: warn }}\n\
             state: {{ dir: {:?} }}\n",
            dir.path().join("state")
        ),
    )?;
    let exe = std::env::current_exe()?;
    let bridge = Kill(
        Command::new(exe)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the bridge")?,
    );
    let pid = bridge.0.id();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http_get(metrics_port, "/health")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|h| h["status"] == "ok" && h["sources"][0]["agents"] == n as u64);
        if ready {
            break;
        }
        if Instant::now() > end {
            bail!("the bridge did not take its baseline of {n} agents within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = async_nats::connect(&url).await.context("connecting to NATS")?;
    let mut sub = client.subscribe(format!("bench{n}.agent.*.status")).await?;
    client.flush().await?;
    let mut sim = Simulator::open(&db)?;
    let look = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    look.busy_timeout(Duration::from_secs(1))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut lat = Vec::with_capacity(changes);
    let mut lost = 0;
    for _ in 0..changes {
        let id = rng.random_range(1..=n as i64);
        // Always a real transition: the opposite of what the agent has now.
        let now: String =
            look.query_row("SELECT connection_status FROM agent WHERE id = ?1", [id], |r| r.get(0))?;
        let st = if now == "active" { Status::Disconnected } else { Status::Active };
        let want = format!("{id:03}");
        // Pending changes land as one commit each (the change that is measured).
        sim.set_status(id, st)?;
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(msg)) = tokio::time::timeout(left, sub.next()).await else {
                lost += 1;
                break;
            };
            let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            if v["agent_id"] == want.as_str() {
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort_by(f64::total_cmp);
    // CPU at rest: keepalive commits like wazuh-db's, 5 s polling.
    let (_, _, t1) = proc_figures(pid);
    let started = Instant::now();
    let ids: Vec<i64> = (1..=n as i64).collect();
    while started.elapsed() < Duration::from_secs(idle_secs) {
        let share: Vec<i64> = ids.iter().copied().filter(|_| rng.random_bool(0.2)).collect();
        sim.begin()?;
        sim.keepalive(&share)?;
        sim.commit()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rss, peak, t2) = proc_figures(pid);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (t2 - t1) as f64 / hz / secs * 100.0;
    println!(
        "{n},{:.1},{:.1},{:.1},{rss:.1},{peak:.1},{cpu:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    if lost > 0 {
        bail!("{lost} of {changes} changes were not published within 15 s");
    }
    drop(bridge);
    Ok(())
}
