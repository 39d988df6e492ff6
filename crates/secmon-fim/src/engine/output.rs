//! What leaves the engine: events to the sink, the baseline to disk, the status.

use super::*;

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_file(
        &mut self,
        activity: Activity,
        path: &Path,
        old_path: Option<&Path>,
        before: Option<FileState>,
        after: Option<FileState>,
        changes: Vec<String>,
        diff: Option<(String, bool)>,
        process: Option<ProcessInfo>,
        source: &str,
    ) {
        let owner = self.ws.owner(path).or_else(|| old_path.and_then(|o| self.ws.owner(o)));
        let (watch, description, camera_watch) = match owner {
            Some(o) => {
                let w = &self.ws.list[o];
                (w.root.to_string_lossy().into_owned(), w.cfg.description.clone(), w.camera)
            }
            None => (String::new(), String::new(), false),
        };
        let camera = camera_watch || self.ws.is_camera(path);
        let verdict = detect::classify(activity, path, old_path, camera);
        let line = detect::describe(activity, path, old_path, &changes, process.as_ref(), camera);
        let kind = after.as_ref().or(before.as_ref()).map(|s| s.kind).unwrap_or(FileKind::Other);
        let (diff, diff_truncated) = match diff {
            Some((d, t)) => (Some(d), t),
            None => (None, false),
        };
        let payload = FileActivity {
            path: path.to_string_lossy().into_owned(),
            old_path: old_path.map(|p| p.to_string_lossy().into_owned()),
            kind,
            watch,
            watch_description: description,
            event_type: verdict.event_type.to_string(),
            detector: verdict.detector.map(str::to_string),
            description: line,
            before,
            after,
            changes,
            diff,
            diff_truncated,
            process,
            source: source.to_string(),
            backend: self.backend_name.to_string(),
        };
        let ev = FimEvent {
            time: Utc::now(),
            class: verdict.class,
            activity: activity.as_str().to_string(),
            severity: verdict.severity,
            payload: serde_json::to_value(payload).unwrap_or_default(),
        };
        (self.sink)(ev);
        self.shared.with_status(|s| s.events += 1);
    }

    pub(super) fn emit_agent(&mut self, activity: &str, severity: Severity, payload: serde_json::Value) {
        let ev = FimEvent {
            time: Utc::now(),
            class: EventClass::Agent,
            activity: activity.into(),
            severity,
            payload,
        };
        (self.sink)(ev);
        self.shared.with_status(|s| s.events += 1);
    }

    pub(super) fn persist(&mut self) {
        if !self.base.dirty && self.baseline_file.exists() {
            return;
        }
        let roots: Vec<PathBuf> = self.ws.list.iter().filter(|w| !w.camera).map(|w| w.root.clone()).collect();
        let result = baseline::save(
            &self.baseline_file,
            roots.iter().map(|r| r.as_path()),
            self.base.iter().map(|(p, e)| (p, &e.state)),
        );
        match result {
            Ok(()) => self.base.dirty = false,
            Err(e) => {
                tracing::warn!(file = %self.baseline_file.display(), error = %e, "fim: cannot write the baseline")
            }
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
        if self.access_seen.len() > 1024 {
            let window = self.fim.coalesce_max;
            self.access_seen.retain(|_, t| now.duration_since(*t) < window);
        }
        if self.self_opens.len() > 1024 {
            self.self_opens.retain(|_, (_, until)| *until > now);
        }
    }

    pub(super) fn publish_status(&mut self, state: &str) {
        let realtime = self.backend.realtime_dirs().unwrap_or(self.coverage_sum);
        let files = self.base.len() as u64;
        let uncovered = self.uncovered;
        let watches = self.ws.list.len();
        let backend = self.backend_name;
        self.shared.with_status(|s| {
            s.backend = backend.to_string();
            s.state = state.to_string();
            s.watches = watches;
            s.files = files;
            s.realtime_dirs = realtime;
            s.uncovered_dirs = uncovered;
        });
    }
}
