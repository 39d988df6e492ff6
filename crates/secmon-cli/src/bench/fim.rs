//! File integrity monitoring benchmarks, each against the real `secmon-agent` binary in
//! local-only mode (no NATS), read through its event socket:
//! - `fim-scan`: start-up baseline of a generated tree, against AIDE `--init` on the
//!   same tree in the same run;
//! - `fim-latency`: time from a write returning to its event on the socket;
//! - `fim-load`: agent RSS and CPU idle with 10 watches and during a file burst.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use super::stats::Latency;

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files in the generated tree.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Total size of the tree (bytes; humane suffixes like 2GiB accepted).
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    size: u64,
    /// Where the tree is generated (kept between runs, regenerated when the
    /// parameters change).
    #[arg(long, default_value = "/var/tmp/secmon-bench-tree")]
    dir: PathBuf,
    /// Hash workers for both secmon (`[fim] hash_workers`) and AIDE (`num_workers`).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Rounds of each tool (the best round is reported, after a warm-up read).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Writes measured.
    #[arg(long, default_value_t = 1000)]
    writes: u32,
    /// Pause between writes.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Real-time backend: inotify or fanotify.
    #[arg(long, default_value = "inotify")]
    backend: String,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Watches (temp directories with `files_per_watch` files each).
    #[arg(long, default_value_t = 10)]
    watches: usize,
    #[arg(long, default_value_t = 100)]
    files_per_watch: usize,
    /// Files created at once in one watch for the burst phase.
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// Length of the idle measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Real-time backend: inotify or fanotify.
    #[arg(long, default_value = "inotify")]
    backend: String,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("not a size: {s:?}"))?;
    let m: u64 = match mult.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown unit in {s:?}")),
    };
    Ok((n * m as f64) as u64)
}

/// A `secmon-agent` child in local-only mode with its socket connected.
struct AgentRun {
    child: Child,
    /// Config, state and socket; removed when the run is dropped.
    _dir: tempfile::TempDir,
    events: mpsc::Receiver<Value>,
    started: Instant,
}

impl AgentRun {
    /// Starts the agent with `watches` and `[fim]` extras, and connects to its socket.
    fn start(agent_bin: &Path, watches: &[PathBuf], fim_extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("secmon-bench-fim").tempdir()?;
        let socket = dir.path().join("agent.sock");
        let mut cfg = format!(
            "[agent]\nname = \"bench\"\nstate_dir = {state:?}\n[nats]\nurl = \"\"\n[log]\nlevel = \"warn\"\n\
             [socket]\npath = {socket:?}\nclient_buffer = 65536\n[fim]\n{fim_extra}\n",
            state = dir.path().join("state"),
        );
        for w in watches {
            cfg.push_str(&format!("[[watches]]\npath = {w:?}\nrecursive = true\n"));
        }
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, cfg)?;
        let started = Instant::now();
        let child = Command::new(agent_bin)
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", agent_bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => bail!("agent socket {} did not come up: {e}", socket.display()),
            }
        };
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, _dir: dir, events, started })
    }

    /// Waits for the first event matching `pred`.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(_) => {}
                Err(_) => bail!("no matching event within {timeout:?}"),
            }
        }
    }

    fn wait_baseline(&self, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_for(timeout, |v| v["class"] == "agent" && v["activity"] == "fim_baseline")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the secmon executable")?;
    let p = exe.with_file_name("secmon-agent");
    if !p.is_file() {
        bail!("secmon-agent not found next to secmon: build it with `cargo build --release --bins`");
    }
    Ok(p)
}

/// Deterministic pseudo-random bytes (xorshift), so the tree is the same every time.
fn fill(buf: &mut [u8], mut state: u64) {
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Generates `files` files totalling about `size` bytes in 100-file directories two
/// levels deep; sizes vary from 0 to twice the mean.
fn generate_tree(dir: &Path, files: u64, size: u64) -> anyhow::Result<()> {
    let marker = dir.join(".secmon-bench-tree");
    let want = format!("{files} {size}\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        eprintln!("using the existing tree in {}", dir.display());
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    eprintln!("generating {files} files, {size} bytes in {} ...", dir.display());
    let mean = size / files.max(1);
    let mut buf = vec![0u8; (2 * mean + 1) as usize];
    for i in 0..files {
        let sub = dir.join(format!("d{:03}/e{:02}", i / 1000, (i / 100) % 10));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = (i.wrapping_mul(2_654_435_761) % (2 * mean + 1)) as usize;
        fill(&mut buf[..len], i + 1);
        std::fs::write(sub.join(format!("f{i:06}.bin")), &buf[..len])?;
    }
    std::fs::write(marker, want)?;
    Ok(())
}

/// Reads every file once, so both tools start from a warm page cache.
fn warm(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -type f -exec cat {} + > /dev/null")
        .arg("sh")
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("warming the page cache failed");
    }
    Ok(())
}

fn run_aide(tree: &Path, workers: usize, work: &Path) -> anyhow::Result<Duration> {
    let db = work.join("aide.db.new");
    let _ = std::fs::remove_file(&db);
    let cfg = work.join("aide.conf");
    // Same attributes secmon records (permissions, inode, owner, group, size, mtime,
    // ctime) and sha256 as the only hash.
    std::fs::write(
        &cfg,
        format!(
            "database_out=file:{db}\ngzip_dbout=no\nnum_workers={workers}\nreport_url=stdout\n\
             Bench = p+i+u+g+s+m+c+sha256\n{tree} Bench\n",
            db = db.display(),
            tree = tree.display()
        ),
    )?;
    let t = Instant::now();
    let out = Command::new("aide")
        .arg("--init")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run aide: install the Debian package `aide`")?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("aide --init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn run_secmon_scan(tree: &Path, workers: usize) -> anyhow::Result<(Duration, u64, u64)> {
    let extra =
        format!("hash_workers = {workers}\nlazy_hash_above = 1099511627776\nscan_interval = \"0s\"\n");
    let agent = AgentRun::start(&agent_bin()?, &[tree.to_owned()], &extra)?;
    let ev = agent.wait_baseline(Duration::from_secs(3600))?;
    let took = agent.started.elapsed();
    let files = ev["payload"]["files"].as_u64().unwrap_or(0);
    let ms = ev["payload"]["duration_ms"].as_u64().unwrap_or(0);
    agent.stop();
    Ok((took, files, ms))
}

#[derive(Debug, Serialize)]
struct ScanReport {
    files: u64,
    bytes: u64,
    workers: usize,
    aide_secs: f64,
    aide_1_worker_secs: f64,
    secmon_secs: f64,
    secmon_walk_ms: u64,
    secmon_files: u64,
    speedup_vs_aide: f64,
}

pub fn scan(a: ScanArgs, json: bool) -> anyhow::Result<()> {
    generate_tree(&a.dir, a.files, a.size)?;
    let work = tempfile::Builder::new().prefix("secmon-bench-aide").tempdir()?;
    warm(&a.dir)?;
    let (mut aide, mut aide1, mut secmon) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut walk_ms, mut files) = (0, 0);
    for round in 1..=a.rounds {
        let t = run_aide(&a.dir, a.workers, work.path())?;
        eprintln!("round {round}: aide (num_workers={}) {:.2} s", a.workers, t.as_secs_f64());
        aide = aide.min(t);
        let t = run_aide(&a.dir, 1, work.path())?;
        eprintln!("round {round}: aide (num_workers=1) {:.2} s", t.as_secs_f64());
        aide1 = aide1.min(t);
        let (t, f, ms) = run_secmon_scan(&a.dir, a.workers)?;
        eprintln!("round {round}: secmon {:.2} s (walk {ms} ms, {f} paths)", t.as_secs_f64());
        if t < secmon {
            secmon = t;
            walk_ms = ms;
            files = f;
        }
    }
    let r = ScanReport {
        files: a.files,
        bytes: a.size,
        workers: a.workers,
        aide_secs: aide.as_secs_f64(),
        aide_1_worker_secs: aide1.as_secs_f64(),
        secmon_secs: secmon.as_secs_f64(),
        secmon_walk_ms: walk_ms,
        secmon_files: files,
        speedup_vs_aide: aide.as_secs_f64() / secmon.as_secs_f64(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "baseline of {} files ({} bytes), {} workers:\n  AIDE --init (num_workers={}) {:.2} s, (num_workers=1) {:.2} s\n  secmon-agent start to fim_baseline {:.2} s (walk {} ms, {} paths)\n  secmon is {:.2}x faster than AIDE with the same workers",
            r.files,
            r.bytes,
            r.workers,
            r.workers,
            r.aide_secs,
            r.aide_1_worker_secs,
            r.secmon_secs,
            r.secmon_walk_ms,
            r.secmon_files,
            r.speedup_vs_aide
        );
    }
    Ok(())
}

fn is_file_event_for(v: &Value, path: &str) -> bool {
    v["class"] == "file" && v["payload"]["path"] == path
}

pub fn latency(a: LatencyArgs, json: bool) -> anyhow::Result<()> {
    let tree = tempfile::Builder::new().prefix("secmon-bench-lat").tempdir()?;
    let extra = format!("backend = {:?}\nscan_interval = \"0s\"\n", a.backend);
    let agent = AgentRun::start(&agent_bin()?, &[tree.path().to_owned()], &extra)?;
    let base = agent.wait_baseline(Duration::from_secs(60))?;
    let backend = base["payload"]["backend"].as_str().unwrap_or("?").to_owned();
    let mut samples = Vec::with_capacity(a.writes as usize);
    let mut missing = 0u32;
    for i in 0..a.writes {
        let path = tree.path().join(format!("f{}", i % 10));
        let p = path.to_string_lossy().into_owned();
        let t = Instant::now();
        {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            writeln!(f, "write {i}")?;
        }
        let written = t.elapsed();
        match agent.wait_for(Duration::from_secs(5), |v| is_file_event_for(v, &p)) {
            Ok(_) => samples.push(t.elapsed().saturating_sub(written)),
            Err(_) => missing += 1,
        }
        std::thread::sleep(a.interval);
        // Events of the previous write that arrived late would be matched by the
        // next one: drain them.
        while agent.events.try_recv().is_ok() {}
    }
    agent.stop();
    let lat = Latency::of(&mut samples);
    if json {
        println!("{}", serde_json::json!({"backend": backend, "latency": lat, "missing": missing}));
    } else {
        println!("write -> socket event ({backend}): {}  missing {missing}", lat.line());
    }
    Ok(())
}

/// RSS (kB) and CPU time (utime + stime) of a process from /proc.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Ok((rss, Duration::from_millis(ticks * 1000 / hz)))
}

#[derive(Debug, Serialize)]
struct LoadReport {
    backend: String,
    watches: usize,
    baseline_paths: u64,
    idle_rss_kb: u64,
    idle_cpu_percent: f64,
    burst_files: usize,
    burst_events: usize,
    burst_missing: usize,
    burst_secs: f64,
    burst_peak_rss_kb: u64,
    burst_cpu_secs: f64,
}

pub fn load(a: LoadArgs, json: bool) -> anyhow::Result<()> {
    let root = tempfile::Builder::new().prefix("secmon-bench-load").tempdir()?;
    let mut watches = Vec::new();
    for w in 0..a.watches {
        let d = root.path().join(format!("w{w}"));
        std::fs::create_dir_all(&d)?;
        for f in 0..a.files_per_watch {
            std::fs::write(d.join(format!("f{f}")), format!("file {w}/{f}\n").repeat(32))?;
        }
        watches.push(d);
    }
    let extra = format!("backend = {:?}\nscan_interval = \"0s\"\n", a.backend);
    let agent = AgentRun::start(&agent_bin()?, &watches, &extra)?;
    let base = agent.wait_baseline(Duration::from_secs(60))?;
    let backend = base["payload"]["backend"].as_str().unwrap_or("?").to_owned();
    let baseline_paths = base["payload"]["files"].as_u64().unwrap_or(0);
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(2));
    let (_, cpu0) = proc_usage(pid)?;
    let t0 = Instant::now();
    let mut idle_rss = 0;
    while t0.elapsed() < a.idle {
        std::thread::sleep(Duration::from_millis(500));
        idle_rss = idle_rss.max(proc_usage(pid)?.0);
    }
    let (_, cpu1) = proc_usage(pid)?;
    let idle_cpu = (cpu1 - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;

    let burst_dir = watches[0].join("burst");
    std::fs::create_dir_all(&burst_dir)?;
    while agent.events.try_recv().is_ok() {}
    let want: HashSet<String> =
        (0..a.burst).map(|i| burst_dir.join(format!("b{i:05}")).to_string_lossy().into_owned()).collect();
    let t = Instant::now();
    for p in &want {
        std::fs::write(p, b"burst\n")?;
    }
    let mut seen = HashSet::new();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_sample = Instant::now();
    while seen.len() < want.len() && Instant::now() < deadline {
        if let Ok(v) = agent.events.recv_timeout(Duration::from_millis(100))
            && v["class"] == "file"
            && v["activity"] == "created"
            && let Some(p) = v["payload"]["path"].as_str()
            && want.contains(p)
        {
            seen.insert(p.to_owned());
        }
        if last_sample.elapsed() > Duration::from_millis(100) {
            peak = peak.max(proc_usage(pid)?.0);
            last_sample = Instant::now();
        }
    }
    let burst_secs = t.elapsed().as_secs_f64();
    let (rss_end, cpu2) = proc_usage(pid)?;
    peak = peak.max(rss_end);
    agent.stop();
    let r = LoadReport {
        backend,
        watches: a.watches,
        baseline_paths,
        idle_rss_kb: idle_rss,
        idle_cpu_percent: idle_cpu,
        burst_files: a.burst,
        burst_events: seen.len(),
        burst_missing: want.len() - seen.len(),
        burst_secs,
        burst_peak_rss_kb: peak,
        burst_cpu_secs: (cpu2 - cpu1).as_secs_f64(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} watches ({} paths), {}: idle RSS {:.1} MB, idle CPU {:.2}%\n  burst of {} files: {} created events, {} missing, all seen after {:.2} s; peak RSS {:.1} MB, CPU {:.2} s",
            r.watches,
            r.baseline_paths,
            r.backend,
            r.idle_rss_kb as f64 / 1024.0,
            r.idle_cpu_percent,
            r.burst_files,
            r.burst_events,
            r.burst_missing,
            r.burst_secs,
            r.burst_peak_rss_kb as f64 / 1024.0,
            r.burst_cpu_secs
        );
    }
    Ok(())
}
