//! Looking at one settled path: its state now against the baseline, and the report
//! (created, modified, attributes changed, deleted, renamed, accessed).

use super::*;

impl Engine {
    pub(super) fn examine(&mut self, path: PathBuf, p: Pending, source: &'static str) {
        // A renamed parent first: its subtree's baseline entries move with it.
        for _ in 0..64 {
            let Some(anc) = self.co.rename_ancestor(&path) else { break };
            match self.co.take(&anc) {
                Some(ap) => self.examine(anc, ap, source),
                None => break,
            }
        }
        let cur = match meta::lstat(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "fim: cannot stat");
                return;
            }
        };
        let owner = self.ws.owner(&path);
        if let Some(origin) = p.rename_from.clone()
            && self.renamed(&origin, &path, owner, cur.clone(), &p, source)
        {
            return;
        }
        let Some(owner) = owner else { return };
        if self.ws.list[owner].camera {
            if p.seen.opened && cur.is_some() {
                self.report_access(&path, owner, cur, p.process);
            }
            return;
        }
        let base = self.base.get(&path).cloned();
        match (base, cur) {
            (None, None) => {}
            (None, Some(cur)) => {
                if cur.kind == FileKind::Dir {
                    self.reconcile(&path, Mode::Realtime, p.process);
                } else {
                    self.report_new(&path, owner, cur, p.process, source);
                }
            }
            (Some(b), None) => self.report_gone(&path, b, p.process, source),
            (Some(b), Some(cur)) => {
                if cur.kind == FileKind::Dir && (b.kind != FileKind::Dir || b.inode != cur.inode || p.moved) {
                    if b.kind != FileKind::Dir {
                        self.report_gone(&path, b, p.process.clone(), source);
                    }
                    self.reconcile(&path, Mode::Realtime, p.process);
                    return;
                }
                if b.kind == FileKind::Dir && cur.kind != FileKind::Dir {
                    // A directory replaced by something else: its subtree went.
                    self.report_gone(&path, b, p.process.clone(), source);
                    self.report_new(&path, owner, cur, p.process, source);
                    return;
                }
                self.report_change(&path, owner, b, cur, &p, source);
            }
        }
    }

    /// Fills in the hash of a regular file, reusing `prior`'s when the file cannot
    /// have changed since (same size, times, inode and algorithm) and no write was
    /// seen. Returns the content when `report_changes` wants it.
    pub(super) fn fill_hash(
        &mut self,
        path: &Path,
        owner: usize,
        st: &mut FileState,
        prior: Option<&FileState>,
        force: bool,
    ) -> Option<Vec<u8>> {
        if st.kind != FileKind::File {
            return None;
        }
        let w = &self.ws.list[owner].cfg;
        let algo = w.hash;
        if st.size > w.max_file_size {
            set_hash(st, algo, &Err("too_large".into()));
            return None;
        }
        if let Some(pr) = prior
            && !force
            && meta::same_content_meta(pr, st)
            && pr.hash.is_some()
            && pr.hash_algo.as_deref() == Some(algo.as_str())
        {
            st.hash = pr.hash.clone();
            st.hash_algo = pr.hash_algo.clone();
            return None;
        }
        let keep = self.keep_limit(owner);
        let max = w.max_file_size;
        self.note_own_open(path, owner);
        let out = hash::hash_file(path, algo, max, keep);
        self.drain_own_opens();
        set_hash(st, algo, &out.hash);
        out.content
    }

    pub(super) fn keep_limit(&self, owner: usize) -> Option<u64> {
        self.ws.list[owner].cfg.report_changes.then_some(self.fim.diff_max_file_size)
    }

    pub(super) fn report_new(
        &mut self,
        path: &Path,
        owner: usize,
        mut cur: FileState,
        process: Option<ProcessInfo>,
        source: &'static str,
    ) {
        let content = self.fill_hash(path, owner, &mut cur, None, true);
        self.keep_copy(path, owner, content.as_deref(), None);
        self.emit_file(
            Activity::Created,
            path,
            None,
            None,
            Some(cur.clone()),
            Vec::new(),
            None,
            process,
            source,
        );
        let g = self.generation;
        self.base.insert(path.to_path_buf(), cur, g);
    }

    /// `path` (and, for a directory, everything recorded below it) is gone.
    pub(super) fn report_gone(
        &mut self,
        path: &Path,
        before: FileState,
        process: Option<ProcessInfo>,
        source: &'static str,
    ) {
        // A watch root that went: watch for it to come back, before anything else
        // (whoever removed it may make it again at once).
        let roots: Vec<(PathBuf, bool, bool)> = self
            .ws
            .list
            .iter()
            .filter(|w| !w.camera && w.root == path)
            .map(|w| (w.root.clone(), w.cfg.recursive, w.cfg.access))
            .collect();
        for (root, recursive, access) in roots {
            let cov = self.backend.watch(&root, recursive, access);
            self.account_coverage(std::slice::from_ref(&cov), false);
            self.rewatch = true;
            if let Ok(Some(now)) = meta::lstat(&root) {
                // Back already: look at it as new.
                if now.kind == FileKind::Dir {
                    self.cover_new_dir(&root);
                }
                self.co.note(
                    &root,
                    Seen { created: true, ..Seen::default() },
                    now.kind == FileKind::Dir,
                    None,
                    Instant::now(),
                );
            }
        }
        let below = if before.kind == FileKind::Dir { self.base.below(path) } else { Vec::new() };
        self.base.remove(path);
        self.content.remove(path);
        self.emit_file(Activity::Deleted, path, None, Some(before), None, Vec::new(), None, process, source);
        for q in below {
            if let Some(s) = self.base.remove(&q) {
                self.content.remove(&q);
                self.emit_file(Activity::Deleted, &q, None, Some(s), None, Vec::new(), None, None, source);
            }
        }
    }

    pub(super) fn report_change(
        &mut self,
        path: &Path,
        owner: usize,
        before: FileState,
        mut cur: FileState,
        p: &Pending,
        source: &'static str,
    ) {
        let content = self.fill_hash(path, owner, &mut cur, Some(&before), p.seen.modified);
        match compare::verdict(&before, &cur) {
            Some((activity, changes)) => {
                let diff = self.keep_copy(path, owner, content.as_deref(), Some(path));
                let diff = if activity == Activity::Modified { diff } else { None };
                self.emit_file(
                    activity,
                    path,
                    None,
                    Some(before),
                    Some(cur.clone()),
                    changes,
                    diff,
                    p.process.clone(),
                    source,
                );
            }
            None => {
                if content.is_some() {
                    self.keep_copy(path, owner, content.as_deref(), None);
                }
                if p.seen.opened {
                    self.report_access(path, owner, Some(cur.clone()), p.process.clone());
                }
            }
        }
        let g = self.generation;
        self.base.insert(path.to_path_buf(), cur, g);
    }

    /// `origin` was renamed to `path` within the window. True when reported as a
    /// rename (the origin was recorded and is gone now).
    pub(super) fn renamed(
        &mut self,
        origin: &Path,
        path: &Path,
        owner: Option<usize>,
        cur: Option<FileState>,
        p: &Pending,
        source: &'static str,
    ) -> bool {
        let Some(before) = self.base.get(origin).cloned() else { return false };
        if matches!(meta::lstat(origin), Ok(Some(_))) {
            return false;
        }
        let (Some(owner), Some(mut cur)) = (owner, cur) else {
            // Moved to a name nobody watches (or gone again): the origin went.
            self.report_gone(origin, before, p.process.clone(), source);
            return false;
        };
        if self.ws.list[owner].camera {
            return false;
        }
        let mut prior = before.clone();
        prior.ctime = cur.ctime; // a rename changes ctime, not content
        let content = self.fill_hash(path, owner, &mut cur, Some(&prior), p.seen.modified);
        self.base.remove(origin);
        if before.kind == FileKind::Dir {
            self.base.move_below(origin, path);
        }
        let changes = compare::rename_changes(&before, &cur);
        let content_changed = changes.iter().any(|c| c == "hash" || c == "size");
        // The copy follows the file. When the content was read again (it changed),
        // `keep_copy` diffs against the copy and replaces it, or drops it when the
        // content is no longer text (or is now a secret); unread content is unchanged.
        let diff = if self.ws.list[owner].cfg.report_changes {
            self.content.rename(origin, path);
            match content {
                Some(_) => {
                    self.keep_copy(path, owner, content.as_deref(), Some(path)).filter(|_| content_changed)
                }
                None => None,
            }
        } else {
            self.content.remove(origin);
            None
        };
        self.emit_file(
            Activity::Renamed,
            path,
            Some(origin),
            Some(before),
            Some(cur.clone()),
            changes,
            diff,
            p.process.clone(),
            source,
        );
        let g = self.generation;
        self.base.insert(path.to_path_buf(), cur, g);
        true
    }

    pub(super) fn report_access(
        &mut self,
        path: &Path,
        owner: usize,
        cur: Option<FileState>,
        process: Option<ProcessInfo>,
    ) {
        if !self.ws.list[owner].cfg.access {
            return;
        }
        let now = Instant::now();
        let key = (path.to_path_buf(), process.as_ref().map(|p| p.pid).unwrap_or(0));
        if let Some(t) = self.access_seen.get(&key)
            && now.duration_since(*t) < self.fim.coalesce_max
        {
            return;
        }
        self.access_seen.insert(key, now);
        let state = self.base.get(path).cloned().or(cur);
        self.emit_file(Activity::Accessed, path, None, None, state, Vec::new(), None, process, "realtime");
    }

    /// Keeps (or drops) the `report_changes` copy; with `diff_against`, returns the
    /// diff from the previous copy.
    pub(super) fn keep_copy(
        &mut self,
        path: &Path,
        owner: usize,
        content: Option<&[u8]>,
        diff_against: Option<&Path>,
    ) -> Option<(String, bool)> {
        if !self.ws.list[owner].cfg.report_changes {
            return None;
        }
        let Some(text) = content.and_then(|c| diff::keepable(path, c)) else {
            self.content.remove(path);
            return None;
        };
        let diff = diff_against
            .and_then(|p| self.content.get(p))
            .map(|old| diff::unified(&path.to_string_lossy(), &old, text, self.fim.diff_max_bytes));
        if let Err(e) = self.content.put(path, text) {
            tracing::debug!(error = %e, "fim: cannot keep a content copy");
        }
        diff
    }
}
