//! A circuit breaker: after `threshold` consecutive failures calls stop for
//! `cooldown`, then one trial call decides (half-open). One guards NATS, one each
//! database, so a dead dependency costs a check, not a timeout, per cycle.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// For the `*_breaker_state` gauges: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    opened_at: Option<Instant>,
    trial_running: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner { failures: 0, opened_at: None, trial_running: false }),
        }
    }

    /// Whether a call may go ahead now. While open, false until the cooldown has
    /// passed; then exactly one caller gets true (the trial) until it reports.
    pub fn allow(&self) -> bool {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match i.opened_at {
            None => true,
            Some(at) if at.elapsed() >= self.cooldown && !i.trial_running => {
                i.trial_running = true;
                true
            }
            Some(_) => false,
        }
    }

    pub fn success(&self) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *i = Inner { failures: 0, opened_at: None, trial_running: false };
    }

    pub fn failure(&self) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        i.failures = i.failures.saturating_add(1);
        if i.trial_running || i.failures >= self.threshold {
            i.opened_at = Some(Instant::now());
            i.trial_running = false;
        }
    }

    pub fn state(&self) -> BreakerState {
        let i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match i.opened_at {
            None => BreakerState::Closed,
            Some(_) if i.trial_running => BreakerState::HalfOpen,
            Some(at) if at.elapsed() >= self.cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through_after_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(50));
        b.failure();
        b.failure();
        assert!(b.allow());
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "trial after cooldown");
        assert!(!b.allow(), "only one trial at a time");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "failed trial reopens at once");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }
}
