//! A socket client for tests: a thread reads JSON lines from a real Unix socket and
//! hands them over a channel, so async tests can wait for them with a deadline.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// What the reader thread saw: a parsed line, or the end of the stream.
#[derive(Debug)]
pub enum Line {
    Json(Value),
    Eof,
}

pub struct Lines {
    rx: mpsc::UnboundedReceiver<Line>,
    /// The same socket, to close it from the test.
    stream: UnixStream,
    /// Everything received so far, for failure messages.
    pub seen: Vec<Value>,
    pub eof: bool,
}

/// Connects to the agent's socket (not reading yet).
pub fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()))
}

impl Lines {
    /// Starts reading `stream` on a thread.
    pub fn read(stream: UnixStream) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        let ours = stream.try_clone().expect("clone the socket");
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = String::new();
            loop {
                buf.clear();
                match r.read_line(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Line::Eof);
                        return;
                    }
                    Ok(_) => {
                        assert!(buf.ends_with('\n'), "line without newline: {buf:?}");
                        let v: Value = serde_json::from_str(&buf)
                            .unwrap_or_else(|e| panic!("socket line is not JSON ({e}): {buf:?}"));
                        if tx.send(Line::Json(v)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Lines { rx, stream: ours, seen: Vec::new(), eof: false }
    }

    pub fn connect(path: &Path) -> Lines {
        Lines::read(connect(path))
    }

    /// The next line, None at EOF; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        if self.eof {
            return None;
        }
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(Line::Json(v))) => {
                self.seen.push(v.clone());
                Some(v)
            }
            Ok(Some(Line::Eof)) | Ok(None) => {
                self.eof = true;
                None
            }
            Err(_) => panic!("no line within {timeout:?}; last lines: {:?}", self.tail()),
        }
    }

    /// Reads lines until one satisfies `pred` (returned); panics at EOF or after `timeout`.
    pub async fn until(&mut self, timeout: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left.max(Duration::from_millis(1))).await {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => panic!("EOF before the expected line; last lines: {:?}", self.tail()),
            }
        }
    }

    /// Waits for the end of the stream, collecting what comes before it.
    pub async fn until_eof(&mut self, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.next(timeout).await {
            out.push(v);
        }
        out
    }

    /// Leaves: closes the connection both ways (as a client process exiting does).
    pub fn close(self) {}

    /// The last lines received, events shortened to their seq, class and activity.
    fn tail(&self) -> Vec<Value> {
        self.seen[self.seen.len().saturating_sub(3)..]
            .iter()
            .map(|v| match v.get("seq") {
                Some(seq) => serde_json::json!({"seq": seq, "class": v["class"], "activity": v["activity"]}),
                None => v.clone(),
            })
            .collect()
    }
}

/// The `seq` of an envelope line (None for a local notice).
pub fn seq(v: &Value) -> Option<u64> {
    v.get("seq").and_then(Value::as_u64)
}

pub fn is_drop_notice(v: &Value) -> bool {
    v["activity"] == "event_loss" && v["payload"]["reason"] == "socket_client" && v.get("seq").is_none()
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
