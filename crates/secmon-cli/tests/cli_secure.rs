//! The operator CLI against a `secmon up --secure` stack (real binaries, real
//! nats-server, HTTPS): login and logout, the stored login, API tokens, users,
//! enrollment tokens, agent config downloads, the 401/403 messages, and a second
//! `secmon up --secure` on the same data dir reusing the deployment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use secmon_testkit::{ChildGuard, free_port, wait_until, workspace_bin};
use serde_json::Value;

struct Up {
    child: ChildGuard,
    out: PathBuf,
}

impl Up {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stop(mut self) {
        self.child.signal(Signal::SIGINT);
        let st = self.child.wait_timeout(Duration::from_secs(40)).expect("secmon up did not stop");
        assert!(st.success(), "secmon up --secure exited with {st}:\n{}", self.output());
    }
}

struct Env {
    dir: tempfile::TempDir,
    api: String,
    nats_port: u16,
}

impl Env {
    fn new() -> Self {
        workspace_bin("secmon-manager");
        workspace_bin("secmon-agent");
        let dir = tempfile::Builder::new().prefix("secmon-cli-secure-").tempdir().unwrap();
        Self { dir, api: format!("https://127.0.0.1:{}", free_port()), nats_port: free_port() }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("cli")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("stack/manager/pki/ca.pem")
    }

    fn up(&self, run: &str) -> Up {
        let out = self.dir.path().join(format!("up-{run}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secmon"))
            .arg("up")
            .arg("--secure")
            .arg("--data-dir")
            .arg(self.dir.path().join("stack"))
            .arg("--nats-url")
            .arg(format!("nats://127.0.0.1:{}", self.nats_port))
            .arg("--api-listen")
            .arg(self.api.trim_start_matches("https://"))
            .arg("--heartbeat-interval")
            .arg("500ms")
            .arg("--heartbeat-timeout")
            .arg("2s")
            .env("SECMON_CONFIG_DIR", self.config_dir())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut up = Up { child: ChildGuard::new(child), out };
        let end = Instant::now() + Duration::from_secs(120);
        while !up.output().contains("secmon is up in secure mode") {
            if let Some(st) = up.child.wait_timeout(Duration::from_millis(200)) {
                panic!("secmon up --secure exited ({st}):\n{}", up.output());
            }
            assert!(Instant::now() < end, "secmon up --secure not up:\n{}", up.output());
        }
        up
    }

    /// `secmon ARGS` with this test's config dir; returns (success, stdout, stderr).
    fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secmon"));
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
        let mut child = cmd.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args, &[], None);
        assert!(ok, "secmon {args:?}: {err}\n{out}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("secmon {args:?}: {e}: {out}"))
    }

    fn login(&self, user: &str, password: &str) -> (bool, String, String) {
        let ca = self.ca();
        self.cli(
            &["login", "--api", &self.api, "--user", user, "--password-stdin", "--ca", ca.to_str().unwrap()],
            &[],
            Some(&format!("{password}\n")),
        )
    }

    fn stored(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.config_dir().join("credentials.json")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array().or_else(|| v["items"].as_array()).cloned().unwrap_or_default()
}

fn admin_password(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.split_once("admin password (shown once, keep it): ").map(|(_, p)| p.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no admin password:\n{out}"))
}

fn active_agents(env: &Env) -> Vec<Value> {
    items(&env.json(&["agents", "--status", "active"]))
}

#[test]
fn cli_logs_in_administers_and_up_reuses_the_secure_deployment() {
    let env = Env::new();
    let up = env.up("first");
    let password = admin_password(&up.output());
    // `up` logged the CLI in: no --api needed, the stored login names the API.
    assert!(wait_until(Duration::from_secs(20), || active_agents(&env).len() == 1), "{}", up.output());
    let stored = env.stored().expect("up stored a login");
    assert_eq!(stored["api"], env.api.as_str());
    assert_eq!(stored["username"], "admin");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&env.config_dir().join("credentials.json")), 0o600);
    assert_eq!(mode(&env.config_dir()), 0o700);

    // A wrong password: refused, the stored login untouched.
    let (ok, _, err) = env.login("admin", "not-the-password");
    assert!(!ok && err.contains("unknown user or wrong password"), "{err}");
    assert_eq!(env.stored().unwrap()["token"], stored["token"]);
    let (ok, out, err) = env.login("admin", &password);
    assert!(ok, "{err}");
    assert!(out.contains("logged in to") && !out.contains(&password), "{out}");
    let session = env.stored().unwrap()["token"].as_str().unwrap().to_owned();
    assert_ne!(session, stored["token"].as_str().unwrap());

    // Users: an analyst with a generated password can log in.
    let added = env.json(&["users", "add", "ana", "--role", "analyst"]);
    let ana_pw = added["password"].as_str().expect("generated password").to_owned();
    let listed = env.ok(&["users", "list"]);
    assert!(listed.contains("ana") && listed.contains("analyst") && !listed.contains(&ana_pw), "{listed}");

    // API tokens: a readonly token reads; its command is refused with the role named.
    let tok = env.json(&["tokens", "create", "--name", "ci", "--role", "readonly", "--expires", "1d"]);
    let token = tok["token"].as_str().unwrap().to_owned();
    let id = tok["id"].as_str().map(str::to_owned).unwrap_or_else(|| tok["id"].to_string());
    assert!(!env.ok(&["tokens", "list"]).contains(&token), "tokens list shows the secret");
    let with_token = [("SECMON_TOKEN", token.as_str())];
    let (ok, out, err) = env.cli(&["agents"], &with_token, None);
    assert!(ok, "readonly token cannot read: {err}");
    let agent = active_agents(&env)[0]["id"].as_str().unwrap().to_owned();
    assert!(out.contains(&agent), "{out}");
    let (ok, _, err) = env.cli(&["command", &agent, "ping"], &with_token, None);
    assert!(!ok && err.contains("forbidden: your role"), "{err}");
    let (ok, _, err) = env.cli(&["audit"], &with_token, None);
    assert!(!ok && err.contains("forbidden: your role"), "{err}");
    env.ok(&["tokens", "delete", &id]);
    let (ok, _, err) = env.cli(&["agents"], &with_token, None);
    assert!(!ok && err.contains("not logged in or the session expired: run `secmon login`"), "{err}");

    // Enrollment tokens: created with the CA fingerprint, listed without the secret, deleted.
    let fp = std::fs::read_to_string(env.dir.path().join("stack/manager/pki/fingerprint.txt")).unwrap();
    let text = env.ok(&[
        "enroll-token",
        "create",
        "--uses",
        "2",
        "--expires",
        "1h",
        "--group",
        "web",
        "--label",
        "env=test",
    ]);
    assert!(text.contains(fp.trim()) && text.contains("token (shown once): SE1."), "{text}");
    let listed = env.json(&["enroll-token", "list"]);
    assert!(!listed.to_string().contains("SE1."), "enrollment token list shows secrets: {listed}");
    let created = items(&listed)
        .into_iter()
        .find(|t| t["groups"].to_string().contains("web"))
        .unwrap_or_else(|| panic!("new token not listed: {listed}"));
    let eid = created["id"].as_str().map(str::to_owned).unwrap_or_else(|| created["id"].to_string());
    env.ok(&["enroll-token", "delete", &eid]);

    // A ready agent config, with a token inside.
    let cfg = env.ok(&["agent-config", "--name", "web-02", "--group", "web"]);
    let parsed: toml::Table =
        toml::from_str(&cfg).unwrap_or_else(|e| panic!("agent-config is not TOML ({e}):\n{cfg}"));
    assert!(cfg.contains("SE1."), "no enrollment token in the config:\n{cfg}");
    assert!(parsed.contains_key("enrollment"), "{cfg}");

    // The audit log holds the denied command.
    let audit = env.json(&["audit", "--limit", "500"]);
    assert!(items(&audit).iter().any(|r| r["status"] == 403), "{audit:#}");

    // Logout ends the session on the manager too.
    assert!(env.ok(&["logout"]).contains("logged out"));
    assert!(env.stored().is_none());
    let (ok, _, err) = env.cli(
        &["--api", &env.api, "agents"],
        &[("SECMON_TOKEN", &session), ("SECMON_CA", env.ca().to_str().unwrap())],
        None,
    );
    assert!(!ok && err.contains("not logged in"), "the logged-out session still works: {err}");
    up.stop();

    // Second run on the same data dir: the deployment and the agent's identity are
    // reused, no new admin password; the CLI logs in with the first one.
    let (ok, _, err) = env.login("admin", &password);
    assert!(!ok, "login with the manager stopped: {err}");
    let up = env.up("second");
    let out = up.output();
    assert!(out.contains("reusing the secure deployment"), "{out}");
    assert!(!out.contains("admin password"), "a second admin password:\n{out}");
    assert!(!out.contains("enrolling the agent"), "the agent enrolled again:\n{out}");
    let (ok, _, err) = env.login("admin", &password);
    assert!(ok, "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || active_agents(&env).iter().any(|a| a["id"] == agent.as_str())),
        "the same agent is not active again:\n{}",
        up.output()
    );
    up.stop();
}
