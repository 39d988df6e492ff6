//! Admin-configured scripts (`[[commands.scripts]]`) run by the `run-script` command:
//! by name only, every argument matched whole against its configured pattern, the file
//! executed directly (no shell, no PATH lookup) with a cleared environment, in its own
//! process group that is killed at the timeout, and with bounded captured output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use regex::Regex;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

use crate::config::{CommandsSection, ScriptConfig};

/// Scripts running at once; one more is refused with `busy`.
pub const MAX_CONCURRENT: usize = 4;
/// Longest part of a refused argument value quoted back in an error.
const MAX_ECHO: usize = 100;
/// The only environment a script gets besides `LANG=C`.
const SCRIPT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output readers may take after the group was killed (a descendant that
/// left the group could hold a pipe open forever).
const READER_GRACE: Duration = Duration::from_secs(1);

/// True when `s` is a valid script or argument name: `[a-z0-9_-]{1,64}`.
pub fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Compiles an argument pattern so that it must match the whole argument, whatever
/// anchors the admin wrote.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// Checks that `path` is an absolute path to a regular, executable file that neither
/// its group nor others can write (else anyone in them could change what runs as the
/// agent). Symlinks are followed: the target is what runs.
pub fn check_script_file(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(format!("{} is not executable (mode {:04o})", path.display(), mode & 0o7777));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by its group or by others (mode {:04o}); it must not be",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

struct Script {
    cfg: ScriptConfig,
    patterns: Vec<Regex>,
}

/// Why a `run-script` request was not answered with a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    BadRequest(String),
    #[error("scripts are disabled on this agent (commands.allow_scripts = false)")]
    Disabled,
    #[error("unknown script {name:?}; configured scripts: {known}")]
    UnknownScript { name: String, known: String },
    #[error("{0}")]
    BadArgument(String),
    #[error("{MAX_CONCURRENT} scripts are already running")]
    Busy,
    #[error("script {name:?} did not finish within {timeout:?}; its process group was killed")]
    Timeout { name: String, timeout: Duration, output: Box<ScriptOutput> },
    #[error("script {name:?} could not run: {reason}")]
    Failed { name: String, reason: String },
}

impl RunError {
    /// The stable error code in the reply.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::BadRequest(_) => "bad_args",
            RunError::Disabled => "scripts_disabled",
            RunError::UnknownScript { .. } => "unknown_script",
            RunError::BadArgument(_) => "bad_argument",
            RunError::Busy => "busy",
            RunError::Timeout { .. } => "timeout",
            RunError::Failed { .. } => "failed",
        }
    }
}

/// What a script produced. `exit_code` is None when a signal ended it.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Some output was beyond `max_output` and was discarded.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// The configured scripts, compiled, and the limit on how many run at once.
pub struct ScriptRunner {
    allow: bool,
    scripts: Vec<Script>,
    permits: Arc<Semaphore>,
}

impl ScriptRunner {
    /// Built from a validated config; a pattern that does not compile (it did at load)
    /// leaves its script out.
    pub fn new(section: &CommandsSection) -> Self {
        let scripts = section
            .scripts
            .iter()
            .filter_map(|s| {
                let patterns = s.args.iter().map(|a| compile_pattern(&a.pattern)).collect::<Result<_, _>>();
                match patterns {
                    Ok(patterns) => Some(Script { cfg: s.clone(), patterns }),
                    Err(e) => {
                        tracing::error!(script = %s.name, error = %e, "script left out: bad argument pattern");
                        None
                    }
                }
            })
            .collect();
        Self { allow: section.allow_scripts, scripts, permits: Arc::new(Semaphore::new(MAX_CONCURRENT)) }
    }

    /// Names of the scripts that can run (none when scripts are disabled).
    pub fn names(&self) -> Vec<String> {
        if !self.allow {
            return Vec::new();
        }
        self.scripts.iter().map(|s| s.cfg.name.clone()).collect()
    }

    /// Runs `{"name": ..., "args": [...]}` after checking it against the config.
    pub async fn run(&self, args: &serde_json::Value) -> Result<ScriptOutput, RunError> {
        if !self.allow {
            return Err(RunError::Disabled);
        }
        let name = args.get("name").and_then(|v| v.as_str()).ok_or_else(|| {
            RunError::BadRequest("args must be {\"name\": \"<script>\", \"args\": [...]}".into())
        })?;
        let values: Vec<&str> = match args.get("args") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| RunError::BadArgument(format!("args[{i}] is not a string")))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(RunError::BadRequest("args.args must be a list of strings".into())),
        };
        let Some(script) = self.scripts.iter().find(|s| s.cfg.name == name) else {
            return Err(RunError::UnknownScript {
                name: echo(name),
                known: if self.scripts.is_empty() { "none".into() } else { self.names().join(", ") },
            });
        };
        let specs = &script.cfg.args;
        if values.len() != specs.len() {
            return Err(RunError::BadArgument(format!(
                "script {name:?} takes {} argument(s) ({}), got {}",
                specs.len(),
                specs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
                values.len()
            )));
        }
        for (i, ((value, spec), re)) in values.iter().zip(specs).zip(&script.patterns).enumerate() {
            if !re.is_match(value) {
                return Err(RunError::BadArgument(format!(
                    "argument {i} ({}) {:?} does not match {}",
                    spec.name,
                    echo(value),
                    spec.pattern
                )));
            }
        }
        let _permit = self.permits.clone().try_acquire_owned().map_err(|_| RunError::Busy)?;
        let result = execute(&script.cfg, &values).await;
        match &result {
            Ok(o) => tracing::info!(
                script = %name, args = values.len(), exit_code = ?o.exit_code, duration_ms = o.duration_ms,
                truncated = o.truncated, "script ran"
            ),
            Err(RunError::Timeout { output, .. }) => tracing::warn!(
                script = %name, args = values.len(), duration_ms = output.duration_ms, "script timed out and was killed"
            ),
            Err(e) => tracing::warn!(script = %name, args = values.len(), error = %e, "script did not run"),
        }
        result
    }
}

/// At most [`MAX_ECHO`] characters of a caller-supplied value.
fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

async fn execute(cfg: &ScriptConfig, args: &[&str]) -> Result<ScriptOutput, RunError> {
    let failed = |reason: String| RunError::Failed { name: cfg.name.clone(), reason };
    // The file may have changed since the config was loaded.
    check_script_file(&cfg.path).map_err(failed)?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&cfg.path)
        .args(args)
        .env_clear()
        .env("PATH", SCRIPT_PATH)
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let pgid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
    let (out_buf, err_buf) = (SharedCapture::default(), SharedCapture::default());
    let mut out = tokio::spawn(capture(child.stdout.take().expect("piped"), cfg.max_output, out_buf.clone()));
    let mut err = tokio::spawn(capture(child.stderr.take().expect("piped"), cfg.max_output, err_buf.clone()));
    let deadline = tokio::time::Instant::now() + cfg.timeout;

    // Done when the script exited and both pipes reached EOF (no descendant holds them).
    let finished = async {
        let status = child.wait().await;
        let _ = tokio::join!(&mut out, &mut err);
        status
    };
    let outcome = tokio::time::timeout_at(deadline, finished).await;
    if outcome.is_err() {
        // Leader not reaped yet, or descendants still hold the pipes: the group id is
        // still in use, so this cannot hit an unrelated process.
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        // A descendant that left the group could keep a pipe open: bounded wait.
        // (Polled by state: a handle already awaited inside `finished` must not be again.)
        let drained = async {
            while !(out.is_finished() && err.is_finished()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(READER_GRACE, drained).await;
        out.abort();
        err.abort();
    }
    let output = |exit_code| {
        let (o, e) = (out_buf.take(), err_buf.take());
        ScriptOutput {
            exit_code,
            truncated: o.truncated || e.truncated,
            stdout: String::from_utf8_lossy(&o.bytes).into_owned(),
            stderr: String::from_utf8_lossy(&e.bytes).into_owned(),
            duration_ms: started.elapsed().as_millis() as u64,
        }
    };
    match outcome {
        Ok(status) => Ok(output(status.map_err(|e| failed(e.to_string()))?.code())),
        Err(_) => Err(RunError::Timeout {
            name: cfg.name.clone(),
            timeout: cfg.timeout,
            output: Box::new(output(None)),
        }),
    }
}

/// Output captured so far; shared so that what was read survives the reader's abort.
#[derive(Default, Clone)]
struct SharedCapture(Arc<Mutex<Captured>>);

impl SharedCapture {
    fn take(&self) -> Captured {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads `r` to EOF, keeping the first `max` bytes; the rest is read and dropped so
/// the script never blocks on a full pipe.
async fn capture(mut r: impl AsyncRead + Unpin, max: usize, into: SharedCapture) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.0.lock().unwrap_or_else(PoisonError::into_inner);
                let room = max.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    c.truncated = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_whole_match_patterns() {
        assert!(is_token("restart-nginx_2") && !is_token("") && !is_token("A") && !is_token(&"a".repeat(65)));
        let re = compile_pattern("[a-z0-9.-]{1,253}").unwrap();
        assert!(re.is_match("example.com"));
        for bad in ["example.com; rm -rf /", "$(id)", "a\nb", "`id`", ""] {
            assert!(!re.is_match(bad), "{bad:?}");
        }
        // An alternation cannot escape the anchors.
        assert!(!compile_pattern("a|b").unwrap().is_match("ab"));
        assert!(compile_pattern("(").is_err());
    }

    #[test]
    fn echo_is_bounded() {
        assert_eq!(echo("abc"), "abc");
        assert_eq!(echo(&"é".repeat(300)).chars().count(), MAX_ECHO + 1);
    }
}
