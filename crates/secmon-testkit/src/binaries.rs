use std::path::PathBuf;
use std::process::Child;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of a binary built by this workspace (`target/<profile>/<name>`), found next
/// to the running test executable. Panics with the fix when it has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Test executables live in target/<profile>/deps/.
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// A child process that is SIGKILLed on drop, so a failing test leaves nothing behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.0 {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits for exit up to `timeout`; returns the exit status, or None on timeout.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let c = self.0.as_mut()?;
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
