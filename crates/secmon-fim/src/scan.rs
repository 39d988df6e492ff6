//! Walking watched trees: which roots to walk, and a walker that prunes directories
//! no watch looks into (ignored, the agent's state dir, beyond a non-recursive
//! watch) but still descends toward nested watch roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::watches::WatchSet;

/// Roots to walk for a full scan: non-camera roots not below another one (a walk of
/// the outer root reaches the nested one).
pub fn top_roots(ws: &WatchSet) -> Vec<PathBuf> {
    let roots: Vec<&PathBuf> = ws.list.iter().filter(|w| !w.camera).map(|w| &w.root).collect();
    let mut top: Vec<PathBuf> = roots
        .iter()
        .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
        .map(|r| (*r).clone())
        .collect();
    top.sort();
    top.dedup();
    top
}

/// Entries at and below `start` (not following symlinks), pruned as described above.
pub fn walker(
    start: &Path,
    ws: Arc<WatchSet>,
) -> impl Iterator<Item = Result<walkdir::DirEntry, walkdir::Error>> + use<> {
    walkdir::WalkDir::new(start)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_entry(move |e| e.depth() == 0 || !e.file_type().is_dir() || !ws.skip_dir(e.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WatchConfig;

    #[test]
    fn nested_roots_are_walked_once() {
        let w = |p: &str| WatchConfig { path: p.into(), ..WatchConfig::default() };
        let ws = WatchSet::new(&[w("/a"), w("/a/b"), w("/c"), w("/ab")], Path::new("/state"), &[]);
        assert_eq!(top_roots(&ws), vec![PathBuf::from("/a"), PathBuf::from("/ab"), PathBuf::from("/c")]);
    }

    #[test]
    fn walker_prunes_ignored_and_state_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["keep/sub", "cache/deep", "state/fim"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("cache/deep/f"), b"x").unwrap();
        std::fs::write(root.join("keep/sub/f"), b"x").unwrap();
        let cfg =
            WatchConfig { path: root.to_path_buf(), ignore: vec!["cache".into()], ..WatchConfig::default() };
        let ws = Arc::new(WatchSet::new(&[cfg], &root.join("state"), &[]));
        let mut seen: Vec<PathBuf> =
            walker(root, ws).flatten().map(|e| e.path().strip_prefix(root).unwrap().to_path_buf()).collect();
        seen.sort();
        let want: Vec<PathBuf> = ["", "keep", "keep/sub", "keep/sub/f"].iter().map(PathBuf::from).collect();
        assert_eq!(seen, want);
    }
}
