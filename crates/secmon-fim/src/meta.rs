//! A path's attributes as FIM records them: `lstat` → [`FileState`] (without the hash,
//! which [`crate::hash`] adds).

use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use secmon_proto::payload::{FileKind, FileState};

pub fn kind_of(ft: &FileType) -> FileKind {
    if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Other
    }
}

fn seconds(secs: i64, nsec: i64) -> f64 {
    secs as f64 + nsec as f64 / 1e9
}

/// The recorded attributes of `path` given its (not followed) metadata. A symlink's
/// target is read here; a link that vanished meanwhile simply has no target.
pub fn state_of(path: &Path, md: &Metadata) -> FileState {
    let kind = kind_of(&md.file_type());
    let target = if kind == FileKind::Symlink {
        std::fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    FileState {
        kind,
        size: md.size(),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: seconds(md.mtime(), md.mtime_nsec()),
        ctime: seconds(md.ctime(), md.ctime_nsec()),
        inode: md.ino(),
        hash: None,
        hash_algo: None,
        hash_skipped: None,
        target,
    }
}

/// `lstat` of `path`: `Ok(None)` when nothing is there (or a parent is no longer a
/// directory), so callers tell "gone" from a real error.
pub fn lstat(path: &Path) -> io::Result<Option<FileState>> {
    match std::fs::symlink_metadata(path) {
        Ok(md) => Ok(Some(state_of(path, &md))),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when the content-identifying attributes (size, times, inode, kind) are the
/// same, so a stored hash still describes the file. ctime cannot be set from user
/// space, so a content change that restored mtime still shows here.
pub fn same_content_meta(a: &FileState, b: &FileState) -> bool {
    a.kind == b.kind && a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime && a.inode == b.inode
}
