//! Event signatures: each agent signs its envelopes with its NKey (Ed25519); the
//! manager verifies them against the public key it enrolled.
//!
//! The signed bytes are the envelope's **canonical form** ([`crate::canonical`]): the
//! envelope as a JSON value without its top-level `sig` member, members sorted, no
//! whitespace, strings and numbers as JavaScript's `JSON.stringify` writes them. The
//! verifier rebuilds that form from the bytes it received, so unknown members a newer
//! agent adds are covered by the signature too.
//!
//! The signature travels in `sig` as `ed25519:` followed by the 64 signature bytes
//! in unpadded base64url.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::Envelope;

/// Prefix of the `sig` member's value.
pub const SIG_PREFIX: &str = "ed25519:";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error("the event is not signed")]
    Unsigned,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("the signature does not match the event and the agent's key")]
    Forged,
    #[error("invalid public key: {0}")]
    BadKey(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl SigError {
    /// Short, stable label for rejection counters.
    pub fn kind(&self) -> &'static str {
        match self {
            SigError::Unsigned => "unsigned",
            SigError::Malformed(_) => "bad_signature",
            SigError::Forged => "forged",
            SigError::BadKey(_) => "bad_key",
            SigError::Sign(_) => "sign",
        }
    }
}

/// The canonical form of an event (see [`crate::canonical`]); the top-level `sig`
/// member is left out.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    crate::canonical::canonical_json(value, "sig")
}

/// Signs `env` with the agent's key, replacing any previous signature.
pub fn sign_envelope(env: &mut Envelope, key: &nkeys::KeyPair) -> Result<(), SigError> {
    env.sig = None;
    let value = serde_json::to_value(&*env).map_err(|e| SigError::Sign(e.to_string()))?;
    let sig = key.sign(&canonical_bytes(&value)).map_err(|e| SigError::Sign(e.to_string()))?;
    env.sig = Some(format!("{SIG_PREFIX}{}", URL_SAFE_NO_PAD.encode(sig)));
    Ok(())
}

/// Verifies the signature of an event as received (`raw`, the JSON bytes) against
/// the agent's public NKey (`U...`).
pub fn verify_event(raw: &[u8], public_key: &str) -> Result<(), SigError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| SigError::Malformed(e.to_string()))?;
    verify_value(&value, public_key)
}

/// [`verify_event`] over an already parsed JSON value.
pub fn verify_value(value: &Value, public_key: &str) -> Result<(), SigError> {
    let signature = signature_of(value)?;
    let key = verifying_key(public_key)?;
    key.verify(&canonical_bytes(value), &signature)
}

/// An agent's public NKey (`U...`) decoded once ([`verifying_key`]): decoding costs
/// about as much as parsing the event, so a verifier keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The plain Ed25519 check, as `nkeys::KeyPair::verify` does it.
    fn verify(&self, message: &[u8], signature: &ed25519_dalek::Signature) -> Result<(), SigError> {
        use ed25519_dalek::Verifier as _;
        self.0.verify(message, signature).map_err(|_| SigError::Forged)
    }
}

/// Decodes an agent's public NKey (any NKey type prefix, as nkeys accepts).
pub fn verifying_key(public_key: &str) -> Result<PublicKey, SigError> {
    let (_prefix, bytes) = nkeys::from_public_key(public_key).map_err(|e| SigError::BadKey(e.to_string()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map(PublicKey)
        .map_err(|e| SigError::BadKey(e.to_string()))
}

/// [`verify_event`] with the key already decoded by [`verifying_key`]: the same
/// checks in the same order, so the same errors.
pub fn verify_event_with_key(raw: &[u8], key: &PublicKey) -> Result<(), SigError> {
    let signed = signed_bytes(raw)?;
    key.verify(&signed.canonical, &signed.signature)
}

/// What the signature of an event covers, and the signature, read from the event as
/// received: the first half of a check, for [`verify_batch`].
#[derive(Debug, Clone)]
pub struct SignedBytes {
    canonical: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

/// Reads `raw` into [`SignedBytes`]; the errors are those of [`verify_event`] before
/// the key is used (`Malformed`, `Unsigned`).
pub fn signed_bytes(raw: &[u8]) -> Result<SignedBytes, SigError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| SigError::Malformed(e.to_string()))?;
    let signature = signature_of(&value)?;
    Ok(SignedBytes { canonical: canonical_bytes(&value), signature })
}

/// Fewest signatures worth a batch check; below it, one by one is as fast.
const MIN_BATCH: usize = 4;

/// Checks many signatures at once, in about half the time of one-by-one checks
/// (ed25519-dalek's batch equation, deterministic nonces from the inputs). A batch that
/// fails is checked again one by one, so each result is exactly what
/// [`verify_event_with_key`] answers: one forged event costs its batch a second pass,
/// never a genuine event its acceptance.
pub fn verify_batch(items: &[(&SignedBytes, &PublicKey)]) -> Vec<Result<(), SigError>> {
    if items.len() >= MIN_BATCH {
        let messages: Vec<&[u8]> = items.iter().map(|(s, _)| s.canonical.as_slice()).collect();
        let signatures: Vec<ed25519_dalek::Signature> = items.iter().map(|(s, _)| s.signature).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = items.iter().map(|(_, k)| k.0).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![Ok(()); items.len()];
        }
    }
    items.iter().map(|(s, k)| k.verify(&s.canonical, &s.signature)).collect()
}

/// The signature in the `sig` member.
fn signature_of(value: &Value) -> Result<ed25519_dalek::Signature, SigError> {
    let sig = match value.get("sig") {
        None | Some(Value::Null) => return Err(SigError::Unsigned),
        Some(Value::String(s)) => s,
        Some(_) => return Err(SigError::Malformed("sig is not a string".into())),
    };
    let encoded = sig
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| SigError::Malformed(format!("sig must start with {SIG_PREFIX}")))?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|e| SigError::Malformed(e.to_string()))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| SigError::Malformed(format!("{} signature bytes, expected 64", b.len())))?;
    Ok(ed25519_dalek::Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentId, EventClass, Severity};
    use serde_json::json;

    fn envelope() -> Envelope {
        Envelope::new(
            AgentId::generate(),
            7,
            EventClass::File,
            "modified",
            Severity::Low,
            json!({"path": "/etc/passwd", "size": 1.5e3, "z": [3, {"b": 1, "a": "é\n"}]}),
        )
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth_and_drops_only_the_top_sig() {
        let v =
            json!({"sig": "x", "b": {"sig": 1, "d": [2, {"y": null, "x": true}], "c": 1.25}, "a": "\u{1}"});
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            r#"{"a":"\u0001","b":{"c":1.25,"d":[2,{"x":true,"y":null}],"sig":1}}"#
        );
    }

    #[test]
    fn a_signed_event_verifies_after_the_wire_round_trip() {
        let key = nkeys::KeyPair::new_user();
        let mut env = envelope();
        sign_envelope(&mut env, &key).unwrap();
        assert!(env.sig.as_deref().unwrap().starts_with(SIG_PREFIX));
        let wire = serde_json::to_vec(&env).unwrap();
        verify_event(&wire, &key.public_key()).unwrap();
        // Member order on the wire does not matter.
        let mut v: serde_json::Map<String, Value> = serde_json::from_slice(&wire).unwrap();
        v.sort_keys();
        verify_value(&Value::Object(v), &key.public_key()).unwrap();
    }

    #[test]
    fn tampering_another_key_and_missing_signatures_are_told_apart() {
        let key = nkeys::KeyPair::new_user();
        let mut env = envelope();
        sign_envelope(&mut env, &key).unwrap();
        let mut v = serde_json::to_value(&env).unwrap();
        v["payload"]["path"] = json!("/tmp/harmless");
        assert_eq!(verify_value(&v, &key.public_key()), Err(SigError::Forged));
        let mut extra = serde_json::to_value(&env).unwrap();
        extra["injected"] = json!(1);
        assert_eq!(verify_value(&extra, &key.public_key()), Err(SigError::Forged));
        let other = nkeys::KeyPair::new_user();
        let good = serde_json::to_value(&env).unwrap();
        assert_eq!(verify_value(&good, &other.public_key()), Err(SigError::Forged));
        let mut unsigned = good.clone();
        unsigned.as_object_mut().unwrap().remove("sig");
        assert_eq!(verify_value(&unsigned, &key.public_key()), Err(SigError::Unsigned));
        let mut garbage = good.clone();
        garbage["sig"] = json!("ed25519:!!!");
        assert_eq!(verify_value(&garbage, &key.public_key()).unwrap_err().kind(), "bad_signature");
        assert_eq!(verify_value(&good, "not-a-key").unwrap_err().kind(), "bad_key");
    }

    #[test]
    fn a_decoded_key_gives_the_same_answers_as_its_text() {
        let key = nkeys::KeyPair::new_user();
        let decoded = verifying_key(&key.public_key()).unwrap();
        let mut env = envelope();
        sign_envelope(&mut env, &key).unwrap();
        let good = serde_json::to_vec(&env).unwrap();
        let tampered = String::from_utf8(good.clone()).unwrap().replace("/etc/passwd", "/etc/shadow");
        let mut unsigned = env.clone();
        unsigned.sig = None;
        let unsigned = serde_json::to_vec(&unsigned).unwrap();
        let mut bad = env.clone();
        bad.sig = Some("ed25519:AAAA".into());
        let bad = serde_json::to_vec(&bad).unwrap();
        for raw in [&good[..], tampered.as_bytes(), &unsigned, &bad, b"{not json"] {
            assert_eq!(verify_event_with_key(raw, &decoded), verify_event(raw, &key.public_key()));
        }
        assert_eq!(verify_event_with_key(&good, &decoded), Ok(()));
        assert_eq!(verify_event_with_key(tampered.as_bytes(), &decoded), Err(SigError::Forged));
        assert_eq!(verifying_key("not-a-key").unwrap_err().kind(), "bad_key");
    }

    #[test]
    fn a_batch_answers_event_by_event_what_single_checks_answer() {
        let keys: Vec<nkeys::KeyPair> = (0..3).map(|_| nkeys::KeyPair::new_user()).collect();
        let decoded: Vec<PublicKey> = keys.iter().map(|k| verifying_key(&k.public_key()).unwrap()).collect();
        let mut raws = Vec::new();
        for i in 0..40 {
            let mut env = envelope();
            env.seq = i;
            sign_envelope(&mut env, &keys[i as usize % 3]).unwrap();
            let mut raw = serde_json::to_vec(&env).unwrap();
            if i % 13 == 5 {
                // Tampered after signing.
                raw = String::from_utf8(raw).unwrap().replace("/etc/passwd", "/etc/shadow").into_bytes();
            }
            raws.push(raw);
        }
        let signed: Vec<SignedBytes> = raws.iter().map(|r| signed_bytes(r).unwrap()).collect();
        // One event checked against another agent's key: forged as well.
        let key_of = |i: usize| if i == 7 { &decoded[(i + 1) % 3] } else { &decoded[i % 3] };
        let items: Vec<(&SignedBytes, &PublicKey)> =
            signed.iter().enumerate().map(|(i, s)| (s, key_of(i))).collect();
        let batch = verify_batch(&items);
        let single: Vec<_> =
            raws.iter().enumerate().map(|(i, r)| verify_event_with_key(r, key_of(i))).collect();
        assert_eq!(batch, single);
        let forged: Vec<usize> = (0..40).filter(|i| batch[*i].is_err()).collect();
        assert_eq!(forged, vec![5, 7, 18, 31]);
        assert!(forged.iter().all(|i| batch[*i] == Err(SigError::Forged)));
        // All genuine: the batch equation alone answers.
        let genuine: Vec<_> =
            items.iter().enumerate().filter(|(i, _)| !forged.contains(i)).map(|(_, x)| *x).collect();
        assert!(verify_batch(&genuine).iter().all(Result::is_ok));
        assert!(verify_batch(&[]).is_empty());
    }
}
