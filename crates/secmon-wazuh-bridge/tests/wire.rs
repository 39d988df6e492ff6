//! The wire format end to end through the library API: what the bridge's encoder
//! publishes, a subscriber's decoder reads back and verifies; and the documented
//! canonical form checked against an HMAC computed independently of the crate.

use std::os::unix::fs::PermissionsExt;

use secmon_wazuh_bridge::config::{BridgeConfig, EncryptionAlgorithm};
use secmon_wazuh_bridge::crypto::{Cipher, CryptoError};
use secmon_wazuh_bridge::keys::{self, Key};
use secmon_wazuh_bridge::model::{
    AgentEvent, Batch, EventKind, FieldChange, Heartbeat, SCHEMA_VERSION, Status, Summary,
};
use secmon_wazuh_bridge::sign::{self, VerifyError};
use secmon_wazuh_bridge::wire::{DecodeError, Decoder, Encoder, HEADER_CONTENT_ENCODING, HEADER_ENCRYPTION};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn event(id: i64, kind: EventKind, prev: Option<Status>, cur: Status) -> AgentEvent {
    AgentEvent {
        schema_version: SCHEMA_VERSION,
        event_id: format!("evt_{id:03}_1716897300_{}", kind.as_str()),
        kind,
        agent_id: format!("{id:03}"),
        agent_name: format!("web-{id}.example.org"),
        previous_status: prev,
        current_status: cur,
        ip_address: Some(format!("10.1.0.{id}")),
        last_keepalive: Some("2024-05-28T11:55:00Z".into()),
        manager_node: "wazuh-manager-01".into(),
        timestamp: "2024-05-28T11:55:00.250Z".into(),
        changes: vec![FieldChange {
            field: "status".into(),
            previous: prev.map(|s| s.as_str().into()),
            current: Some(cur.as_str().into()),
        }],
        version: Some("Wazuh v4.8.0".into()),
        groups: vec!["default".into()],
        os_name: Some("Debian GNU/Linux".into()),
        os_platform: Some("debian".into()),
        registered_at: Some("2024-01-02T03:04:05Z".into()),
        disconnection_time: None,
        status_code: Some(0),
        flapping: None,
        signature: None,
    }
}

fn batch(n: i64) -> Batch {
    Batch {
        schema_version: SCHEMA_VERSION,
        batch_id: "batch_wazuh-manager-01_00112233445566ff".into(),
        manager_node: "wazuh-manager-01".into(),
        timestamp: "2024-05-28T11:55:00.300Z".into(),
        events: (1..=n)
            .map(|i| event(i, EventKind::StatusChange, Some(Status::Active), Status::Disconnected))
            .collect(),
        summary: Summary {
            total_agents: 1000,
            active_agents: 990,
            disconnected_agents: n as u64,
            ..Default::default()
        },
        signature: None,
    }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        schema_version: SCHEMA_VERSION,
        manager_node: "wazuh-manager-01".into(),
        timestamp: "2024-05-28T11:55:30.000Z".into(),
        bridge_version: "0.1.0".into(),
        uptime_secs: 3600,
        schema: "4.x".into(),
        db_path: "/var/ossec/queue/db/global.db".into(),
        last_poll: Some("2024-05-28T11:55:29.000Z".into()),
        last_poll_duration_ms: Some(17.372_918_4),
        db_breaker: "closed".into(),
        nats_breaker: "half_open".into(),
        queue_len: 3,
        queue_capacity: 100_000,
        deferred_cycles: 0,
        published: 5000,
        publish_errors: 2,
        agents: Summary {
            total_agents: 1000,
            active_agents: 990,
            disconnected_agents: 10,
            ..Default::default()
        },
        signature: None,
    }
}

fn key(b: u8) -> Key {
    Key::from_bytes((0..32).map(|i| b.wrapping_add(i)).collect())
}

#[test]
fn event_round_trip_plain() {
    let enc = Encoder::new(key(1), None, true);
    let mut ev = event(1, EventKind::StatusChange, Some(Status::Active), Status::Disconnected);
    let out = enc.encode_event(&mut ev);
    assert!(out.headers.is_empty(), "events are neither compressed nor, here, encrypted");
    let sig = ev.signature.clone().expect("encode signs the event");
    assert_eq!(sig.alg, "hmac-sha256");
    assert_eq!(sig.key_id, key(1).id());

    let v = Decoder::new(vec![key(1)], None).decode(&out.payload).unwrap();
    let back: AgentEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, ev);

    // The wrong key: refused, with the key id the message names.
    let err = Decoder::new(vec![key(2)], None).decode(&out.payload).unwrap_err();
    assert_eq!(err, DecodeError::Verify(VerifyError::UnknownKey(key(1).id().into())));
}

#[test]
fn batch_round_trip_compressed_and_encrypted_with_both_algorithms() {
    for alg in [EncryptionAlgorithm::ChaCha20Poly1305, EncryptionAlgorithm::Aes256Gcm] {
        let enc_key = key(100);
        let enc = Encoder::new(key(1), Some(Cipher::new(alg, &enc_key).unwrap()), true);
        let mut b = batch(25);
        let out = enc.encode_batch(&mut b);
        assert_eq!(out.header(HEADER_CONTENT_ENCODING), Some("zstd"));
        let alg_name = secmon_wazuh_bridge::crypto::algorithm_name(alg);
        assert_eq!(out.header(HEADER_ENCRYPTION), Some(alg_name));
        let envelope: Value = serde_json::from_slice(&out.payload).unwrap();
        assert_eq!(envelope["alg"], alg_name);
        assert_eq!(envelope["key_id"], enc_key.id());
        assert!(!String::from_utf8_lossy(&out.payload).contains("web-1"), "agent names are not readable");

        let dec = Decoder::new(vec![key(1)], Some(Cipher::new(alg, &enc_key).unwrap()));
        let v = dec.decode(&out.payload).unwrap();
        let back: Batch = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.events.len(), 25);
        assert!(back.events.iter().all(|e| e.signature.as_ref().is_some_and(|s| s.key_id == key(1).id())));
        // Each event stands on its own once taken out of the batch.
        for e in v["events"].as_array().unwrap() {
            sign::verify_json(e, &[key(1)]).unwrap();
        }

        // Decrypted and decompressed: exactly the signed JSON the encoder serialized.
        let plain = dec.open_bytes(&out.payload).unwrap();
        assert_eq!(plain, serde_json::to_vec(&b).unwrap());

        // Another encryption key: a clear error, no panic, nothing decoded.
        let other = Decoder::new(vec![key(1)], Some(Cipher::new(alg, &key(101)).unwrap()));
        assert!(matches!(other.decode(&out.payload), Err(DecodeError::Crypto(CryptoError::WrongKey { .. }))));
    }
}

#[test]
fn batch_uncompressed_when_disabled_and_event_signatures_checked_inside() {
    let enc = Encoder::new(key(1), None, false);
    let mut b = batch(2);
    let out = enc.encode_batch(&mut b);
    assert!(out.headers.is_empty());
    assert_eq!(out.payload[0], b'{');
    // An event swapped for one signed with another key, batch re-signed with the
    // right key (an insider with a second key): the event check catches it.
    let mut v: Value = serde_json::from_slice(&out.payload).unwrap();
    let mut stranger = event(9, EventKind::Registered, None, Status::Active);
    sign::sign_event(&mut stranger, &key(7));
    v["events"][1] = serde_json::to_value(&stranger).unwrap();
    sign::sign_json(&mut v, &key(1)).unwrap();
    let err = Decoder::new(vec![key(1)], None).decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    let DecodeError::Verify(VerifyError::Event { index, event_id, source }) = err else { panic!("{err:?}") };
    assert_eq!((index, event_id.as_str()), (1, "evt_009_1716897300_registered"));
    assert_eq!(*source, VerifyError::UnknownKey(key(7).id().into()));
}

#[test]
fn heartbeat_round_trip_with_a_float_and_key_rotation() {
    let old = Encoder::new(key(1), None, true);
    let new =
        Encoder::new(key(2), Some(Cipher::new(EncryptionAlgorithm::Aes256Gcm, &key(50)).unwrap()), true);
    let dec = Decoder::new(
        vec![key(2), key(1)],
        Some(Cipher::new(EncryptionAlgorithm::Aes256Gcm, &key(50)).unwrap()),
    );
    for enc in [&old, &new] {
        let mut hb = heartbeat();
        let out = enc.encode_heartbeat(&mut hb);
        assert_eq!(out.header(HEADER_CONTENT_ENCODING), None, "only batches are compressed");
        let back: Heartbeat = serde_json::from_value(dec.decode(&out.payload).unwrap()).unwrap();
        assert_eq!(back, hb);
        assert_eq!(back.last_poll_duration_ms, Some(17.372_918_4));
    }
}

#[test]
fn encoder_from_config_generates_the_signing_key_and_loads_the_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let enc_path = dir.path().join("enc.key");
    std::fs::write(&enc_path, format!("{}\n", hex::encode([9u8; 32]))).unwrap();
    std::fs::set_permissions(&enc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = BridgeConfig::default();
    cfg.state.dir = dir.path().join("state");
    cfg.security.encrypt_messages = true;
    cfg.security.encryption_key_path = Some(enc_path.clone());
    cfg.security.encryption_algorithm = EncryptionAlgorithm::Aes256Gcm;
    cfg.publish.compress_batches = true;

    let enc = Encoder::from_config(&cfg).unwrap();
    let signing_path = cfg.signing_key_path();
    assert_eq!(std::fs::metadata(&signing_path).unwrap().permissions().mode() & 0o777, 0o600);
    let signing = keys::load_key(&signing_path, 32).unwrap();
    assert_eq!(enc.signing_key_id(), signing.id());
    // Restart: the same key.
    assert_eq!(Encoder::from_config(&cfg).unwrap().signing_key_id(), signing.id());

    let cipher =
        Cipher::new(EncryptionAlgorithm::Aes256Gcm, &keys::load_key(&enc_path, 32).unwrap()).unwrap();
    let mut b = batch(3);
    let out = enc.encode_batch(&mut b);
    assert_eq!(out.header(HEADER_ENCRYPTION), Some("aes-256-gcm"));
    assert_eq!(out.header(HEADER_CONTENT_ENCODING), Some("zstd"));
    let v = Decoder::new(vec![signing], Some(cipher)).decode(&out.payload).unwrap();
    assert_eq!(serde_json::from_value::<Batch>(v).unwrap(), b);

    // A configured signing key path must exist (no silent new key for subscribers to
    // reject); a readable-by-others encryption key is refused.
    cfg.security.signing_key_path = Some(dir.path().join("missing.key"));
    assert!(Encoder::from_config(&cfg).unwrap_err().to_string().contains("missing.key"));
    cfg.security.signing_key_path = None;
    std::fs::set_permissions(&enc_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(Encoder::from_config(&cfg).unwrap_err().to_string().contains("chmod 600"));
}

/// HMAC-SHA256 by RFC 2104 with sha2 only: independent of the crate's signing code.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

#[test]
fn independent_hmac_matches_rfc_4231() {
    // RFC 4231, test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// The canonical form as documented in `sign.rs`, written by hand for a small
/// message, and its HMAC computed independently: the signature must match.
#[test]
fn documented_canonical_form_matches_an_independent_hmac() {
    let key_bytes: Vec<u8> = (1..=32).collect();
    let k = Key::from_bytes(key_bytes.clone());
    // Members out of order, nested objects, a string needing escapes, non-ASCII, a
    // negative integer, a float, and a signature member that must be ignored.
    let text = r#"{
        "signature": {"alg": "hmac-sha256", "key_id": "x", "value": "00"},
        "zeta": [3, {"b": true, "a": null}],
        "agent_name": "Zoë \"db\"\tprimary/01",
        "Agent": -7,
        "ratio": 0.5,
        "nested": {"y": "é", "x": {"signature": "kept"}}
    }"#;
    let hand_written = "{\"Agent\":-7,\"agent_name\":\"Zoë \\\"db\\\"\\tprimary/01\",\
        \"nested\":{\"x\":{\"signature\":\"kept\"},\"y\":\"é\"},\"ratio\":0.5,\
        \"zeta\":[3,{\"a\":null,\"b\":true}]}";
    let mut v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(String::from_utf8(sign::canonical_bytes(&v)).unwrap(), hand_written);

    sign::sign_json(&mut v, &k).unwrap();
    let want = hex::encode(hmac_sha256(&key_bytes, hand_written.as_bytes()));
    assert_eq!(v["signature"]["value"], json!(want));
    assert_eq!(v["signature"]["key_id"], json!(hex::encode(&Sha256::digest(&key_bytes)[..8])));
    assert_eq!(v["signature"]["alg"], "hmac-sha256");
    sign::verify_json(&v, &[k]).unwrap();
}

/// A real event's signature is the HMAC of its documented canonical form: the
/// keys sorted, compact, without `signature`, computed here from the parsed JSON
/// by a tiny independent canonicalizer (integers and strings only in an event).
#[test]
fn a_published_event_verifies_with_an_independent_canonicalizer() {
    fn canon(v: &Value, top: bool, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().filter(|k| !(top && *k == "signature")).collect();
                keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    canon(&m[*k], false, out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canon(x, false, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let signing: Vec<u8> = vec![0xa5; 40];
    let enc = Encoder::new(Key::from_bytes(signing.clone()), None, false);
    let mut ev = event(42, EventKind::Registered, None, Status::NeverConnected);
    ev.agent_name = "名前 \u{1} \\ end".into();
    let out = enc.encode_event(&mut ev);
    let v: Value = serde_json::from_slice(&out.payload).unwrap();
    let mut c = String::new();
    canon(&v, true, &mut c);
    assert_eq!(v["signature"]["value"], json!(hex::encode(hmac_sha256(&signing, c.as_bytes()))));
}
