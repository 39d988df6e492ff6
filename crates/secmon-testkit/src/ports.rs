//! Free-port picking for test servers (see [`crate::free_port`]).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ports given out by this process; never given out again.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static DRAW: AtomicU64 = AtomicU64::new(0);

/// Lowest port tried: above the well-known and most registered service ports.
const LOW: u16 = 20_000;

pub(crate) fn free_port() -> u16 {
    let high = ephemeral_start().saturating_sub(1).max(LOW + 1_000);
    let span = u64::from(high - LOW);
    // Random start so test binaries run one after another do not walk the same
    // sequence; the hasher's keys are random per process.
    let seed = RandomState::new().hash_one(std::process::id());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..span {
        let n = DRAW.fetch_add(1, Ordering::Relaxed);
        let port = LOW + ((seed.wrapping_add(n.wrapping_mul(7_919))) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    // Everything below the ephemeral range is taken: fall back to the kernel's pick.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_bindable_and_never_repeated() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        if ephemeral_start() > LOW + 1_000 {
            for p in &ports {
                assert!(*p >= LOW && *p < ephemeral_start(), "port {p} outside [{LOW}, ephemeral)");
            }
        }
        // Released again: a server can bind it.
        TcpListener::bind(("127.0.0.1", ports[0])).expect("bind the given port");
    }
}
