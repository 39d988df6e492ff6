//! Test kit: spawns real `nats-server` processes on ephemeral ports with temporary
//! store directories, kills them on drop, and finds the workspace's binaries.
//!
//! Invariant: never touches the shared NATS on 4222; every server here has its own
//! port and store dir, so tests run in parallel.

mod binaries;
mod nats_server;
mod ports;

pub use binaries::{ChildGuard, workspace_bin};
pub use nats_server::{NatsServer, NatsServerOptions, nats_server_binary, spawn_nats_server};

use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a server a test starts itself.
///
/// Taken below the kernel's ephemeral range, so the port cannot be handed to some
/// outgoing connection between this check and the server's bind (with ports from
/// `bind(0)` that happened under CI load), and never twice in one process, so
/// parallel tests do not pick the same one. The port is released again, which lets a
/// restarted server keep it; [`NatsServer`] also retries on another port if the bind
/// loses a race anyway.
pub fn free_port() -> u16 {
    ports::free_port()
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
