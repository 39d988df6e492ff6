//! The `[[watches]]` entries and the `[fim]` section of the agent config: the schema,
//! its defaults and its checks.

use std::path::PathBuf;
use std::time::Duration;

use secmon_config::ConfigError;
use serde::{Deserialize, Serialize};

/// One `[[watches]]` entry: a file or directory tree to keep under watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Absolute path of a directory or a single file.
    pub path: PathBuf,
    /// Shown in events (`watch_description`).
    pub description: String,
    /// A disabled watch is kept in the file but not watched.
    pub enabled: bool,
    /// Watch the whole tree under a directory (else its direct entries only).
    pub recursive: bool,
    /// Glob patterns (matched against the full path, and against the file name) of
    /// paths to leave out, e.g. `"*.swp"`, `"/etc/ssh/moduli"`.
    pub ignore: Vec<String>,
    /// Content hash: `sha256` (default), `blake3`, or `sha1`/`md5` for compatibility.
    pub hash: HashAlgo,
    /// Keep a copy of text files (up to `[fim] diff_max_file_size`) and put a
    /// unified diff in `modified` events.
    pub report_changes: bool,
    /// Files larger than this (bytes) are recorded without a hash (`hash_skipped =
    /// "too_large"`); size, times and inode still reveal changes.
    pub max_file_size: u64,
    /// Also report reads and opens (`accessed`): for device files and secrets.
    pub access: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            description: String::new(),
            enabled: true,
            recursive: true,
            ignore: Vec::new(),
            hash: HashAlgo::Sha256,
            report_changes: false,
            max_file_size: 1024 * 1024 * 1024,
            access: false,
        }
    }
}

/// Hash algorithm of a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    #[default]
    Sha256,
    Blake3,
    Sha1,
    Md5,
}

impl HashAlgo {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Blake3 => "blake3",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Md5 => "md5",
        }
    }
}

/// Which real-time backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// fanotify when the agent may use it (root, kernel support), else inotify.
    #[default]
    Auto,
    Inotify,
    Fanotify,
}

/// `[fim]` section: how file integrity monitoring runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FimSection {
    /// `auto`, `inotify` or `fanotify` (needs root; gives who-data).
    pub backend: BackendChoice,
    /// Time between full scans that reconcile what real time missed; "0s" disables.
    #[serde(with = "secmon_config::duration")]
    pub scan_interval: Duration,
    /// Threads that hash files during scans.
    pub hash_workers: usize,
    /// Files larger than this (bytes) are hashed after the start-up walk instead of
    /// during it, so the baseline of everything else is ready sooner.
    pub lazy_hash_above: u64,
    /// How long a path must stay quiet before its change is reported: an editor's
    /// write-rename-delete dance within it ends as one event with the final state.
    #[serde(with = "secmon_config::duration")]
    pub coalesce: Duration,
    /// Longest a path under continuous change waits before it is reported anyway.
    #[serde(with = "secmon_config::duration")]
    pub coalesce_max: Duration,
    /// Text files up to this size (bytes) keep a copy for `report_changes` diffs.
    pub diff_max_file_size: u64,
    /// Diffs longer than this (bytes) are cut, with a marker line.
    pub diff_max_bytes: usize,
    /// Glob patterns of camera device paths. Matching paths that exist are watched
    /// for opens and reads (`CameraAccess`, high), with the process that opened them.
    pub camera_paths: Vec<String>,
    /// How often the baseline is written to the state dir when it changed.
    #[serde(with = "secmon_config::duration")]
    pub persist_interval: Duration,
}

impl Default for FimSection {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            scan_interval: Duration::from_secs(3600),
            hash_workers: 2,
            lazy_hash_above: 64 * 1024 * 1024,
            coalesce: Duration::from_millis(2),
            coalesce_max: Duration::from_millis(500),
            diff_max_file_size: 1024 * 1024,
            diff_max_bytes: 64 * 1024,
            camera_paths: vec!["/dev/video*".into()],
            persist_interval: Duration::from_secs(5),
        }
    }
}

/// Checks the watches and the `[fim]` section; errors name the key
/// (`watches[2].path`).
pub fn validate(watches: &[WatchConfig], fim: &FimSection) -> Result<(), ConfigError> {
    for (i, w) in watches.iter().enumerate() {
        let key = |k: &str| format!("watches[{i}].{k}");
        if !w.path.is_absolute() {
            return Err(ConfigError::invalid(key("path"), format!("{:?} must be an absolute path", w.path)));
        }
        for g in &w.ignore {
            if let Err(e) = globset::Glob::new(g) {
                return Err(ConfigError::invalid(key("ignore"), format!("{g:?} is not a valid glob: {e}")));
            }
        }
    }
    for g in &fim.camera_paths {
        if let Err(e) = globset::Glob::new(g) {
            return Err(ConfigError::invalid("fim.camera_paths", format!("{g:?} is not a valid glob: {e}")));
        }
        if !g.starts_with('/') {
            return Err(ConfigError::invalid(
                "fim.camera_paths",
                format!("{g:?} must be an absolute pattern"),
            ));
        }
    }
    if fim.hash_workers == 0 || fim.hash_workers > 64 {
        return Err(ConfigError::invalid("fim.hash_workers", "must be between 1 and 64"));
    }
    if fim.coalesce_max < fim.coalesce {
        return Err(ConfigError::invalid("fim.coalesce_max", "must be at least fim.coalesce"));
    }
    if fim.scan_interval != Duration::ZERO && fim.scan_interval < Duration::from_secs(1) {
        return Err(ConfigError::invalid("fim.scan_interval", "must be 0s (off) or at least 1s"));
    }
    if fim.persist_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid("fim.persist_interval", "must be at least 100ms"));
    }
    if fim.diff_max_bytes < 64 {
        return Err(ConfigError::invalid("fim.diff_max_bytes", "must be at least 64"));
    }
    Ok(())
}
