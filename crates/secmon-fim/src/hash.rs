//! Content hashes of regular files, and the bounded pool scans hash on.
//!
//! A file is opened with `O_NONBLOCK|O_NOFOLLOW` (a FIFO swapped in between `lstat`
//! and `open` never blocks the engine, a symlink is never followed) and checked with
//! `fstat` to still be a regular file. One read pass gives the hash and, when asked,
//! the content (for `report_changes` copies), so a file is opened once per look.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::Digest;

use crate::config::HashAlgo;

/// What one look at a file's content gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashOut {
    /// Hex digest, or why there is none (`too_large`, `unreadable: <reason>`,
    /// `not_regular`).
    pub hash: Result<String, String>,
    /// The content, when it was asked for and the file was at most that large.
    pub content: Option<Vec<u8>>,
    /// Inode, size, mtime seconds/nanos of the opened file (`fstat`), to tell whether
    /// the hash still describes what `lstat` sees later.
    pub fstat: Option<(u64, u64, i64, i64)>,
}

enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
}

impl Hasher {
    fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Md5(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hex digest of `data` (used by tests and for content-copy names).
pub fn hash_bytes(algo: HashAlgo, data: &[u8]) -> String {
    let mut h = Hasher::new(algo);
    h.update(data);
    h.finish()
}

fn unreadable(e: &io::Error) -> String {
    format!("unreadable: {e}")
}

/// Hashes the regular file at `path`. Files larger than `max_size` get no hash
/// (`too_large`); `keep_content_up_to` returns the content of files up to that size.
pub fn hash_file(path: &Path, algo: HashAlgo, max_size: u64, keep_content_up_to: Option<u64>) -> HashOut {
    let mut out = HashOut { hash: Err(String::new()), content: None, fstat: None };
    let file = open_nofollow(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            out.hash = Err("not_regular".into());
            return out;
        }
        Err(e) => {
            out.hash = Err(unreadable(&e));
            return out;
        }
    };
    let md = match file.metadata() {
        Ok(md) => md,
        Err(e) => {
            out.hash = Err(unreadable(&e));
            return out;
        }
    };
    out.fstat = Some((md.ino(), md.size(), md.mtime(), md.mtime_nsec()));
    if !md.file_type().is_file() {
        out.hash = Err("not_regular".into());
        return out;
    }
    if md.size() > max_size {
        out.hash = Err("too_large".into());
        return out;
    }
    let keep = keep_content_up_to.is_some_and(|limit| md.size() <= limit);
    let mut content = if keep { Vec::with_capacity(md.size() as usize) } else { Vec::new() };
    let mut hasher = Hasher::new(algo);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                if total > max_size {
                    // It grew past the limit while we read it.
                    out.hash = Err("too_large".into());
                    return out;
                }
                hasher.update(&buf[..n]);
                if keep {
                    content.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                out.hash = Err("unreadable: would block".into());
                return out;
            }
            Err(e) => {
                out.hash = Err(unreadable(&e));
                return out;
            }
        }
    }
    out.hash = Ok(hasher.finish());
    if keep && keep_content_up_to.is_some_and(|limit| total <= limit) {
        out.content = Some(content);
    }
    out
}

/// Opens read-only without following a final symlink and without blocking (FIFOs,
/// device nodes swapped in). `O_NOATIME` spares the disk an atime write per scanned
/// file; it needs ownership or CAP_FOWNER, so it is dropped when refused.
fn open_nofollow(path: &Path) -> io::Result<File> {
    let base = libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let with_noatime = std::fs::OpenOptions::new().read(true).custom_flags(base | libc::O_NOATIME).open(path);
    match with_noatime {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            std::fs::OpenOptions::new().read(true).custom_flags(base).open(path)
        }
        other => other,
    }
}

/// The pool scans hash on: `hash_workers` threads.
pub fn pool(workers: usize) -> std::io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .thread_name(|i| format!("secmon-fim-hash-{i}"))
        .build()
        .map_err(std::io::Error::other)
}
