//! Baseline state vs. current state → what changed. Pure.

use secmon_proto::payload::{FileKind, FileState};

use crate::detect::Activity;

/// Names (in the wire's vocabulary) of the attributes that differ. A directory's size
/// and times change with every entry made in it, so they are not compared: its own
/// changes are mode, owner and identity. A hash is compared only when both sides have
/// one made with the same algorithm (a watch switched to another algorithm is
/// re-baselined, not reported).
pub fn differing(before: &FileState, after: &FileState) -> Vec<String> {
    let mut out = Vec::new();
    let dir = before.kind == FileKind::Dir && after.kind == FileKind::Dir;
    let mut push = |cond: bool, name: &str| {
        if cond {
            out.push(name.to_string());
        }
    };
    push(before.kind != after.kind, "kind");
    push(!dir && before.size != after.size, "size");
    push(before.mode != after.mode, "mode");
    push(before.uid != after.uid, "uid");
    push(before.gid != after.gid, "gid");
    push(!dir && before.mtime != after.mtime, "mtime");
    push(!dir && before.ctime != after.ctime, "ctime");
    push(before.inode != after.inode, "inode");
    let hashes_comparable =
        before.hash.is_some() && after.hash.is_some() && before.hash_algo == after.hash_algo;
    push(hashes_comparable && before.hash != after.hash, "hash");
    push(before.target != after.target, "target");
    out
}

/// What to report for a path that exists in both states: `None` when nothing the
/// user cares about differs. Content (kind, size, hash, symlink target) → `modified`;
/// only attributes → `attributes_changed`. Without a hash on either side (too large,
/// unreadable), a new mtime counts as a content change.
pub fn verdict(before: &FileState, after: &FileState) -> Option<(Activity, Vec<String>)> {
    let changes = differing(before, after);
    if changes.is_empty() {
        return None;
    }
    let has = |n: &str| changes.iter().any(|c| c == n);
    let unhashed = after.kind == FileKind::File && (before.hash.is_none() || after.hash.is_none());
    let content = has("kind") || has("size") || has("hash") || has("target") || (unhashed && has("mtime"));
    let activity = if content { Activity::Modified } else { Activity::AttributesChanged };
    Some((activity, changes))
}

/// The changes worth listing for a rename: the rename itself changes ctime (and a
/// replaced target's inode), which says nothing about the file.
pub fn rename_changes(before: &FileState, after: &FileState) -> Vec<String> {
    differing(before, after).into_iter().filter(|c| c != "ctime" && c != "inode").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, hash: &str) -> FileState {
        FileState { mtime: 10.0, ctime: 10.0, inode: 7, ..FileState::sha256_file(size, hash) }
    }

    #[test]
    fn content_vs_attributes() {
        let a = file(3, "aa");
        assert_eq!(verdict(&a, &a), None);

        let mut b = file(4, "bb");
        b.mtime = 11.0;
        b.ctime = 11.0;
        assert_eq!(
            verdict(&a, &b),
            Some((Activity::Modified, vec!["size".into(), "mtime".into(), "ctime".into(), "hash".into()]))
        );

        let mut c = a.clone();
        c.mode = 0o100600;
        c.ctime = 12.0;
        assert_eq!(verdict(&a, &c), Some((Activity::AttributesChanged, vec!["mode".into(), "ctime".into()])));

        // Same content rewritten: times and inode differ, hash equal.
        let mut d = a.clone();
        d.inode = 8;
        d.mtime = 13.0;
        d.ctime = 13.0;
        assert_eq!(verdict(&a, &d).unwrap().0, Activity::AttributesChanged);
    }

    #[test]
    fn unhashed_file_with_new_mtime_is_modified() {
        let mut a = file(3, "aa");
        a.hash = None;
        a.hash_skipped = Some("too_large".into());
        let mut b = a.clone();
        b.mtime = 20.0;
        assert_eq!(verdict(&a, &b).unwrap().0, Activity::Modified);
    }

    #[test]
    fn hash_algorithm_switch_is_not_a_change() {
        let a = file(3, "aa");
        let mut b = file(3, "ff");
        b.hash_algo = Some("blake3".into());
        assert_eq!(verdict(&a, &b), None);
    }

    #[test]
    fn directories_ignore_size_and_times() {
        let mut a = file(4096, "x");
        a.kind = FileKind::Dir;
        a.hash = None;
        let mut b = a.clone();
        b.size = 8192;
        b.mtime = 99.0;
        b.ctime = 99.0;
        assert_eq!(verdict(&a, &b), None);
        b.uid = 1000;
        assert_eq!(verdict(&a, &b), Some((Activity::AttributesChanged, vec!["uid".into()])));
    }
}
