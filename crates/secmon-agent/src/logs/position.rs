//! Where each log file was read up to, kept in `<state_dir>/logs/positions.json` so a
//! restart goes on where the last run stopped. A file is recognised by device, inode
//! and a checksum of its first bytes (inodes are reused after a delete).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes at the start of a file that identify it.
pub const FINGERPRINT_BYTES: u64 = 256;

/// The saved position of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub inode: u64,
    /// Bytes read and emitted (a line not yet ended is not included).
    pub offset: u64,
    /// Length of the fingerprinted start (up to [`FINGERPRINT_BYTES`]) and its CRC-32.
    pub fp_len: u64,
    pub fp_crc: u32,
}

/// CRC-32 of the first `len` bytes of `file`; None when it is shorter now.
pub fn fingerprint(file: &std::fs::File, len: u64) -> io::Result<Option<u32>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    Ok(Some(crc32fast::hash(&buf)))
}

/// The positions file of a state dir.
pub struct PositionStore {
    path: PathBuf,
}

impl PositionStore {
    pub fn new(state_dir: &Path) -> Self {
        PositionStore { path: state_dir.join("logs").join("positions.json") }
    }

    /// The saved positions; a missing file is an empty map, a damaged one is logged
    /// and ignored (every file then starts as never seen).
    pub fn load(&self) -> BTreeMap<PathBuf, Position> {
        let mut text = String::new();
        match std::fs::File::open(&self.path).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::error!(path = %self.path.display(), error = %e, "log positions unreadable; starting over");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "log positions unreadable; starting over");
                BTreeMap::new()
            }
        }
    }

    /// Replaces the file atomically (write aside, then rename).
    pub fn save(&self, positions: &BTreeMap<PathBuf, Position>) -> io::Result<()> {
        let dir = self.path.parent().expect("positions file has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(positions).map_err(io::Error::other)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = PositionStore::new(dir.path());
        assert!(store.load().is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            PathBuf::from("/var/log/auth.log"),
            Position { dev: 1, inode: 2, offset: 3, fp_len: 4, fp_crc: 5 },
        );
        store.save(&m).unwrap();
        assert_eq!(store.load(), m);
        std::fs::write(dir.path().join("logs/positions.json"), "{not json").unwrap();
        assert!(store.load().is_empty());
    }

    #[test]
    fn fingerprint_needs_the_whole_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello world").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(fingerprint(&f, 5).unwrap(), Some(crc32fast::hash(b"hello")));
        assert_eq!(fingerprint(&f, 50).unwrap(), None);
    }
}
