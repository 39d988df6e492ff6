//! The CLI's stored login: `credentials.json` (0600, in a 0700 directory) under
//! `$SECMON_CONFIG_DIR`, else `$XDG_CONFIG_HOME/secmon`, else `~/.config/secmon`.
//! `secmon login` writes it, `secmon logout` removes it, and every API call reads it.
//!
//! Invariant: the token never appears in Debug output or an error message.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File name inside the config directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// One stored login.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// API base URL the token belongs to; the token is only ever sent there.
    pub api: String,
    /// Bearer token (a session token from `POST /api/login`, or an API token).
    pub token: String,
    /// When the session ends (none for a token without expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub username: String,
    pub role: String,
    /// The CA certificate (PEM) the API's certificate must chain to, when it is not
    /// one the system trusts (a secmon deployment's own CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Hand-written: the token must never print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api", &self.api)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

impl Credentials {
    /// Whether the session has ended (a token without expiry never does).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether this login is for the API at `base` (compared without trailing slashes).
    pub fn is_for(&self, base: &str) -> bool {
        same_api(&self.api, base)
    }
}

/// Two API base URLs name the same API (case of scheme and host, trailing slashes ignored).
pub fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// The directory the credentials live in, from the environment.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("SECMON_CONFIG_DIR") {
        return Ok(d);
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(x.join("secmon"));
    }
    let home = var("HOME").context(
        "cannot choose where to store the login: none of SECMON_CONFIG_DIR, XDG_CONFIG_HOME, HOME is set",
    )?;
    Ok(home.join(".config/secmon"))
}

/// `<config dir>/credentials.json`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join(CREDENTIALS_FILE))
}

/// Reads the stored login at `path`; `None` when there is none. A file others may
/// read is refused, as ssh refuses a loose private key.
pub fn load(path: &Path) -> anyhow::Result<Option<Credentials>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible by group or others (mode {mode:o}): chmod 600 it, or run `secmon login` again",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // serde_json's message for a bad file names the line and column, never the values.
    let c = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a secmon login: run `secmon login` again", path.display()))?;
    Ok(Some(c))
}

/// Writes `c` to `path` (0600), creating its directory 0700. Written to a temporary
/// file first, so a crash leaves the old login or the new one, never half of one.
pub fn save(path: &Path, c: &Credentials) -> anyhow::Result<()> {
    let dir = path.parent().context("credentials path has no directory")?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let text = serde_json::to_string_pretty(c).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Removes the stored login; true when there was one.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            api: "https://127.0.0.1:8443".into(),
            token: "s3cr3t-token".into(),
            expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
            username: "admin".into(),
            role: "admin".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n...".into()),
        }
    }

    #[test]
    fn saved_private_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("cfg/credentials.json");
        assert!(load(&path).unwrap().is_none());
        let c = sample();
        save(&path, &c).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load(&path).unwrap(), Some(c));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn loose_file_is_refused_and_debug_hides_the_token() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("credentials.json");
        save(&path, &sample()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!format!("{:?}", sample()).contains("s3cr3t"));
    }

    #[test]
    fn expiry_and_api_matching() {
        let mut c = sample();
        assert!(!c.expired(Utc::now()));
        c.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(c.expired(Utc::now()));
        c.expires_at = None;
        assert!(!c.expired(Utc::now()));
        assert!(c.is_for("https://127.0.0.1:8443/"));
        assert!(!c.is_for("https://127.0.0.1:9443"));
    }
}
