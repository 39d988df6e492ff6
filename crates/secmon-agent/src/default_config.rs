//! The commented default configuration, embedded in the binary: `secmon-agent` writes
//! it where its config file should be when there is none, then starts with it.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Where `secmon-agent` looks for its config without `--config`.
pub const DEFAULT_PATH: &str = "/etc/secmon/agent.toml";

/// The template, with production values and every key commented.
pub const TEMPLATE: &str = include_str!("default_config.toml");

/// Writes [`TEMPLATE`] to `path` (mode 0640, parent directories created 0755) unless
/// a file is already there. Returns whether it wrote it. Never replaces a file, even
/// one created meanwhile by another process.
pub fn write_if_missing(path: &Path) -> io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    f.write_all(TEMPLATE.as_bytes())?;
    f.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use secmon_fim::WatchConfig;

    use super::*;
    use crate::AgentConfig;

    fn watch(path: &str) -> WatchConfig {
        WatchConfig { path: PathBuf::from(path), ..WatchConfig::default() }
    }

    #[test]
    fn template_parses_validates_and_holds_production_values() {
        let cfg: AgentConfig =
            secmon_config::from_str_with_env(TEMPLATE, Path::new("default.toml"), &BTreeMap::new())
                .expect("the template is a valid config");
        assert_eq!(cfg.agent.state_dir, PathBuf::from("/var/lib/secmon-agent"));
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.socket.path, PathBuf::from("/run/secmon/agent.sock"));
        // Everything else in the scalar sections is the built-in default.
        let mut expected = AgentConfig::default();
        expected.socket.path = cfg.socket.path.clone();
        expected.watches = cfg.watches.clone();
        expected.logs = cfg.logs.clone();
        assert_eq!(cfg, expected);
        let logs: Vec<&str> = cfg.logs.iter().map(|l| l.path.to_str().unwrap()).collect();
        assert_eq!(logs, ["/var/log/auth.log", "/var/log/secure", "/var/log/syslog"]);

        let paths: Vec<&str> = cfg.watches.iter().map(|w| w.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/etc/ssh",
                "/etc/passwd",
                "/etc/shadow",
                "/etc/group",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/root/.ssh",
                "/usr/bin",
                "/usr/sbin",
                "/etc"
            ]
        );
        let by_path = |p: &str| cfg.watches.iter().find(|w| w.path == Path::new(p)).unwrap();
        let ssh = by_path("/etc/ssh");
        assert!(ssh.access && ssh.report_changes && ssh.enabled && ssh.recursive);
        assert_eq!(ssh.description, "SSH daemon configuration");
        assert!(by_path("/root/.ssh").access && !by_path("/root/.ssh").report_changes);
        for secret in ["/etc/shadow", "/etc/gshadow"] {
            assert!(!by_path(secret).report_changes, "{secret}: no diffs of secrets");
        }
        assert!(!by_path("/usr/bin").report_changes && !by_path("/usr/sbin").report_changes);
        let etc = by_path("/etc");
        assert!(etc.recursive && etc.report_changes);
        assert!(etc.ignore.iter().any(|g| g == "/etc/shadow"), "no diffs of /etc/shadow through /etc");
        // Keys a watch leaves out take the watch defaults.
        assert_eq!(by_path("/etc/passwd").hash, watch("/etc/passwd").hash);
    }

    #[test]
    fn writes_the_template_once_with_mode_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/secmon/agent.toml");
        assert!(write_if_missing(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TEMPLATE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        std::fs::write(&path, "# mine\n").unwrap();
        assert!(!write_if_missing(&path).unwrap(), "an existing file is kept");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    }
}
