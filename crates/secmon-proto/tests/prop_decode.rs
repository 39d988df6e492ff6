//! Property tests over the event decoder and event signatures: whatever bytes or
//! JSON arrive on an agent subject, `decode::<Envelope>` and `signing` answer with a
//! value or a counted error, never a panic; a valid envelope survives the wire
//! unchanged; and no change to a signed event verifies unless it means exactly the
//! same event.
//!
//! Case counts are moderate so the suite stays fast; set `PROPTEST_CASES` to run
//! more (e.g. `PROPTEST_CASES=20000 cargo test -p secmon-proto --test prop_decode`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use nkeys::{KeyPair, KeyPairType};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use secmon_proto::signing::{self, SigError};
use secmon_proto::{AgentId, DEFAULT_MAX_EVENT_BYTES, DecodeError, Envelope, EventClass, Severity, decode};
use serde_json::{Map, Number, Value, json};
use uuid::Uuid;

/// Members the envelope itself defines; everything else lands in `extra`.
const KNOWN: [&str; 11] =
    ["v", "id", "agent_id", "seq", "time", "observed", "class", "activity", "severity", "payload", "sig"];

/// A key no test case signs with.
static STRANGER: LazyLock<String> = LazyLock::new(|| KeyPair::new_user().public_key());

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    // Integration tests have no lib.rs for proptest to put regressions beside; a
    // failure prints its minimal input instead.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---- strategies ----------------------------------------------------------------

/// Any string, control characters, surrogate-adjacent and astral characters included.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats have no JSON form; they become null as serde_json does.
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any_text(24).prop_map(Value::String),
    ]
}

/// Arbitrary JSON: nested arrays and objects up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any_text(10), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 1906 .. 2100, with nanoseconds.
    (-2_000_000_000i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in chrono's range"))
}

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((any_text(12), json_value()), 0..4).prop_map(|kv| {
        kv.into_iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).collect::<Map<String, Value>>()
    })
}

/// A valid envelope with random content everywhere the protocol allows it.
fn envelope() -> impl Strategy<Value = Envelope> {
    (
        (any::<u128>(), "[A-Za-z0-9_-]{1,64}", any::<u64>(), time(), time()),
        (
            prop::sample::select(EventClass::ALL.to_vec()),
            any_text(32),
            prop::sample::select(Severity::ALL.to_vec()),
            json_value(),
            extra_fields(),
        ),
    )
        .prop_map(|((id, agent, seq, time, observed), (class, activity, severity, payload, extra))| {
            let mut e = Envelope::new(AgentId::new(agent).unwrap(), seq, class, activity, severity, payload);
            e.id = Uuid::from_u128(id);
            e.time = time;
            e.observed = observed;
            e.extra = extra;
            e
        })
}

fn user_key() -> impl Strategy<Value = KeyPair> {
    // A few fixed keys: deriving one per case would double the (debug-build) cost
    // of every signing case, and which key signs does not change what is tested.
    static KEYS: LazyLock<Vec<KeyPair>> = LazyLock::new(|| {
        (1u8..=4).map(|i| KeyPair::new_from_raw(KeyPairType::User, [i; 32]).unwrap()).collect()
    });
    prop::sample::select(KEYS.clone())
}

/// Fragments of JSON, so random input often gets past the first byte of the parser.
fn json_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(","),
        Just(":"),
        Just("\"v\""),
        Just("\"payload\""),
        Just("\"seq\""),
        Just("\"sig\""),
        Just("1"),
        Just("2"),
        Just("-0"),
        Just("1e999"),
        Just("18446744073709551616"),
        Just("null"),
        Just("true"),
        Just("\"\\ud800\""),
        Just("\"\\u0000\""),
        Just("\"x\""),
        Just(" "),
        Just("\u{feff}"),
    ];
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat().into_bytes())
}

// ---- helpers -------------------------------------------------------------------

fn wire(e: &Envelope) -> Vec<u8> {
    serde_json::to_vec(e).expect("an envelope serializes")
}

fn check_decode_error(e: &DecodeError) -> Result<(), TestCaseError> {
    prop_assert!(["oversize", "malformed", "version"].contains(&e.kind()), "unexpected kind {}", e.kind());
    // The message is for logs: bounded, whatever the input was.
    prop_assert!(e.to_string().len() < 512, "{} bytes of message", e.to_string().len());
    Ok(())
}

/// Equal as JSON data: numbers compare by value (the canonical form writes the
/// float `1.0` as `1`, which reads back as an integer).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The same JSON with the members of every object in another order (reversed, then
/// rotated by `turn`).
fn reorder(v: &Value, turn: usize) -> Value {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(String, Value)> =
                map.iter().rev().map(|(k, v)| (k.clone(), reorder(v, turn + 1))).collect();
            if !members.is_empty() {
                let n = turn % members.len();
                members.rotate_left(n);
            }
            Value::Object(members.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| reorder(i, turn)).collect()),
        other => other.clone(),
    }
}

/// One change to a decoded envelope that makes it a different event.
#[derive(Debug, Clone)]
enum Change {
    Seq,
    Agent(String),
    Id,
    Time,
    Observed,
    Class,
    Severity,
    Activity(String),
    Payload(Value),
    AddExtra(String, Value),
    DropExtra,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Seq),
        "[A-Za-z0-9_-]{1,64}".prop_map(Change::Agent),
        Just(Change::Id),
        Just(Change::Time),
        Just(Change::Observed),
        Just(Change::Class),
        Just(Change::Severity),
        any_text(8).prop_map(Change::Activity),
        json_value().prop_map(Change::Payload),
        (any_text(8), json_value()).prop_map(|(k, v)| Change::AddExtra(k, v)),
        Just(Change::DropExtra),
    ]
}

/// Applies `c`; `false` when it would leave the envelope as it was (then the case
/// proves nothing and is skipped).
fn apply(e: &mut Envelope, c: &Change) -> bool {
    let before = e.clone();
    match c {
        Change::Seq => e.seq = e.seq.wrapping_add(1),
        Change::Agent(a) => e.agent_id = AgentId::new(a.clone()).unwrap(),
        Change::Id => e.id = Uuid::from_u128(e.id.as_u128() ^ 1),
        Change::Time => e.time += chrono::Duration::nanoseconds(1),
        Change::Observed => e.observed -= chrono::Duration::seconds(1),
        Change::Class => {
            let i = EventClass::ALL.iter().position(|c| *c == e.class).unwrap();
            e.class = EventClass::ALL[(i + 1) % EventClass::ALL.len()];
        }
        Change::Severity => {
            e.severity = Severity::from_rank((e.severity.rank() + 1) % 5).unwrap();
        }
        Change::Activity(s) => e.activity.push_str(if s.is_empty() { "x" } else { s }),
        Change::Payload(p) => e.payload = p.clone(),
        Change::AddExtra(k, v) => {
            if KNOWN.contains(&k.as_str()) {
                return false;
            }
            e.extra.insert(k.clone(), v.clone());
        }
        Change::DropExtra => {
            if let Some(k) = e.extra.keys().next().cloned() {
                e.extra.remove(&k);
            }
        }
    }
    *e != before
}

// ---- properties ----------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    /// Any bytes, under any size limit: a value or a counted error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), json_like_bytes()],
        max in prop_oneof![Just(DEFAULT_MAX_EVENT_BYTES), 0usize..256],
    ) {
        match decode::<Envelope>(&bytes, max) {
            Ok(e) => prop_assert_eq!(e.v, secmon_proto::PROTOCOL_VERSION),
            Err(e) => {
                check_decode_error(&e)?;
                if bytes.len() > max {
                    prop_assert_eq!(e.kind(), "oversize");
                }
            }
        }
        // The signature check reads the same untrusted bytes first.
        prop_assert!(signing::verify_event(&bytes, &STRANGER).is_err());
    }

    /// Any JSON document: decode answers, and an object whose `v` is another
    /// number is a version problem, not a malformed message.
    #[test]
    fn arbitrary_json_never_panics(v in json_value(), version in any::<u64>()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Err(e) = decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES) {
            check_decode_error(&e)?;
        }
        prop_assert!(signing::verify_value(&v, &STRANGER).is_err());
        let _ = signing::canonical_bytes(&v);

        if let Value::Object(mut map) = v {
            map.insert("v".into(), json!(version));
            let bytes = serde_json::to_vec(&map).unwrap();
            match decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES) {
                Ok(e) => prop_assert_eq!(u64::from(e.v), version),
                Err(e) if version != 1 => prop_assert_eq!(e.kind(), "version"),
                Err(e) => prop_assert_eq!(e.kind(), "malformed"),
            }
        }
    }

    /// A valid envelope with random payload and unknown members decodes to exactly
    /// what was encoded, and re-encodes to the same bytes (nothing lost or added).
    #[test]
    fn valid_envelopes_round_trip(e in envelope(), signed in any::<bool>(), key in user_key()) {
        let mut e = e;
        if signed {
            signing::sign_envelope(&mut e, &key).unwrap();
        }
        let bytes = wire(&e);
        let back = decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES)
            .map_err(|err| TestCaseError::fail(format!("{err}: {}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(wire(&back), bytes);
    }

}

proptest! {
    // Ed25519 in a debug build: fewer cases.
    #![proptest_config(config(256))]

    /// A signed envelope verifies after the wire, in any member order; with another
    /// key it is forged, without its signature unsigned.
    #[test]
    fn signed_envelopes_verify_in_any_member_order(e in envelope(), key in user_key(), turn in 0usize..8) {
        let mut e = e;
        signing::sign_envelope(&mut e, &key).unwrap();
        let bytes = wire(&e);
        prop_assert_eq!(signing::verify_event(&bytes, &key.public_key()), Ok(()));
        let shuffled = serde_json::to_vec(&reorder(&serde_json::from_slice(&bytes).unwrap(), turn)).unwrap();
        prop_assert_eq!(signing::verify_event(&shuffled, &key.public_key()), Ok(()));
        prop_assert_eq!(signing::verify_event(&bytes, &STRANGER), Err(SigError::Forged));
        let mut unsigned = e.clone();
        unsigned.sig = None;
        prop_assert_eq!(signing::verify_event(&wire(&unsigned), &key.public_key()), Err(SigError::Unsigned));
    }

    /// Any single-byte change to a signed event on the wire either fails to decode
    /// or fails verification. The only mutations that verify are re-spellings of
    /// the same JSON (`1e5` as `1E5`, `\u001f` as `\u001F`): those parse to the
    /// identical event.
    #[test]
    fn single_byte_mutations_never_verify_a_different_event(
        e in envelope(),
        key in user_key(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut e = e;
        signing::sign_envelope(&mut e, &key).unwrap();
        let original = wire(&e);
        let mut bytes = original.clone();
        let i = pos.index(bytes.len());
        bytes[i] = bytes[i].wrapping_add(delta);
        let decoded = decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES);
        if let Err(err) = &decoded {
            check_decode_error(err)?;
        }
        if signing::verify_event(&bytes, &key.public_key()).is_ok() {
            let was: Value = serde_json::from_slice(&original).unwrap();
            let now: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert!(
                same_json(&now, &was),
                "byte {} changed to {:?} and the event still verifies",
                i,
                bytes[i] as char
            );
        }
    }

    /// Any change to a field of a signed envelope (the signature kept) is forged.
    #[test]
    fn changed_fields_never_verify(e in envelope(), key in user_key(), c in change()) {
        let mut e = e;
        signing::sign_envelope(&mut e, &key).unwrap();
        let mut changed = e.clone();
        prop_assume!(apply(&mut changed, &c));
        let bytes = wire(&changed);
        prop_assert!(decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES).is_ok());
        prop_assert_eq!(signing::verify_event(&bytes, &key.public_key()), Err(SigError::Forged), "{:?}", c);
    }

}

proptest! {
    #![proptest_config(config(512))]

    /// The canonical form does not depend on member order, leaves out only the
    /// top-level `sig`, and is itself JSON that reads back as the same value.
    #[test]
    fn canonical_form_is_independent_of_member_order(v in json_value(), turn in 0usize..8, sig in any_text(8)) {
        let c = signing::canonical_bytes(&v);
        prop_assert_eq!(&signing::canonical_bytes(&reorder(&v, turn)), &c);
        let back: Value = serde_json::from_slice(&c).expect("the canonical form is JSON");
        let mut expected = v.clone();
        if let Value::Object(map) = &mut expected {
            map.remove("sig");
        }
        prop_assert!(same_json(&back, &expected), "{} read back as {}", expected, back);
        // Sorted and compact: canonicalising the canonical form changes nothing.
        prop_assert_eq!(&signing::canonical_bytes(&back), &c);
        if let Value::Object(mut map) = v {
            map.insert("sig".into(), Value::String(sig));
            prop_assert_eq!(signing::canonical_bytes(&Value::Object(map)), c);
        }
    }
}

// ---- fixed hostile inputs --------------------------------------------------------

#[test]
fn deep_nesting_is_malformed_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            for doc in [
                nested.clone(),
                format!(r#"{{"v":1,"payload":{nested}}}"#),
                format!(r#"{{"v":1,"unknown":{nested}}}"#),
            ] {
                let e = decode::<Envelope>(doc.as_bytes(), usize::MAX).unwrap_err();
                assert_eq!(e.kind(), "malformed", "depth {depth}");
                assert!(signing::verify_event(doc.as_bytes(), &KeyPair::new_user().public_key()).is_err());
            }
        }
    }
}

/// Found by `signed_envelopes_verify_in_any_member_order`: without serde_json's
/// `float_roundtrip`, about one in ten timestamps with a 7-digit fraction read back
/// one ulp off, so the verifier's canonical form differed from the signed one and
/// a genuine event was "forged".
#[test]
fn a_signed_event_with_a_hard_float_verifies() {
    let key = KeyPair::new_from_raw(KeyPairType::User, [7; 32]).unwrap();
    let mut e = Envelope::new(
        AgentId::new("web-01").unwrap(),
        1,
        EventClass::File,
        "modified",
        Severity::Low,
        json!({"after": {"mtime": 1_750_000_000.000_002_1, "ctime": 1.463_191_388_155_824e-308}}),
    );
    signing::sign_envelope(&mut e, &key).unwrap();
    let bytes = wire(&e);
    assert_eq!(decode::<Envelope>(&bytes, DEFAULT_MAX_EVENT_BYTES).unwrap(), e);
    signing::verify_event(&bytes, &key.public_key()).unwrap();
}

#[test]
fn oversize_is_refused_before_parsing() {
    let e =
        decode::<Envelope>(&vec![b'{'; DEFAULT_MAX_EVENT_BYTES + 1], DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(e.kind(), "oversize");
}
