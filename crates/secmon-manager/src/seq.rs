//! Per-agent event sequence tracking: tells in-order events from gaps (loss, or
//! events still on their way), late arrivals that fill a gap, and replays.
//!
//! Pure functions over [`SeqState`] so the rules are tested without IO; ingest
//! keeps one state per agent and stores it with each batch.

use crate::store::SeqState;

/// Missing ranges kept per agent. Beyond this the oldest range is given up (its
/// events stay counted in `gap_events`; late arrivals for it count as replays), so
/// a hostile or broken agent cannot grow the state without bound.
pub const MAX_MISSING_RANGES: usize = 64;

/// What one sequence number means given what was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The next number expected.
    InOrder,
    /// Beyond the next expected: `missing` numbers were skipped (and are now
    /// tracked as missing).
    Gap { missing: u64 },
    /// A number that was missing: it arrived late and fills part of a gap.
    Late,
    /// Already seen (or given up): the event is dropped.
    Replay,
}

impl SeqOutcome {
    /// Whether the event should be stored.
    pub fn keep(self) -> bool {
        !matches!(self, SeqOutcome::Replay)
    }
}

/// Records `seq` in `state` and says what it was.
pub fn observe(state: &mut SeqState, seq: u64) -> SeqOutcome {
    if seq > state.last_seq {
        let skipped = seq - state.last_seq - 1;
        let from = state.last_seq + 1;
        state.last_seq = seq;
        if skipped == 0 {
            return SeqOutcome::InOrder;
        }
        state.missing.push((from, seq - 1));
        state.gap_events = state.gap_events.saturating_add(skipped);
        trim(state);
        return SeqOutcome::Gap { missing: skipped };
    }
    let Some(i) = state.missing.iter().position(|&(a, b)| a <= seq && seq <= b) else {
        state.replays = state.replays.saturating_add(1);
        return SeqOutcome::Replay;
    };
    let (a, b) = state.missing[i];
    match (seq == a, seq == b) {
        (true, true) => {
            state.missing.remove(i);
        }
        (true, false) => state.missing[i].0 = a + 1,
        (false, true) => state.missing[i].1 = b - 1,
        (false, false) => {
            state.missing[i] = (a, seq - 1);
            state.missing.insert(i + 1, (seq + 1, b));
            trim(state);
        }
    }
    state.late_events = state.late_events.saturating_add(1);
    SeqOutcome::Late
}

fn trim(state: &mut SeqState) {
    while state.missing.len() > MAX_MISSING_RANGES {
        state.missing.remove(0);
        state.given_up_ranges = state.given_up_ranges.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> (SeqState, Vec<SeqOutcome>) {
        let mut s = SeqState::default();
        let out = seqs.iter().map(|&q| observe(&mut s, q)).collect();
        (s, out)
    }

    #[test]
    fn in_order_from_one() {
        let (s, out) = run(&[1, 2, 3]);
        assert!(out.iter().all(|o| *o == SeqOutcome::InOrder));
        assert_eq!(s.last_seq, 3);
        assert!(s.missing.is_empty());
        assert_eq!((s.gap_events, s.late_events, s.replays), (0, 0, 0));
    }

    #[test]
    fn gap_opens_a_missing_range_and_late_events_fill_it() {
        let (s, out) = run(&[1, 5]);
        assert_eq!(out[1], SeqOutcome::Gap { missing: 3 });
        assert_eq!(s.missing, vec![(2, 4)]);
        assert_eq!(s.gap_events, 3);

        // Middle, then the ends, of the range.
        let (s, out) = run(&[1, 5, 3, 2, 4]);
        assert_eq!(&out[2..], &[SeqOutcome::Late; 3]);
        assert!(s.missing.is_empty());
        assert_eq!(s.late_events, 3);
        assert_eq!(s.gap_events, 3);
        assert_eq!(s.last_seq, 5);
    }

    #[test]
    fn splitting_a_range_keeps_both_halves() {
        let (s, _) = run(&[1, 10, 5]);
        assert_eq!(s.missing, vec![(2, 4), (6, 9)]);
    }

    #[test]
    fn replays_are_dropped_and_counted() {
        let (s, out) = run(&[1, 2, 2, 1, 3, 0]);
        assert_eq!(out[2], SeqOutcome::Replay);
        assert_eq!(out[3], SeqOutcome::Replay);
        assert_eq!(out[5], SeqOutcome::Replay, "0 is never a valid sequence number");
        assert_eq!(s.replays, 3);
        assert_eq!(s.last_seq, 3);
        assert!(!SeqOutcome::Replay.keep() && SeqOutcome::Late.keep());

        // A late event seen twice: the second is a replay.
        let (s, out) = run(&[1, 3, 2, 2]);
        assert_eq!(out[2..], [SeqOutcome::Late, SeqOutcome::Replay]);
        assert_eq!(s.replays, 1);
    }

    #[test]
    fn missing_ranges_are_bounded_oldest_given_up() {
        let mut s = SeqState::default();
        // Every other number: 1, 3, 5, ... opens one single-number gap each time.
        let mut q = 1;
        for _ in 0..(MAX_MISSING_RANGES + 10) {
            observe(&mut s, q);
            q += 2;
        }
        assert_eq!(s.missing.len(), MAX_MISSING_RANGES);
        assert_eq!(s.given_up_ranges, 9);
        assert_eq!(s.gap_events, (MAX_MISSING_RANGES + 9) as u64);
        // The oldest ranges (2, 4, ...) were given up: a late 2 is now a replay.
        assert_eq!(observe(&mut s, 2), SeqOutcome::Replay);
        // The newest missing number is still tracked.
        assert_eq!(observe(&mut s, q - 3), SeqOutcome::Late);
    }

    #[test]
    fn huge_jump_does_not_overflow() {
        let (s, out) = run(&[1, u64::MAX]);
        assert_eq!(out[1], SeqOutcome::Gap { missing: u64::MAX - 2 });
        assert_eq!(s.missing, vec![(2, u64::MAX - 1)]);
        let mut s = s;
        assert_eq!(observe(&mut s, u64::MAX), SeqOutcome::Replay);
    }

    /// Sequence 0 is the manager's own events' marker ([`crate::status_events`]):
    /// an agent event with it is never stored, whatever came before.
    #[test]
    fn zero_is_never_kept() {
        for seqs in [&[0][..], &[1, 0], &[1, 5, 0]] {
            let (_, out) = run(seqs);
            assert_eq!(out.last(), Some(&SeqOutcome::Replay), "{seqs:?}");
        }
    }
}
