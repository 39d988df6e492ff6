//! Optional authenticated encryption of published payloads.
//!
//! An encrypted payload is a JSON envelope:
//! ```json
//! {"v":1,"alg":"chacha20-poly1305","key_id":"<16 hex>","nonce":"<base64>","ciphertext":"<base64>"}
//! ```
//! `alg` is `chacha20-poly1305` or `aes-256-gcm`; `key_id` is the first 8 bytes of
//! SHA-256(key), hex; `nonce` is 12 random bytes, fresh for every message (random
//! rather than a counter, so several bridges and restarts can share a key: the
//! collision bound for 96-bit random nonces is far above any realistic message
//! count); `ciphertext` is the AEAD output with its 16-byte tag appended; both use
//! standard base64 with padding. The associated data is the ASCII string
//! `<alg>|<key_id>`, so neither can be changed without the decryption failing.
//! The plaintext is what would have been published unencrypted (signed JSON, or
//! its zstd compression for a compressed batch).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::EncryptionAlgorithm;
use crate::keys::{ENCRYPTION_KEY_LEN, Key};

pub const ENVELOPE_VERSION: u32 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key {key_id} is {len} bytes; {alg} needs exactly 32")]
    KeyLength { key_id: String, alg: &'static str, len: usize },
    #[error("not an encryption envelope: {0}")]
    NotAnEnvelope(String),
    #[error("unsupported envelope version {0} (this build reads version 1)")]
    Version(u64),
    #[error("message encrypted with {found:?}, this decoder uses {expected} (see --algorithm)")]
    WrongAlgorithm { expected: &'static str, found: String },
    #[error("message encrypted with key {found:?}, this decoder has key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("envelope field {0} is not valid base64")]
    BadBase64(&'static str),
    #[error("nonce is {0} bytes, expected 12")]
    BadNonce(usize),
    #[error("decryption failed: the ciphertext, nonce, algorithm or key id was altered, or the key is wrong")]
    Authentication,
}

pub fn algorithm_name(alg: EncryptionAlgorithm) -> &'static str {
    match alg {
        EncryptionAlgorithm::ChaCha20Poly1305 => "chacha20-poly1305",
        EncryptionAlgorithm::Aes256Gcm => "aes-256-gcm",
    }
}

/// For `--algorithm`: the names the config uses (case and dashes optional).
pub fn parse_algorithm(s: &str) -> Result<EncryptionAlgorithm, String> {
    let norm: String =
        s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    match norm.as_str() {
        "chacha20poly1305" | "chacha20" | "chacha" => Ok(EncryptionAlgorithm::ChaCha20Poly1305),
        "aes256gcm" | "aesgcm" | "aes" => Ok(EncryptionAlgorithm::Aes256Gcm),
        _ => Err(format!("unknown algorithm {s:?}: use chacha20-poly1305 or aes-256-gcm")),
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    alg: &'a str,
    key_id: &'a str,
    nonce: String,
    ciphertext: String,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u64,
    alg: String,
    key_id: String,
    nonce: String,
    ciphertext: String,
}

enum Aead2 {
    ChaCha(Box<ChaCha20Poly1305>),
    Aes(Box<Aes256Gcm>),
}

/// One algorithm and one 32-byte key. `Debug` shows the algorithm and key id only.
pub struct Cipher {
    alg: EncryptionAlgorithm,
    key_id: String,
    aead: Aead2,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("alg", &algorithm_name(self.alg))
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Cipher {
    pub fn new(alg: EncryptionAlgorithm, key: &Key) -> Result<Self, CryptoError> {
        if key.len() != ENCRYPTION_KEY_LEN {
            return Err(CryptoError::KeyLength {
                key_id: key.id().into(),
                alg: algorithm_name(alg),
                len: key.len(),
            });
        }
        let aead = match alg {
            EncryptionAlgorithm::ChaCha20Poly1305 => {
                Aead2::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key.bytes()).expect("32-byte key")))
            }
            EncryptionAlgorithm::Aes256Gcm => {
                Aead2::Aes(Box::new(Aes256Gcm::new_from_slice(key.bytes()).expect("32-byte key")))
            }
        };
        Ok(Self { alg, key_id: key.id().into(), aead })
    }

    pub fn algorithm(&self) -> EncryptionAlgorithm {
        self.alg
    }

    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.alg)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn aad(&self) -> Vec<u8> {
        format!("{}|{}", self.algorithm_name(), self.key_id).into_bytes()
    }

    /// The JSON envelope of `plaintext`, under a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = self.aad();
        let payload = Payload { msg: plaintext, aad: &aad };
        // Both AEADs fail only above 2^36 bytes of plaintext; messages are bounded by
        // NATS's max payload, far below.
        let ct = match &self.aead {
            Aead2::ChaCha(c) => c.encrypt((&nonce).into(), payload),
            Aead2::Aes(c) => c.encrypt((&nonce).into(), payload),
        }
        .expect("AEAD encryption of a message-sized plaintext");
        let env = EnvelopeOut {
            v: ENVELOPE_VERSION,
            alg: self.algorithm_name(),
            key_id: &self.key_id,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        };
        serde_json::to_vec(&env).expect("an envelope is JSON")
    }

    /// The plaintext of an envelope made by [`Cipher::encrypt`] with the same
    /// algorithm and key.
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let env: EnvelopeIn =
            serde_json::from_slice(bytes).map_err(|e| CryptoError::NotAnEnvelope(e.to_string()))?;
        self.decrypt_envelope(env)
    }

    /// Same as [`Cipher::decrypt`], from an already parsed JSON value.
    pub fn decrypt_value(&self, v: &serde_json::Value) -> Result<Vec<u8>, CryptoError> {
        let env = EnvelopeIn::deserialize(v).map_err(|e| CryptoError::NotAnEnvelope(e.to_string()))?;
        self.decrypt_envelope(env)
    }

    fn decrypt_envelope(&self, env: EnvelopeIn) -> Result<Vec<u8>, CryptoError> {
        if env.v != u64::from(ENVELOPE_VERSION) {
            return Err(CryptoError::Version(env.v));
        }
        if env.alg != self.algorithm_name() {
            return Err(CryptoError::WrongAlgorithm {
                expected: self.algorithm_name(),
                found: env.alg.chars().take(32).collect(),
            });
        }
        if env.key_id != self.key_id {
            return Err(CryptoError::WrongKey {
                expected: self.key_id.clone(),
                found: env.key_id.chars().take(32).collect(),
            });
        }
        let nonce = B64.decode(env.nonce.as_bytes()).map_err(|_| CryptoError::BadBase64("nonce"))?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|n: Vec<u8>| CryptoError::BadNonce(n.len()))?;
        let ct = B64.decode(env.ciphertext.as_bytes()).map_err(|_| CryptoError::BadBase64("ciphertext"))?;
        // The AAD is built from this cipher's own algorithm and key id (equal to the
        // envelope's, checked above).
        let aad = self.aad();
        let payload = Payload { msg: &ct, aad: &aad };
        match &self.aead {
            Aead2::ChaCha(c) => c.decrypt((&nonce).into(), payload),
            Aead2::Aes(c) => c.decrypt((&nonce).into(), payload),
        }
        .map_err(|_| CryptoError::Authentication)
    }
}

/// Whether `v` looks like an encryption envelope (an object with `ciphertext`).
pub fn is_envelope(v: &serde_json::Value) -> bool {
    v.get("ciphertext").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const ALGS: [EncryptionAlgorithm; 2] =
        [EncryptionAlgorithm::ChaCha20Poly1305, EncryptionAlgorithm::Aes256Gcm];

    fn key(b: u8) -> Key {
        Key::from_bytes(vec![b; 32])
    }

    #[test]
    fn both_ciphers_round_trip_with_the_documented_envelope() {
        for alg in ALGS {
            let k = key(1);
            let c = Cipher::new(alg, &k).unwrap();
            let plain = br#"{"agent_id":"001","x":"\u00fc"}"#;
            let env = c.encrypt(plain);
            let v: Value = serde_json::from_slice(&env).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["v", "alg", "key_id", "nonce", "ciphertext"]);
            assert_eq!(v["v"], 1);
            assert_eq!(v["alg"], algorithm_name(alg));
            assert_eq!(v["key_id"], k.id());
            assert_eq!(B64.decode(v["nonce"].as_str().unwrap()).unwrap().len(), 12);
            let ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
            assert_eq!(ct.len(), plain.len() + 16, "ciphertext + 16-byte tag");
            assert!(!env.windows(7).any(|w| w == b"agent_i"), "plaintext does not leak");
            assert!(is_envelope(&v));
            assert_eq!(c.decrypt(&env).unwrap(), plain);
            assert_eq!(c.decrypt_value(&v).unwrap(), plain);
            // Empty plaintext works too.
            assert_eq!(c.decrypt(&c.encrypt(b"")).unwrap(), b"");
        }
    }

    #[test]
    fn nonces_differ_between_two_encryptions_of_the_same_plaintext() {
        for alg in ALGS {
            let c = Cipher::new(alg, &key(2)).unwrap();
            let a: Value = serde_json::from_slice(&c.encrypt(b"same")).unwrap();
            let b: Value = serde_json::from_slice(&c.encrypt(b"same")).unwrap();
            assert_ne!(a["nonce"], b["nonce"]);
            assert_ne!(a["ciphertext"], b["ciphertext"]);
        }
        let c = Cipher::new(EncryptionAlgorithm::ChaCha20Poly1305, &key(2)).unwrap();
        let nonces: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                serde_json::from_slice::<Value>(&c.encrypt(b"x")).unwrap()["nonce"].as_str().unwrap().into()
            })
            .collect();
        assert_eq!(nonces.len(), 1000);
    }

    #[test]
    fn tampered_ciphertext_nonce_or_tag_fails_authentication() {
        for alg in ALGS {
            let c = Cipher::new(alg, &key(3)).unwrap();
            let env: Value = serde_json::from_slice(&c.encrypt(b"{\"status\":\"Active\"}")).unwrap();
            for field in ["ciphertext", "nonce"] {
                let raw = B64.decode(env[field].as_str().unwrap()).unwrap();
                for i in 0..raw.len() {
                    let mut t = raw.clone();
                    t[i] ^= 0x01;
                    let mut e = env.clone();
                    e[field] = json!(B64.encode(&t));
                    assert_eq!(c.decrypt_value(&e), Err(CryptoError::Authentication), "{field}[{i}]");
                }
            }
            // Truncated ciphertext (tag cut).
            let raw = B64.decode(env["ciphertext"].as_str().unwrap()).unwrap();
            let mut e = env.clone();
            e["ciphertext"] = json!(B64.encode(&raw[..raw.len() - 1]));
            assert_eq!(c.decrypt_value(&e), Err(CryptoError::Authentication));
        }
    }

    #[test]
    fn wrong_key_and_swapped_algorithm_fail() {
        let k = key(4);
        let chacha = Cipher::new(EncryptionAlgorithm::ChaCha20Poly1305, &k).unwrap();
        let aes = Cipher::new(EncryptionAlgorithm::Aes256Gcm, &k).unwrap();
        let env = chacha.encrypt(b"hello");
        let err = aes.decrypt(&env).unwrap_err();
        assert!(
            matches!(&err, CryptoError::WrongAlgorithm { found, .. } if found == "chacha20-poly1305"),
            "{err}"
        );
        assert!(err.to_string().contains("--algorithm"));

        // The envelope's alg relabelled to match the decoder: the AAD differs (and the
        // cipher does), so it fails authentication rather than decrypting.
        let mut v: Value = serde_json::from_slice(&env).unwrap();
        v["alg"] = json!("aes-256-gcm");
        assert_eq!(aes.decrypt_value(&v), Err(CryptoError::Authentication));

        let other = Cipher::new(EncryptionAlgorithm::ChaCha20Poly1305, &key(5)).unwrap();
        let err = other.decrypt(&env).unwrap_err();
        assert_eq!(err, CryptoError::WrongKey { expected: key(5).id().into(), found: k.id().into() });
    }

    /// The key id is bound by the AAD: the same key under another id (as a verifier
    /// holding the key under another name would have) does not decrypt.
    #[test]
    fn key_id_is_authenticated() {
        let k = key(6);
        let c = Cipher::new(EncryptionAlgorithm::Aes256Gcm, &k).unwrap();
        let env = c.encrypt(b"payload");
        let mut renamed = Cipher::new(EncryptionAlgorithm::Aes256Gcm, &k).unwrap();
        renamed.key_id = "0000000000000000".into();
        let mut v: Value = serde_json::from_slice(&env).unwrap();
        v["key_id"] = json!("0000000000000000");
        assert_eq!(renamed.decrypt_value(&v), Err(CryptoError::Authentication));
    }

    #[test]
    fn malformed_envelopes_give_clear_errors() {
        let c = Cipher::new(EncryptionAlgorithm::ChaCha20Poly1305, &key(7)).unwrap();
        let good: Value = serde_json::from_slice(&c.encrypt(b"x")).unwrap();
        let mut e = good.clone();
        e["nonce"] = json!("not base64!");
        assert_eq!(c.decrypt_value(&e), Err(CryptoError::BadBase64("nonce")));
        let mut e = good.clone();
        e["ciphertext"] = json!("%%%");
        assert_eq!(c.decrypt_value(&e), Err(CryptoError::BadBase64("ciphertext")));
        let mut e = good.clone();
        e["nonce"] = json!(B64.encode([0u8; 8]));
        assert_eq!(c.decrypt_value(&e), Err(CryptoError::BadNonce(8)));
        let mut e = good.clone();
        e["v"] = json!(2);
        assert_eq!(c.decrypt_value(&e), Err(CryptoError::Version(2)));
        let mut e = good.clone();
        e.as_object_mut().unwrap().remove("key_id");
        assert!(matches!(c.decrypt_value(&e), Err(CryptoError::NotAnEnvelope(_))));
        assert!(matches!(c.decrypt(b"\x00\xff garbage"), Err(CryptoError::NotAnEnvelope(_))));
        assert!(matches!(c.decrypt(b""), Err(CryptoError::NotAnEnvelope(_))));
    }

    #[test]
    fn key_length_and_algorithm_names() {
        let err = Cipher::new(EncryptionAlgorithm::Aes256Gcm, &Key::from_bytes(vec![1; 40])).unwrap_err();
        assert!(matches!(err, CryptoError::KeyLength { len: 40, .. }), "{err}");
        assert_eq!(parse_algorithm("AES-256-GCM"), Ok(EncryptionAlgorithm::Aes256Gcm));
        assert_eq!(parse_algorithm("chacha20-poly1305"), Ok(EncryptionAlgorithm::ChaCha20Poly1305));
        assert!(parse_algorithm("rot13").is_err());
        let dbg = format!("{:?}", Cipher::new(EncryptionAlgorithm::Aes256Gcm, &key(9)).unwrap());
        assert!(!dbg.contains(&hex::encode([9u8; 32])) && dbg.contains(key(9).id()), "{dbg}");
        // The config's serde names are the envelope's names.
        for alg in ALGS {
            assert_eq!(serde_json::to_value(alg).unwrap(), json!(algorithm_name(alg)));
        }
    }
}
