//! `secmon up --secure --mutual-tls` (real binaries, real nats-server, HTTPS): the
//! stack comes up with nats-server requiring client certificates, the manager and the
//! enrolled agent present theirs, and the agent is active.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use secmon_testkit::{ChildGuard, free_port, wait_until, workspace_bin};
use serde_json::Value;

#[test]
fn up_with_mutual_tls_runs_an_agent_that_presents_its_certificate() {
    workspace_bin("secmon-manager");
    workspace_bin("secmon-agent");
    let dir = tempfile::Builder::new().prefix("secmon-up-mtls-").tempdir().unwrap();
    let stack = dir.path().join("stack");
    let config_dir = dir.path().join("cli");
    let api = format!("https://127.0.0.1:{}", free_port());
    let out_path = dir.path().join("up.out");
    let file = std::fs::File::create(&out_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["up", "--secure", "--mutual-tls", "--data-dir"])
        .arg(&stack)
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{}", free_port()))
        .arg("--api-listen")
        .arg(api.trim_start_matches("https://"))
        .args(["--heartbeat-interval", "500ms", "--heartbeat-timeout", "2s"])
        .env("SECMON_CONFIG_DIR", &config_dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut up = ChildGuard::new(child);
    let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(120);
    while !output().contains("secmon is up in secure mode") {
        if let Some(st) = up.wait_timeout(Duration::from_millis(200)) {
            panic!("secmon up --secure --mutual-tls exited ({st}):\n{}", output());
        }
        assert!(Instant::now() < end, "secmon up --secure --mutual-tls not up:\n{}", output());
    }
    assert!(output().contains("mutual TLS: on"), "{}", output());

    let pki = stack.join("manager/pki");
    let conf = std::fs::read_to_string(pki.join("nats-server.conf")).unwrap();
    assert!(conf.contains("verify: true"), "nats-server does not require client certificates:\n{conf}");
    let agent_toml: toml::Table =
        toml::from_str(&std::fs::read_to_string(stack.join("agent.toml")).unwrap()).unwrap();
    assert_eq!(agent_toml["nats"]["tls_cert"].as_str(), stack.join("agent/client.pem").to_str());
    let key = stack.join("agent/client-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let manager_toml: toml::Table =
        toml::from_str(&std::fs::read_to_string(stack.join("manager.toml")).unwrap()).unwrap();
    assert_eq!(manager_toml["nats"]["tls_cert"].as_str(), pki.join("manager-client.pem").to_str());

    // `up` logged the CLI in; the agent, connected with its certificate, is active.
    let active = || -> Vec<Value> {
        let o = Command::new(env!("CARGO_BIN_EXE_secmon"))
            .args(["--json", "agents", "--status", "active"])
            .env("SECMON_CONFIG_DIR", &config_dir)
            .env_remove("SECMON_API")
            .env_remove("SECMON_TOKEN")
            .env_remove("SECMON_CA")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v.as_array().or_else(|| v["items"].as_array()).cloned().unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(30), || active().len() == 1), "no active agent:\n{}", output());
    let log = output();
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    up.signal(Signal::SIGINT);
    let st = up.wait_timeout(Duration::from_secs(40)).expect("secmon up did not stop");
    assert!(st.success(), "secmon up exited with {st}:\n{}", output());
}
