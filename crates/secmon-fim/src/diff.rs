//! `report_changes`: copies of text files under `<state_dir>/fim/content/` and the
//! unified diff put in `modified` events.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Bytes looked at for a NUL when deciding whether a file is text.
const TEXT_PROBE: usize = 8 * 1024;

/// Text = no NUL in the first 8 KiB and valid UTF-8 throughout.
pub fn as_text(content: &[u8]) -> Option<&str> {
    let probe = &content[..content.len().min(TEXT_PROBE)];
    if probe.contains(&0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

/// Text whose copy may be kept and diffed: `as_text`, and not a secret. Private keys
/// (by name, as the SSH detector sees them, or by a PEM/OpenSSH private-key marker in
/// the content) never get a copy in the state dir nor a diff in an event, whatever
/// `report_changes` says: a diff would ship the key to NATS and the manager.
pub fn keepable<'a>(path: &Path, content: &'a [u8]) -> Option<&'a str> {
    let text = as_text(content)?;
    let private_key = crate::detect::ssh_material(path) == Some(crate::detect::SshMaterial::PrivateKey)
        || text.contains("PRIVATE KEY-----");
    (!private_key).then_some(text)
}

/// A unified diff of `before` → `after` with `--- path (before)` / `+++ path (after)`
/// headers, cut at a line boundary at most `max_bytes` long; a cut diff ends with the
/// line `... diff truncated (N bytes)`, N being the bytes left out. Returns the diff
/// and whether it was cut.
pub fn unified(path: &str, before: &str, after: &str, max_bytes: usize) -> (String, bool) {
    let diff = similar::TextDiff::configure().timeout(Duration::from_secs(1)).diff_lines(before, after);
    let full = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string();
    truncate(full, max_bytes)
}

fn truncate(full: String, max_bytes: usize) -> (String, bool) {
    if full.len() <= max_bytes {
        return (full, false);
    }
    // Keep whole lines only, so the diff stays readable.
    let mut cut = 0;
    for (i, b) in full.bytes().enumerate() {
        if i >= max_bytes {
            break;
        }
        if b == b'\n' {
            cut = i + 1;
        }
    }
    let left_out = full.len() - cut;
    let mut kept = full[..cut].to_string();
    kept.push_str(&format!("... diff truncated ({left_out} bytes)\n"));
    (kept, true)
}

/// The copies kept for `report_changes`, one file per watched path, named by the hex
/// sha256 of the path (so no path ever needs escaping).
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn file_for(&self, path: &Path) -> PathBuf {
        let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.dir.join(hex::encode(digest))
    }

    pub fn get(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(self.file_for(path)).ok()
    }

    /// Writes the copy (temp file + rename, so a crash never leaves half a copy).
    pub fn put(&self, path: &Path, text: &str) -> io::Result<()> {
        let dest = self.file_for(path);
        if keepable(path, text.as_bytes()).is_none() {
            // Defence in depth: callers check `keepable`; a secret is never written.
            let _ = std::fs::remove_file(&dest);
            return Ok(());
        }
        let tmp = dest.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &dest)
    }

    pub fn remove(&self, path: &Path) {
        let _ = std::fs::remove_file(self.file_for(path));
    }

    pub fn rename(&self, from: &Path, to: &Path) {
        let _ = std::fs::rename(self.file_for(from), self.file_for(to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_needs_utf8_and_no_nul() {
        assert_eq!(as_text(b"hello\n"), Some("hello\n"));
        assert_eq!(as_text(b"a\0b"), None);
        assert_eq!(as_text(&[0xff, 0xfe, b'a']), None);
        let mut late_nul = vec![b'a'; TEXT_PROBE + 10];
        late_nul[TEXT_PROBE + 5] = 0;
        // A NUL past the probe is still valid UTF-8: text.
        assert!(as_text(&late_nul).is_some());
    }

    #[test]
    fn diff_has_headers_and_lines() {
        let (d, cut) = unified("/etc/x", "a\nb\nc\n", "a\nB\nc\n", 4096);
        assert!(!cut);
        assert!(d.starts_with("--- /etc/x (before)\n+++ /etc/x (after)\n"), "{d}");
        assert!(d.contains("-b\n") && d.contains("+B\n"), "{d}");
    }

    #[test]
    fn long_diff_is_cut_at_a_line_with_a_marker() {
        let before: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let after: String = (0..1000).map(|i| format!("LINE {i}\n")).collect();
        let (d, cut) = unified("/f", &before, &after, 200);
        assert!(cut);
        let body_len = d.rfind("... diff truncated (").unwrap();
        assert!(body_len <= 200, "kept {body_len} bytes");
        assert!(d[..body_len].ends_with('\n'));
        let marker = d.lines().last().unwrap();
        assert!(marker.starts_with("... diff truncated (") && marker.ends_with(" bytes)"), "{marker}");
    }
}
