//! Cost of event signatures per event: signing on the agent (canonical form + Ed25519)
//! and verifying on the manager (parse + canonical form + Ed25519), for the same
//! ~1 KB file-modification event the ingest bench sends.
//! `cargo bench -p secmon-proto --bench signing`

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use secmon_proto::payload::{FileActivity, FileKind, FileState};
use secmon_proto::signing::{
    PublicKey, SignedBytes, canonical_bytes, sign_envelope, signed_bytes, verify_batch, verify_event,
    verify_event_with_key, verifying_key,
};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};

fn sample_event() -> Envelope {
    let state = |size: u64, hash: &str| FileState {
        mtime: 1_795_000_000.123_456,
        ctime: 1_795_000_000.123_456,
        inode: 1042,
        ..FileState::sha256_file(size, hash)
    };
    let path = "/etc/secmon-bench/agent-1/file-42.conf".to_string();
    let payload = FileActivity {
        description: format!("{path} modified"),
        path,
        old_path: None,
        kind: FileKind::File,
        watch: "/etc/secmon-bench".into(),
        watch_description: String::new(),
        event_type: "FileModify".into(),
        detector: None,
        before: Some(state(4096, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")),
        after: Some(state(4138, "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752")),
        changes: vec!["size".into(), "mtime".into(), "ctime".into(), "hash".into()],
        diff: None,
        diff_truncated: false,
        process: None,
        source: "realtime".into(),
        backend: "inotify".into(),
    };
    Envelope::new(
        AgentId::generate(),
        42,
        EventClass::File,
        "modified",
        Severity::Low,
        serde_json::to_value(payload).expect("payload serializes"),
    )
}

fn signing(c: &mut Criterion) {
    let key = nkeys::KeyPair::new_user();
    let public = key.public_key();
    let env = sample_event();
    let mut signed = env.clone();
    sign_envelope(&mut signed, &key).unwrap();
    let wire = serde_json::to_vec(&signed).unwrap();
    eprintln!("signed event: {} bytes", wire.len());

    c.bench_function("canonical form (agent side, from the envelope)", |b| {
        b.iter(|| canonical_bytes(&serde_json::to_value(black_box(&env)).unwrap()))
    });
    c.bench_function("sign (agent)", |b| {
        b.iter(|| {
            let mut e = black_box(&env).clone();
            sign_envelope(&mut e, &key).unwrap();
            e
        })
    });
    c.bench_function("verify (manager, from the received bytes)", |b| {
        b.iter(|| verify_event(black_box(&wire), &public).unwrap())
    });
    let decoded = verifying_key(&public).unwrap();
    c.bench_function("verify (manager, key decoded once at enrollment)", |b| {
        b.iter(|| verify_event_with_key(black_box(&wire), &decoded).unwrap())
    });
    let value: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    let canonical = canonical_bytes(&value);
    let sig = key.sign(&canonical).unwrap();
    c.bench_function("verify part: parse the received bytes", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&wire)).unwrap())
    });
    c.bench_function("verify part: canonical form", |b| b.iter(|| canonical_bytes(black_box(&value))));
    c.bench_function("verify part: public key from its text", |b| {
        b.iter(|| nkeys::KeyPair::from_public_key(black_box(&public)).unwrap())
    });
    let verifier = nkeys::KeyPair::from_public_key(&public).unwrap();
    c.bench_function("verify part: Ed25519", |b| {
        b.iter(|| verifier.verify(black_box(&canonical), &sig).unwrap())
    });
}

/// Ingest checks a batch of events from many agents at once (`verify_batch`).
fn batches(c: &mut Criterion) {
    const N: usize = 64;
    let keys: Vec<nkeys::KeyPair> = (0..N).map(|_| nkeys::KeyPair::new_user()).collect();
    let decoded: Vec<PublicKey> = keys.iter().map(|k| verifying_key(&k.public_key()).unwrap()).collect();
    let wires: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let mut e = sample_event();
            sign_envelope(&mut e, k).unwrap();
            serde_json::to_vec(&e).unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("verify 64 events of 64 agents");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("one by one, from the received bytes", |b| {
        b.iter(|| {
            for (w, k) in wires.iter().zip(&decoded) {
                verify_event_with_key(black_box(w), k).unwrap();
            }
        })
    });
    g.bench_function("batch, from the received bytes", |b| {
        b.iter(|| {
            let signed: Vec<SignedBytes> =
                wires.iter().map(|w| signed_bytes(black_box(w)).unwrap()).collect();
            let items: Vec<(&SignedBytes, &PublicKey)> = signed.iter().zip(&decoded).collect();
            assert!(verify_batch(&items).iter().all(Result::is_ok));
        })
    });
    let signed: Vec<SignedBytes> = wires.iter().map(|w| signed_bytes(w).unwrap()).collect();
    let items: Vec<(&SignedBytes, &PublicKey)> = signed.iter().zip(&decoded).collect();
    g.bench_function("batch, Ed25519 only", |b| b.iter(|| verify_batch(black_box(&items))));
    g.finish();
}

criterion_group!(benches, signing, batches);
criterion_main!(benches);
