//! Test kit: spawns real `nats-server` processes on ephemeral ports with temporary
//! store directories, kills them on drop, and finds the workspace's binaries.
//!
//! Invariant: never touches the shared NATS on 4222; every server here has its own
//! port and store dir, so tests run in parallel.

mod binaries;
mod nats_server;

pub use binaries::{ChildGuard, workspace_bin};
pub use nats_server::{NatsServer, NatsServerOptions};

use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the small race is acceptable
/// in tests and lets a restarted server keep its port).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when running under CI (`CI=true`): a test that cannot run there must fail,
/// never skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// For tests that need root: returns false (and says why on stderr) when not root
/// outside CI, so the caller can return early; panics under CI so it never silently
/// skips there.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test} needs root and CI=true: run the suite as root");
    }
    eprintln!("SKIPPED {test}: needs root (runs in CI as root)");
    false
}
