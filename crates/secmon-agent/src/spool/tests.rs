use std::io::Write;

use secmon_proto::{DEFAULT_MAX_EVENT_BYTES, decode};
use serde_json::json;

use super::*;

const SMALL: SpoolOptions = SpoolOptions { max_bytes: 64 * 1024 * 1024, segment_bytes: 4096 };

fn agent() -> AgentId {
    AgentId::new("spool-test").unwrap()
}

fn draft(i: u64) -> EventDraft {
    EventDraft::now(EventClass::File, "modified", Severity::Low, json!({"i": i, "path": "/etc/passwd"}))
}

fn open(dir: &Path, opts: SpoolOptions) -> Spool {
    Spool::open(dir, agent(), opts).unwrap()
}

fn append_n(s: &mut Spool, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert!(matches!(s.append(draft(i)), Appended::Stored { .. }), "event {i} not stored");
    }
}

/// Reads everything from the read position on, in batches of 7.
fn read_all(s: &mut Spool) -> Vec<SpooledEvent> {
    let mut out = Vec::new();
    loop {
        let b = s.read_batch(7).unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend(b);
    }
}

fn seqs(evs: &[SpooledEvent]) -> Vec<u64> {
    evs.iter().map(|e| e.seq).collect()
}

fn ack_all(s: &mut Spool, evs: &[SpooledEvent]) {
    s.ack(evs.last().unwrap().next, evs.len() as u64).unwrap();
}

#[test]
fn order_is_kept_across_segment_rollover_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=200);
    assert!(s.segment_count() > 3, "expected several segments, got {}", s.segment_count());
    let evs = read_all(&mut s);
    assert_eq!(seqs(&evs), (1..=200).collect::<Vec<_>>());
    // The stored JSON is the envelope, with the record's id, seq and class.
    for e in &evs {
        let env: Envelope = decode(&e.json, DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!((env.seq, env.id, env.class), (e.seq, e.id, e.class));
        assert_eq!(env.agent_id, agent());
        assert_eq!(env.payload["i"], json!(e.seq));
    }
    drop(s);

    // Nothing was acknowledged: after reopening, everything comes again, in order,
    // and new events continue the sequence.
    let mut s = open(tmp.path(), SMALL);
    assert_eq!(s.stats().depth, 200);
    append_n(&mut s, 201..=230);
    assert_eq!(seqs(&read_all(&mut s)), (1..=230).collect::<Vec<_>>());
}

#[test]
fn cursor_is_persisted_and_acknowledged_segments_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=200);
    let segments_before = s.segment_count();
    let evs = read_all(&mut s);
    ack_all(&mut s, &evs[..120]);
    assert_eq!(s.stats().depth, 80);
    assert!(s.segment_count() < segments_before, "no acknowledged segment deleted");
    s.persist_cursor().unwrap();
    drop(s);

    let mut s = open(tmp.path(), SMALL);
    assert_eq!(s.stats().depth, 80);
    assert_eq!(seqs(&read_all(&mut s)), (121..=200).collect::<Vec<_>>());
    // Rewind goes back to the cursor, not to the start.
    s.rewind();
    assert_eq!(s.read_batch(1).unwrap()[0].seq, 121);
}

#[test]
fn everything_acknowledged_keeps_the_sequence_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=100);
    let evs = read_all(&mut s);
    ack_all(&mut s, &evs);
    assert_eq!(s.stats().depth, 0);
    assert_eq!(s.segment_count(), 1, "only the write segment remains");
    s.close().unwrap();
    drop(s);

    let mut s = open(tmp.path(), SMALL);
    assert_eq!(s.stats().depth, 0);
    assert_eq!(s.last_seq(), 100);
    assert!(read_all(&mut s).is_empty());
    append_n(&mut s, 101..=101);
    assert_eq!(seqs(&read_all(&mut s)), vec![101]);
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_path(dir, *list_segments(dir).unwrap().last().unwrap())
}

#[test]
fn torn_tail_is_truncated_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=10);
    drop(s);
    // A crash in the middle of a write: a header promising 500 bytes, 20 present.
    let seg = last_segment(tmp.path());
    let good_len = fs::metadata(&seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&500u32.to_le_bytes()).unwrap();
    f.write_all(&[7u8; 24]).unwrap();
    drop(f);

    let mut s = open(tmp.path(), SMALL);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len, "torn tail not truncated");
    assert_eq!(s.stats().depth, 10);
    append_n(&mut s, 11..=11);
    assert_eq!(seqs(&read_all(&mut s)), (1..=11).collect::<Vec<_>>());
}

#[test]
fn corrupt_record_cuts_the_segment_there() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=10);
    let evs = read_all(&mut s);
    drop(s);
    // Flip one byte inside record 6's JSON.
    let seg = last_segment(tmp.path());
    let mut bytes = fs::read(&seg).unwrap();
    let at = evs[5].pos.offset as usize + HEADER_LEN as usize + BODY_PREFIX_LEN + 3;
    bytes[at] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();

    let mut s = open(tmp.path(), SMALL);
    assert_eq!(s.stats().depth, 5);
    assert_eq!(seqs(&read_all(&mut s)), (1..=5).collect::<Vec<_>>());
}

#[test]
fn full_spool_drops_counts_and_reports_the_loss_once_space_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SpoolOptions { max_bytes: 16 * 1024, segment_bytes: 4096 };
    let mut s = open(tmp.path(), opts);
    let mut stored = 0u64;
    let mut dropped = 0u64;
    for i in 1..=200 {
        match s.append(draft(i)) {
            Appended::Stored { seq } => {
                stored += 1;
                assert_eq!(seq, stored, "a dropped event must not take a sequence number");
            }
            Appended::Dropped(reason) => {
                assert_eq!(reason, LossReason::SpoolFull);
                dropped += 1;
            }
        }
    }
    assert!(dropped > 0 && stored > 0, "stored {stored}, dropped {dropped}");
    assert_eq!(s.stats().dropped, dropped);
    assert!(s.stats().bytes <= opts.max_bytes, "{} bytes on disk", s.stats().bytes);

    // Publishing frees whole segments; the loss is recorded right after what was kept.
    let evs = read_all(&mut s);
    assert_eq!(evs.len() as u64, stored);
    ack_all(&mut s, &evs);
    let after = read_all(&mut s);
    assert_eq!(after.len(), 1, "expected exactly the event_loss event");
    let env: Envelope = decode(&after[0].json, DEFAULT_MAX_EVENT_BYTES).unwrap();
    assert_eq!((env.class, env.activity.as_str(), env.seq), (EventClass::Agent, "event_loss", stored + 1));
    let loss: EventLoss = serde_json::from_value(env.payload).unwrap();
    assert_eq!(loss, EventLoss { lost: dropped, reason: "spool_full".into() });

    // Reported once: new events follow without another notice.
    append_n(&mut s, 1..=1);
    assert_eq!(seqs(&read_all(&mut s)), vec![stored + 2]);
}

#[test]
fn losses_before_the_spool_are_reported_before_the_next_event() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    s.note_loss(LossReason::ChannelFull, 7);
    append_n(&mut s, 1..=1);
    let evs = read_all(&mut s);
    assert_eq!(evs.len(), 2);
    let env: Envelope = decode(&evs[0].json, DEFAULT_MAX_EVENT_BYTES).unwrap();
    assert_eq!(env.activity, "event_loss");
    assert_eq!(env.payload, json!({"lost": 7, "reason": "channel_full"}));
    assert_eq!(s.stats().dropped, 0, "channel losses are counted by the channel, not the spool");
}

#[test]
fn oversize_event_is_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    let big = EventDraft::now(EventClass::Log, "line", Severity::Info, json!("x".repeat(MAX_EVENT_BYTES)));
    assert_eq!(s.append(big), Appended::Dropped(LossReason::Oversize));
    assert_eq!(s.stats().dropped, 1);
    append_n(&mut s, 1..=1);
    let evs = read_all(&mut s);
    let env: Envelope = decode(&evs[0].json, DEFAULT_MAX_EVENT_BYTES).unwrap();
    assert_eq!(env.payload, json!({"lost": 1, "reason": "oversize"}));
    assert_eq!(seqs(&evs), vec![1, 2]);
}

#[test]
fn ack_all_empties_the_spool_without_reading_and_keeps_the_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SMALL);
    append_n(&mut s, 1..=200);
    assert!(s.segment_count() > 3);
    s.ack_all().unwrap();
    assert_eq!(s.stats().depth, 0);
    assert_eq!(s.segment_count(), 1, "acknowledged segments are deleted");
    assert!(s.read_batch(10).unwrap().is_empty());
    append_n(&mut s, 201..=205);
    assert_eq!(seqs(&read_all(&mut s)), (201..=205).collect::<Vec<_>>());
    s.ack_all().unwrap();
    s.close().unwrap();
    drop(s);
    let mut s = open(tmp.path(), SMALL);
    assert_eq!(s.stats().depth, 0, "the cursor was persisted");
    append_n(&mut s, 206..=206);
    assert_eq!(s.last_seq(), 206);
}

#[test]
fn the_tap_sees_every_stored_event_with_its_seq_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(u64, Vec<u8>)>>>;
    let seen: Seen = Default::default();
    let mut s = open(tmp.path(), SpoolOptions { max_bytes: 8192, segment_bytes: 4096 });
    let tap_seen = seen.clone();
    s.set_tap(Box::new(move |env, json| tap_seen.lock().unwrap().push((env.seq, json.to_vec()))));
    append_n(&mut s, 1..=3);
    // Fill the spool: dropped events never reach the tap; the loss report does.
    let mut stored = 3;
    while let Appended::Stored { .. } = s.append(draft(0)) {
        stored += 1;
    }
    let evs = read_all(&mut s);
    ack_all(&mut s, &evs);
    s.append(draft(1));
    let seen = seen.lock().unwrap();
    let tapped: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        tapped,
        (1..=stored + 2).collect::<Vec<_>>(),
        "stored events, then event_loss, then the new one"
    );
    for (i, (seq, json)) in seen.iter().enumerate() {
        let env: Envelope = decode(json, DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(env.seq, *seq);
        if i as u64 == stored {
            assert_eq!(env.activity, "event_loss");
        }
    }
}

#[test]
fn auto_ack_never_fills_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), SpoolOptions { max_bytes: 8192, segment_bytes: 4096 });
    s.set_auto_ack(true);
    append_n(&mut s, 1..=2000);
    assert_eq!(s.stats().dropped, 0);
    assert!(s.stats().bytes <= 8192);
    assert_eq!(s.last_seq(), 2000);
    s.close().unwrap();
    drop(s);
    let s = open(tmp.path(), SMALL);
    assert!(s.stats().depth <= 1, "what was written before the last append is acknowledged");
}
