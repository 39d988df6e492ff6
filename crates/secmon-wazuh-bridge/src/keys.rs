//! Key files: the HMAC signing key and the encryption key.
//!
//! A key file holds the key as hex text, or base64 text (surrounding whitespace
//! ignored), or, when it is neither, the raw bytes of the whole file. A file whose
//! mode grants anything to group or others is refused: a key anyone can read signs
//! anything. Key bytes never appear in a log or in `Debug` output; only the key id
//! (first 8 bytes of sha256(key), hex) does, which tells a verifier which key a
//! message was signed with without revealing it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Minimum length of an HMAC signing key (the hash's output size, RFC 2104).
pub const MIN_SIGNING_KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 and AES-256-GCM keys are exactly this long.
pub const ENCRYPTION_KEY_LEN: usize = 32;
/// Length of a generated key.
pub const GENERATED_KEY_LEN: usize = 32;
/// A key file bigger than this is not a key (and is not read whole).
const MAX_KEY_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "key file {path} has mode {mode:04o}: group or others may access it; run `chmod 600 {path}` (it must be readable by its owner only)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} holds a {len}-byte key; at least {min} bytes are required")]
    TooShort { path: PathBuf, len: usize, min: usize },
    #[error("key file {path} is larger than {max} bytes: not a key file")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Secret key bytes. `Debug` shows the id only; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: Vec<u8>,
    id: String,
}

impl Key {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let digest = Sha256::digest(&bytes);
        let id = hex::encode(&digest[..8]);
        Self { bytes, id }
    }

    /// A fresh random key of `len` bytes.
    pub fn generate(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// The key material. Never log it.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// First 8 bytes of sha256(key), hex (16 characters).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("len", &self.bytes.len()).finish()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Best effort: do not leave the key in freed memory. Volatile writes so the
        // compiler cannot drop the stores as dead.
        for b in self.bytes.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Hex first (a 64-character hex key is valid base64 too), then base64 (standard or
/// URL-safe, padded or not), then the raw bytes of the file as they are.
fn parse_key_text(raw: &[u8]) -> Vec<u8> {
    if let Ok(text) = std::str::from_utf8(raw) {
        let t = text.trim();
        if !t.is_empty() {
            if let Ok(b) = hex::decode(t) {
                return b;
            }
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                if let Ok(b) = engine.decode(t) {
                    return b;
                }
            }
        }
    }
    raw.to_vec()
}

/// Loads a key file (hex, base64 or raw bytes); refuses one that group or others
/// may access, and a key shorter than `min_len` bytes.
pub fn load_key(path: &Path, min_len: usize) -> Result<Key, KeyError> {
    let read_err = |source| KeyError::Read { path: path.into(), source };
    let file = File::open(path).map_err(read_err)?;
    // Check the opened file itself, so the mode checked is the one of what is read.
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.into() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.into(), mode });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: path.into(), max: MAX_KEY_FILE });
    }
    let mut raw = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut raw).map_err(read_err)?;
    if raw.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: path.into(), max: MAX_KEY_FILE });
    }
    let key = Key::from_bytes(parse_key_text(&raw));
    wipe(&mut raw);
    if key.len() < min_len.max(1) {
        return Err(KeyError::TooShort { path: path.into(), len: key.len(), min: min_len.max(1) });
    }
    Ok(key)
}

/// Loads the signing key at `path`, or, when the file does not exist, creates it:
/// 32 random bytes written as hex, mode 0600 from creation on (missing directories
/// are created 0700).
pub fn load_or_generate(path: &Path) -> Result<Key, KeyError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return load_key(path, MIN_SIGNING_KEY_LEN),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::Read { path: path.into(), source }),
    }
    let write_err = |source| KeyError::Write { path: path.into(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
    }
    let key = Key::generate(GENERATED_KEY_LEN);
    // Written to a temporary name, then linked into place: a crash never leaves a
    // truncated key behind, and a key another process created meanwhile wins (link
    // does not overwrite).
    let tmp = path.with_file_name(format!(
        ".{}.tmp.{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut text = hex::encode(key.bytes()).into_bytes();
        text.push(b'\n');
        let r = f.write_all(&text).and_then(|_| f.sync_all());
        wipe(&mut text);
        r?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Make the new name durable; failure here is harmless for correctness.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            tracing::info!(path = %path.display(), key_id = key.id(), "generated a new signing key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_key(path, MIN_SIGNING_KEY_LEN),
        Err(source) => Err(KeyError::Write { path: path.into(), source }),
    }
}

fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn group_or_world_readable_file_is_refused_with_chmod_hint() {
        let dir = tempfile::tempdir().unwrap();
        let hexkey = "ab".repeat(32);
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let p = write_key(dir.path(), "k", hexkey.as_bytes(), mode);
            let err = load_key(&p, 32).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeyError::Permissions { .. }), "{mode:o}: {msg}");
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
            assert!(!msg.contains(&hexkey), "the error must not show the key");
        }
        let p = write_key(dir.path(), "k", hexkey.as_bytes(), 0o600);
        assert_eq!(load_key(&p, 32).unwrap().bytes(), &[0xab; 32][..]);
        let p = write_key(dir.path(), "k", hexkey.as_bytes(), 0o400);
        assert!(load_key(&p, 32).is_ok(), "owner read-only is fine");
    }

    #[test]
    fn hex_base64_and_raw_key_files_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(200)).collect();
        let want = Key::from_bytes(bytes.clone());

        let hex_text = format!("  {}\n", hex::encode(&bytes));
        let p = write_key(dir.path(), "hex", hex_text.as_bytes(), 0o600);
        assert_eq!(load_key(&p, 32).unwrap(), want);

        let upper = hex::encode_upper(&bytes);
        let p = write_key(dir.path(), "hexu", upper.as_bytes(), 0o600);
        assert_eq!(load_key(&p, 32).unwrap(), want);

        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let p = write_key(dir.path(), "b64", format!("{}\n", STANDARD.encode(&bytes)).as_bytes(), 0o600);
        assert_eq!(load_key(&p, 32).unwrap(), want);
        let p = write_key(dir.path(), "b64u", URL_SAFE_NO_PAD.encode(&bytes).as_bytes(), 0o600);
        assert_eq!(load_key(&p, 32).unwrap(), want);

        // Raw binary: not UTF-8 at all, used as is (including a trailing newline byte).
        let mut raw = bytes.clone();
        raw.push(b'\n');
        let p = write_key(dir.path(), "raw", &raw, 0o600);
        let k = load_key(&p, 32).unwrap();
        assert_eq!(k.bytes(), &raw[..]);

        // A passphrase that is neither hex nor base64: the file's bytes.
        let phrase = b"correct horse battery staple, forty bytes!";
        let p = write_key(dir.path(), "phrase", phrase, 0o600);
        assert_eq!(load_key(&p, 32).unwrap().bytes(), &phrase[..]);
    }

    #[test]
    fn short_empty_and_missing_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_key(dir.path(), "short", hex::encode([7u8; 16]).as_bytes(), 0o600);
        let err = load_key(&p, 32).unwrap_err();
        assert!(matches!(err, KeyError::TooShort { len: 16, min: 32, .. }), "{err}");
        let p = write_key(dir.path(), "empty", b"", 0o600);
        assert!(matches!(load_key(&p, 0).unwrap_err(), KeyError::TooShort { len: 0, .. }));
        let err = load_key(&dir.path().join("nope"), 32).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(load_key(dir.path(), 32).unwrap_err(), KeyError::NotAFile { .. }));
        let big = write_key(dir.path(), "big", &vec![b'a'; 100_000], 0o600);
        assert!(matches!(load_key(&big, 32).unwrap_err(), KeyError::TooLarge { .. }));
    }

    #[test]
    fn generated_key_is_0600_hex_and_reloads_to_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/sub/signing.key");
        let k1 = load_or_generate(&p).unwrap();
        assert_eq!(k1.len(), 32);
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(hex::decode(text.trim()).unwrap(), k1.bytes());
        let dir_mode = std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        let k2 = load_or_generate(&p).unwrap();
        assert_eq!(k2.id(), k1.id());
        assert_eq!(load_key(&p, 32).unwrap().id(), k1.id());
        // No temporary file left behind.
        let names: Vec<_> =
            std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("signing.key")]);

        // Another path gets another key.
        let k3 = load_or_generate(&dir.path().join("other.key")).unwrap();
        assert_ne!(k3.id(), k1.id());
    }

    #[test]
    fn existing_world_readable_key_is_not_replaced_but_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_key(dir.path(), "signing.key", "cd".repeat(32).as_bytes(), 0o644);
        let err = load_or_generate(&p).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "cd".repeat(32));
    }

    #[test]
    fn debug_and_id_never_show_key_bytes() {
        let k = Key::from_bytes(vec![0x5a; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode([0x5a; 32])));
        assert!(!dbg.contains("90, 90"), "{dbg}");
        assert!(dbg.contains(k.id()));
        // id = first 8 bytes of sha256(key), hex.
        assert_eq!(k.id(), &hex::encode(Sha256::digest([0x5a; 32]))[..16]);
    }
}
