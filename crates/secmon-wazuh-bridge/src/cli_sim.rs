//! `secmon-wazuh-bridge fixture` and `secmon-wazuh-bridge simulate`: create a demo
//! `global.db` and mutate it the way wazuh-db does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::SchemaFlavor;
use crate::fixture::create_fixture;
use crate::model::agent_id_str;
use crate::simulator::{Change, SimOptions, Simulator};

/// Create a Wazuh `global.db` with the real schema and N agents.
#[derive(Debug, Clone, clap::Args)]
pub struct FixtureArgs {
    /// The database to create (refuses to overwrite an existing file).
    #[arg(long)]
    pub db: PathBuf,
    /// Number of agents (ids 1..=N).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Wazuh schema: 4 (4.x, with the manager as row 0) or 5 (5.x).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub schema: u8,
    /// Seed for names, addresses, statuses and keys (same seed, same database).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Mutate a `global.db` like wazuh-db: batched commits of keepalives and changes.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The database to mutate (created by `fixture`, or a copy of a real one).
    #[arg(long)]
    pub db: PathBuf,
    /// Time between commits (wazuh-db commits every 10 to 60 s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub commit_interval: Duration,
    /// Random changes per commit (status, register, remove, ip, version, groups, name).
    #[arg(long, default_value_t = 5)]
    pub changes_per_commit: usize,
    /// Share of agents sending a keepalive per commit.
    #[arg(long, default_value_t = 0.2)]
    pub keepalive_share: f64,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the change generator (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append each applied change to this file as a JSON line.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// A write that waits longer than this for the lock counts as a failure.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub max_lock_wait: Duration,
}

pub fn fixture_cmd(args: &FixtureArgs) -> anyhow::Result<()> {
    let flavor = if args.schema == 5 { SchemaFlavor::V5 } else { SchemaFlavor::V4 };
    let t = Instant::now();
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    create_fixture(&args.db, args.agents, flavor, args.seed)?;
    println!(
        "created {} ({} schema, {} agents, seed {}) in {:.2?}",
        args.db.display(),
        flavor.as_str(),
        args.agents,
        args.seed,
        t.elapsed()
    );
    Ok(())
}

pub fn simulate_cmd(args: &SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.commit_interval.is_zero(), "--commit-interval must be more than 0");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let mut sim = Simulator::open(&args.db)?;
    sim.set_max_lock_wait(args.max_lock_wait);
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone()).context("installing the Ctrl-C handler")?;
    let opts = SimOptions {
        commit_interval: args.commit_interval,
        changes_per_commit: args.changes_per_commit,
        keepalive_share: args.keepalive_share,
        seed,
        log: args.log.clone(),
        duration: args.duration,
        max_commits: None,
    };
    println!(
        "simulating wazuh-db on {} ({} schema): a commit every {}, {} changes each, seed {seed}; Ctrl-C stops",
        args.db.display(),
        sim.flavor().as_str(),
        humantime::format_duration(args.commit_interval),
        args.changes_per_commit
    );
    let stats = sim.run_with(&opts, &stop, |c| println!("{}", change_line(c)))?;
    println!(
        "stats: commits={} changes={} keepalives={} busy_retries={} max_lock_wait={:.1?} failures={}",
        stats.commits,
        stats.changes,
        stats.keepalives,
        stats.busy_retries,
        stats.max_lock_wait,
        stats.failures
    );
    Ok(())
}

/// `commit 3 agent 012 status: Active -> Disconnected`
fn change_line(c: &Change) -> String {
    let what =
        serde_json::to_value(c.what).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    format!(
        "commit {} agent {} {}: {} -> {}",
        c.commit,
        agent_id_str(c.agent_id),
        what,
        c.previous.as_deref().unwrap_or("-"),
        c.new.as_deref().unwrap_or("-")
    )
}

/// Sets `stop` on SIGINT or SIGTERM. A thread with its own small runtime, so this works
/// whether or not the caller runs inside tokio.
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        anyhow::Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    std::thread::Builder::new().name("sim-signals".into()).spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        stop.store(true, Ordering::Relaxed);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::ChangeKind;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(clap::Subcommand)]
    enum Cmd {
        Fixture(FixtureArgs),
        Simulate(SimulateArgs),
    }

    #[test]
    fn args_parse_with_defaults() {
        let Cmd::Fixture(f) = Cli::try_parse_from(["x", "fixture", "--db", "/tmp/g.db"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!((f.agents, f.schema, f.seed), (1000, 4, 1));
        assert!(Cli::try_parse_from(["x", "fixture", "--db", "g.db", "--schema", "6"]).is_err());
        let Cmd::Simulate(s) = Cli::try_parse_from([
            "x",
            "simulate",
            "--db",
            "g.db",
            "--commit-interval",
            "200ms",
            "--duration",
            "2s",
        ])
        .unwrap()
        .cmd
        else {
            panic!()
        };
        assert_eq!(s.commit_interval, Duration::from_millis(200));
        assert_eq!(s.duration, Some(Duration::from_secs(2)));
        assert_eq!(s.changes_per_commit, 5);
        assert_eq!(s.max_lock_wait, Duration::from_secs(1));
    }

    #[test]
    fn fixture_then_simulate_for_a_duration() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("global.db");
        let log = dir.path().join("changes.jsonl");
        fixture_cmd(&FixtureArgs { db: db.clone(), agents: 50, schema: 5, seed: 2 }).unwrap();
        let t = Instant::now();
        simulate_cmd(&SimulateArgs {
            db: db.clone(),
            commit_interval: Duration::from_millis(50),
            changes_per_commit: 3,
            keepalive_share: 0.5,
            duration: Some(Duration::from_millis(400)),
            seed: Some(9),
            log: Some(log.clone()),
            max_lock_wait: Duration::from_secs(1),
        })
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3));
        let lines = std::fs::read_to_string(&log).unwrap();
        let changes: Vec<Change> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(changes.len() >= 6, "{} changes in 400 ms at 3 per 50 ms", changes.len());
        let line = change_line(&Change {
            commit: 3,
            agent_id: 12,
            what: ChangeKind::Status,
            previous: Some("Active".into()),
            new: Some("Disconnected".into()),
            time: 0,
        });
        assert_eq!(line, "commit 3 agent 012 status: Active -> Disconnected");
    }
}
