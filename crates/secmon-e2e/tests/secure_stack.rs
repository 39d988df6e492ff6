//! Issue 6, "how it will be checked": a fresh `secmon up --secure` stack (the real
//! `secmon`, `secmon-manager`, `secmon-agent` and nats-server binaries), then a second
//! agent enrolls and its credentials are turned against the first agent:
//! - publishing into the first agent's subjects is refused by nats-server and nothing
//!   reaches the `SECMON_EVENTS` stream or the manager; subscribing to the first
//!   agent's commands is refused too;
//! - a tampered and an unsigned event on its own subject raise a critical
//!   `spoofing attempt` alert and are not stored;
//! - removing it through the API cuts its NATS connection within seconds, and its
//!   credentials cannot connect again;
//! - the API refuses requests without a token (401) and a readonly user's command (403).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use secmon_proto::{AgentId, Envelope, EventClass, Severity};
use secmon_testkit::{ChildGuard, free_port, wait_until, workspace_bin};
use serde_json::{Value, json};

/// How long `secmon up --secure` may take to be up (init, NATS, manager, enrollment).
const UP_TIMEOUT: Duration = Duration::from_secs(120);
/// "Within seconds": the revoked agent's connection must be gone by then.
const REVOKE_LIMIT: Duration = Duration::from_secs(5);

struct Stack {
    child: ChildGuard,
    dir: tempfile::TempDir,
    api: String,
    nats_port: u16,
    out: PathBuf,
}

impl Stack {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn stack_dir(&self) -> PathBuf {
        self.dir.path().join("stack")
    }
    fn pki(&self) -> PathBuf {
        self.stack_dir().join("manager/pki")
    }
    fn ca_path(&self) -> PathBuf {
        self.pki().join("ca.pem")
    }
    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap()
    }
    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("cli-config")
    }
    fn nats_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.nats_port)
    }

    /// Runs the `secmon` CLI with this stack's stored login; `env` adds variables.
    fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new(workspace_bin("secmon"));
        cmd.args(args)
            .env("SECMON_CONFIG_DIR", self.config_dir())
            .env_remove("SECMON_API")
            .env_remove("SECMON_TOKEN")
            .env_remove("SECMON_CA")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn secmon");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.cli(&all, &[], None);
        assert!(ok, "secmon {args:?} failed: {err}\n{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("secmon {args:?}: not JSON ({e}): {out}"))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn start_stack() -> Stack {
    // The daemons are found next to `secmon`; make sure they were built.
    workspace_bin("secmon-manager");
    workspace_bin("secmon-agent");
    let dir = tempfile::Builder::new().prefix("secmon-secure-").tempdir().unwrap();
    let (api_port, nats_port) = (free_port(), free_port());
    let out = dir.path().join("up.out");
    let file = std::fs::File::create(&out).unwrap();
    let child = Command::new(workspace_bin("secmon"))
        .arg("up")
        .arg("--secure")
        .arg("--data-dir")
        .arg(dir.path().join("stack"))
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{nats_port}"))
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--heartbeat-interval")
        .arg("500ms")
        .arg("--heartbeat-timeout")
        .arg("2s")
        .env("SECMON_CONFIG_DIR", dir.path().join("cli-config"))
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn secmon up --secure");
    let mut stack = Stack {
        child: ChildGuard::new(child),
        dir,
        api: format!("https://127.0.0.1:{api_port}"),
        nats_port,
        out,
    };
    let end = Instant::now() + UP_TIMEOUT;
    while !stack.output().contains("secmon is up in secure mode") {
        if let Some(st) = stack.child.wait_timeout(Duration::from_millis(200)) {
            panic!("secmon up --secure exited ({st}) before it was up:\n{}", stack.output());
        }
        assert!(Instant::now() < end, "secmon up --secure not up after {UP_TIMEOUT:?}:\n{}", stack.output());
    }
    stack
}

/// An HTTPS client trusting only the stack's CA.
fn https(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<_> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .tls_config(tls)
        .build()
        .into()
}

/// (status, JSON body or Null) of one request; `token` as a bearer token.
fn call(
    http: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("GET", _) => {
            let r = http.get(url);
            match &auth {
                Some(a) => r.header("Authorization", a.as_str()).call(),
                None => r.call(),
            }
        }
        ("DELETE", _) => {
            let r = http.delete(url);
            match &auth {
                Some(a) => r.header("Authorization", a.as_str()).call(),
                None => r.call(),
            }
        }
        ("POST", b) => {
            let r = http.post(url);
            let r = match &auth {
                Some(a) => r.header("Authorization", a.as_str()),
                None => r,
            };
            r.send_json(b.unwrap_or(json!({})))
        }
        (m, _) => panic!("method {m}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array().or_else(|| v["items"].as_array()).cloned().unwrap_or_default()
}

/// Everything the attacker's NATS client was told by the server, as text.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, e: String) {
        self.0.lock().unwrap().push(e);
    }
    fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(|e| pred(e))
    }
    /// Like `any`, over the notices after the first `n`.
    fn any_since(&self, n: usize, pred: impl Fn(&str) -> bool) -> bool {
        self.0.lock().unwrap().iter().skip(n).any(|e| pred(e))
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A NATS client with the given creds and the stack's CA (what a thief of that creds
/// file can do), recording the server's notices.
async fn nats_client(
    url: &str,
    creds: &Path,
    ca: &Path,
    inbox: Option<String>,
) -> Result<(async_nats::Client, Events), async_nats::ConnectError> {
    let events = Events::default();
    let seen = events.clone();
    let mut opts = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .expect("read creds")
        .add_root_certificates(ca.to_owned())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |e| {
            let seen = seen.clone();
            async move { seen.push(e.to_string().to_lowercase()) }
        });
    if let Some(p) = inbox {
        opts = opts.custom_inbox_prefix(p);
    }
    opts.connect(url).await.map(|c| (c, events))
}

fn forged_envelope(agent: &str, marker: &str) -> Envelope {
    Envelope::new(
        AgentId::new(agent).unwrap(),
        1_000_000,
        EventClass::Log,
        "forged",
        Severity::Info,
        json!({ "marker": marker, "line": "sshd: Accepted password for root" }),
    )
}

/// Whether the manager stored an event of `agent` whose payload carries `marker`.
fn stored_with_marker(http: &ureq::Agent, api: &str, token: &str, agent: &str, marker: &str) -> bool {
    let (st, page) =
        call(http, "GET", &format!("{api}/api/events?agent={agent}&limit=1000"), Some(token), None);
    assert_eq!(st, 200, "GET /api/events: {page}");
    items(&page).iter().any(|e| e.to_string().contains(marker))
}

/// The spoofing alerts (critical, titled `spoofing attempt`) and their total count.
fn spoofing_alerts(http: &ureq::Agent, api: &str, token: &str) -> (Vec<Value>, u64) {
    let (st, page) = call(http, "GET", &format!("{api}/api/alerts?limit=1000"), Some(token), None);
    assert_eq!(st, 200, "GET /api/alerts: {page}");
    let found: Vec<Value> = items(&page)
        .into_iter()
        .filter(|a| a["title"].as_str().is_some_and(|t| t.to_lowercase().contains("spoofing attempt")))
        .collect();
    let total = found.iter().map(|a| a["count"].as_u64().unwrap_or(1)).sum();
    (found, total)
}

#[test]
fn secure_stack_contains_a_stolen_agent_identity_and_unauthorised_api_users() {
    let mut stack = start_stack();
    let out = stack.output();
    let password = out
        .lines()
        .find_map(|l| {
            l.split_once("admin password (shown once, keep it): ").map(|(_, p)| p.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no admin password in the first run's summary:\n{out}"));
    let fingerprint = std::fs::read_to_string(stack.pki().join("fingerprint.txt")).unwrap().trim().to_owned();
    assert!(out.contains(&fingerprint), "summary without the CA fingerprint:\n{out}");
    let http = https(&stack.ca_pem());

    // The printed password logs the CLI in (stored 0600); `up` had already done so.
    let (ok, o, e) = stack.cli(
        &[
            "login",
            "--api",
            &stack.api,
            "--user",
            "admin",
            "--password-stdin",
            "--ca",
            stack.ca_path().to_str().unwrap(),
        ],
        &[],
        Some(&format!("{password}\n")),
    );
    assert!(ok, "secmon login failed: {e}\n{o}");
    assert!(!o.contains(&password) && !e.contains(&password), "login echoed the password");
    let creds_path = stack.config_dir().join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777, 0o600);
    let admin: Value = serde_json::from_str(&std::fs::read_to_string(&creds_path).unwrap()).unwrap();
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    assert_eq!(admin["role"], "admin", "{}", admin["role"]);

    // The stack's own (enrolled) agent is active.
    let mut first = String::new();
    let active = wait_until(Duration::from_secs(30), || {
        let page = stack.cli_json(&["agents", "--status", "active"]);
        match items(&page).as_slice() {
            [a] => {
                first = a["id"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        }
    });
    assert!(active, "the stack's agent is not active:\n{}", stack.output());

    // --- The API refuses the unauthenticated, over HTTPS only. ---
    let (st, body) = call(&http, "GET", &format!("{}/api/agents", stack.api), None, None);
    assert_eq!(st, 401, "GET /api/agents without a token: {body}");
    let (st, body) = call(&http, "GET", &format!("{}/api/agents", stack.api), Some("not-a-token"), None);
    assert_eq!(st, 401, "GET /api/agents with a bad token: {body}");
    let plain =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
    let plain_url = stack.api.replacen("https://", "http://", 1) + "/api/agents";
    assert!(
        !matches!(plain.get(&plain_url).call(), Ok(r) if r.status() == 200),
        "the API answered over plain HTTP"
    );
    let anon_dir = stack.dir.path().join("anon");
    let (ok, _, err) = stack.cli(
        &["--api", &stack.api, "agents"],
        &[
            ("SECMON_CONFIG_DIR", anon_dir.to_str().unwrap()),
            ("SECMON_CA", stack.ca_path().to_str().unwrap()),
        ],
        None,
    );
    assert!(!ok && err.contains("not logged in or the session expired: run `secmon login`"), "{err}");

    // --- A second agent enrolls with a token from the CLI. ---
    let created = stack.cli_json(&["enroll-token", "create", "--uses", "1", "--expires", "10m"]);
    let token = created["token"].as_str().expect("enrollment token").to_owned();
    assert_eq!(created["ca_fingerprint"].as_str(), Some(fingerprint.as_str()), "{created}");
    let state2 = stack.dir.path().join("agent2");
    let config2 = stack.dir.path().join("agent2.toml");
    std::fs::write(
        &config2,
        format!(
            "[agent]\nname = \"intruder\"\nstate_dir = {:?}\n\n[nats]\nurl = {:?}\n",
            state2.to_str().unwrap(),
            stack.nats_url()
        ),
    )
    .unwrap();
    let enroll = Command::new(workspace_bin("secmon-agent"))
        .args(["enroll", "--manager", &stack.api, "--token", &token, "--config", config2.to_str().unwrap()])
        .output()
        .unwrap();
    let enroll_out =
        format!("{}{}", String::from_utf8_lossy(&enroll.stdout), String::from_utf8_lossy(&enroll.stderr));
    assert!(enroll.status.success(), "secmon-agent enroll: {enroll_out}");
    assert!(!enroll_out.contains(&token), "enroll printed the token: {enroll_out}");
    let creds2 = state2.join("nats.creds");
    assert_eq!(std::fs::metadata(&creds2).unwrap().permissions().mode() & 0o777, 0o600);
    let ca2 = state2.join("ca.pem");
    // The token was single-use.
    let again = Command::new(workspace_bin("secmon-agent"))
        .args(["enroll", "--manager", &stack.api, "--token", &token, "--force", "--config"])
        .arg(stack.dir.path().join("agent3.toml"))
        .output()
        .unwrap();
    assert!(!again.status.success(), "a used-up enrollment token enrolled again");

    let agents = stack.cli_json(&["agents"]);
    let second = items(&agents)
        .iter()
        .filter_map(|a| a["id"].as_str())
        .find(|id| *id != first)
        .unwrap_or_else(|| panic!("the second agent is not in the registry: {agents:#}"))
        .to_owned();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let inbox = Some(format!("_INBOX_{second}"));
        let (thief, seen) = nats_client(&stack.nats_url(), &creds2, &ca2, inbox.clone())
            .await
            .unwrap_or_else(|e| panic!("the second agent's creds cannot connect: {e}"));
        let (mgr, _) =
            nats_client(&stack.nats_url(), &stack.pki().join("manager.creds"), &stack.ca_path(), None)
                .await
                .expect("manager creds connect");
        let js = async_nats::jetstream::new(mgr.clone());
        let stream = js.get_stream("SECMON_EVENTS").await.expect("SECMON_EVENTS stream");
        let (_, key2) = secmon_nats::parse_creds(&std::fs::read_to_string(&creds2).unwrap()).unwrap();

        // --- Publishing as the first agent is refused; nothing reaches the stream. ---
        let marker1 = format!("impersonation-{}", uuid_like());
        let mut env = forged_envelope(&first, &marker1);
        // Even a valid signature (with the thief's own key) must not help.
        secmon_proto::signing::sign_envelope(&mut env, &key2).unwrap();
        let subject1 = format!("secmon.agent.{first}.event.log");
        thief.publish(subject1.clone(), serde_json::to_vec(&env).unwrap().into()).await.unwrap();
        thief.flush().await.unwrap();
        let refused = wait_async(Duration::from_secs(5), || {
            seen.any(|e| e.contains("permissions violation") && e.contains(&subject1.to_lowercase()))
        })
        .await;
        assert!(refused, "no permissions violation for publishing to {subject1}: {:?}", seen.all());
        // Subscribing to the first agent's commands is refused too.
        let cmd1 = format!("secmon.cmd.{first}");
        let _sub = thief.subscribe(cmd1.clone()).await.unwrap();
        thief.flush().await.unwrap();
        let refused = wait_async(Duration::from_secs(5), || {
            seen.any(|e| e.contains("permissions violation") && e.contains(&cmd1.to_lowercase()))
        })
        .await;
        assert!(refused, "no permissions violation for subscribing to {cmd1}: {:?}", seen.all());

        // --- Tampered and unsigned events on its own subject: alert, not stored. ---
        let (_, before) = spoofing_alerts(&http, &stack.api, &admin_token);
        let marker2 = format!("tampered-{}", uuid_like());
        let mut env = forged_envelope(&second, "original");
        secmon_proto::signing::sign_envelope(&mut env, &key2).unwrap();
        env.payload["marker"] = marker2.clone().into();
        let subject2 = format!("secmon.agent.{second}.event.log");
        thief.publish(subject2.clone(), serde_json::to_vec(&env).unwrap().into()).await.unwrap();
        thief.flush().await.unwrap();
        // The control for the stream check above: its own subject is allowed, so this
        // one is in the stream; the manager is the one that refuses it.
        let last =
            stream.get_last_raw_message_by_subject(&subject2).await.expect("own subject in the stream");
        assert!(String::from_utf8_lossy(&last.payload).contains(&marker2));
        let mut after = before;
        let alerted = wait_async(Duration::from_secs(15), || {
            after = spoofing_alerts(&http, &stack.api, &admin_token).1;
            after > before
        })
        .await;
        assert!(alerted, "no spoofing attempt alert for a tampered event:\n{}", stack.output());
        let (alerts, _) = spoofing_alerts(&http, &stack.api, &admin_token);
        assert!(alerts.iter().all(|a| a["severity"] == "critical"), "{alerts:#?}");

        let marker3 = format!("unsigned-{}", uuid_like());
        let mut env = forged_envelope(&second, &marker3);
        env.seq += 1;
        thief.publish(subject2.clone(), serde_json::to_vec(&env).unwrap().into()).await.unwrap();
        thief.flush().await.unwrap();
        let before = after;
        let alerted = wait_async(Duration::from_secs(15), || {
            spoofing_alerts(&http, &stack.api, &admin_token).1 > before
        })
        .await;
        assert!(alerted, "no spoofing attempt alert for an unsigned event:\n{}", stack.output());

        // The impersonation never reached the stream nor the manager; the forgeries are
        // not stored either.
        // An error here: nothing of the first agent's logs in the stream at all.
        if let Ok(m) = stream.get_last_raw_message_by_subject(&subject1).await {
            assert!(!String::from_utf8_lossy(&m.payload).contains(&marker1), "impersonation in the stream");
        }
        for (agent, marker) in [(&first, &marker1), (&second, &marker2), (&second, &marker3)] {
            assert!(
                !stored_with_marker(&http, &stack.api, &admin_token, agent, marker),
                "{marker} was stored for {agent}"
            );
        }

        // --- Removal revokes: the connection drops within seconds, no reconnect. ---
        let t0 = Instant::now();
        let before_removal = seen.all().len();
        let (ok, o, e) = stack.cli(&["agent", &second, "--remove"], &[], None);
        assert!(ok, "secmon agent --remove: {e}\n{o}");
        let dropped = wait_async(REVOKE_LIMIT, || {
            seen.any_since(before_removal, |e| {
                e.contains("disconnected") || e.contains("authorization") || e.contains("revoked")
            })
        })
        .await;
        assert!(dropped, "revoked agent still connected after {:?}: {:?}", t0.elapsed(), seen.all());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_ne!(
            thief.connection_state(),
            async_nats::connection::State::Connected,
            "the revoked agent reconnected: {:?}",
            seen.all()
        );
        let reconnect = tokio::time::timeout(
            Duration::from_secs(10),
            nats_client(&stack.nats_url(), &creds2, &ca2, inbox),
        )
        .await;
        assert!(
            matches!(reconnect, Ok(Err(_))),
            "the revoked agent's creds connected again (or hung): {}",
            match &reconnect {
                Ok(Ok(_)) => "connected".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timeout".to_owned(),
            }
        );
    });

    // --- Roles: a readonly user reads but may not send commands. ---
    let added = stack.cli_json(&["users", "add", "viewer", "--role", "readonly"]);
    let viewer_pw = added["password"].as_str().expect("generated password").to_owned();
    let (st, login) = call(
        &http,
        "POST",
        &format!("{}/api/login", stack.api),
        None,
        Some(json!({"username": "viewer", "password": viewer_pw})),
    );
    assert_eq!(st, 200, "viewer login: {login}");
    let viewer = login["token"].as_str().unwrap().to_owned();
    assert_eq!(login["role"], "readonly");
    let (st, _) = call(&http, "GET", &format!("{}/api/agents", stack.api), Some(&viewer), None);
    assert_eq!(st, 200, "readonly may read");
    let cmd_url = format!("{}/api/agents/{first}/command", stack.api);
    let (st, body) = call(&http, "POST", &cmd_url, Some(&viewer), Some(json!({"command": "ping"})));
    assert_eq!(st, 403, "readonly posting a command: {body}");
    let (ok, _, err) = stack.cli(&["command", &first, "ping"], &[("SECMON_TOKEN", &viewer)], None);
    assert!(!ok && err.contains("forbidden: your role"), "{err}");
    let (st, body) = call(&http, "GET", &format!("{}/api/audit", stack.api), Some(&viewer), None);
    assert_eq!(st, 403, "readonly reading the audit log: {body}");
    // --- The audit log saw it: the denied command and the removal. ---
    let audit = stack.cli_json(&["audit", "--limit", "1000"]);
    let records = items(&audit);
    assert!(
        records.iter().any(|r| r["actor"] == "viewer" && r["status"] == 403),
        "no denied command by viewer in the audit log: {audit:#}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["status"] == 200 && r["method"] == "DELETE" && r.to_string().contains(&second)),
        "no removal of {second} in the audit log: {audit:#}"
    );
    let everything = format!("{}{audit}", stack.output());
    assert!(!everything.contains(&viewer_pw) && !everything.contains(&admin_token), "a secret leaked");

    // The admin may: the 403 is the role's, not the route's.
    let (st, body) = call(&http, "POST", &cmd_url, Some(&admin_token), Some(json!({"command": "ping"})));
    assert_eq!(st, 200, "admin ping: {body}\n{}", stack.output());

    // Ctrl-C: clean stop.
    stack.child.signal(Signal::SIGINT);
    let st = stack.child.wait_timeout(Duration::from_secs(40)).expect("secmon up did not stop");
    assert!(st.success(), "secmon up --secure exited with {st}:\n{}", stack.output());
}

async fn wait_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique marker per run.
fn uuid_like() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}-{}", t.as_nanos(), std::process::id())
}
