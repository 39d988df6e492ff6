//! `run-script` against a real nats-server and real processes: only configured scripts
//! run, with every argument checked, directly (no shell), bounded in time and output.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use common::*;
use secmon_agent::{Agent, AgentConfig, AgentHandle, AgentOptions};
use secmon_proto::{CommandReply, DEFAULT_MAX_EVENT_BYTES, decode};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};
use uuid::Uuid;

/// Writes an executable `#!/bin/sh` script (mode 0700) and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
}

fn load(url: &str, dir: &Path, commands: &str) -> Result<AgentConfig, secmon_config::ConfigError> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, format!("{}\n{commands}", config_toml(url, &dir.join("state"), "200ms"))).unwrap();
    secmon_config::load(Some(&path))
}

struct Agentd {
    _nats: NatsServer,
    agent: AgentHandle,
    client: async_nats::Client,
    subject: String,
}

async fn start(dir: &Path, commands: &str) -> Agentd {
    let nats = NatsServer::start();
    let cfg = load(&nats.url(), dir, commands).expect("config loads");
    let agent = Agent::start(cfg, AgentOptions::default()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || agent.status()["nats"]["connected"] == true).await);
    let client = client(&nats.url()).await;
    let subject = format!("secmon.cmd.{}", agent.agent_id());
    Agentd { _nats: nats, agent, client, subject }
}

impl Agentd {
    async fn command(&self, command: &str, args: Value) -> CommandReply {
        let id = Uuid::now_v7();
        let req = json!({"v": 1, "id": id, "command": command, "args": args, "issued_at": Utc::now()});
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request(self.subject.clone(), serde_json::to_vec(&req).unwrap().into()),
        )
        .await
        .expect("reply within 10s")
        .expect("request answered");
        let reply: CommandReply = decode(&msg.payload, DEFAULT_MAX_EVENT_BYTES).expect("reply decodes");
        assert_eq!(reply.id, id);
        reply
    }

    async fn run(&self, name: &str, args: Value) -> CommandReply {
        self.command("run-script", json!({"name": name, "args": args})).await
    }

    async fn ok(&self, name: &str, args: Value) -> Value {
        let r = self.run(name, args).await;
        assert!(r.ok, "{name} failed: {:?}", r.error);
        r.result
    }

    async fn err(&self, name: &str, args: Value) -> (String, String) {
        let r = self.run(name, args).await;
        assert!(!r.ok, "{name} should fail: {}", r.result);
        let e = r.error.unwrap();
        (e.code, e.message)
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_script_runs_and_injection_attempts_never_reach_it() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let lookup = script(
        tmp.path(),
        "lookup.sh",
        &format!("echo \"$1\" >> {}\necho \"host=$1\"\necho oops >&2\nexit 3", marker.display()),
    );
    let env = script(
        tmp.path(),
        "env.sh",
        "pwd\necho \"$PATH|$LANG|${HOME:-nohome}|${SECRET:-none}\"\nread x || echo stdin-closed",
    );
    let d = start(
        tmp.path(),
        &format!(
            "[[commands.scripts]]\nname = \"lookup\"\npath = {:?}\n\
             args = [{{ name = \"host\", pattern = \"^[a-z0-9.-]{{1,253}}$\" }}]\n\n\
             [[commands.scripts]]\nname = \"env\"\npath = {:?}\n",
            lookup.display().to_string(),
            env.display().to_string()
        ),
    )
    .await;

    let r = d.ok("lookup", json!(["example.com"])).await;
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "host=example.com\n");
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["truncated"], false);
    assert!(r["duration_ms"].is_u64());
    assert_eq!(lines(&marker), ["example.com"]);

    // No shell, no inherited environment, cwd "/", stdin closed.
    let r = d.ok("env", json!([])).await;
    assert_eq!(r["stdout"], "/\n/usr/sbin:/usr/bin:/sbin:/bin|C|nohome|none\nstdin-closed\n");

    let long = "x".repeat(150) + ";";
    for bad in ["example.com; rm -rf /", "$(id)", "`id`", "a\nb", "../etc/passwd", "", long.as_str()] {
        let (code, msg) = d.err("lookup", json!([bad])).await;
        assert_eq!(code, "bad_argument", "{bad:?}: {msg}");
        assert!(msg.contains("host"), "names the argument: {msg}");
        assert!(!msg.contains(&"x".repeat(101)), "echoes at most 100 chars: {msg}");
    }
    for args in [json!([]), json!(["a.com", "b.com"]), json!([42])] {
        assert_eq!(d.err("lookup", args).await.0, "bad_argument");
    }
    assert_eq!(lines(&marker), ["example.com"], "a refused request never runs the script");

    let (code, msg) = d.err("rm", json!(["-rf", "/"])).await;
    assert_eq!(code, "unknown_script");
    assert!(msg.contains("lookup, env"), "{msg}");
    let (code, _) = d.err("status", json!([])).await;
    assert_eq!(code, "unknown_script", "a built-in is not a script");

    let st = d.command("status", json!({})).await;
    assert_eq!(st.result["scripts"], json!(["lookup", "env"]));
    d.agent.shutdown("test").await;
}

/// Processes of process group `pgid` that are still alive (zombies do not count:
/// they run nothing, and this container's init may reap them late).
fn live_in_group(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X" {
            live.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_past_its_timeout_is_killed_with_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let slow = script(
        tmp.path(),
        "slow.sh",
        &format!("echo before\nsleep 30 &\necho \"$$ $!\" > {}\nwait", pids.display()),
    );
    let d = start(
        tmp.path(),
        &format!(
            "[[commands.scripts]]\nname = \"slow\"\npath = {:?}\ntimeout = \"700ms\"\n",
            slow.display().to_string()
        ),
    )
    .await;
    let started = std::time::Instant::now();
    let r = d.run("slow", json!([])).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(!r.ok);
    assert_eq!(r.error.as_ref().unwrap().code, "timeout");
    assert_eq!(r.result["stdout"], "before\n", "output so far comes back");

    let text = std::fs::read_to_string(&pids).expect("the script started its child");
    let ids: Vec<i32> = text.split_whitespace().map(|s| s.parse().unwrap()).collect();
    let (pgid, sleep_pid) = (ids[0], ids[1]);
    assert!(
        eventually(Duration::from_secs(3), || live_in_group(pgid).is_empty()).await,
        "still alive in the group: {:?}",
        live_in_group(pgid)
    );
    let sleep_state = std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).unwrap_or_default();
    assert!(
        sleep_state.is_empty() || sleep_state.rsplit_once(") ").unwrap().1.starts_with('Z'),
        "the child sleep survived: {sleep_state}"
    );
    d.agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_cut_at_max_output_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let loud = script(
        tmp.path(),
        "loud.sh",
        "head -c 10000000 /dev/zero | tr '\\0' 'x'\nhead -c 10000000 /dev/zero | tr '\\0' 'y' >&2\necho done >&2",
    );
    let d = start(
        tmp.path(),
        &format!(
            "[[commands.scripts]]\nname = \"loud\"\npath = {:?}\nmax_output = 1000\n",
            loud.display().to_string()
        ),
    )
    .await;
    let r = d.ok("loud", json!(null)).await;
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["truncated"], true);
    assert_eq!(r["stdout"], "x".repeat(1000));
    assert_eq!(r["stderr"], "y".repeat(1000));
    d.agent.shutdown("test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_scripts_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (started, release) = (tmp.path().join("started"), tmp.path().join("release"));
    let hold = script(
        tmp.path(),
        "hold.sh",
        &format!(
            "echo x >> {}\nwhile [ ! -e {} ]; do sleep 0.05; done\necho released",
            started.display(),
            release.display()
        ),
    );
    let d = std::sync::Arc::new(
        start(
            tmp.path(),
            &format!(
                "[[commands.scripts]]\nname = \"hold\"\npath = {:?}\ntimeout = \"8s\"\n",
                hold.display().to_string()
            ),
        )
        .await,
    );
    let running: Vec<_> = (0..4)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.run("hold", json!([])).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || lines(&started).len() == 4).await, "4 scripts started");
    let (code, msg) = d.err("hold", json!([])).await;
    assert_eq!(code, "busy", "{msg}");
    // Other commands are answered while scripts run.
    assert!(d.command("ping", json!({})).await.ok);
    std::fs::write(&release, "").unwrap();
    for t in running {
        let r = t.await.unwrap();
        assert!(r.ok, "{:?}", r.error);
        assert_eq!(r.result["stdout"], "released\n");
    }
    assert_eq!(lines(&started).len(), 4, "the refused one never ran");
    // A permit is back: the next one runs.
    assert!(d.run("hold", json!([])).await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_scripts_false_refuses_every_script() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let s = script(tmp.path(), "s.sh", &format!("touch {}", marker.display()));
    let d = start(
        tmp.path(),
        &format!(
            "[commands]\nallow_scripts = false\n\n[[commands.scripts]]\nname = \"s\"\npath = {:?}\n",
            s.display().to_string()
        ),
    )
    .await;
    let (code, msg) = d.err("s", json!([])).await;
    assert_eq!(code, "scripts_disabled");
    assert!(msg.contains("commands.allow_scripts"), "{msg}");
    assert!(!marker.exists(), "the script did not run");
    assert_eq!(d.command("status", json!({})).await.result["scripts"], json!([]));
    d.agent.shutdown("test").await;
}

#[test]
fn unsafe_script_configs_are_refused_at_load_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = script(tmp.path(), "ok.sh", "true");
    let shared = script(tmp.path(), "shared.sh", "true");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o757)).unwrap();
    let group_w = script(tmp.path(), "group.sh", "true");
    std::fs::set_permissions(&group_w, std::fs::Permissions::from_mode(0o770)).unwrap();
    let noexec = script(tmp.path(), "noexec.sh", "true");
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    let entry = |name: &str, path: String, extra: &str| {
        format!("[[commands.scripts]]\nname = \"{name}\"\npath = {path}\n{extra}")
    };
    let url = "nats://127.0.0.1:1";
    load(url, tmp.path(), &entry("ok", p(&ok), "args = [{ name = \"n\", pattern = \"^[0-9]+$\" }]\n"))
        .expect("a safe script loads");
    for (text, key, why) in [
        (entry("shared", p(&shared), ""), "commands.scripts[0].path", "writable"),
        (entry("group", p(&group_w), ""), "commands.scripts[0].path", "writable"),
        (entry("noexec", p(&noexec), ""), "commands.scripts[0].path", "not executable"),
        (entry("dir", p(tmp.path()), ""), "commands.scripts[0].path", "not a regular file"),
        (entry("missing", p(&tmp.path().join("nope")), ""), "commands.scripts[0].path", "No such file"),
        (entry("rel", "\"ok.sh\"".into(), ""), "commands.scripts[0].path", "absolute"),
        (entry("status", p(&ok), ""), "commands.scripts[0].name", "built-in"),
        (entry("run-script", p(&ok), ""), "commands.scripts[0].name", "built-in"),
        (entry("Bad Name", p(&ok), ""), "commands.scripts[0].name", "a-z"),
        (entry("ok", p(&ok), "") + "\n" + &entry("ok", p(&ok), ""), "commands.scripts[1].name", "twice"),
        (
            entry("ok", p(&ok), "args = [{ name = \"n\", pattern = \"[a-z\" }]\n"),
            "commands.scripts[0].args[0].pattern",
            "regex",
        ),
        (entry("ok", p(&ok), "timeout = \"6m\"\n"), "commands.scripts[0].timeout", "5m"),
        (entry("ok", p(&ok), "max_output = 2000000\n"), "commands.scripts[0].max_output", "1048576"),
    ] {
        let e = load(url, tmp.path(), &text).expect_err(&text).to_string();
        assert!(e.contains(key) && e.contains(why), "{text}: {e}");
    }
}
