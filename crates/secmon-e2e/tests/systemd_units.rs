//! The systemd units in packaging/systemd: `systemd-analyze verify` accepts them
//! with the real binaries, and they keep their hardening.
//!
//! verify checks that ExecStart names an executable, so the test runs it on copies
//! whose ExecStart binary is the one this workspace built (same arguments, every
//! other line unchanged).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use secmon_testkit::{in_ci, workspace_bin};

const ANALYZE: &str = "systemd-analyze";

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd")
}

/// `[section] key` → values, in file order (a key may repeat).
type Unit = BTreeMap<(String, String), Vec<String>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
        unit.entry((section.clone(), k.trim().to_string())).or_default().push(v.trim().to_string());
    }
    unit
}

fn get<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let v = unit
        .get(&(section.to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("[{section}] {key} missing"));
    v.last().unwrap()
}

fn words(s: &str) -> Vec<&str> {
    let mut w: Vec<&str> = s.split_whitespace().collect();
    w.sort_unstable();
    w
}

fn read(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Finds systemd-analyze, or says how to get it (failing under CI).
fn analyze_available() -> bool {
    if Command::new(ANALYZE).arg("--version").output().is_ok() {
        return true;
    }
    let hint = "systemd-analyze not found: install systemd (Debian: apt-get install systemd) to verify \
                packaging/systemd";
    if in_ci() {
        panic!("{hint}");
    }
    eprintln!("SKIPPED: {hint}");
    false
}

#[test]
fn units_pass_systemd_analyze_verify_with_the_real_binaries() {
    if !analyze_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (unit, bin) in [
        ("secmon-agent.service", "secmon-agent"),
        ("secmon-manager.service", "secmon-manager"),
        ("secmon-wazuh-bridge.service", "secmon-wazuh-bridge"),
    ] {
        let text = read(unit);
        let installed = format!("/usr/local/bin/{bin}");
        let parsed = parse_unit(&text);
        let exec = get(&parsed, "Service", "ExecStart");
        assert!(exec.starts_with(&format!("{installed} ")), "{unit}: ExecStart={exec}");
        let built = workspace_bin(bin);
        // Nothing but the binary path in ExecStart differs.
        let copy: String = text
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=") {
                Some(cmd) => format!("ExecStart={}\n", cmd.replacen(&installed, built.to_str().unwrap(), 1)),
                None => format!("{l}\n"),
            })
            .collect();
        let path = dir.path().join(unit);
        std::fs::write(&path, copy).unwrap();
        paths.push(path);

        // The arguments in ExecStart are ones the binary takes.
        let help = Command::new(&built).arg("--help").output().unwrap();
        assert!(help.status.success(), "{bin} --help: {help:?}");
        assert!(String::from_utf8_lossy(&help.stdout).contains("--config"), "{bin} has no --config");
    }
    let out =
        Command::new(ANALYZE).arg("verify").args(&paths).env("SYSTEMD_LOG_COLOR", "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("secmon-") || l.contains(dir.path().to_str().unwrap()))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze warned about the units:\n{}", about_ours.join("\n"));
}

#[test]
fn the_agent_unit_keeps_its_hardening() {
    let u = parse_unit(&read("secmon-agent.service"));
    let s = |k| get(&u, "Service", k);
    assert_eq!(s("Type"), "simple");
    assert_eq!(s("ExecStart"), "/usr/local/bin/secmon-agent --config /etc/secmon/agent.toml");
    assert_eq!(s("Restart"), "on-failure");
    assert_eq!(s("NoNewPrivileges"), "yes");
    assert_eq!(s("ProtectSystem"), "strict");
    // It reads ~/.ssh, and must see the host's /tmp.
    assert_eq!(s("ProtectHome"), "read-only");
    assert_eq!(s("PrivateTmp"), "no");
    for k in ["ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"] {
        assert_eq!(s(k), "yes", "{k}");
    }
    assert_eq!(words(s("RestrictAddressFamilies")), ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]);
    assert_eq!(
        words(s("CapabilityBoundingSet")),
        ["CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
    );
    assert!(!u.contains_key(&("Service".into(), "AmbientCapabilities".into())));
    // Its writable places are the ones its config uses by default.
    assert_eq!(s("StateDirectory"), "secmon-agent");
    let cfg = secmon_agent::config::AgentConfig::default();
    assert_eq!(cfg.agent.state_dir, Path::new("/var/lib").join(s("StateDirectory")));
    assert_eq!(s("RuntimeDirectory"), "secmon");
    // Runs as root (fanotify, reading every watched file): no User= line.
    assert!(!u.contains_key(&("Service".into(), "User".into())));
    assert_eq!(get(&u, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn the_manager_unit_runs_unprivileged() {
    let u = parse_unit(&read("secmon-manager.service"));
    let s = |k| get(&u, "Service", k);
    assert_eq!(s("Type"), "simple");
    assert_eq!(s("ExecStart"), "/usr/local/bin/secmon-manager --config /etc/secmon/manager.toml");
    assert_eq!(s("Restart"), "on-failure");
    assert_eq!((s("User"), s("Group"), s("DynamicUser")), ("secmon", "secmon", "no"));
    assert_eq!(s("CapabilityBoundingSet"), "", "no capabilities at all");
    assert_eq!(s("AmbientCapabilities"), "");
    assert_eq!(s("NoNewPrivileges"), "yes");
    assert_eq!(s("ProtectSystem"), "strict");
    assert_eq!(s("ProtectHome"), "yes");
    assert_eq!(s("PrivateTmp"), "yes");
    for k in ["ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "PrivateDevices"] {
        assert_eq!(s(k), "yes", "{k}");
    }
    assert_eq!(words(s("RestrictAddressFamilies")), ["AF_INET", "AF_INET6", "AF_UNIX"]);
    assert_eq!(s("StateDirectory"), "secmon-manager");
    let cfg = secmon_manager::config::ManagerConfig::default();
    assert_eq!(cfg.storage.data_dir, Path::new("/var/lib").join(s("StateDirectory")));
}

#[test]
fn the_bridge_unit_runs_unprivileged_and_only_reads_the_wazuh_database() {
    let u = parse_unit(&read("secmon-wazuh-bridge.service"));
    let s = |k| get(&u, "Service", k);
    assert_eq!(s("ExecStart"), "/usr/local/bin/secmon-wazuh-bridge --config /etc/secmon/wazuh-bridge.yaml");
    assert_eq!((s("User"), s("Group"), s("SupplementaryGroups")), ("secmon", "secmon", "wazuh"));
    assert_eq!(s("CapabilityBoundingSet"), "");
    assert_eq!(s("NoNewPrivileges"), "yes");
    assert_eq!(s("ProtectSystem"), "strict");
    assert_eq!(s("ReadOnlyPaths"), "/var/ossec/queue/db");
    let cfg = secmon_wazuh_bridge::config::BridgeConfig::default();
    assert_eq!(cfg.state.dir, Path::new("/var/lib").join(s("StateDirectory")));
    assert!(cfg.wazuh.db_path.starts_with(s("ReadOnlyPaths")));
}
