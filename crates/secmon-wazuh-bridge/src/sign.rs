//! HMAC-SHA256 signatures over a canonical form of each published message.
//!
//! # Signature
//!
//! Every message (event, batch, heartbeat) is a JSON object with a top-level member
//! ```json
//! "signature": {"alg": "hmac-sha256", "key_id": "<16 hex>", "value": "<64 hex>"}
//! ```
//! where `key_id` is the first 8 bytes of SHA-256(key) in lowercase hex (it names the
//! key, it does not reveal it) and `value` is HMAC-SHA256(key, canonical bytes) in
//! lowercase hex. A batch's events are each signed on their own first; the batch's
//! canonical form then includes them with their signatures.
//!
//! # Canonical form
//!
//! To verify, parse the message as JSON and serialize it again as follows; the result
//! is the UTF-8 byte string the HMAC covers:
//!
//! 1. The top-level member named `signature` is removed (whatever its value). Members
//!    named `signature` deeper down (the events inside a batch) stay.
//! 2. Object members are sorted by key, comparing the keys' UTF-8 bytes (plain byte
//!    order, so `"B" < "a" < "é"`), at every depth. Array order is kept.
//! 3. No whitespace anywhere outside strings: `{"a":[1,2],"b":null}`.
//! 4. Strings are written in double quotes, escaping exactly: `"` as `\"`, `\` as
//!    `\\`, U+0008 as `\b`, U+000C as `\f`, U+000A as `\n`, U+000D as `\r`, U+0009 as
//!    `\t`, every other character below U+0020 as `\u00xx` (lowercase hex). Every other
//!    character, including `/`, U+007F and all non-ASCII characters, is written as its
//!    UTF-8 bytes, unescaped.
//! 5. `null`, `true`, `false` as such. Integers (numbers without a fraction or
//!    exponent in the message text) as plain decimal, exact (`-12`, `0`,
//!    `18446744073709551615`). Other numbers (only the heartbeat's
//!    `last_poll_duration_ms`) as ECMAScript's `Number.prototype.toString` writes
//!    them (what `JSON.stringify` does): the shortest digits that read back as the
//!    same IEEE 754 double, `d` digits with decimal exponent `n` (value = 0.d × 10^n)
//!    written as plain digits padded with zeros when `d ≤ n ≤ 21` (`1.0` → `1`,
//!    `1e20` → `100000000000000000000`), with a point inside when `0 < n ≤ 21`
//!    (`12.5`), as `0.000ddd` when `-6 < n ≤ 0` (`0.0001`, `0.000001`), else as
//!    `d.ddde±x` (`1e+21`, `1.5e-7`, `-2.5e+30`); `-0` as `0`.
//!
//! Rules 4 and 5 are exactly JavaScript's `JSON.stringify` for strings and numbers, so
//! for this bridge's messages (ASCII member names) the canonical form is the same as
//! RFC 8785 (JCS), and a JavaScript verifier is
//! `canon = v => Array.isArray(v) ? "[" + v.map(canon) + "]" : v && typeof v == "object"
//! ? "{" + Object.keys(v).sort().map(k => JSON.stringify(k) + ":" + canon(v[k])) + "}"
//! : JSON.stringify(v)` applied after deleting the top-level `signature`.
//! (Non-integers follow ECMAScript rather than `serde_json`'s own float output, which
//! has changed between `serde_json` releases.)
//!
//! Example: `{"signature":{...},"b":"x\ny","a":{"d":1,"c":[true,null]}}` has the
//! canonical form `{"a":{"c":[true,null],"d":1},"b":"x\ny"}` (with `\n` the two
//! characters backslash, n).
//!
//! The verifier must read numbers exactly: a double correctly rounded (`serde_json`
//! needs its `float_roundtrip` feature for that), an integer as an integer (the
//! bridge's integers are all below 2^53, so JavaScript's numbers suffice).

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use crate::keys::Key;
use crate::model::{AgentEvent, Batch, Heartbeat, Signature};

/// The only signature algorithm.
pub const ALG: &str = "hmac-sha256";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no signature")]
    Missing,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("unsupported signature algorithm {0:?} (expected hmac-sha256)")]
    BadAlgorithm(String),
    #[error("signed with key {0}, which is not among the verification keys")]
    UnknownKey(String),
    #[error("signature mismatch: the message was altered or signed with another key")]
    Mismatch,
    #[error("event {index} ({event_id}) in the batch: {source}")]
    Event { index: usize, event_id: String, source: Box<VerifyError> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("only a JSON object can carry a signature")]
    NotAnObject,
}

/// The canonical bytes of `v` (see the module documentation): top-level
/// `signature` removed, keys sorted at every depth, no whitespace.
pub fn canonical_bytes(v: &Value) -> Vec<u8> {
    secmon_proto::canonical::canonical_json(v, "signature")
}

fn mac(key: &Key, canonical: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key.bytes()).expect("HMAC takes a key of any length");
    m.update(canonical);
    m
}

/// The signature of `v` (its canonical form, so an existing `signature` is ignored).
pub fn compute_signature(v: &Value, key: &Key) -> Signature {
    let tag = mac(key, &canonical_bytes(v)).finalize().into_bytes();
    Signature { alg: ALG.into(), key_id: key.id().into(), value: hex::encode(tag) }
}

/// Sets (or replaces) the top-level `signature` member of a JSON object.
pub fn sign_json(v: &mut Value, key: &Key) -> Result<(), SignError> {
    let sig = compute_signature(v, key);
    let obj = v.as_object_mut().ok_or(SignError::NotAnObject)?;
    obj.insert("signature".into(), serde_json::to_value(sig).expect("a Signature is JSON"));
    Ok(())
}

/// Checks the top-level signature of `v` against the key its `key_id` names among
/// `keys` (several keys: rotation). The comparison is constant-time.
pub fn verify_json(v: &Value, keys: &[Key]) -> Result<(), VerifyError> {
    let obj = v.as_object().ok_or(VerifyError::NotAnObject)?;
    let sig = match obj.get("signature") {
        None | Some(Value::Null) => return Err(VerifyError::Missing),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(VerifyError::Malformed("signature is not an object".into())),
    };
    let field = |name: &str| -> Result<&str, VerifyError> {
        sig.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::Malformed(format!("signature.{name} is missing or not a string")))
    };
    let alg = field("alg")?;
    if alg != ALG {
        return Err(VerifyError::BadAlgorithm(truncate(alg)));
    }
    let key_id = field("key_id")?;
    let key =
        keys.iter().find(|k| k.id() == key_id).ok_or_else(|| VerifyError::UnknownKey(truncate(key_id)))?;
    let value = field("value")?;
    // Lowercase hex only, as written: another spelling of the same value is a change
    // to the message all the same.
    if value.bytes().any(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(VerifyError::Malformed("signature.value is not lowercase hex".into()));
    }
    let value =
        hex::decode(value).map_err(|_| VerifyError::Malformed("signature.value is not hex".into()))?;
    mac(key, &canonical_bytes(v)).verify_slice(&value).map_err(|_| VerifyError::Mismatch)
}

/// Verifies a batch: its own signature, then each event's in `events`.
pub fn verify_batch_json(v: &Value, keys: &[Key]) -> Result<(), VerifyError> {
    verify_json(v, keys)?;
    let Some(events) = v.get("events").and_then(Value::as_array) else {
        return Err(VerifyError::Malformed("batch without an events array".into()));
    };
    for (index, ev) in events.iter().enumerate() {
        verify_json(ev, keys).map_err(|e| VerifyError::Event {
            index,
            event_id: truncate(ev.get("event_id").and_then(Value::as_str).unwrap_or("?")),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Verifies any message: a batch (an object with an `events` array) with its events,
/// anything else on its own.
pub fn verify_message(v: &Value, keys: &[Key]) -> Result<(), VerifyError> {
    if v.get("events").is_some_and(Value::is_array) {
        verify_batch_json(v, keys)
    } else {
        verify_json(v, keys)
    }
}

/// Untrusted text quoted in an error: bounded.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A message type with a `signature` field.
pub trait Signable: Serialize {
    fn signature_slot(&mut self) -> &mut Option<Signature>;
    /// Signs what the message contains that carries its own signature (a batch's
    /// events), before the message itself is signed.
    fn sign_parts(&mut self, _key: &Key) {}
}

impl Signable for AgentEvent {
    fn signature_slot(&mut self) -> &mut Option<Signature> {
        &mut self.signature
    }
}

impl Signable for Batch {
    fn signature_slot(&mut self) -> &mut Option<Signature> {
        &mut self.signature
    }
    fn sign_parts(&mut self, key: &Key) {
        for ev in &mut self.events {
            sign(ev, key);
        }
    }
}

impl Signable for Heartbeat {
    fn signature_slot(&mut self) -> &mut Option<Signature> {
        &mut self.signature
    }
}

/// Sets the message's `signature` (for a batch, each event's first).
pub fn sign<T: Signable>(msg: &mut T, key: &Key) {
    msg.sign_parts(key);
    *msg.signature_slot() = None;
    let v = serde_json::to_value(&*msg).expect("model messages serialize to JSON");
    *msg.signature_slot() = Some(compute_signature(&v, key));
}

pub fn sign_event(ev: &mut AgentEvent, key: &Key) {
    sign(ev, key)
}

pub fn sign_batch(b: &mut Batch, key: &Key) {
    sign(b, key)
}

pub fn sign_heartbeat(h: &mut Heartbeat, key: &Key) {
    sign(h, key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{EventKind, SCHEMA_VERSION, Status, Summary};
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    pub(crate) fn event(id: i64, prev: Option<Status>, cur: Status) -> AgentEvent {
        AgentEvent {
            schema_version: SCHEMA_VERSION,
            event_id: format!("evt_{id:03}_1716897300_status_change"),
            kind: EventKind::StatusChange,
            agent_id: format!("{id:03}"),
            agent_name: format!("host-{id} «ü»\n\"quoted\""),
            previous_status: prev,
            current_status: cur,
            ip_address: Some("10.0.0.7".into()),
            last_keepalive: Some("2024-05-28T11:55:00Z".into()),
            manager_node: "wazuh-manager-01".into(),
            timestamp: "2024-05-28T11:55:01.123Z".into(),
            changes: vec![],
            version: Some("Wazuh v4.7.3".into()),
            groups: vec!["default".into(), "linux".into()],
            os_name: Some("Ubuntu".into()),
            os_platform: Some("ubuntu".into()),
            registered_at: None,
            disconnection_time: None,
            status_code: Some(0),
            flapping: None,
            signature: None,
        }
    }

    pub(crate) fn batch(n: i64) -> Batch {
        Batch {
            schema_version: SCHEMA_VERSION,
            batch_id: "batch_wazuh-manager-01_0123456789abcdef".into(),
            manager_node: "wazuh-manager-01".into(),
            timestamp: "2024-05-28T11:55:01.500Z".into(),
            events: (1..=n).map(|i| event(i, Some(Status::Active), Status::Disconnected)).collect(),
            summary: Summary {
                total_agents: 10,
                active_agents: 7,
                disconnected_agents: 3,
                ..Default::default()
            },
            signature: None,
        }
    }

    pub(crate) fn heartbeat(duration_ms: Option<f64>) -> Heartbeat {
        Heartbeat {
            schema_version: SCHEMA_VERSION,
            manager_node: "wazuh-manager-01".into(),
            timestamp: "2024-05-28T11:55:01.500Z".into(),
            bridge_version: "0.1.0".into(),
            uptime_secs: 42,
            schema: "4.x".into(),
            db_path: "/var/ossec/queue/db/global.db".into(),
            last_poll: Some("2024-05-28T11:55:00.000Z".into()),
            last_poll_duration_ms: duration_ms,
            db_breaker: "closed".into(),
            nats_breaker: "closed".into(),
            queue_len: 0,
            queue_capacity: 100_000,
            deferred_cycles: 0,
            published: 12,
            publish_errors: 0,
            agents: Summary { total_agents: 3, active_agents: 2, ..Default::default() },
            signature: None,
        }
    }

    fn key(b: u8) -> Key {
        Key::from_bytes(vec![b; 32])
    }

    fn canon(v: &Value) -> String {
        String::from_utf8(canonical_bytes(v)).unwrap()
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth_and_drops_top_signature_only() {
        let v: Value = serde_json::from_str(
            r#"{ "signature": {"alg":"x"}, "b": "x\ny", "a": { "d": 1, "c": [true, null, {"z":1,"y":2}],
                 "signature": "inner stays" }, "B": -3 }"#,
        )
        .unwrap();
        assert_eq!(
            canon(&v),
            r#"{"B":-3,"a":{"c":[true,null,{"y":2,"z":1}],"d":1,"signature":"inner stays"},"b":"x\ny"}"#
        );
        // Member order in the input does not matter.
        let w: Value = serde_json::from_str(
            r#"{"B":-3,"b":"x\ny","a":{"signature":"inner stays","c":[true,null,{"z":1,"y":2}],"d":1}}"#,
        )
        .unwrap();
        assert_eq!(canonical_bytes(&v), canonical_bytes(&w));
        // Array order does.
        assert_ne!(canonical_bytes(&json!({"a":[1,2]})), canonical_bytes(&json!({"a":[2,1]})));
    }

    #[test]
    fn canonical_form_of_unicode_escapes_and_numbers() {
        let v = json!({
            "é": "ü/€😀\u{7f}",
            "z": "\u{1}\u{8}\u{c}\t\r\"\\",
            "a": [0, -12, 18446744073709u64 * 1000000, 12.5, 0.25, 1e16, 1.5e-7, 0.0001, -2.5e20],
        });
        assert_eq!(
            canon(&v),
            "{\"a\":[0,-12,18446744073709000000,12.5,0.25,10000000000000000,1.5e-7,0.0001,-250000000000000000000],\
             \"z\":\"\\u0001\\b\\f\\t\\r\\\"\\\\\",\"é\":\"ü/€😀\u{7f}\"}"
        );
        // Byte order of keys: uppercase < lowercase < non-ASCII.
        assert_eq!(canon(&json!({"é":1,"a":2,"B":3})), r#"{"B":3,"a":2,"é":1}"#);
        assert_eq!(canon(&json!([])), "[]");
        assert_eq!(canon(&json!({})), "{}");
        assert_eq!(canon(&json!("top")), "\"top\"");
    }

    /// Non-integers as JavaScript writes them; the expected strings come from
    /// `String(x)` in Node.js for the same doubles (given by their bits).
    #[test]
    fn floats_are_written_as_ecmascript_does() {
        let table: &[(u64, &str)] = &[
            (0x3ff0000000000000, "1"),
            (0x3ff8000000000000, "1.5"),
            (0xbff8000000000000, "-1.5"),
            (0x3fb999999999999a, "0.1"),
            (0x3fd3333333333334, "0.30000000000000004"),
            (0x3fd5555555555555, "0.3333333333333333"),
            (0x405edd2f1a9fbe77, "123.456"),
            (0x4415af1d78b58c40, "100000000000000000000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x4454542ba12a337c, "1.5e+21"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x3e7ad7f29abcaf48, "1e-7"),
            (0x3e8421f5f40d8376, "1.5e-7"),
            (0x3eb4b3fd5942cd96, "0.000001234"),
            (0x441ac53a7e04bcda, "123456789012345680000"),
            (0x0000000000000001, "5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0x4340000000000001, "9007199254740994"),
            (0x8000000000000000, "0"),
            (0x4011666666666666, "4.35"),
            (0x40280000218def41, "12.000001"),
            (0x4058ffffffffffff, "99.99999999999999"),
            (0x54b249ad2594c37d, "1e+100"),
            (0x3efa36e2eb1c432d, "0.000025"),
            (0x3ee4f8b588e368f1, "0.00001"),
        ];
        for &(bits, want) in table {
            let f = f64::from_bits(bits);
            assert_eq!(canon(&json!([f])), format!("[{want}]"), "{f:e}");
        }
    }

    #[test]
    fn sign_verify_round_trip_through_bytes() {
        let k = key(1);
        let mut v = serde_json::to_value(event(1, Some(Status::Active), Status::Disconnected)).unwrap();
        sign_json(&mut v, &k).unwrap();
        assert_eq!(v["signature"]["alg"], "hmac-sha256");
        assert_eq!(v["signature"]["key_id"], k.id());
        assert_eq!(v["signature"]["value"].as_str().unwrap().len(), 64);
        let bytes = serde_json::to_vec_pretty(&v).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        verify_json(&back, std::slice::from_ref(&k)).unwrap();
        // Signing again replaces the signature and gives the same value (deterministic).
        let before = v["signature"].clone();
        sign_json(&mut v, &k).unwrap();
        assert_eq!(v["signature"], before);
        assert_eq!(sign_json(&mut json!([1]), &k), Err(SignError::NotAnObject));
    }

    #[test]
    fn typed_signing_matches_json_signing_and_verifies() {
        let k = key(2);
        let mut ev = event(5, None, Status::Active);
        sign_event(&mut ev, &k);
        let v = serde_json::to_value(&ev).unwrap();
        verify_json(&v, std::slice::from_ref(&k)).unwrap();
        let mut w = v.clone();
        w.as_object_mut().unwrap().remove("signature");
        sign_json(&mut w, &k).unwrap();
        assert_eq!(w, v);

        let mut hb = heartbeat(Some(12.5));
        sign_heartbeat(&mut hb, &k);
        verify_json(&serde_json::to_value(&hb).unwrap(), std::slice::from_ref(&k)).unwrap();
    }

    #[test]
    fn batch_signs_each_event_then_the_batch() {
        let k = key(3);
        let mut b = batch(3);
        sign_batch(&mut b, &k);
        assert!(b.events.iter().all(|e| e.signature.is_some()));
        let v = serde_json::to_value(&b).unwrap();
        verify_batch_json(&v, std::slice::from_ref(&k)).unwrap();
        for e in v["events"].as_array().unwrap() {
            verify_json(e, std::slice::from_ref(&k)).unwrap();
        }
        // An event re-signed with another key: the batch signature breaks (it covers
        // the event signatures).
        let mut w = v.clone();
        sign_json(&mut w["events"][1], &key(9)).unwrap();
        assert_eq!(verify_json(&w, std::slice::from_ref(&k)), Err(VerifyError::Mismatch));
        // Batch re-signed over a bad event: the event check catches it.
        let mut w = v.clone();
        w["events"][2]["agent_name"] = json!("evil");
        sign_json(&mut w, &k).unwrap();
        let err = verify_batch_json(&w, std::slice::from_ref(&k)).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Event { index: 2, source, .. } if **source == VerifyError::Mismatch)
        );
        assert!(err.to_string().contains("evt_003_"), "{err}");
        assert_eq!(verify_message(&w, std::slice::from_ref(&k)), Err(err));
    }

    /// Changes one byte of the serialized, signed message anywhere: either the result
    /// is no longer valid JSON, or it does not verify. (A change inside
    /// insignificant whitespace is impossible: compact JSON has none.)
    #[test]
    fn a_one_byte_change_anywhere_fails() {
        let k = key(4);
        let mut ev = event(7, Some(Status::Active), Status::Disconnected);
        sign_event(&mut ev, &k);
        let bytes = serde_json::to_vec(&ev).unwrap();
        let mut checked = 0;
        for i in 0..bytes.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut t = bytes.clone();
                t[i] ^= delta;
                let Ok(v) = serde_json::from_slice::<Value>(&t) else { continue };
                checked += 1;
                assert!(verify_json(&v, std::slice::from_ref(&k)).is_err(), "byte {i} ^ {delta:#x} verified");
            }
        }
        assert!(checked > bytes.len(), "most single-byte changes keep the JSON valid ({checked})");
    }

    #[test]
    fn wrong_key_unknown_key_bad_alg_missing_and_malformed() {
        let k = key(5);
        let mut v = serde_json::to_value(event(1, None, Status::Pending)).unwrap();
        assert_eq!(verify_json(&v, std::slice::from_ref(&k)), Err(VerifyError::Missing));
        sign_json(&mut v, &k).unwrap();

        let other = key(6);
        let err = verify_json(&v, std::slice::from_ref(&other)).unwrap_err();
        assert_eq!(err, VerifyError::UnknownKey(k.id().into()));
        // Several keys (rotation): the right one is picked by id.
        verify_json(&v, &[other.clone(), k.clone()]).unwrap();

        // Same key id claimed, another key's HMAC.
        let mut forged = v.clone();
        forged["signature"]["value"] = json!(compute_signature(&v, &other).value);
        assert_eq!(verify_json(&forged, std::slice::from_ref(&k)), Err(VerifyError::Mismatch));

        let mut w = v.clone();
        w["signature"]["alg"] = json!("hmac-md5");
        assert_eq!(
            verify_json(&w, std::slice::from_ref(&k)),
            Err(VerifyError::BadAlgorithm("hmac-md5".into()))
        );
        let mut w = v.clone();
        w["signature"]["value"] = json!("zz");
        assert!(matches!(verify_json(&w, std::slice::from_ref(&k)), Err(VerifyError::Malformed(_))));
        let mut w = v.clone();
        w["signature"]["value"] = json!("");
        assert_eq!(verify_json(&w, std::slice::from_ref(&k)), Err(VerifyError::Mismatch));
        let mut w = v.clone();
        w["signature"] = json!("abc");
        assert!(matches!(verify_json(&w, std::slice::from_ref(&k)), Err(VerifyError::Malformed(_))));
        let mut w = v.clone();
        w["signature"] = Value::Null;
        assert_eq!(verify_json(&w, std::slice::from_ref(&k)), Err(VerifyError::Missing));
        assert_eq!(verify_json(&json!([1, 2]), std::slice::from_ref(&k)), Err(VerifyError::NotAnObject));
        assert_eq!(verify_json(&v, &[]), Err(VerifyError::UnknownKey(k.id().into())));
    }

    /// Heartbeats carry a float; it must survive serialize → parse exactly, or the
    /// verifier's canonical form differs from the signer's.
    #[test]
    fn heartbeat_floats_verify_after_a_round_trip_through_text() {
        let k = key(7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..4_000 {
            let f = match i % 4 {
                0 => rng.random::<f64>() * 1000.0,
                1 => rng.random::<f64>(),
                2 => f64::from_bits(
                    rng.random::<u64>() & !(0x7ffu64 << 52) | (rng.random_range(900u64..1150) << 52),
                ),
                _ => (rng.random_range(0..10_000_000u64) as f64) / 1000.0,
            };
            let mut hb = heartbeat(Some(f));
            sign_heartbeat(&mut hb, &k);
            let text = serde_json::to_vec(&hb).unwrap();
            let back: Value = serde_json::from_slice(&text).unwrap();
            assert!(
                verify_json(&back, std::slice::from_ref(&k)).is_ok(),
                "duration {f:e} ({:#x})",
                f.to_bits()
            );
        }
    }
}
