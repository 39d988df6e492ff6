//! Rate limiting for warnings about bad input: a flood of malformed messages must
//! not become a flood of log lines, but the first one, and a count of the rest,
//! must be visible.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows one log line per `period`; counts what it suppressed in between.
#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub const fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed since the last allowed line)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < self.period => {
                st.1 += 1;
                None
            }
            _ => {
                let suppressed = st.1;
                *st = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// Cuts text for a log line at about 200 bytes: decode errors can quote input.
pub fn clip(mut s: String) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_passes_then_counts_until_the_period_ends() {
        let l = LogLimiter::new(Duration::from_millis(50));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.allow(), Some(2));
    }

    #[test]
    fn clip_cuts_on_a_char_boundary() {
        assert_eq!(clip("short".into()), "short");
        let c = clip("é".repeat(150));
        assert!(c.len() <= 203 && c.ends_with('…'));
    }
}
