//! The signature check ingest runs on every event in secure mode: the envelope must be
//! signed by the key its agent enrolled with.

use secmon_proto::AgentId;
use secmon_proto::signing::{
    PublicKey, SigError, SignedBytes, signed_bytes, verify_batch, verify_event, verify_event_with_key,
};

use super::keys::AgentKeys;

/// Rejection reason for an event of an agent without an enrolled key.
pub const UNKNOWN_AGENT: &str = "unknown_agent";

/// Verifies events against the enrolled keys. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    keys: AgentKeys,
}

impl SignatureVerifier {
    pub fn new(keys: AgentKeys) -> Self {
        Self { keys }
    }

    /// Checks `raw` (the event as received) against `agent`'s enrolled key. The error
    /// is the rejection reason: `unsigned`, `forged`, `bad_signature`, `unknown_agent`,
    /// `bad_key`.
    pub fn verify(&self, agent: &AgentId, raw: &[u8]) -> Result<(), &'static str> {
        let Some(key) = self.keys.get_enrolled(agent) else { return Err(UNKNOWN_AGENT) };
        let result = match &key.verifier {
            // The key decoded at enrollment (or load): not decoded again per event.
            Some(k) => verify_event_with_key(raw, k),
            // A key that does not decode: the text path gives the same ordered errors
            // (`unsigned`/`bad_signature` first, then `bad_key`).
            None => verify_event(raw, &key.public_key),
        };
        result.map_err(|e: SigError| e.kind())
    }

    /// [`SignatureVerifier::verify`] for many events at once, with one batch check of
    /// their Ed25519 signatures (about half the cost of one-by-one checks); the same
    /// answers, in the order of `events`.
    pub fn verify_many<A, R>(&self, events: &[(A, R)]) -> Vec<Result<(), &'static str>>
    where
        A: std::borrow::Borrow<AgentId>,
        R: AsRef<[u8]>,
    {
        let mut out: Vec<Result<(), &'static str>> = vec![Ok(()); events.len()];
        let mut keys = Vec::with_capacity(events.len());
        let mut signed: Vec<(usize, SignedBytes)> = Vec::with_capacity(events.len());
        for (i, (agent, raw)) in events.iter().enumerate() {
            let Some(key) = self.keys.get_enrolled(agent.borrow()) else {
                out[i] = Err(UNKNOWN_AGENT);
                continue;
            };
            let Some(k) = key.verifier else {
                out[i] = verify_event(raw.as_ref(), &key.public_key).map_err(|e| e.kind());
                continue;
            };
            match signed_bytes(raw.as_ref()) {
                Ok(s) => {
                    signed.push((i, s));
                    keys.push(k);
                }
                Err(e) => out[i] = Err(e.kind()),
            }
        }
        let items: Vec<(&SignedBytes, &PublicKey)> =
            signed.iter().zip(&keys).map(|((_, s), k)| (s, k.as_ref())).collect();
        for ((i, _), r) in signed.iter().zip(verify_batch(&items)) {
            out[*i] = r.map_err(|e| e.kind());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use secmon_proto::{Envelope, EventClass, Severity};

    use super::*;

    #[test]
    fn signed_unsigned_forged_and_unknown() {
        let kp = nkeys::KeyPair::new_user();
        let agent = AgentId::generate();
        let keys = AgentKeys::default();
        keys.insert(agent.clone(), kp.public_key());
        let v = SignatureVerifier::new(keys);
        let mut env = Envelope::new(
            agent.clone(),
            1,
            EventClass::File,
            "modified",
            Severity::Info,
            serde_json::json!({"path": "/etc/x"}),
        );
        let unsigned = serde_json::to_vec(&env).unwrap();
        assert_eq!(v.verify(&agent, &unsigned), Err("unsigned"));
        secmon_proto::signing::sign_envelope(&mut env, &kp).unwrap();
        let signed = serde_json::to_vec(&env).unwrap();
        assert_eq!(v.verify(&agent, &signed), Ok(()));
        let tampered = String::from_utf8(signed.clone()).unwrap().replace("/etc/x", "/etc/y");
        assert_eq!(v.verify(&agent, tampered.as_bytes()), Err("forged"));
        assert_eq!(v.verify(&AgentId::generate(), &signed), Err(UNKNOWN_AGENT));
        // A stored key that does not decode: unsigned still says unsigned, a signed
        // event says bad_key.
        let broken = AgentId::generate();
        v.keys.insert(broken.clone(), "not-a-key".into());
        assert_eq!(v.verify(&broken, &unsigned), Err("unsigned"));
        assert_eq!(v.verify(&broken, &signed), Err("bad_key"));
        // Many at once: the same answers, in order.
        let stranger = AgentId::generate();
        let batch: Vec<(&AgentId, &[u8])> = vec![
            (&agent, &signed[..]),
            (&agent, &unsigned[..]),
            (&agent, tampered.as_bytes()),
            (&stranger, &signed[..]),
            (&broken, &unsigned[..]),
            (&broken, &signed[..]),
            (&agent, b"{not json"),
            (&agent, &signed[..]),
            (&agent, &signed[..]),
            (&agent, &signed[..]),
        ];
        let one_by_one: Vec<_> = batch.iter().map(|(a, r)| v.verify(a, r)).collect();
        assert_eq!(v.verify_many(&batch), one_by_one);
        assert_eq!(
            one_by_one,
            vec![
                Ok(()),
                Err("unsigned"),
                Err("forged"),
                Err(UNKNOWN_AGENT),
                Err("unsigned"),
                Err("bad_key"),
                Err("bad_signature"),
                Ok(()),
                Ok(()),
                Ok(())
            ]
        );
    }
}
