//! Pending paths: a notified path waits until it has been quiet for `coalesce` (or
//! busy for `coalesce_max`), then the engine reads its state once. Rename halves are
//! paired here (inotify cookies) so the new path knows where its content came from.
//! Pure: time is passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secmon_proto::payload::ProcessInfo;

/// What was seen for a path while it waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub created: bool,
    /// Content written.
    pub modified: bool,
    pub attrib: bool,
    pub deleted: bool,
    /// Opened or read (reported only where `access` is on).
    pub opened: bool,
    /// A writer has it open (created or written, not closed yet): wait for the close
    /// (up to the maximum) rather than look at a half-written file.
    pub writing: bool,
    /// The writer closed it.
    pub closed: bool,
}

impl Seen {
    fn merge(&mut self, o: Seen) {
        self.created |= o.created;
        self.modified |= o.modified;
        self.attrib |= o.attrib;
        self.deleted |= o.deleted;
        self.opened |= o.opened;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub first: Instant,
    pub last: Instant,
    pub seen: Seen,
    pub is_dir: bool,
    /// The acting process, last one known.
    pub process: Option<ProcessInfo>,
    /// This path got its content by a rename from there (the oldest name in a chain
    /// of renames within the window).
    pub rename_from: Option<PathBuf>,
    /// A rename may have changed the path set (a moved-in or moved-out half).
    pub moved: bool,
    /// A writer still has it open.
    pub writing: bool,
    generation: u64,
}

/// The pending set. Bounded by the caller (see [`Coalescer::len`]).
#[derive(Debug)]
pub struct Coalescer {
    quiet: Duration,
    max: Duration,
    map: HashMap<PathBuf, Pending>,
    /// (deadline, generation, path); stale entries (generation moved on) are skipped.
    heap: BinaryHeap<Reverse<(Instant, u64, PathBuf)>>,
    next_generation: u64,
    /// Unpaired `MovedFrom` halves by cookie: (old path, is_dir, when).
    moved_from: HashMap<u32, (PathBuf, bool, Instant)>,
    /// Directories renamed away whose new name has not been examined yet: old → new.
    /// A path under the old name must wait for that (its baseline entry moves).
    renamed_away: HashMap<PathBuf, PathBuf>,
}

impl Coalescer {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            map: HashMap::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            moved_from: HashMap::new(),
            renamed_away: HashMap::new(),
        }
    }

    /// True when a pending entry for `path` already knows who acted.
    pub fn has_process(&self, path: &Path) -> bool {
        self.map.get(path).is_some_and(|p| p.process.is_some())
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.map.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.heap.clear();
        self.moved_from.clear();
        self.renamed_away.clear();
    }

    fn deadline(quiet: Duration, max: Duration, p: &Pending) -> Instant {
        if p.writing { p.first + max } else { (p.last + quiet).min(p.first + max) }
    }

    fn schedule(&mut self, path: &Path) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let (quiet, max) = (self.quiet, self.max);
        let Some(p) = self.map.get_mut(path) else { return };
        p.generation = generation;
        let deadline = Self::deadline(quiet, max, p);
        self.heap.push(Reverse((deadline, generation, path.to_path_buf())));
    }

    fn entry(&mut self, path: &Path, at: Instant) -> &mut Pending {
        self.map.entry(path.to_path_buf()).or_insert_with(|| Pending {
            first: at,
            last: at,
            seen: Seen::default(),
            is_dir: false,
            process: None,
            rename_from: None,
            moved: false,
            writing: false,
            generation: 0,
        })
    }

    /// Records a notification for `path`.
    pub fn note(&mut self, path: &Path, seen: Seen, is_dir: bool, process: Option<ProcessInfo>, at: Instant) {
        let p = self.entry(path, at);
        p.last = p.last.max(at);
        p.seen.merge(seen);
        if seen.writing {
            p.writing = true;
        }
        if seen.closed {
            p.writing = false;
        }
        p.is_dir |= is_dir;
        // Who changed it matters more than who read it afterwards.
        let only_read = seen.opened && !(seen.created || seen.modified || seen.attrib || seen.deleted);
        if process.is_some() && (p.process.is_none() || !only_read) {
            p.process = process;
        }
        self.schedule(path);
    }

    /// One half of a rename whose other half may follow (inotify `IN_MOVED_FROM`).
    pub fn moved_from(&mut self, cookie: u32, path: &Path, is_dir: bool, at: Instant) {
        self.moved_from.insert(cookie, (path.to_path_buf(), is_dir, at));
        self.note(path, Seen { deleted: true, ..Seen::default() }, is_dir, None, at);
        if let Some(p) = self.map.get_mut(path) {
            p.moved = true;
        }
    }

    /// The other half (`IN_MOVED_TO`): paired by cookie into a rename, else a move in.
    pub fn moved_to(&mut self, cookie: u32, path: &Path, is_dir: bool, at: Instant) {
        match self.moved_from.remove(&cookie) {
            Some((from, from_dir, _)) => self.renamed(&from, path, is_dir || from_dir, None, at),
            None => {
                self.note(path, Seen { created: true, ..Seen::default() }, is_dir, None, at);
                if let Some(p) = self.map.get_mut(path) {
                    p.moved = true;
                }
            }
        }
    }

    /// A rename with both names known. The old name's pending entry is folded into
    /// the new one (its content went there); a chain a → b → c keeps `a` as origin.
    pub fn renamed(
        &mut self,
        from: &Path,
        to: &Path,
        is_dir: bool,
        process: Option<ProcessInfo>,
        at: Instant,
    ) {
        if from == to {
            return;
        }
        let old = self.map.remove(from);
        let origin = match &old {
            Some(o) => o.rename_from.clone().unwrap_or_else(|| from.to_path_buf()),
            None => from.to_path_buf(),
        };
        let mut seen = old.as_ref().map(|o| o.seen).unwrap_or_default();
        // What happened to the old name does not happen to the new one: it got a
        // name (created) and kept its content and attributes, unless written before.
        seen.deleted = false;
        seen.created = true;
        if is_dir {
            self.renamed_away.insert(origin.clone(), to.to_path_buf());
        }
        let p = self.entry(to, at);
        p.last = p.last.max(at);
        p.seen.merge(seen);
        p.is_dir |= is_dir;
        p.rename_from = if origin.as_path() == to { None } else { Some(origin) };
        p.moved = true;
        if process.is_some() {
            p.process = process;
        } else if let Some(o) = old {
            p.process = p.process.take().or(o.process);
        }
        self.schedule(to);
    }

    /// Unpaired `MovedFrom` halves older than `grace` are moves out of the tree; the
    /// caller gets their paths (already pending as deletions).
    pub fn expire_moves(&mut self, now: Instant, grace: Duration) -> Vec<(PathBuf, bool)> {
        let old: Vec<u32> = self
            .moved_from
            .iter()
            .filter(|(_, (_, _, at))| now.duration_since(*at) >= grace)
            .map(|(c, _)| *c)
            .collect();
        old.into_iter().filter_map(|c| self.moved_from.remove(&c)).map(|(p, d, _)| (p, d)).collect()
    }

    /// The earliest deadline of any pending path.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, generation, path))) = self.heap.peek() {
            match self.map.get(path) {
                Some(p) if p.generation == *generation => return Some(*deadline),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Takes up to `limit` paths whose deadline passed.
    pub fn pop_due(&mut self, now: Instant, limit: usize) -> Vec<(PathBuf, Pending)> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Reverse((deadline, generation, path))) = self.heap.peek() else { break };
            let live = self.map.get(path).is_some_and(|p| p.generation == *generation);
            if !live {
                self.heap.pop();
                continue;
            }
            if *deadline > now {
                break;
            }
            let Some(Reverse((_, _, path))) = self.heap.pop() else { break };
            if let Some(p) = self.take(&path) {
                out.push((path, p));
            }
        }
        out
    }

    /// Takes everything (before a full scan: the scan reads every state anyway, but
    /// renames and accesses are only known here).
    pub fn drain_all(&mut self) -> Vec<(PathBuf, Pending)> {
        self.heap.clear();
        let mut all: Vec<(PathBuf, Pending)> = self.map.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        self.renamed_away.clear();
        all
    }

    /// Removes and returns one path's entry.
    pub fn take(&mut self, path: &Path) -> Option<Pending> {
        let p = self.map.remove(path)?;
        if let Some(origin) = &p.rename_from {
            self.renamed_away.remove(origin);
        }
        Some(p)
    }

    /// A pending directory rename that must be handled before `path` (an ancestor
    /// of `path` is the new or the old name of a renamed directory): the new name.
    pub fn rename_ancestor(&self, path: &Path) -> Option<PathBuf> {
        if self.renamed_away.is_empty() && self.map.is_empty() {
            return None;
        }
        for a in path.ancestors().skip(1) {
            if let Some(new) = self.renamed_away.get(a)
                && self.map.contains_key(new)
            {
                return Some(new.clone());
            }
            if let Some(p) = self.map.get(a)
                && p.is_dir
                && p.rename_from.is_some()
            {
                return Some(a.to_path_buf());
            }
        }
        None
    }

    /// Deadline of one path.
    #[cfg(test)]
    pub fn deadline_of(&self, path: &Path) -> Option<Instant> {
        self.map.get(path).map(|p| Self::deadline(self.quiet, self.max, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn modified() -> Seen {
        Seen { modified: true, ..Seen::default() }
    }

    #[test]
    fn quiet_period_and_maximum_wait() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(2), ms(500));
        let p = Path::new("/w/f");
        c.note(p, modified(), false, None, t0);
        assert_eq!(c.next_deadline(), Some(t0 + ms(2)));
        assert!(c.pop_due(t0 + ms(1), 10).is_empty());
        // Continuous activity pushes the deadline, but never past first + max.
        for i in 1..400u64 {
            c.note(p, modified(), false, None, t0 + ms(i * 2));
        }
        assert_eq!(c.next_deadline(), Some(t0 + ms(500)));
        let due = c.pop_due(t0 + ms(500), 10);
        assert_eq!(due.len(), 1);
        assert!(due[0].1.seen.modified);
        assert!(c.is_empty());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_file_open_for_writing_waits_for_its_close() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(2), ms(500));
        let p = Path::new("/w/f");
        c.note(p, Seen { created: true, writing: true, ..Seen::default() }, false, None, t0);
        assert_eq!(c.deadline_of(p), Some(t0 + ms(500)), "no close yet: up to the maximum");
        c.note(p, Seen { modified: true, closed: true, ..Seen::default() }, false, None, t0 + ms(30));
        assert_eq!(c.deadline_of(p), Some(t0 + ms(32)), "closed: the quiet period");
        assert_eq!(c.pop_due(t0 + ms(32), 10).len(), 1);
    }

    #[test]
    fn editor_dance_folds_temp_into_target() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(2), ms(500));
        let (f, tmp) = (Path::new("/w/f"), Path::new("/w/f.tmp"));
        c.note(tmp, Seen { created: true, modified: true, ..Seen::default() }, false, None, t0);
        c.moved_from(9, tmp, false, t0);
        c.moved_to(9, f, false, t0);
        let due = c.pop_due(t0 + ms(10), 10);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].0, f);
        assert_eq!(due[0].1.rename_from.as_deref(), Some(tmp));
        assert!(due[0].1.seen.modified);
    }

    #[test]
    fn rename_chain_keeps_origin_and_unpaired_halves_expire() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(2), ms(500));
        c.renamed(Path::new("/w/a"), Path::new("/w/b"), false, None, t0);
        c.renamed(Path::new("/w/b"), Path::new("/w/c"), false, None, t0);
        let due = c.pop_due(t0 + ms(5), 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, Path::new("/w/c"));
        assert_eq!(due[0].1.rename_from.as_deref(), Some(Path::new("/w/a")));

        c.moved_from(3, Path::new("/w/out"), true, t0);
        assert!(c.expire_moves(t0 + ms(1), ms(5)).is_empty());
        assert_eq!(c.expire_moves(t0 + ms(6), ms(5)), vec![(PathBuf::from("/w/out"), true)]);
        c.moved_to(3, Path::new("/w/late"), false, t0 + ms(7));
        let due = c.pop_due(t0 + ms(20), 10);
        let late = due.iter().find(|(p, _)| p == Path::new("/w/late")).unwrap();
        assert!(late.1.rename_from.is_none() && late.1.seen.created, "a late half is a move in");
    }

    #[test]
    fn paths_under_a_renamed_dir_wait_for_it() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(2), ms(500));
        c.renamed(Path::new("/w/d"), Path::new("/w/e"), true, None, t0);
        assert_eq!(c.rename_ancestor(Path::new("/w/d/x")), Some(PathBuf::from("/w/e")));
        assert_eq!(c.rename_ancestor(Path::new("/w/e/x/y")), Some(PathBuf::from("/w/e")));
        assert_eq!(c.rename_ancestor(Path::new("/w/f")), None);
        c.take(Path::new("/w/e"));
        assert_eq!(c.rename_ancestor(Path::new("/w/d/x")), None);
    }
}
