//! The local event socket: a Unix stream socket that streams every event entering the
//! spool to any number of local clients, one JSON object per line
//! (`socat UNIX-CONNECT:/run/secmon/agent.sock - | jq .`).
//!
//! The spool's tap hands each stored event to [`SocketHub::publish`], which encodes it
//! once (envelope or flat format) and puts the line (shared, not copied) in each
//! client's bounded queue of `client_buffer` lines; one task per client writes its
//! queue out. When a client's queue is full, new lines are dropped for that client and
//! counted at once (in `status`); when it catches up, it gets the lines queued before
//! the gap, one drop notice with the count, then the lines after the gap. The agent
//! never waits for a client.
//!
//! Invariants: the socket never slows the spool writer (publish never blocks and
//! encodes nothing when nobody listens); every line a client loses is counted, when it
//! is lost, and reported to that client at the place of the gap; at most
//! `max_clients` clients are served.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use secmon_proto::Envelope;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{SocketFormat, SocketSection};
use crate::flat;

/// How long shutdown lets clients read what is still buffered for them.
const CLIENT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a client that half-closed its side is checked for having gone.
const HUP_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket {path}: another agent is already listening there")]
    InUse { path: PathBuf },
    #[error("socket {path}: the path exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("socket {path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: io::Error },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io { path: path.to_owned(), what, source }
}

/// What one client's task writes: a line, or a drop notice at the place of a gap.
enum Out {
    Line(Bytes),
    Lost(u64),
}

#[derive(Default)]
struct QueueState {
    out: VecDeque<Out>,
    /// Lines in `out` (notices are not counted against the bound).
    lines: usize,
    /// Lines dropped since the last one queued: reported before the next line, or
    /// when the client has caught up.
    unreported: u64,
    /// The agent is stopping: write what is queued, then end.
    closed: bool,
}

/// One client's bounded queue, filled by `publish` and emptied by its task.
struct ClientQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

impl ClientQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the spool's tap and the client tasks share.
pub(crate) struct SocketHub {
    /// The connected clients' queues; None once the agent stops.
    queues: Mutex<Option<Vec<Arc<ClientQueue>>>>,
    client_buffer: usize,
    format: SocketFormat,
    path: PathBuf,
    clients: AtomicU64,
    /// Lines lost by slow clients, summed over clients.
    dropped: AtomicU64,
    /// Connections turned away because `max_clients` were connected.
    refused: AtomicU64,
}

impl SocketHub {
    /// Encodes a stored event for the clients, if any are connected.
    pub(crate) fn publish(&self, env: &Envelope, json: &[u8]) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queues) = queues.as_ref().filter(|q| !q.is_empty()) else { return };
        let line = match self.format {
            SocketFormat::Envelope => {
                let mut line = Vec::with_capacity(json.len() + 1);
                line.extend_from_slice(json);
                line.push(b'\n');
                line
            }
            SocketFormat::Flat => match flat::to_flat(env) {
                Some(v) => to_line(&v),
                None => return,
            },
        };
        let line = Bytes::from(line);
        for q in queues {
            let mut st = q.lock();
            if st.lines >= self.client_buffer {
                st.unreported += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if st.unreported > 0 {
                let lost = std::mem::take(&mut st.unreported);
                st.out.push_back(Out::Lost(lost));
            }
            st.out.push_back(Out::Line(line.clone()));
            st.lines += 1;
            drop(st);
            q.ready.notify_one();
        }
    }

    /// A queue for a new client; None once the agent stops.
    fn subscribe(&self) -> Option<Arc<ClientQueue>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let q = Arc::new(ClientQueue { state: Mutex::default(), ready: Notify::new() });
        queues.as_mut()?.push(q.clone());
        Some(q)
    }

    fn unsubscribe(&self, q: &Arc<ClientQueue>) {
        if let Some(queues) = self.queues.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            queues.retain(|other| !Arc::ptr_eq(other, q));
        }
    }

    /// Clients get what is queued for them, then EOF.
    fn close(&self) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner).take();
        for q in queues.into_iter().flatten() {
            q.lock().closed = true;
            q.ready.notify_one();
        }
    }

    /// The `socket` part of `status`.
    pub(crate) fn status(&self) -> Value {
        json!({
            "path": self.path,
            "format": self.format.as_str(),
            "clients": self.clients.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
        })
    }

    /// The line a client gets after it lost `lost` events.
    fn loss_notice(&self, lost: u64) -> Bytes {
        let now = Utc::now();
        let v = match self.format {
            // Like an `agent`/`event_loss` event, without id or seq: it is local to this
            // client and never enters the spool.
            SocketFormat::Envelope => json!({
                "v": secmon_proto::PROTOCOL_VERSION,
                "class": "agent",
                "activity": "event_loss",
                "severity": "medium",
                "time": flat::timestamp(now),
                "payload": {"lost": lost, "reason": "socket_client"},
            }),
            SocketFormat::Flat => flat::client_loss_notice(now, lost),
        };
        Bytes::from(to_line(&v))
    }
}

fn to_line(v: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).expect("JSON value serializes");
    line.push(b'\n');
    line
}

/// A listening socket and its accept task.
pub(crate) struct SocketServer {
    pub(crate) hub: Arc<SocketHub>,
    stop: watch::Sender<bool>,
    /// Taken by `stop`.
    task: Option<JoinHandle<()>>,
}

impl SocketServer {
    /// Binds the socket (creating its directory, replacing a stale socket file),
    /// applies mode and group, and starts accepting clients.
    pub(crate) fn start(cfg: &SocketSection) -> Result<SocketServer, SocketError> {
        let path = cfg.path.clone();
        let listener = bind(&path)?;
        let bound = std::fs::metadata(&path).map_err(io_err(&path, "stat after bind"))?;
        let mode = cfg.mode_bits().expect("validated");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(&path, "chmod"))?;
        if let Some(gid) = cfg.gid().expect("validated") {
            nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| SocketError::Io { path: path.clone(), what: "chown", source: e.into() })?;
        }
        let hub = Arc::new(SocketHub {
            queues: Mutex::new(Some(Vec::new())),
            client_buffer: cfg.client_buffer,
            format: cfg.format,
            path: path.clone(),
            clients: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            hub.clone(),
            cfg.max_clients as u64,
            stop_rx,
            (bound.dev(), bound.ino()),
        ));
        tracing::info!(path = %path.display(), mode = format!("{mode:04o}"), format = cfg.format.as_str(), "event socket listening");
        Ok(SocketServer { hub, stop, task: Some(task) })
    }

    /// Stops accepting, lets clients read what is buffered (for a short while),
    /// closes them and removes the socket file. Call after the last event is spooled.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `path`, after removing a stale socket left by a crashed agent. A socket
/// someone still listens on, or a path that is not a socket, is left alone.
fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create the directory"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse { path: path.to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing a stale event socket (no one listens on it)");
                std::fs::remove_file(path).map_err(io_err(path, "remove the stale socket"))?;
            }
            Err(e) => return Err(SocketError::Io { path: path.to_owned(), what: "probe", source: e }),
        },
        Ok(_) => return Err(SocketError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SocketError::Io { path: path.to_owned(), what: "stat", source: e }),
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err(path, "bind"))?;
    std_listener.set_nonblocking(true).map_err(io_err(path, "set non-blocking"))?;
    UnixListener::from_std(std_listener).map_err(io_err(path, "register"))
}

async fn accept_loop(
    listener: UnixListener,
    hub: Arc<SocketHub>,
    max_clients: u64,
    mut stop: watch::Receiver<bool>,
    bound: (u64, u64),
) {
    let mut clients = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, do not spin.
                tracing::warn!(error = %e, "event socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if hub.clients.load(Ordering::Relaxed) >= max_clients {
            let refused = hub.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused == 1 || refused.is_power_of_two() {
                tracing::warn!(max_clients, refused, "event socket: too many clients; connection refused");
            }
            clients.spawn(refuse(stream, max_clients));
            continue;
        }
        let Some(queue) = hub.subscribe() else { break };
        hub.clients.fetch_add(1, Ordering::Relaxed);
        let guard = ClientGuard { hub: hub.clone(), queue };
        clients.spawn(serve_client(stream, guard));
    }
    drop(listener);
    hub.close();
    if tokio::time::timeout(CLIENT_DRAIN_TIMEOUT, async { while clients.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(clients = clients.len(), "event socket clients still reading at shutdown; closed");
        clients.shutdown().await;
    }
    // Remove the file only if it is still ours (not one a newer agent bound since).
    let path = &hub.path;
    if std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == bound)
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the event socket");
    }
}

/// A client's registration: counted and fed while its task lives (also when the
/// task is aborted).
struct ClientGuard {
    hub: Arc<SocketHub>,
    queue: Arc<ClientQueue>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.queue);
        self.hub.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn refuse(mut stream: UnixStream, max_clients: u64) {
    let line = to_line(&json!({
        "error": format!("too many clients: this agent serves at most {max_clients} at once"),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
    let _ = stream.shutdown().await;
}

/// Writes one client's queue out until the client leaves or the agent stops. What
/// the client sends is read and ignored, so that its leaving is noticed even when no
/// events flow.
async fn serve_client(stream: UnixStream, guard: ClientGuard) {
    let hub = guard.hub.clone();
    let queue = guard.queue.clone();
    let (mut rd, mut wr) = stream.into_split();
    let mut reading = true;
    let mut buf = [0u8; 512];
    let mut hup_check = tokio::time::interval(HUP_CHECK);
    hup_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = {
            let mut st = queue.lock();
            match st.out.pop_front() {
                Some(Out::Line(line)) => {
                    st.lines -= 1;
                    Some(line)
                }
                Some(Out::Lost(lost)) => Some(hub.loss_notice(lost)),
                // Caught up: report a loss that no later line has carried yet.
                None if st.unreported > 0 => Some(hub.loss_notice(std::mem::take(&mut st.unreported))),
                None if st.closed => break,
                None => None,
            }
        };
        if let Some(line) = next {
            if wr.write_all(&line).await.is_err() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = queue.ready.notified() => {}
            r = rd.read(&mut buf), if reading => match r {
                Ok(n) if n > 0 => {}
                // EOF: the client closed, or only shut down its sending side (socat
                // does when its stdin ends) and still reads.
                _ => {
                    if peer_gone(&wr) {
                        break;
                    }
                    reading = false;
                }
            },
            _ = hup_check.tick(), if !reading => {
                if peer_gone(&wr) {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    drop(guard);
}

/// True when the peer has closed its end entirely (both directions are shut down).
fn peer_gone(wr: &tokio::net::unix::OwnedWriteHalf) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stream: &UnixStream = wr.as_ref();
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}
