//! The baseline: every watched path's recorded state, in memory (ordered by path, so
//! a directory's subtree is one range) and on disk in `<state_dir>/fim/baseline.jsonl`.
//!
//! On disk: JSON lines, a header `{"format":"secmon-fim-baseline","version":1,
//! "roots":[...]}` then one `{"p":path,"s":FileState}` per path (`"px"`: hex bytes for
//! a path that is not UTF-8). Written to a temp file, fsynced, renamed over the old
//! one, so a crash leaves either the old or the new baseline, never half of one.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, BufRead, BufWriter, Write};
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use secmon_proto::payload::FileState;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "secmon-fim-baseline";
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "baseline.jsonl";

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub state: FileState,
    /// Scan generation that last saw the path (not stored): after a walk, entries
    /// with an older generation are gone.
    pub seen: u64,
}

/// The in-memory baseline. Only the engine thread holds it.
#[derive(Debug, Default)]
pub struct Baseline {
    map: BTreeMap<PathBuf, Entry>,
    pub dirty: bool,
}

impl Baseline {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, path: &Path) -> Option<&FileState> {
        self.map.get(path).map(|e| &e.state)
    }

    pub fn get_entry(&self, path: &Path) -> Option<&Entry> {
        self.map.get(path)
    }

    pub fn insert(&mut self, path: PathBuf, state: FileState, seen: u64) {
        self.map.insert(path, Entry { state, seen });
        self.dirty = true;
    }

    pub fn mark_seen(&mut self, path: &Path, seen: u64) {
        if let Some(e) = self.map.get_mut(path) {
            e.seen = seen;
        }
    }

    pub fn remove(&mut self, path: &Path) -> Option<FileState> {
        let e = self.map.remove(path)?;
        self.dirty = true;
        Some(e.state)
    }

    /// Paths strictly below `dir`, in order.
    pub fn below(&self, dir: &Path) -> Vec<PathBuf> {
        self.map
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(dir))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Paths at or below `root` whose last sighting is older than `generation`.
    pub fn unseen_under(&self, root: &Path, generation: u64) -> Vec<PathBuf> {
        self.map
            .range::<Path, _>((Bound::Included(root), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(root))
            .filter(|(_, e)| e.seen < generation)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Moves every entry below `from` to the same place below `to` (a directory
    /// rename keeps its children's states).
    pub fn move_below(&mut self, from: &Path, to: &Path) {
        for old in self.below(from) {
            if let Some(e) = self.map.remove(&old)
                && let Ok(rest) = old.strip_prefix(from)
            {
                self.map.insert(to.join(rest), e);
            }
        }
        self.dirty = true;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &Entry)> {
        self.map.iter()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    roots: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    px: Option<String>,
    s: FileState,
    /// mtime and ctime exactly (serde_json's default float parsing may be one unit
    /// off in the last place, which would look like a change after every restart).
    t: [String; 2],
}

/// A baseline read from disk.
#[derive(Debug, Default)]
pub struct Stored {
    /// Watch roots the stored baseline covered: only those are compared (a watch added
    /// since is a first run for that watch).
    pub roots: BTreeSet<PathBuf>,
    pub entries: BTreeMap<PathBuf, FileState>,
}

fn path_of(line: &Line) -> Option<PathBuf> {
    if let Some(p) = &line.p {
        return Some(PathBuf::from(p));
    }
    let bytes = hex::decode(line.px.as_ref()?).ok()?;
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

/// Reads the stored baseline: `Ok(None)` when there is none (first run), `Err` with
/// a reason when it cannot be used (unreadable, corrupt, another version).
pub fn load(file: &Path) -> Result<Option<Stored>, String> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let mut lines = io::BufReader::new(f).lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(format!("cannot read: {e}")),
        None => return Err("empty file".into()),
    };
    let header: Header = serde_json::from_str(&first).map_err(|e| format!("bad header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!("not a baseline (format {:?})", header.format));
    }
    if header.version != VERSION {
        return Err(format!("version {} (this agent reads {VERSION})", header.version));
    }
    let mut stored =
        Stored { roots: header.roots.into_iter().map(PathBuf::from).collect(), ..Stored::default() };
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| format!("cannot read line {}: {e}", n + 2))?;
        let mut parsed: Line = serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 2))?;
        let path = path_of(&parsed).ok_or_else(|| format!("line {}: no path", n + 2))?;
        let time = |s: &str| s.parse::<f64>().map_err(|e| format!("line {}: time {s:?}: {e}", n + 2));
        parsed.s.mtime = time(&parsed.t[0])?;
        parsed.s.ctime = time(&parsed.t[1])?;
        stored.entries.insert(path, parsed.s);
    }
    Ok(Some(stored))
}

/// Writes the baseline atomically (temp file, fsync, rename, fsync of the dir).
pub fn save<'a>(
    file: &Path,
    roots: impl Iterator<Item = &'a Path>,
    entries: impl Iterator<Item = (&'a PathBuf, &'a FileState)>,
) -> io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let tmp = file.with_extension("jsonl.tmp");
    let f = std::fs::File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(256 * 1024, f);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        roots: roots.map(|r| r.to_string_lossy().into_owned()).collect(),
    };
    serde_json::to_writer(&mut w, &header)?;
    w.write_all(b"\n")?;
    for (path, state) in entries {
        let (p, px) = match path.to_str() {
            Some(s) => (Some(s.to_string()), None),
            None => (None, Some(hex::encode(path.as_os_str().as_bytes()))),
        };
        let t = [state.mtime.to_string(), state.ctime.to_string()];
        serde_json::to_writer(&mut w, &Line { p, px, s: state.clone(), t })?;
        w.write_all(b"\n")?;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secmon_proto::payload::FileKind;

    fn state(size: u64) -> FileState {
        FileState {
            kind: FileKind::File,
            size,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            mtime: 1_700_000_000.123_456_7,
            ctime: 1_700_000_001.5,
            inode: 42,
            hash: Some("ab".into()),
            hash_algo: Some("sha256".into()),
            hash_skipped: None,
            target: None,
        }
    }

    #[test]
    fn round_trip_with_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        let odd = PathBuf::from(OsString::from_vec(b"/w/bad\xffname".to_vec()));
        let mut entries = BTreeMap::new();
        entries.insert(PathBuf::from("/w/a"), state(1));
        entries.insert(PathBuf::from("/w/new\nline"), state(2));
        entries.insert(odd.clone(), state(3));
        let roots = [PathBuf::from("/w")];
        save(&file, roots.iter().map(|r| r.as_path()), entries.iter()).unwrap();
        let back = load(&file).unwrap().unwrap();
        assert_eq!(back.entries, entries);
        assert!(back.roots.contains(Path::new("/w")));
        assert_eq!(back.entries[&odd].mtime, state(3).mtime, "times survive exactly");
    }

    #[test]
    fn nanosecond_times_survive_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        let mut entries = BTreeMap::new();
        for i in 0..2000u64 {
            let mut s = state(i);
            s.mtime = 1_763_900_000.0 + (i * 7_919_993 % 1_000_000_000) as f64 / 1e9;
            s.ctime = 1_763_900_000.0 + (i * 104_729_731 % 1_000_000_000) as f64 / 1e9;
            entries.insert(PathBuf::from(format!("/w/{i}")), s);
        }
        save(&file, std::iter::empty(), entries.iter()).unwrap();
        assert_eq!(load(&file).unwrap().unwrap().entries, entries);
    }

    #[test]
    fn corrupt_or_foreign_files_are_reasons_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        assert!(load(&file).unwrap().is_none());
        for bad in [
            &b""[..],
            b"garbage",
            b"{\"format\":\"secmon-fim-baseline\",\"version\":99,\"roots\":[]}\n",
            b"{\"format\":\"secmon-fim-baseline\",\"version\":1,\"roots\":[]}\n{\"p\":\"/x\",\"s\":{tru",
            b"\xff\xfe\x00",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(load(&file).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subtree_ranges_and_moves() {
        let mut b = Baseline::default();
        for p in ["/w/d", "/w/d/x", "/w/d/y/z", "/w/d2", "/w/da", "/w/e"] {
            b.insert(PathBuf::from(p), state(0), 1);
        }
        assert_eq!(b.below(Path::new("/w/d")), vec![PathBuf::from("/w/d/x"), PathBuf::from("/w/d/y/z")]);
        b.move_below(Path::new("/w/d"), Path::new("/w/n"));
        assert!(b.get(Path::new("/w/n/y/z")).is_some());
        assert!(b.get(Path::new("/w/d/x")).is_none());
        b.mark_seen(Path::new("/w/d2"), 2);
        assert_eq!(b.unseen_under(Path::new("/w/d2"), 2), Vec::<PathBuf>::new());
        assert_eq!(b.unseen_under(Path::new("/w/e"), 2), vec![PathBuf::from("/w/e")]);
    }
}
