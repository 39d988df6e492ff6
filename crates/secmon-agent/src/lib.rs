//! The secmon host agent as a library: [`Agent::start`] gives an [`AgentHandle`],
//! whose [`Emitter`] is the one entry every sensor uses.
//!
//! Data path: `Emitter::emit` → bounded channel → spool writer (assigns the sequence
//! number, signs the envelope with the NKey of `[nats] credentials_file` when there is
//! one, appends to the on-disk spool, hands the event to the local socket) →
//! publisher (JetStream, in order, message id = event id). Control path: registration
//! on every (re)connect, heartbeats, commands on `<prefix>.cmd.<id>`, shutdown notice.
//!
//! Local-only mode (`[nats] url = ""`): no uplink at all; the spool still gives ids
//! and sequence numbers, the socket still streams, and a drain task acknowledges what
//! was written so the spool never fills.
//!
//! Invariants: every event goes through the spool; the spool writer is the only
//! place that gives sequence numbers; the agent publishes only under
//! `<prefix>.agent.<its id>.` and subscribes only to its command subject and its own
//! inbox prefix.

pub mod commands;
pub mod config;
pub mod default_config;
pub mod enroll;
mod fim_sensor;
pub mod flat;
pub mod host_facts;
pub mod identity;
pub mod logs;
mod pipeline;
mod publisher;
pub mod scripts;
pub mod socket;
pub mod spool;
mod uplink;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secmon_config::ConfigError;
use secmon_proto::payload::AgentLifecycle;
use secmon_proto::{AgentId, EventClass, PROTOCOL_VERSION, Severity, ShutdownNotice, SpoolStats, Subjects};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use config::AgentConfig;
pub use identity::Identity;
pub use pipeline::{CHANNEL_CAPACITY, Emitter};
pub use spool::EventDraft;

/// This agent's version, sent at registration and in `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long shutdown lets the publisher empty the spool before it stops anyway.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Applies a new `log.level` to the running process (the binary owns the subscriber).
pub type LogLevelHook = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What [`Agent::start`] needs besides the config.
#[derive(Default, Clone)]
pub struct AgentOptions {
    /// File `reload-config` and SIGHUP read again; `None` reloads defaults plus
    /// `SECMON_*` overrides.
    pub config_path: Option<PathBuf>,
    /// Names of the sensors running, for registration and `status`.
    pub sensors: Vec<String>,
    /// Makes `log.level` live-reloadable; without it, a change needs a restart.
    pub log_level_hook: Option<LogLevelHook>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// The creds file holds the key events are signed with; the message never has the seed.
    #[error("nats.credentials_file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
}

/// The NKey of `[nats] credentials_file`, which signs every event; None (events go
/// unsigned, as the local mode accepts) without a creds file.
fn signing_key(config: &AgentConfig) -> Result<Option<nkeys::KeyPair>, AgentError> {
    let Some(path) = &config.nats.credentials_file else { return Ok(None) };
    let err = |reason: String| AgentError::Credentials { path: path.clone(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let (_jwt, key) = secmon_nats::parse_creds(&text).map_err(err)?;
    Ok(Some(key))
}

/// Why a reload was refused; the running config is kept.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("log.level: {0}")]
    LogLevel(String),
}

/// The keys a reload found changed, and those of them that only apply after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReloadOutcome {
    pub changed: Vec<String>,
    pub restart_required: Vec<String>,
}

/// State shared by the agent's tasks.
pub(crate) struct Shared {
    pub(crate) agent_id: AgentId,
    pub(crate) name: String,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) started: Instant,
    pub(crate) subjects: Subjects,
    /// The current NATS connection, if any.
    pub(crate) conns: uplink::Conns,
    /// The config as started; keys that need a restart are read from here.
    pub(crate) start_config: AgentConfig,
    /// The config in effect: the start config plus live-applied reloads.
    effective: Mutex<AgentConfig>,
    config_path: Option<PathBuf>,
    pub(crate) heartbeat_interval: watch::Sender<Duration>,
    /// Asks the control task to register again (after a reload).
    pub(crate) reregister: Notify,
    pub(crate) spool: pipeline::SharedSpool,
    pub(crate) emitter: Emitter,
    sensors: Vec<String>,
    /// The local event socket, when `[socket] path` is set.
    socket: Option<Arc<socket::SocketHub>>,
    fim: fim_sensor::FimSlot,
    logs: logs::LogSlot,
    /// `[nats] url` is empty: no uplink.
    local_only: bool,
    log_level_hook: Option<LogLevelHook>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Shared {
    fn effective(&self) -> AgentConfig {
        self.effective.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The sensors running now, for registration and `status`.
    pub(crate) fn sensors(&self) -> Vec<String> {
        let mut s = self.sensors.clone();
        if self.fim.running() {
            s.push("fim".into());
        }
        if self.logs.running() {
            s.push("logs".into());
        }
        s
    }

    pub(crate) fn config_digest(&self) -> String {
        secmon_config::digest(&self.effective())
    }

    fn lifecycle(&self, activity: &str, detail: Option<String>) -> EventDraft {
        let payload =
            AgentLifecycle { agent_version: VERSION.into(), config_digest: self.config_digest(), detail };
        EventDraft::now(
            EventClass::Agent,
            activity,
            Severity::Info,
            serde_json::to_value(payload).expect("payload serializes"),
        )
    }

    pub(crate) fn status(&self) -> Value {
        let spool = self.spool.stats();
        json!({
            "agent_id": self.agent_id,
            "name": self.name,
            "version": VERSION,
            "started_at": self.started_at,
            "uptime_secs": self.started.elapsed().as_secs(),
            "sensors": self.sensors(),
            "queues": {
                "channel_depth": self.emitter.channel_depth(),
                "channel_capacity": CHANNEL_CAPACITY,
                "channel_dropped": self.emitter.dropped(),
                "spool_depth": spool.depth,
                "spool_bytes": spool.bytes,
                "spool_dropped": spool.dropped,
            },
            "config_digest": self.config_digest(),
            "heartbeat_interval_ms": self.heartbeat_interval.borrow().as_millis() as u64,
            "nats": {
                "connected": self.conns.borrow().as_ref().is_some_and(uplink::Conn::connected),
                "local_only": self.local_only,
            },
            "socket": self.socket.as_ref().map_or(Value::Null, |s| s.status()),
            "fim": self.fim.status(),
            "logs": self.logs.status(),
            "last_seq": self.spool.last_seq(),
        })
    }

    /// Reads the config file again and applies what can change live; on any error
    /// the running config stays as it was.
    pub(crate) async fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = self.config_path.clone();
        let new: AgentConfig = tokio::task::spawn_blocking(move || secmon_config::load(path.as_deref()))
            .await
            .expect("config load panicked")?;
        let old = self.effective();
        let changed = old.changed_keys(&new);
        let mut next = old.clone();
        let mut restart_required = Vec::new();
        for key in &changed {
            match key.as_str() {
                "agent.heartbeat_interval" => next.agent.heartbeat_interval = new.agent.heartbeat_interval,
                "log.level" if self.log_level_hook.is_some() => next.log.level = new.log.level.clone(),
                _ => restart_required.push(key.clone()),
            }
        }
        if next.log.level != old.log.level {
            let hook = self.log_level_hook.as_ref().expect("checked above");
            hook(&next.log.level).map_err(ReloadError::LogLevel)?;
        }
        *self.effective.lock().unwrap_or_else(PoisonError::into_inner) = next.clone();
        self.heartbeat_interval.send_if_modified(|d| {
            let modified = *d != next.agent.heartbeat_interval;
            *d = next.agent.heartbeat_interval;
            modified
        });
        let outcome = ReloadOutcome { changed, restart_required };
        tracing::info!(changed = ?outcome.changed, restart_required = ?outcome.restart_required, "configuration reloaded");
        if !outcome.changed.is_empty() {
            let detail = format!("changed: {}", outcome.changed.join(", "));
            self.emitter
                .emit_waiting(self.lifecycle("config_reloaded", Some(detail)), Duration::from_secs(1))
                .await;
            // The manager judges heartbeat timeouts by what registration told it.
            self.reregister.notify_one();
        }
        Ok(outcome)
    }
}

/// Starts agents.
pub struct Agent;

impl Agent {
    /// Creates or loads the identity, opens the spool and the event socket, starts
    /// the NATS link (which keeps retrying in the background: the agent runs and
    /// spools while NATS is down; none in local-only mode) and the agent's tasks,
    /// emits `agent`/`started`, then starts file integrity monitoring when configured.
    pub async fn start(config: AgentConfig, opts: AgentOptions) -> Result<AgentHandle, AgentError> {
        let state_dir = config.agent.state_dir.clone();
        let local_only = config.local_only();
        let (identity, lock, mut spool) = tokio::task::spawn_blocking({
            let config = config.clone();
            move || -> Result<_, AgentError> {
                let identity = Identity::load_or_create(&state_dir)?;
                let lock = identity::StateLock::acquire(&state_dir)?;
                let signer = signing_key(&config)?;
                let mut spool = spool::Spool::open(
                    &state_dir.join("spool"),
                    identity.agent_id.clone(),
                    spool::SpoolOptions {
                        max_bytes: config.spool.max_bytes,
                        segment_bytes: config.spool.segment_bytes,
                    },
                )?;
                if let (Some(key), Some(e)) = (&signer, &identity.enrolled)
                    && key.public_key() != e.public_key
                {
                    tracing::error!(
                        creds_key = %key.public_key(),
                        enrolled_key = %e.public_key,
                        "nats.credentials_file holds another key than the one this agent enrolled with; \
                         the manager will reject its events (enroll again with --force)"
                    );
                }
                match signer {
                    Some(key) => {
                        tracing::info!(public_key = %key.public_key(), "events are signed with the key of nats.credentials_file");
                        spool.set_signer(key);
                    }
                    None => tracing::warn!("no nats.credentials_file: events are not signed (local mode); a manager that requires signatures rejects them"),
                }
                Ok((identity, lock, spool))
            }
        })
        .await
        .expect("agent start panicked")?;
        let agent_id = identity.agent_id.clone();
        let name = config.effective_name();
        let subjects = Subjects::new(config.nats.subject_prefix.clone());
        spool.set_auto_ack(local_only);
        let socket_server = if config.socket.path.as_os_str().is_empty() {
            None
        } else {
            let server = socket::SocketServer::start(&config.socket)?;
            let hub = server.hub.clone();
            spool.set_tap(Box::new(move |env, json| hub.publish(env, json)));
            Some(server)
        };
        // The link keeps trying in the background: the agent runs, and spools, while
        // NATS is down.
        let (conn_tx, conns) = watch::channel(None);
        let (stop_link, link_rx) = watch::channel(false);
        let link = if local_only {
            tracing::warn!(
                socket = %config.socket.path.display(),
                "LOCAL-ONLY MODE: [nats] url is empty, so there is no NATS uplink (no registration, \
                 heartbeats or commands); events are numbered in the spool, streamed to the local \
                 socket, and then discarded"
            );
            if socket_server.is_none() {
                tracing::warn!("local-only mode without [socket] path: events are recorded nowhere");
            }
            drop(conn_tx);
            None
        } else {
            Some(tokio::spawn(uplink::run_connection(
                config.nats.clone(),
                format!("secmon-agent {name}"),
                Subjects::agent_inbox_prefix(&agent_id),
                conn_tx,
                link_rx,
            )))
        };

        let (emitter, rx) = Emitter::new();
        let spool = pipeline::SharedSpool::new(spool);
        let wake = Arc::new(Notify::new());
        let (heartbeat_interval, _) = watch::channel(config.agent.heartbeat_interval);
        let shared = Arc::new(Shared {
            agent_id: agent_id.clone(),
            name: name.clone(),
            started_at: Utc::now(),
            started: Instant::now(),
            subjects: subjects.clone(),
            conns: conns.clone(),
            start_config: config.clone(),
            effective: Mutex::new(config.clone()),
            config_path: opts.config_path,
            heartbeat_interval,
            reregister: Notify::new(),
            spool: spool.clone(),
            emitter: emitter.clone(),
            sensors: opts.sensors,
            socket: socket_server.as_ref().map(|s| s.hub.clone()),
            fim: fim_sensor::FimSlot::new(),
            logs: logs::LogSlot::new(),
            local_only,
            log_level_hook: opts.log_level_hook,
            reload_lock: tokio::sync::Mutex::new(()),
        });

        let (stop_control, control_rx) = watch::channel(false);
        let (stop_publisher, publisher_rx) = watch::channel(false);
        let writer =
            tokio::spawn(pipeline::run_writer(rx, spool.clone(), emitter.dropped_counter(), wake.clone()));
        let publisher = if local_only {
            tokio::spawn(run_local_drain(spool, wake, publisher_rx))
        } else {
            tokio::spawn(
                publisher::Publisher {
                    conns: conns.clone(),
                    spool,
                    subjects,
                    agent_id: agent_id.clone(),
                    wake,
                    ack_timeout: config.nats.request_timeout,
                    backoff_base: config.nats.reconnect_base_delay,
                    backoff_max: config.nats.reconnect_max_delay,
                    stop: publisher_rx,
                }
                .run(),
            )
        };
        tracing::info!(agent_id = %agent_id, name = %name, version = VERSION, nats = %config.nats.url, "agent started");
        let started = shared.lifecycle("started", None);
        shared.emitter.emit_waiting(started, Duration::from_secs(1)).await;
        // Started is in the spool (and past the socket) before start returns.
        shared.emitter.flush(Duration::from_secs(2)).await;
        // Before registration, so the sensors it lists include FIM.
        shared.fim.start(&config, &shared.emitter, shared.config_digest()).await;
        shared.logs.start(&config, &shared.emitter);
        let (control, commands) = if local_only {
            (None, None)
        } else {
            (
                Some(tokio::spawn(uplink::run_control(shared.clone(), conns.clone(), control_rx.clone()))),
                Some(tokio::spawn(commands::run_commands(shared.clone(), conns, control_rx))),
            )
        };
        Ok(AgentHandle {
            shared,
            stop_control,
            stop_publisher,
            stop_link,
            socket: socket_server,
            tasks: Some(Tasks { writer, publisher, control, commands, link }),
            _lock: lock,
        })
    }
}

/// Local-only mode: acknowledges what the writer spooled (nothing publishes it), so
/// the spool is empty between bursts; within a burst, the spool's auto-ack keeps it
/// from filling.
async fn run_local_drain(spool: pipeline::SharedSpool, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = spool.run(|s| s.ack_all()).await {
            tracing::error!(error = %e, "local-only mode: cannot drain the spool");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let drained = spool
        .run(|s| {
            s.ack_all()?;
            s.persist_cursor()
        })
        .await;
    if let Err(e) = drained {
        tracing::error!(error = %e, "local-only mode: cannot persist the spool cursor");
    }
}

struct Tasks {
    writer: JoinHandle<()>,
    /// The JetStream publisher, or the local drain in local-only mode.
    publisher: JoinHandle<()>,
    /// None in local-only mode, as are `commands` and `link`.
    control: Option<JoinHandle<()>>,
    commands: Option<JoinHandle<()>>,
    link: Option<JoinHandle<()>>,
}

/// A running agent. Dropping it aborts its tasks without the shutdown sequence (as a
/// crash would, short of the process dying); call [`AgentHandle::shutdown`] to stop
/// cleanly.
pub struct AgentHandle {
    shared: Arc<Shared>,
    stop_control: watch::Sender<bool>,
    stop_publisher: watch::Sender<bool>,
    stop_link: watch::Sender<bool>,
    socket: Option<socket::SocketServer>,
    tasks: Option<Tasks>,
    _lock: identity::StateLock,
}

impl AgentHandle {
    pub fn agent_id(&self) -> &AgentId {
        &self.shared.agent_id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A clone of the event entry point, for a sensor to keep.
    pub fn emitter(&self) -> Emitter {
        self.shared.emitter.clone()
    }

    /// Queues an event (see [`Emitter::emit`]).
    pub fn emit(
        &self,
        class: EventClass,
        activity: impl Into<String>,
        severity: Severity,
        payload: Value,
    ) -> bool {
        self.shared.emitter.emit(class, activity, severity, payload)
    }

    /// What the `status` command answers.
    pub fn status(&self) -> Value {
        self.shared.status()
    }

    pub fn spool_stats(&self) -> SpoolStats {
        self.shared.spool.stats()
    }

    /// Sequence number of the last event in the spool.
    pub fn last_seq(&self) -> u64 {
        self.shared.spool.last_seq()
    }

    pub fn config_digest(&self) -> String {
        self.shared.config_digest()
    }

    /// Reloads the config file (as `reload-config` and SIGHUP do).
    pub async fn reload_config(&self) -> Result<ReloadOutcome, ReloadError> {
        self.shared.reload().await
    }

    /// Stops cleanly: stops heartbeats and commands, stops file integrity monitoring
    /// (its last events are spooled), emits `agent`/`stopped`, lets the publisher
    /// empty the spool for up to [`SHUTDOWN_FLUSH_TIMEOUT`], sends the shutdown notice,
    /// closes the spool, then the event socket (clients get the last events, then
    /// EOF). What was not published stays in the spool for the next start.
    pub async fn shutdown(mut self, reason: &str) {
        let tasks = self.tasks.take().expect("tasks present until shutdown");
        let shared = self.shared.clone();
        tracing::info!(reason, "agent stopping");
        let _ = self.stop_control.send(true);
        for t in [tasks.control, tasks.commands].into_iter().flatten() {
            let _ = t.await;
        }
        shared.fim.stop().await;
        shared.logs.stop().await;

        let stopped = shared.lifecycle("stopped", Some(reason.to_owned()));
        shared.emitter.emit_waiting(stopped, Duration::from_secs(1)).await;
        shared.emitter.flush(Duration::from_secs(2)).await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        while shared.spool.stats().depth > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = shared.spool.stats().depth;
        let _ = self.stop_publisher.send(true);
        let _ = tasks.publisher.await;
        if left > 0 {
            tracing::warn!(
                events = left,
                "events left unpublished in the spool; they go out after the next start"
            );
        }

        if !shared.local_only {
            send_shutdown_notice(&shared, reason).await;
        }
        if !shared.emitter.stop_writer(Duration::from_secs(5)).await {
            tracing::error!("spool writer did not stop in time");
        }
        let _ = tasks.writer.await;
        if let Some(socket) = self.socket.take() {
            socket.stop().await;
        }
        let _ = self.stop_link.send(true);
        if let Some(link) = tasks.link {
            let _ = link.await;
        }
        tracing::info!("agent stopped");
    }
}

async fn send_shutdown_notice(shared: &Shared, reason: &str) {
    let Some(conn) = shared.conns.borrow().clone().filter(uplink::Conn::connected) else {
        tracing::warn!("not connected to NATS; shutdown notice not sent");
        return;
    };
    let notice = ShutdownNotice {
        v: PROTOCOL_VERSION,
        agent_id: shared.agent_id.clone(),
        time: Utc::now(),
        reason: reason.to_owned(),
        last_seq: shared.spool.last_seq(),
    };
    let payload = serde_json::to_vec(&notice).expect("notice serializes");
    let subject = shared.subjects.shutdown(&shared.agent_id);
    let sent = async {
        conn.client.publish(subject, payload.into()).await.map_err(|e| e.to_string())?;
        conn.client.flush().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(1), sent).await {
        Ok(Ok(())) => tracing::info!("shutdown notice sent"),
        Ok(Err(e)) => tracing::warn!(error = %e, "shutdown notice not sent"),
        Err(_) => tracing::warn!("shutdown notice not confirmed within 1s"),
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(t) = self.tasks.take() {
            for task in [t.control, t.commands, t.link].into_iter().flatten() {
                task.abort();
            }
            t.publisher.abort();
            t.writer.abort();
        }
    }
}
