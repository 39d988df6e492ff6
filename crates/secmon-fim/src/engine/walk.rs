//! Walking trees (start-up, scheduled scans, new directories) against the baseline,
//! hashing on the pool, and the hashes done after the start-up walk.

use super::*;

impl Engine {
    /// Walks `start`, compares everything with the baseline, reports per `mode`, and
    /// reports recorded paths below `start` that are gone.
    pub(super) fn reconcile(&mut self, start: &Path, mode: Mode, process: Option<ProcessInfo>) {
        self.generation += 1;
        let generation = self.generation;
        let ws = self.ws.clone();
        let mut chunk: Vec<Item> = Vec::new();
        let mut chunk_bytes = 0u64;
        let mut unreadable: Vec<(PathBuf, String)> = Vec::new();
        let mut new_dirs: HashSet<PathBuf> = HashSet::new();
        let mut process = process;
        for item in scan::walker(start, ws.clone()) {
            let entry = match item {
                Ok(e) => e,
                Err(err) => {
                    let gone = err.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                    if let Some(p) = err.path()
                        && !gone
                    {
                        let reason = err.io_error().map(|e| e.to_string()).unwrap_or_else(|| err.to_string());
                        unreadable.push((p.to_path_buf(), reason));
                    }
                    continue;
                }
            };
            let path = entry.path();
            let Some(owner) = ws.owner(path) else { continue };
            if ws.list[owner].camera {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            let st = meta::state_of(path, &md);
            if st.kind == FileKind::Dir && self.base.get(path).is_none() {
                // Watch a directory real time missed before it is listed (overflow,
                // limit raised, or a new tree whose watches are already in place).
                let parent_new = path.parent().is_some_and(|p| new_dirs.contains(p));
                // (A new tree's top was covered when its notification came.)
                let covered_at_notice = mode == Mode::Realtime && path == start;
                if mode != Mode::Startup && !parent_new && !covered_at_notice {
                    self.cover_new_dir(path);
                }
                new_dirs.insert(path.to_path_buf());
            }
            if st.kind == FileKind::File && self.ws.list[owner].cfg.report_changes {
                chunk_bytes += st.size.min(self.fim.diff_max_file_size);
            }
            let process = if path == start { process.take() } else { None };
            chunk.push(Item { path: path.to_path_buf(), owner, state: st, hash: None, process });
            if chunk.len() >= CHUNK_ENTRIES || chunk_bytes >= CHUNK_CONTENT_BYTES {
                self.process_chunk(std::mem::take(&mut chunk), mode, generation);
                chunk_bytes = 0;
                self.drain_backend();
            }
        }
        self.process_chunk(chunk, mode, generation);

        // Recorded below `start`, not seen now: gone (unless under a directory that
        // could not be listed, whose contents are unknown, not gone).
        for q in self.base.unseen_under(start, generation) {
            if unreadable.iter().any(|(d, _)| q.starts_with(d) && q != *d) {
                self.base.mark_seen(&q, generation);
                continue;
            }
            if self.ws.owner(&q).is_none() {
                self.base.remove(&q);
                continue;
            }
            let Some(before) = self.base.remove(&q) else { continue };
            self.content.remove(&q);
            if !(mode == Mode::Startup && self.is_quiet(&q)) {
                if mode == Mode::Startup {
                    self.offline_changes += 1;
                }
                self.emit_file(
                    Activity::Deleted,
                    &q,
                    None,
                    Some(before),
                    None,
                    Vec::new(),
                    None,
                    None,
                    mode.source(),
                );
            }
        }
        self.report_unreadable(unreadable);
    }

    pub(super) fn is_quiet(&self, path: &Path) -> bool {
        self.ws.owner(path).is_some_and(|o| self.quiet_roots.contains(&self.ws.list[o].root))
    }

    pub(super) fn process_chunk(&mut self, mut chunk: Vec<Item>, mode: Mode, generation: u64) {
        if chunk.is_empty() {
            return;
        }
        // Decide what to hash, then hash on the pool.
        let mut jobs: Vec<(usize, PathBuf, HashAlgo, u64, Option<u64>)> = Vec::new();
        for (i, it) in chunk.iter_mut().enumerate() {
            if it.state.kind != FileKind::File {
                continue;
            }
            let w = &self.ws.list[it.owner].cfg;
            let algo = w.hash;
            let prior = self.base.get(&it.path);
            if it.state.size > w.max_file_size {
                set_hash(&mut it.state, algo, &Err("too_large".into()));
                continue;
            }
            if mode == Mode::Startup && it.state.size > self.fim.lazy_hash_above {
                let prev = prior
                    .filter(|p| {
                        meta::same_content_meta(p, &it.state) && p.hash_algo.as_deref() == Some(algo.as_str())
                    })
                    .and_then(|p| p.hash.clone());
                it.state.hash_skipped = Some("pending".into());
                self.lazy.push(LazyJob { path: it.path.clone(), algo, max_size: w.max_file_size, prev });
                continue;
            }
            let reuse = mode != Mode::Startup
                && prior.is_some_and(|p| {
                    meta::same_content_meta(p, &it.state)
                        && p.hash.is_some()
                        && p.hash_algo.as_deref() == Some(algo.as_str())
                });
            if reuse {
                let p = prior.expect("checked above");
                it.state.hash = p.hash.clone();
                it.state.hash_algo = p.hash_algo.clone();
                continue;
            }
            let keep = w.report_changes.then_some(self.fim.diff_max_file_size);
            jobs.push((i, it.path.clone(), algo, w.max_file_size, keep));
        }
        for (i, path, _, _, _) in &jobs {
            let owner = chunk[*i].owner;
            self.note_own_open(path, owner);
        }
        let results: Vec<(usize, HashOut)> = self.pool.install(|| {
            jobs.par_iter()
                .map(|(i, path, algo, max, keep)| (*i, hash::hash_file(path, *algo, *max, *keep)))
                .collect()
        });
        self.drain_own_opens();
        for (i, out) in results {
            let algo = self.ws.list[chunk[i].owner].cfg.hash;
            set_hash(&mut chunk[i].state, algo, &out.hash);
            chunk[i].hash = Some(out);
        }

        // Take in what was notified meanwhile: a file whose writer is still at work
        // then has its own pending entry and is skipped below.
        if mode != Mode::Startup {
            self.drain_backend();
        }
        // Compare and report in path order.
        for it in chunk {
            if mode != Mode::Startup && self.co.contains(&it.path) {
                // Its own notifications are waiting (maybe a writer still has it
                // open): it is looked at when they settle, not half-written now.
                self.base.mark_seen(&it.path, generation);
                continue;
            }
            let quiet = mode == Mode::Startup && self.is_quiet(&it.path);
            let content = it.hash.and_then(|h| h.content);
            let prior = self.base.get(&it.path).cloned();
            let source = mode.source();
            match prior {
                None => {
                    self.keep_copy(&it.path, it.owner, content.as_deref(), None);
                    if !quiet {
                        if mode == Mode::Startup {
                            self.offline_changes += 1;
                        }
                        self.emit_file(
                            Activity::Created,
                            &it.path,
                            None,
                            None,
                            Some(it.state.clone()),
                            Vec::new(),
                            None,
                            it.process.clone(),
                            source,
                        );
                    }
                }
                Some(b) => match compare::verdict(&b, &it.state) {
                    Some((activity, changes)) => {
                        let diff = self.keep_copy(&it.path, it.owner, content.as_deref(), Some(&it.path));
                        if !quiet {
                            if mode == Mode::Startup {
                                self.offline_changes += 1;
                            }
                            let diff = if activity == Activity::Modified { diff } else { None };
                            self.emit_file(
                                activity,
                                &it.path,
                                None,
                                Some(b),
                                Some(it.state.clone()),
                                changes,
                                diff,
                                it.process.clone(),
                                source,
                            );
                        }
                    }
                    None => {
                        if content.is_some() && self.content.get(&it.path).is_none() {
                            self.keep_copy(&it.path, it.owner, content.as_deref(), None);
                        }
                    }
                },
            }
            self.base.insert(it.path, it.state, generation);
        }
    }

    /// Takes what the backend has queued into the pending set (no examination): a
    /// long walk must not let the kernel queue overflow.
    pub(super) fn drain_backend(&mut self) {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        if let Err(e) = self.backend.read(&mut raw, Duration::ZERO) {
            tracing::debug!(error = %e, "fim: backend read during walk failed");
        }
        self.ingest(&mut raw);
        self.raw = raw;
    }

    pub(super) fn report_unreadable(&mut self, unreadable: Vec<(PathBuf, String)>) {
        let fresh: Vec<&(PathBuf, String)> =
            unreadable.iter().filter(|(p, _)| !self.unreadable_reported.contains(p)).collect();
        if fresh.is_empty() {
            return;
        }
        let first = fresh[0];
        let shown: Vec<String> = fresh.iter().take(5).map(|(p, e)| format!("{}: {e}", p.display())).collect();
        let payload = FimCoverage {
            reason: "unreadable_dir".into(),
            path: first.0.to_string_lossy().into_owned(),
            uncovered_dirs: fresh.len() as u64,
            detail: shown.join("; "),
        };
        tracing::warn!(dirs = fresh.len(), first = %first.0.display(), "fim: directories cannot be read");
        self.emit_agent("fim_coverage", Severity::Low, serde_json::to_value(payload).unwrap_or_default());
        self.unreadable_reported.extend(fresh.into_iter().map(|(p, _)| p.clone()));
        if self.unreadable_reported.len() > 10_000 {
            self.unreadable_reported.drain(..5_000);
        }
    }

    pub(super) fn full_scan(&mut self) {
        self.publish_status("scanning");
        for (path, p) in self.co.drain_all() {
            self.examine(path, p, "realtime");
        }
        if self.rewatch {
            self.rewatch_all();
        }
        self.refresh_cameras();
        for root in scan::top_roots(&self.ws) {
            self.reconcile(&root, Mode::Scan, None);
        }
        self.shared.with_status(|s| {
            s.scans += 1;
            s.last_scan = Some(Utc::now());
        });
        self.publish_status("running");
    }

    /// Places every watch again (after the watch limit was hit, some directories may
    /// now fit).
    pub(super) fn rewatch_all(&mut self) {
        self.rewatch = false;
        self.limit_reported = false;
        let watches: Vec<(PathBuf, bool, bool)> =
            self.ws.list.iter().map(|w| (w.root.clone(), w.cfg.recursive, w.cfg.access)).collect();
        let mut covs = Vec::new();
        for (root, recursive, access) in watches {
            covs.push(self.backend.watch(&root, recursive, access));
        }
        // Already reported once this episode: only recount.
        self.limit_reported = true;
        self.account_coverage(&covs, true);
    }

    pub(super) fn refresh_cameras(&mut self) {
        let found = WatchSet::expand_cameras(&self.fim.camera_paths, self.ws.camera_globs());
        for dev in found {
            if Arc::make_mut(&mut self.ws).add_camera(&dev) {
                let cov = self.backend.watch(&dev, false, true);
                self.account_coverage(std::slice::from_ref(&cov), false);
            }
        }
    }

    // ---- lazy hashes ----

    pub(super) fn start_lazy(&mut self) {
        for job in std::mem::take(&mut self.lazy) {
            if let Some(owner) = self.ws.owner(&job.path) {
                self.note_own_open(&job.path, owner);
            }
            self.lazy_prev.insert(job.path.clone(), job.prev.clone());
            let tx = self.lazy_tx.clone();
            self.lazy_outstanding += 1;
            self.pool.spawn(move || {
                let out = hash::hash_file(&job.path, job.algo, job.max_size, None);
                let _ = tx.send((job.path, out));
            });
        }
    }

    pub(super) fn lazy_results(&mut self) {
        while let Ok((path, out)) = self.lazy_rx.try_recv() {
            self.lazy_outstanding = self.lazy_outstanding.saturating_sub(1);
            let prev = self.lazy_prev.remove(&path).flatten();
            let Some(entry) = self.base.get_entry(&path) else { continue };
            let mut st = entry.state.clone();
            let seen = entry.seen;
            if st.hash_skipped.as_deref() != Some("pending") {
                continue; // real time looked at it since
            }
            let same = out.fstat.is_some_and(|(ino, size, _, _)| ino == st.inode && size == st.size);
            if !same {
                continue; // it changed while hashed; its notification brings a new look
            }
            let Some(owner) = self.ws.owner(&path) else { continue };
            let algo = self.ws.list[owner].cfg.hash;
            set_hash(&mut st, algo, &out.hash);
            if let (Some(prev), Some(now)) = (&prev, &st.hash)
                && prev != now
            {
                let mut before = st.clone();
                before.hash = Some(prev.clone());
                self.emit_file(
                    Activity::Modified,
                    &path,
                    None,
                    Some(before),
                    Some(st.clone()),
                    vec!["hash".into()],
                    None,
                    None,
                    "offline",
                );
            }
            self.base.insert(path, st, seen);
        }
    }
}
