//! The enabled watches at run time: which watch owns a path (the most specific one
//! that covers it), ignore globs, the agent's own state dir, camera paths.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::WatchConfig;

#[derive(Debug, Clone)]
pub struct WatchRt {
    pub root: PathBuf,
    pub cfg: WatchConfig,
    ignore: GlobSet,
    /// A camera device found by `camera_paths`: watched for opens only, kept out of
    /// the baseline.
    pub camera: bool,
}

impl WatchRt {
    pub fn new(cfg: WatchConfig, camera: bool) -> Self {
        let ignore = build_globs(&cfg.ignore);
        Self { root: cfg.path.clone(), cfg, ignore, camera }
    }

    /// The root, or a path under it (its direct entries only when not recursive).
    pub fn covers(&self, p: &Path) -> bool {
        if p == self.root {
            return true;
        }
        if !p.starts_with(&self.root) {
            return false;
        }
        self.cfg.recursive || p.parent() == Some(self.root.as_path())
    }

    /// Matched against the full path and the file name, for `p` and each of its
    /// ancestors below the root (an ignored directory hides its subtree).
    pub fn ignores(&self, p: &Path) -> bool {
        if self.ignore.is_empty() {
            return false;
        }
        for a in p.ancestors() {
            if a == self.root || !a.starts_with(&self.root) {
                break;
            }
            if self.ignore.is_match(a) || a.file_name().is_some_and(|n| self.ignore.is_match(n)) {
                return true;
            }
        }
        false
    }
}

/// Invalid patterns were rejected by config validation; one that still fails here is
/// left out (and logged) rather than stopping FIM.
pub fn build_globs(patterns: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in patterns {
        match Glob::new(g) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => tracing::warn!(pattern = %g, error = %e, "fim: glob left out"),
        }
    }
    b.build().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "fim: glob set left empty");
        GlobSet::empty()
    })
}

#[derive(Debug, Clone)]
pub struct WatchSet {
    pub list: Vec<WatchRt>,
    /// The agent's own state dir, as configured and canonical: never reported.
    excluded: Vec<PathBuf>,
    camera: GlobSet,
}

impl WatchSet {
    pub fn new(watches: &[WatchConfig], state_dir: &Path, camera_paths: &[String]) -> Self {
        let mut excluded = vec![state_dir.to_path_buf()];
        if let Ok(c) = state_dir.canonicalize()
            && c != state_dir
        {
            excluded.push(c);
        }
        let list = watches.iter().filter(|w| w.enabled).map(|w| WatchRt::new(w.clone(), false)).collect();
        Self { list, excluded, camera: build_globs(camera_paths) }
    }

    pub fn is_excluded(&self, p: &Path) -> bool {
        self.excluded.iter().any(|x| p.starts_with(x))
    }

    pub fn is_camera(&self, p: &Path) -> bool {
        self.camera.is_match(p)
    }

    /// Index of the most specific watch covering `p`, if `p` is to be looked at:
    /// not in the state dir, not ignored by that watch.
    pub fn owner(&self, p: &Path) -> Option<usize> {
        if self.is_excluded(p) {
            return None;
        }
        let (i, w) = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, w)| w.covers(p))
            .max_by_key(|(_, w)| w.root.as_os_str().len())?;
        if w.ignores(p) {
            return None;
        }
        Some(i)
    }

    /// True when a directory need not be watched nor walked: no watch would look at
    /// anything in it.
    pub fn skip_dir(&self, p: &Path) -> bool {
        if self.is_excluded(p) {
            return true;
        }
        // Still needed when it is the root of (or leads to) a watch.
        if self.list.iter().any(|w| w.root.starts_with(p)) {
            return false;
        }
        self.owner(p).is_none()
    }

    /// Adds a camera device watch (unless one exists); true when added.
    pub fn add_camera(&mut self, path: &Path) -> bool {
        if self.list.iter().any(|w| w.camera && w.root == path) {
            return false;
        }
        let cfg = WatchConfig {
            path: path.to_path_buf(),
            description: "camera device".into(),
            recursive: false,
            access: true,
            ..WatchConfig::default()
        };
        self.list.push(WatchRt::new(cfg, true));
        true
    }

    /// Camera device paths that exist now: each pattern is expanded from its literal
    /// directory prefix.
    pub fn expand_cameras(patterns: &[String], camera: &GlobSet) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for pat in patterns {
            let p = Path::new(pat);
            let mut base = PathBuf::new();
            let mut rest = 0usize;
            let mut globbing = false;
            for c in p.components() {
                let s = c.as_os_str().to_string_lossy();
                if !globbing && !s.contains(['*', '?', '[', '{']) {
                    base.push(c);
                } else {
                    globbing = true;
                    rest += 1;
                }
            }
            if !globbing {
                if p.exists() {
                    out.push(p.to_path_buf());
                }
                continue;
            }
            let depth = if pat.contains("**") { usize::MAX } else { rest };
            for e in walkdir::WalkDir::new(&base).min_depth(1).max_depth(depth).into_iter().flatten() {
                if camera.is_match(e.path()) {
                    out.push(e.path().to_path_buf());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn camera_globs(&self) -> &GlobSet {
        &self.camera
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(path: &str, recursive: bool, ignore: &[&str]) -> WatchConfig {
        WatchConfig {
            path: path.into(),
            recursive,
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            ..WatchConfig::default()
        }
    }

    #[test]
    fn most_specific_watch_owns_and_ignores() {
        let ws = WatchSet::new(
            &[w("/w", true, &["*.swp", "/w/cache"]), w("/w/etc", false, &[]), w("/w/off", true, &[])],
            Path::new("/w/state"),
            &[],
        );
        assert_eq!(ws.owner(Path::new("/w/a/b")), Some(0));
        assert_eq!(ws.owner(Path::new("/w/etc/x")), Some(1));
        // Not recursive: a grandchild falls back to the outer watch.
        assert_eq!(ws.owner(Path::new("/w/etc/sub/x")), Some(0));
        assert_eq!(ws.owner(Path::new("/w/a/.f.swp")), None);
        assert_eq!(ws.owner(Path::new("/w/cache/deep/file")), None);
        assert_eq!(ws.owner(Path::new("/w/state/fim/baseline.jsonl")), None);
        assert_eq!(ws.owner(Path::new("/other")), None);
        assert!(ws.skip_dir(Path::new("/w/cache")));
        assert!(!ws.skip_dir(Path::new("/w/etc")));
        assert!(ws.skip_dir(Path::new("/w/state")));
    }

    #[test]
    fn disabled_watches_are_left_out() {
        let mut off = w("/x", true, &[]);
        off.enabled = false;
        let ws = WatchSet::new(&[off], Path::new("/s"), &[]);
        assert!(ws.list.is_empty());
        assert_eq!(ws.owner(Path::new("/x/y")), None);
    }

    #[test]
    fn camera_patterns_expand_from_their_literal_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["video0", "video1", "audio0"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let pats = vec![format!("{}/video*", dir.path().display())];
        let globs = build_globs(&pats);
        let found = WatchSet::expand_cameras(&pats, &globs);
        assert_eq!(found, vec![dir.path().join("video0"), dir.path().join("video1")]);
    }
}
