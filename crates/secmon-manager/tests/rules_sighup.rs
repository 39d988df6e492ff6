//! The manager binary reloads its rules on SIGHUP (file watching set to an hour,
//! so only the signal can do it) and still stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use secmon_testkit::{ChildGuard, NatsServer, free_port, wait_until};
use serde_json::Value;

const RULE: &str = r#"
title: Test rule {N}
id: 0d9a7f3e-5c2b-4e8a-9b1f-00000000000{N}
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename: /etc/rule-{N}
    condition: selection
level: low
"#;

fn rule_ids(http: &ureq::Agent, base: &str) -> Option<Vec<String>> {
    let mut resp = http.get(format!("{base}/api/rules")).call().ok()?;
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    Some(v["rules"].as_array()?.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status().expect("run kill");
    assert!(st.success(), "kill {sig} {pid} failed");
}

#[test]
fn sighup_reloads_the_rules() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("one.yml"), RULE.replace("{N}", "1")).unwrap();
    let port = free_port();
    let config = dir.path().join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n\
             [rules]\ndirs = [\"{}\"]\nwatch_interval = \"1h\"\n",
            nats.url(),
            dir.path().join("data").display(),
            rules.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_secmon-manager"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start secmon-manager");
    let mut child = ChildGuard::new(child);
    let http: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let base = format!("http://127.0.0.1:{port}");
    let one = vec!["0d9a7f3e-5c2b-4e8a-9b1f-000000000001".to_owned()];
    assert!(
        wait_until(Duration::from_secs(20), || rule_ids(&http, &base).as_ref() == Some(&one)),
        "manager did not come up with one rule"
    );

    std::fs::write(rules.join("two.yml"), RULE.replace("{N}", "2")).unwrap();
    signal(child.pid(), "-HUP");
    let mut last = None;
    let reloaded = wait_until(Duration::from_secs(20), || {
        last = rule_ids(&http, &base);
        last.as_ref().is_some_and(|ids| ids.len() == 2)
    });
    assert!(reloaded, "SIGHUP did not reload the rules: {last:?}");

    signal(child.pid(), "-TERM");
    let st = child.wait_timeout(Duration::from_secs(20)).expect("manager stops on SIGTERM");
    assert!(st.success(), "{st:?}");
}
