//! Reloads the rules when a rule file changes. Polling the files' size and mtime
//! every `[rules] watch_interval` (rather than inotify) works the same on every
//! filesystem, sees editors that replace files and directories that come back,
//! and costs a few `stat`s.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::RulesHandle;

/// What is compared between polls: each rule file's path, size and mtime, and
/// whether each directory exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<Entry>);

/// A path and, when it exists, its size and mtime.
type Entry = (PathBuf, Option<(u64, Option<SystemTime>)>);

fn is_rule_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

fn walk(dir: &Path, out: &mut Vec<Entry>, depth: usize) {
    // Deep enough for any rule tree; stops symlink loops.
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path, out, depth + 1);
        } else if is_rule_file(&path) {
            out.push((path, Some((meta.len(), meta.modified().ok()))));
        }
    }
}

/// The current fingerprint of `dirs`.
pub fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    for d in dirs {
        // A directory entry of its own, so a vanished (or returned) directory counts
        // as a change.
        out.push((d.clone(), d.is_dir().then_some((0, None))));
        walk(d, &mut out, 0);
    }
    out.sort();
    Fingerprint(out)
}

/// Polls until `stop`; reloads when the fingerprint changes.
pub async fn run(rules: RulesHandle, every: Duration, stop: CancellationToken) {
    if rules.dirs().is_empty() {
        return;
    }
    let dirs = rules.dirs().to_vec();
    let take = move |dirs: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || fingerprint(&dirs)).await.unwrap_or_default()
    };
    let mut last = take(dirs.clone()).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = take(dirs.clone()).await;
        if now != last {
            tracing::info!("rule files changed; reloading");
            // A failed reload (directory gone) is logged; the next change retries.
            let _ = rules.reload().await;
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_new_changed_and_removed_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rules");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let dirs = vec![root.clone()];
        let a = fingerprint(&dirs);
        std::fs::write(root.join("sub/a.yml"), "title: a").unwrap();
        std::fs::write(root.join("notes.txt"), "not a rule").unwrap();
        let b = fingerprint(&dirs);
        assert_ne!(a, b);
        assert_eq!(b.0.len(), 2, "{b:?}");
        std::fs::write(root.join("sub/a.yml"), "title: a longer title").unwrap();
        let c = fingerprint(&dirs);
        assert_ne!(b, c);
        std::fs::remove_dir_all(&root).unwrap();
        let d = fingerprint(&dirs);
        assert_eq!(d.0, vec![(root, None)]);
    }
}
