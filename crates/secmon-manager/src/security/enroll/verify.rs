//! The signature check ingest runs on every event in secure mode: the envelope must be
//! signed by the key its agent enrolled with.

use secmon_proto::AgentId;
use secmon_proto::signing::{SigError, verify_event, verify_event_with_key};

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
    }
}
