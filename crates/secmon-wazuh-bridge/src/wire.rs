//! From a message to the bytes published, and back.
//!
//! Encoding, in this order: sign (see `sign.rs`) → compact JSON → zstd (batches
//! only, when `publish.compress_batches`; header `Content-Encoding: zstd`) → encrypt
//! (when `security.encrypt_messages`; header `Secmon-Encryption: <alg>`, payload the
//! JSON envelope of `crypto.rs`). Signing comes first so the signature covers the
//! message itself, whatever the transport does to it; compressing before encrypting
//! because ciphertext does not compress.
//!
//! Decoding reads the payload itself, not the headers (a message saved to a file has
//! none): an encryption envelope is a JSON object with a `ciphertext` member, zstd
//! starts with the magic bytes `28 b5 2f fd`. Decompressed output is capped at
//! 64 MiB, and every failure is a typed error: a subscriber gets garbage from
//! anyone who can publish on the subject.

use std::borrow::Cow;
use std::io::Read;

use bytes::Bytes;
use serde_json::Value;

use crate::config::BridgeConfig;
use crate::crypto::{Cipher, CryptoError, is_envelope};
use crate::keys::{self, Key, KeyError};
use crate::model::{AgentEvent, Batch, Heartbeat};
use crate::sign::{self, VerifyError};

pub const HEADER_CONTENT_ENCODING: &str = "Content-Encoding";
pub const HEADER_ENCRYPTION: &str = "Secmon-Encryption";
/// Largest decompressed payload a decoder accepts.
pub const MAX_DECOMPRESSED: usize = 64 << 20;
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's default level: most of the gain on repetitive JSON for little CPU.
const ZSTD_LEVEL: i32 = 3;
/// Decoder window limit (32 MiB): bounds the memory a hostile frame can make the
/// decoder allocate; the encoder's level-3 window is 2 MiB at most.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// The bytes to publish and their NATS headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Encoded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Signs, serializes, compresses and encrypts outgoing messages. `Debug` shows key
/// ids only.
#[derive(Debug)]
pub struct Encoder {
    signing: Key,
    cipher: Option<Cipher>,
    compress_batches: bool,
}

impl Encoder {
    pub fn new(signing: Key, cipher: Option<Cipher>, compress_batches: bool) -> Self {
        Self { signing, cipher, compress_batches }
    }

    /// From the configuration: the signing key (generated at the default path
    /// `<state.dir>/signing.key` when missing; a configured path must exist), and the
    /// encryption key when `security.encrypt_messages`.
    pub fn from_config(cfg: &BridgeConfig) -> Result<Self, SetupError> {
        let signing = match &cfg.security.signing_key_path {
            Some(p) => keys::load_key(p, keys::MIN_SIGNING_KEY_LEN)?,
            None => keys::load_or_generate(&cfg.signing_key_path())?,
        };
        let cipher = match (&cfg.security.encryption_key_path, cfg.security.encrypt_messages) {
            (Some(p), true) => {
                let k = keys::load_key(p, keys::ENCRYPTION_KEY_LEN)?;
                Some(Cipher::new(cfg.security.encryption_algorithm, &k)?)
            }
            // `validate` refuses encryption without a key path.
            _ => None,
        };
        Ok(Self::new(signing, cipher, cfg.publish.compress_batches))
    }

    pub fn signing_key_id(&self) -> &str {
        self.signing.id()
    }

    pub fn cipher(&self) -> Option<&Cipher> {
        self.cipher.as_ref()
    }

    pub fn encode_event(&self, ev: &mut AgentEvent) -> Encoded {
        sign::sign_event(ev, &self.signing);
        self.finish(to_json(ev), false)
    }

    /// Signs each event, then the batch.
    pub fn encode_batch(&self, b: &mut Batch) -> Encoded {
        sign::sign_batch(b, &self.signing);
        self.finish(to_json(b), self.compress_batches)
    }

    pub fn encode_heartbeat(&self, h: &mut Heartbeat) -> Encoded {
        sign::sign_heartbeat(h, &self.signing);
        self.finish(to_json(h), false)
    }

    fn finish(&self, json: Vec<u8>, compress: bool) -> Encoded {
        let mut headers = Vec::new();
        let mut body = json;
        if compress {
            match zstd::bulk::compress(&body, ZSTD_LEVEL) {
                Ok(z) => {
                    body = z;
                    headers.push((HEADER_CONTENT_ENCODING.into(), "zstd".into()));
                }
                // Only on allocation failure; the message still goes out, uncompressed.
                Err(e) => tracing::warn!(error = %e, "zstd compression failed; publishing uncompressed"),
            }
        }
        if let Some(c) = &self.cipher {
            body = c.encrypt(&body);
            headers.push((HEADER_ENCRYPTION.into(), c.algorithm_name().into()));
        }
        Encoded { payload: Bytes::from(body), headers }
    }
}

fn to_json<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("model messages serialize to JSON")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("message is encrypted ({alg}, key {key_id}); an encryption key is needed (--encryption-key)")]
    Encrypted { alg: String, key_id: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("bad zstd data: {0}")]
    Decompress(String),
    #[error("decompressed payload exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Reads published payloads: decrypts, decompresses, parses and verifies.
#[derive(Debug, Default)]
pub struct Decoder {
    keys: Vec<Key>,
    cipher: Option<Cipher>,
}

impl Decoder {
    /// `keys`: every signing key to accept (by key id); `cipher`: to read encrypted
    /// payloads.
    pub fn new(keys: Vec<Key>, cipher: Option<Cipher>) -> Self {
        Self { keys, cipher }
    }

    /// Decrypts and decompresses as needed, parses, and verifies the signature (and,
    /// for a batch, each event's).
    pub fn decode(&self, payload: &[u8]) -> Result<Value, DecodeError> {
        let v = self.open(payload)?;
        self.verify(&v)?;
        Ok(v)
    }

    /// Decrypts, decompresses and parses without checking the signature.
    pub fn open(&self, payload: &[u8]) -> Result<Value, DecodeError> {
        Ok(self.open_parts(payload)?.1)
    }

    /// The plaintext JSON text of a payload (decrypted, decompressed), unverified.
    pub fn open_bytes(&self, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(self.open_parts(payload)?.0.into_owned())
    }

    /// Checks the signature(s) of an opened message.
    pub fn verify(&self, v: &Value) -> Result<(), DecodeError> {
        Ok(sign::verify_message(v, &self.keys)?)
    }

    fn open_parts<'a>(&self, payload: &'a [u8]) -> Result<(Cow<'a, [u8]>, Value), DecodeError> {
        let text = decompress_if_zstd(Cow::Borrowed(payload))?;
        let v = parse_object(&text)?;
        if !is_envelope(&v) {
            return Ok((text, v));
        }
        let Some(cipher) = &self.cipher else {
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").chars().take(32).collect();
            return Err(DecodeError::Encrypted { alg: field("alg"), key_id: field("key_id") });
        };
        let plain = decompress_if_zstd(Cow::Owned(cipher.decrypt_value(&v)?))?;
        // The plaintext is taken as a message even if it looks like another envelope:
        // no recursion, and its missing signature will say what is wrong.
        let v = parse_object(&plain)?;
        Ok((plain, v))
    }
}

fn parse_object(text: &[u8]) -> Result<Value, DecodeError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let v: Value = serde_json::from_slice(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(DecodeError::NotAnObject);
    }
    Ok(v)
}

fn decompress_if_zstd(data: Cow<'_, [u8]>) -> Result<Cow<'_, [u8]>, DecodeError> {
    if data.starts_with(&ZSTD_MAGIC) { Ok(Cow::Owned(decompress(&data)?)) } else { Ok(data) }
}

/// zstd decompression, refusing more than [`MAX_DECOMPRESSED`] bytes of output.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let err = |e: std::io::Error| DecodeError::Decompress(e.to_string());
    let mut dec = zstd::stream::read::Decoder::with_buffer(data).map_err(err)?;
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(err)?;
    let mut out = Vec::new();
    dec.take(MAX_DECOMPRESSED as u64 + 1).read_to_end(&mut out).map_err(err)?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(DecodeError::TooLarge { limit: MAX_DECOMPRESSED });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncryptionAlgorithm;
    use crate::model::Status;
    use crate::sign::tests::{batch, event, heartbeat};
    use rand::{Rng, SeedableRng};

    fn key(b: u8) -> Key {
        Key::from_bytes(vec![b; 32])
    }

    fn cipher(alg: EncryptionAlgorithm, b: u8) -> Cipher {
        Cipher::new(alg, &key(b)).unwrap()
    }

    #[test]
    fn zstd_round_trip_and_header_only_for_compressed_batches() {
        let enc = Encoder::new(key(1), None, true);
        let mut b = batch(50);
        let out = enc.encode_batch(&mut b);
        assert!(out.payload.starts_with(&ZSTD_MAGIC));
        assert_eq!(out.header(HEADER_CONTENT_ENCODING), Some("zstd"));
        assert_eq!(out.header(HEADER_ENCRYPTION), None);
        let plain = serde_json::to_vec(&b).unwrap();
        assert!(out.payload.len() * 4 < plain.len(), "{} vs {}", out.payload.len(), plain.len());
        assert_eq!(decompress(&out.payload).unwrap(), plain);
        let v = Decoder::new(vec![key(1)], None).decode(&out.payload).unwrap();
        assert_eq!(v, serde_json::to_value(&b).unwrap());

        // Events and heartbeats are never compressed.
        let ev = enc.encode_event(&mut event(1, None, Status::Active));
        assert!(ev.headers.is_empty());
        assert_eq!(ev.payload[0], b'{');
        let hb = enc.encode_heartbeat(&mut heartbeat(Some(3.25)));
        assert!(hb.headers.is_empty());
    }

    #[test]
    fn decompression_is_capped() {
        let bomb = zstd::bulk::compress(&vec![b' '; MAX_DECOMPRESSED + 10], 3).unwrap();
        assert!(bomb.len() < 64 * 1024, "a few KiB expand to over 64 MiB");
        assert_eq!(decompress(&bomb), Err(DecodeError::TooLarge { limit: MAX_DECOMPRESSED }));
        assert_eq!(
            Decoder::new(vec![key(1)], None).decode(&bomb),
            Err(DecodeError::TooLarge { limit: MAX_DECOMPRESSED })
        );
    }

    #[test]
    fn encrypted_payload_needs_the_cipher_and_says_which() {
        let c = cipher(EncryptionAlgorithm::Aes256Gcm, 2);
        let key_id = c.key_id().to_owned();
        let enc = Encoder::new(key(1), Some(c), false);
        let out = enc.encode_event(&mut event(3, Some(Status::Pending), Status::Active));
        assert_eq!(out.header(HEADER_ENCRYPTION), Some("aes-256-gcm"));
        let err = Decoder::new(vec![key(1)], None).decode(&out.payload).unwrap_err();
        assert_eq!(err, DecodeError::Encrypted { alg: "aes-256-gcm".into(), key_id });
        let dec = Decoder::new(vec![key(1)], Some(cipher(EncryptionAlgorithm::Aes256Gcm, 2)));
        assert_eq!(dec.decode(&out.payload).unwrap()["agent_id"], "003");
        let wrong = Decoder::new(vec![key(1)], Some(cipher(EncryptionAlgorithm::ChaCha20Poly1305, 2)));
        assert!(matches!(
            wrong.decode(&out.payload),
            Err(DecodeError::Crypto(CryptoError::WrongAlgorithm { .. }))
        ));
    }

    #[test]
    fn garbage_inputs_give_errors() {
        let dec = Decoder::new(vec![key(1)], Some(cipher(EncryptionAlgorithm::ChaCha20Poly1305, 2)));
        assert_eq!(dec.decode(b""), Err(DecodeError::Empty));
        assert_eq!(dec.decode(b"  \n"), Err(DecodeError::Empty));
        assert!(matches!(dec.decode(b"{\"a\":"), Err(DecodeError::Json(_))));
        assert!(matches!(dec.decode(b"\xff\xfe\x00"), Err(DecodeError::Json(_))));
        assert_eq!(dec.decode(b"[1,2,3]"), Err(DecodeError::NotAnObject));
        assert_eq!(dec.decode(b"{\"a\":1}"), Err(DecodeError::Verify(VerifyError::Missing)));
        assert!(matches!(dec.decode(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]), Err(DecodeError::Decompress(_))));
        assert!(matches!(
            dec.decode(b"{\"ciphertext\":1}"),
            Err(DecodeError::Crypto(CryptoError::NotAnEnvelope(_)))
        ));
        // Deep nesting: serde_json's recursion limit, an error and no stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(dec.decode(deep.as_bytes()), Err(DecodeError::Json(_))));
        // An envelope inside an envelope is not unwrapped twice.
        let c = cipher(EncryptionAlgorithm::ChaCha20Poly1305, 2);
        let inner = c.encrypt(b"{\"x\":1}");
        let outer = c.encrypt(&inner);
        assert_eq!(dec.decode(&outer), Err(DecodeError::Verify(VerifyError::Missing)));
    }

    /// Property-style: random bytes, every truncation and random byte flips of real
    /// payloads (plain, compressed, encrypted) never panic and never verify.
    #[test]
    fn random_and_damaged_payloads_never_panic_or_verify() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ec);
        let dec = Decoder::new(vec![key(1)], Some(cipher(EncryptionAlgorithm::ChaCha20Poly1305, 2)));
        let plain = Encoder::new(key(1), None, true);
        let encrypted = Encoder::new(key(1), Some(cipher(EncryptionAlgorithm::ChaCha20Poly1305, 2)), true);
        let samples = [
            plain.encode_event(&mut event(1, Some(Status::Active), Status::Disconnected)).payload,
            plain.encode_batch(&mut batch(3)).payload,
            encrypted.encode_batch(&mut batch(2)).payload,
            encrypted.encode_heartbeat(&mut heartbeat(Some(1.5))).payload,
        ];
        for s in &samples {
            dec.decode(s).expect("the intact sample decodes");
            for cut in 0..s.len() {
                assert!(dec.decode(&s[..cut]).is_err(), "truncated at {cut} verified");
            }
            for _ in 0..300 {
                let mut t = s.to_vec();
                let i = rng.random_range(0..t.len());
                t[i] ^= rng.random_range(1..=255u8);
                // A flip of a hex digit's case in the signature, or of insignificant
                // bytes, is caught too (lowercase hex only; compact JSON).
                assert!(dec.decode(&t).is_err(), "flip at {i} verified");
            }
        }
        for _ in 0..2000 {
            let len = rng.random_range(0..300);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            match rng.random_range(0..4) {
                0 if len >= 4 => junk[..4].copy_from_slice(&ZSTD_MAGIC),
                1 if len >= 1 => junk[0] = b'{',
                _ => {}
            }
            assert!(dec.decode(&junk).is_err());
        }
    }
}
