//! Child processes that `secmon up` and `secmon bench` supervise: spawned in their
//! own process group (so a terminal's Ctrl-C reaches only us and we choose the stop
//! order), with a parent-death signal (so they do not outlive a killed parent), their
//! output prefixed and forwarded, and a bounded stop: SIGTERM, wait, then SIGKILL.

use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// What to do with a child's stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// Forward each line to our stdout/stderr, prefixed with the child's label.
    Forward,
    /// Discard (the child writes its own log file).
    Discard,
}

/// A supervised child process. Killed (SIGKILL) on drop as a last resort; the
/// orderly path is [`ChildProc::stop`].
pub struct ChildProc {
    pid: u32,
    child: Child,
    exit: Option<ExitStatus>,
    forwarders: Vec<JoinHandle<()>>,
}

impl ChildProc {
    /// Spawns `cmd`. `label` names the child in forwarded lines and messages.
    pub fn spawn(
        label: &str,
        mut cmd: Command,
        output: Output,
        death_signal: Signal,
    ) -> anyhow::Result<Self> {
        let (out, err) = match output {
            Output::Forward => (Stdio::piped(), Stdio::piped()),
            Output::Discard => (Stdio::null(), Stdio::null()),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true).process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes the
        // async-signal-safe prctl(2) syscall.
        unsafe {
            cmd.pre_exec(move || nix::sys::prctl::set_pdeathsig(death_signal).map_err(std::io::Error::from));
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start {label}"))?;
        let pid = child.id().context("child has no pid")?;
        let mut forwarders = Vec::new();
        let prefix = format!("{label:<8}| ");
        if let Some(o) = child.stdout.take() {
            forwarders.push(tokio::spawn(forward(o, prefix.clone(), false)));
        }
        if let Some(e) = child.stderr.take() {
            forwarders.push(tokio::spawn(forward(e, prefix, true)));
        }
        Ok(Self { pid, child, exit: None, forwarders })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit. Cancel-safe; returns the same status again
    /// once it has exited.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        let st = match self.child.wait().await {
            Ok(st) => st,
            // Only fails if the child was already reaped elsewhere; treat as gone.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
        };
        self.exit = Some(st);
        st
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exit = Some(st);
        }
        self.exit
    }

    /// SIGTERM, then up to `grace` for the child to exit, then SIGKILL. Returns the
    /// exit status and whether it had to be killed. Forwarded output is drained.
    pub async fn stop(&mut self, grace: Duration) -> (ExitStatus, bool) {
        if let Some(st) = self.try_exit() {
            self.drain().await;
            return (st, false);
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let (st, killed) = match tokio::time::timeout(grace, self.wait()).await {
            Ok(st) => (st, false),
            Err(_) => (self.kill().await, true),
        };
        self.drain().await;
        (st, killed)
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.try_exit() {
            return st;
        }
        let _ = self.child.start_kill();
        self.wait().await
    }

    /// Waits (bounded) for the forwarders to reach the end of the child's output, so
    /// its last lines are printed before ours.
    async fn drain(&mut self) {
        for f in self.forwarders.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), f).await;
        }
    }
}

/// Copies lines from a child's pipe to ours with a prefix. Reads raw bytes so that
/// invalid UTF-8 never stops the copy (a child blocked on a full pipe would hang).
async fn forward(pipe: impl AsyncRead + Unpin, prefix: String, to_stderr: bool) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                // A closed stdout/stderr on our side must not stop the drain.
                if to_stderr {
                    let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
                } else {
                    let _ = writeln!(std::io::stdout().lock(), "{prefix}{line}");
                }
            }
        }
    }
}

/// Human form of an exit status: `exit code 1` or `signal 9 (SIGKILL)`.
pub fn describe(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("signal {s} ({sig})"),
            Err(_) => format!("signal {s}"),
        },
        _ => st.to_string(),
    }
}
