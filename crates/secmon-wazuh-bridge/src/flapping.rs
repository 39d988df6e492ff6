//! Per-agent flapping detection: an agent with more than `threshold` status
//! transitions within `window` is flapping. The bridge then publishes one `flapping`
//! event instead of the transition that crossed the threshold, counts (but does not
//! publish) further transitions, and publishes one `flapping_ended` event once the
//! agent has had no transition for a whole window.
//!
//! Memory is bounded: per agent at most `threshold + 1` timestamps, and only agents
//! with a transition within the last window (or still flapping) are kept; `tick`
//! prunes the rest.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the bridge does with one status transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapDecision {
    /// Normal: publish the status event.
    Publish,
    /// This transition makes more than `threshold` within the window: publish one
    /// `flapping` event (carrying `transitions`) instead of the status event.
    StartFlapping { transitions: u64 },
    /// Already flapping: counted, summarized later in `flapping_ended`.
    Suppress,
}

/// An agent that was flapping and has been quiet for a whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapEnded {
    pub agent_id: i64,
    /// Transitions not published one by one (those after the `flapping` event).
    pub suppressed: u64,
    /// All transitions of the episode: the ones counted when flapping was declared
    /// plus the suppressed ones.
    pub transitions: u64,
}

#[derive(Debug)]
struct AgentFlaps {
    /// Transition times within the window, oldest first; at most `threshold + 1`.
    recent: VecDeque<Instant>,
    last: Instant,
    /// `Some` while flapping.
    episode: Option<Episode>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    started_with: u64,
    suppressed: u64,
}

#[derive(Debug)]
pub struct FlapDetector {
    threshold: u32,
    window: Duration,
    agents: HashMap<i64, AgentFlaps>,
}

impl FlapDetector {
    /// More than `threshold` transitions within `window` is flapping.
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self { threshold, window, agents: HashMap::new() }
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Call once per status transition of `agent_id`, seen at `now` (monotonic:
    /// `now` must not go backwards between calls).
    pub fn observe(&mut self, agent_id: i64, now: Instant) -> FlapDecision {
        let keep = (self.threshold as usize).saturating_add(1);
        let window = self.window;
        let a = self.agents.entry(agent_id).or_insert_with(|| AgentFlaps {
            recent: VecDeque::new(),
            last: now,
            episode: None,
        });
        a.last = now;
        if let Some(ep) = a.episode.as_mut() {
            ep.suppressed = ep.suppressed.saturating_add(1);
            return FlapDecision::Suppress;
        }
        // A transition exactly one window old is outside it: `window` is the span
        // within which more than `threshold` transitions count as flapping.
        while a.recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
            a.recent.pop_front();
        }
        a.recent.push_back(now);
        while a.recent.len() > keep {
            a.recent.pop_front();
        }
        if a.recent.len() > self.threshold as usize {
            let transitions = a.recent.len() as u64;
            a.episode = Some(Episode { started_with: transitions, suppressed: 0 });
            // The timestamps are not needed while flapping: the end is decided by `last`.
            a.recent = VecDeque::new();
            return FlapDecision::StartFlapping { transitions };
        }
        FlapDecision::Publish
    }

    /// Ends the flapping of agents quiet for a whole window (the bridge publishes a
    /// `flapping_ended` for each) and forgets agents with no transition within the
    /// window. Call it every cycle (or every few seconds); it walks the tracked agents,
    /// which are only those with a recent transition.
    pub fn tick(&mut self, now: Instant) -> Vec<FlapEnded> {
        let window = self.window;
        let mut ended = Vec::new();
        self.agents.retain(|&agent_id, a| {
            if now.saturating_duration_since(a.last) < window {
                return true;
            }
            if let Some(ep) = a.episode {
                ended.push(FlapEnded {
                    agent_id,
                    suppressed: ep.suppressed,
                    transitions: ep.started_with.saturating_add(ep.suppressed),
                });
            }
            false
        });
        // HashMap order is random; a stable order makes the published sequence
        // reproducible.
        ended.sort_unstable_by_key(|e| e.agent_id);
        if self.agents.capacity() > 64 && self.agents.capacity() > self.agents.len() * 4 {
            // After a storm (many agents transitioning at once) give the memory back.
            self.agents.shrink_to(self.agents.len() * 2);
        }
        ended
    }

    /// The agent was removed: drop its state without a `flapping_ended`.
    pub fn forget(&mut self, agent_id: i64) {
        self.agents.remove(&agent_id);
    }

    pub fn is_flapping(&self, agent_id: i64) -> bool {
        self.agents.get(&agent_id).is_some_and(|a| a.episode.is_some())
    }

    /// Agents tracked (a transition within the window, or flapping).
    pub fn tracked(&self) -> usize {
        self.agents.len()
    }

    /// Agents flapping now.
    pub fn flapping_count(&self) -> usize {
        self.agents.values().filter(|a| a.episode.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn at_most_threshold_transitions_within_the_window_never_flap() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(5, W);
        for i in 0..5 {
            assert_eq!(d.observe(1, secs(t0, i)), FlapDecision::Publish, "transition {i}");
        }
        assert!(!d.is_flapping(1));
        // Once the oldest falls out of the window, a sixth transition is still fine.
        assert_eq!(d.observe(1, secs(t0, 60)), FlapDecision::Publish);
        assert!(!d.is_flapping(1));
    }

    #[test]
    fn threshold_plus_one_within_the_window_flaps_once_then_suppresses_and_counts() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(3, W);
        for i in 0..3 {
            assert_eq!(d.observe(7, secs(t0, i)), FlapDecision::Publish);
        }
        assert_eq!(d.observe(7, secs(t0, 3)), FlapDecision::StartFlapping { transitions: 4 });
        assert!(d.is_flapping(7));
        for i in 4..14 {
            assert_eq!(d.observe(7, secs(t0, i)), FlapDecision::Suppress);
        }
        // Another agent is unaffected.
        assert_eq!(d.observe(8, secs(t0, 5)), FlapDecision::Publish);
        assert!(!d.is_flapping(8));
        assert_eq!(d.flapping_count(), 1);
    }

    #[test]
    fn quiet_for_a_window_ends_flapping_with_the_counts_and_starts_afresh() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(2, W);
        for i in 0..3 {
            d.observe(42, secs(t0, i));
        }
        assert!(d.is_flapping(42));
        for i in 3..8 {
            assert_eq!(d.observe(42, secs(t0, i)), FlapDecision::Suppress);
        }
        // Last transition at 7 s: not quiet yet at 66 s.
        assert_eq!(d.tick(secs(t0, 66)), vec![]);
        assert!(d.is_flapping(42));
        let ended = d.tick(secs(t0, 67));
        assert_eq!(ended, vec![FlapEnded { agent_id: 42, suppressed: 5, transitions: 8 }]);
        assert!(!d.is_flapping(42));
        assert_eq!(d.tick(secs(t0, 200)), vec![], "ended only once");
        // Afterwards the count starts from zero.
        assert_eq!(d.observe(42, secs(t0, 300)), FlapDecision::Publish);
        assert_eq!(d.observe(42, secs(t0, 301)), FlapDecision::Publish);
        assert_eq!(d.observe(42, secs(t0, 302)), FlapDecision::StartFlapping { transitions: 3 });
    }

    #[test]
    fn a_transition_during_the_quiet_wait_keeps_the_agent_flapping() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(1, W);
        d.observe(3, secs(t0, 0));
        assert_eq!(d.observe(3, secs(t0, 1)), FlapDecision::StartFlapping { transitions: 2 });
        assert_eq!(d.observe(3, secs(t0, 50)), FlapDecision::Suppress);
        assert_eq!(d.tick(secs(t0, 100)), vec![]);
        assert_eq!(d.tick(secs(t0, 110)), vec![FlapEnded { agent_id: 3, suppressed: 1, transitions: 3 }]);
    }

    #[test]
    fn slow_transitions_spread_over_more_than_the_window_never_flap() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(3, W);
        // One every 20 s: at most 3 in any 60 s window, for an hour.
        for i in 0..180 {
            let now = secs(t0, i * 20);
            assert_eq!(d.observe(5, now), FlapDecision::Publish, "transition {i}");
            assert!(d.tick(now).is_empty());
        }
        assert!(!d.is_flapping(5));
    }

    #[test]
    fn pruning_keeps_the_map_small() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(5, W);
        for id in 1..=10_000 {
            assert_eq!(d.observe(id, t0), FlapDecision::Publish);
        }
        assert_eq!(d.tracked(), 10_000);
        assert!(d.tick(secs(t0, 59)).is_empty());
        assert_eq!(d.tracked(), 10_000, "still within the window");
        assert!(d.tick(secs(t0, 60)).is_empty(), "none was flapping: nothing ended");
        assert_eq!(d.tracked(), 0);
        assert!(d.agents.capacity() < 1_000, "memory given back: capacity {}", d.agents.capacity());
    }

    #[test]
    fn timestamps_kept_per_agent_are_bounded_by_threshold_plus_one() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(4, Duration::from_secs(10));
        // One every 3 s: never more than 4 within 10 s, many transitions overall.
        for i in 0..1_000 {
            assert_eq!(d.observe(9, secs(t0, i * 3)), FlapDecision::Publish);
            assert!(d.agents[&9].recent.len() <= 5);
        }
    }

    #[test]
    fn forget_drops_the_agent_without_an_end_event() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(1, W);
        d.observe(11, t0);
        d.observe(11, t0);
        assert!(d.is_flapping(11));
        d.forget(11);
        assert!(!d.is_flapping(11));
        assert_eq!(d.tick(secs(t0, 1_000)), vec![]);
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn several_agents_end_in_id_order() {
        let t0 = Instant::now();
        let mut d = FlapDetector::new(1, W);
        for id in [30, 10, 20] {
            d.observe(id, t0);
            assert!(matches!(d.observe(id, t0), FlapDecision::StartFlapping { .. }));
        }
        let ended: Vec<i64> = d.tick(secs(t0, 60)).iter().map(|e| e.agent_id).collect();
        assert_eq!(ended, vec![10, 20, 30]);
    }
}
