//! Login rate limiting: failed logins are counted per user name and per client
//! address; reaching the limit within the lockout window locks that key for the
//! lockout duration, during which every login for it (even with the right
//! password) is refused with 429 and `Retry-After`.
//!
//! An address may fail [`ADDRESS_FACTOR`] times more often than a user name, so one
//! user's typos behind a shared NAT do not lock everybody out, while an address
//! guessing across many names is still stopped. Memory is bounded: each map keeps at
//! most [`MAX_KEYS`] keys, dropping expired ones first, then the least recently
//! touched.
//!
//! The limiter itself is memory only; the locks it sets are also written to
//! `security.db` by the login route ([`super::locks`]) and restored at start
//! ([`LoginLimiter::restore`]), so restarting the manager does not lift a lockout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed from one address, as a multiple of the per-user limit.
pub const ADDRESS_FACTOR: u32 = 4;
/// Keys tracked per map.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    touched: Instant,
}

/// What a lock is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockKey {
    User(String),
    Addr(IpAddr),
}

/// The outcome of a failed login ([`LoginLimiter::failure`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Failure {
    /// `Some` while the user or address is locked.
    pub retry_after: Option<Duration>,
    /// The locks this failure set, with their duration.
    pub new_locks: Vec<(LockKey, Duration)>,
}

#[derive(Debug, Default)]
struct Maps {
    users: HashMap<String, Entry>,
    addrs: HashMap<IpAddr, Entry>,
}

/// Counts failed logins and answers whether a login may be tried.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    lockout: Duration,
    maps: Mutex<Maps>,
}

fn remaining(e: &Entry, now: Instant) -> Option<Duration> {
    e.locked_until.filter(|t| *t > now).map(|t| t - now)
}

/// Makes room for `key` in `map` (expired entries first, then the least recently
/// touched) and returns its entry.
fn entry<'a, K: std::hash::Hash + Eq + Clone>(
    map: &'a mut HashMap<K, Entry>,
    key: &K,
    lockout: Duration,
    now: Instant,
) -> &'a mut Entry {
    if !map.contains_key(key) && map.len() >= MAX_KEYS {
        map.retain(|_, e| remaining(e, now).is_some() || now.duration_since(e.window_start) < lockout);
        if map.len() >= MAX_KEYS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.touched).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.entry(key.clone()).or_insert(Entry {
        failures: 0,
        window_start: now,
        locked_until: None,
        touched: now,
    })
}

/// Counts one failure for `key`: (time still locked, whether this failure set the lock).
fn fail<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Entry>,
    key: &K,
    limit: u32,
    lockout: Duration,
    now: Instant,
) -> (Option<Duration>, bool) {
    let e = entry(map, key, lockout, now);
    if now.duration_since(e.window_start) >= lockout {
        // The window passed: start counting again.
        *e = Entry { failures: 0, window_start: now, locked_until: None, touched: now };
    }
    e.failures = e.failures.saturating_add(1);
    e.touched = now;
    let mut locked = false;
    if e.failures >= limit {
        e.locked_until = Some(now + lockout);
        e.failures = 0;
        e.window_start = now;
        locked = true;
    }
    (remaining(e, now), locked)
}

impl LoginLimiter {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self { max_failures: max_failures.max(1), lockout, maps: Mutex::default() }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` while `user` or `addr` is locked out.
    pub fn check(&self, user: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        self.check_at(user, addr, Instant::now())
    }

    fn check_at(&self, user: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let m = self.maps();
        let by_user = m.users.get(user).and_then(|e| remaining(e, now));
        let by_addr = addr.and_then(|a| m.addrs.get(&a)).and_then(|e| remaining(e, now));
        match by_user.max(by_addr) {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failure(&self, user: &str, addr: Option<IpAddr>) -> Failure {
        self.failure_at(user, addr, Instant::now())
    }

    fn failure_at(&self, user: &str, addr: Option<IpAddr>, now: Instant) -> Failure {
        let mut m = self.maps();
        let mut new_locks = Vec::new();
        let (by_user, locked) = fail(&mut m.users, &user.to_owned(), self.max_failures, self.lockout, now);
        if locked {
            new_locks.push((LockKey::User(user.to_owned()), self.lockout));
        }
        let limit = self.max_failures.saturating_mul(ADDRESS_FACTOR);
        let mut by_addr = None;
        if let Some(a) = addr {
            let (left, locked) = fail(&mut m.addrs, &a, limit, self.lockout, now);
            if locked {
                new_locks.push((LockKey::Addr(a), self.lockout));
            }
            by_addr = left;
        }
        Failure { retry_after: by_user.max(by_addr), new_locks }
    }

    /// Sets a lock kept from before a restart, for `remaining` more.
    pub fn restore(&self, key: &LockKey, remaining: Duration) {
        let now = Instant::now();
        let mut m = self.maps();
        let e = match key {
            LockKey::User(u) => entry(&mut m.users, u, self.lockout, now),
            LockKey::Addr(a) => entry(&mut m.addrs, a, self.lockout, now),
        };
        *e = Entry { failures: 0, window_start: now, locked_until: Some(now + remaining), touched: now };
    }

    /// A successful login clears the user's failures (not the address's: a valid
    /// account must not reset an address that is guessing other names).
    pub fn success(&self, user: &str) {
        self.maps().users.remove(user);
    }

    /// Keys tracked (users, addresses), for tests and bounds checks.
    pub fn tracked(&self) -> (usize, usize) {
        let m = self.maps();
        (m.users.len(), m.addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_until_the_lockout_ends() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.failure_at("bob", Some(a), t0), Failure::default());
        assert_eq!(l.failure_at("bob", Some(a), t0), Failure::default());
        assert_eq!(
            l.failure_at("bob", Some(a), t0),
            Failure {
                retry_after: Some(Duration::from_secs(60)),
                new_locks: vec![(LockKey::User("bob".into()), Duration::from_secs(60))]
            }
        );
        assert!(l.check_at("bob", Some(a), t0 + Duration::from_secs(59)).is_err());
        assert!(l.check_at("eve", Some(a), t0).is_ok(), "address not locked after 3 failures");
        assert!(l.check_at("bob", Some(a), t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn an_address_guessing_many_names_is_locked() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..(2 * ADDRESS_FACTOR - 1) {
            assert!(l.failure_at(&format!("u{i}"), Some(a), t0).new_locks.is_empty());
        }
        assert_eq!(
            l.failure_at("last", Some(a), t0).new_locks,
            vec![(LockKey::Addr(a), Duration::from_secs(60))]
        );
        assert!(l.check_at("fresh", Some(a), t0).is_err());
        assert!(l.check_at("fresh", Some("10.0.0.3".parse().unwrap()), t0).is_ok());
    }

    #[test]
    fn a_restored_lock_refuses_until_it_ends() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.4".parse().unwrap();
        l.restore(&LockKey::User("carol".into()), Duration::from_secs(30));
        l.restore(&LockKey::Addr(a), Duration::from_secs(45));
        let wait = l.check("carol", None).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(l.check("dave", Some(a)).unwrap_err() > Duration::from_secs(40));
        assert!(l.check("dave", None).is_ok());
        let later = Instant::now() + Duration::from_secs(31);
        assert!(l.check_at("carol", None, later).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = LoginLimiter::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 500) {
            l.failure_at(&format!("user{i}"), None, t0);
        }
        assert!(l.tracked().0 <= MAX_KEYS);
    }
}
