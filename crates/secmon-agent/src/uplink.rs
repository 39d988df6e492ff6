//! The NATS link: one client per connection, registration on every connection, then
//! heartbeats at the configured interval.
//!
//! The agent does not use the client's automatic reconnect. A reconnecting client
//! sends, on the new connection, messages that were still queued in it when the old
//! one broke, while earlier ones died in the old connection's buffers: events would
//! reach the stream out of order. So each connection gets its own client
//! (`secmon_nats::connect_once`); when it breaks, it is dropped with everything queued
//! in it, and the publisher resends from its cursor on the next one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use chrono::Utc;
use secmon_nats::NatsConfig;
use secmon_proto::{
    DEFAULT_MAX_EVENT_BYTES, Heartbeat, PROTOCOL_VERSION, RegisterReply, Registration, decode,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Shared;

/// How often the connection's state is checked (the client's event callback belongs
/// to `secmon_nats`).
const LINK_POLL: Duration = Duration::from_millis(50);

/// One NATS connection. Everything that depends on a connection (subscriptions,
/// registration, the publisher's window of pending acknowledgements) lives and dies
/// with it.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    /// Counts connections since start.
    pub(crate) id: u64,
}

impl Conn {
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

/// The current connection, if any.
pub(crate) type Conns = watch::Receiver<Option<Conn>>;

/// True while `conn` is the current connection and still up.
pub(crate) fn is_current(conns: &Conns, conn: &Conn) -> bool {
    conns.borrow().as_ref().is_some_and(|c| c.id == conn.id) && conn.connected()
}

/// Waits for a connection; None when `stop` fires.
pub(crate) async fn wait_conn(conns: &mut Conns, stop: &mut watch::Receiver<bool>) -> Option<Conn> {
    loop {
        if *stop.borrow() {
            return None;
        }
        if let Some(c) = conns.borrow_and_update().clone().filter(Conn::connected) {
            return Some(c);
        }
        tokio::select! {
            changed = conns.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = stop.changed() => return None,
            // A connection that broke is replaced within a poll; look again then.
            _ = tokio::time::sleep(LINK_POLL) => {}
        }
    }
}

/// Sleeps `d`; returns true when `stop` fired first.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Keeps a connection: connects (with backoff and jitter between attempts),
/// publishes it on `tx`, and when it breaks, withdraws it and connects again.
pub(crate) async fn run_connection(
    cfg: NatsConfig,
    client_name: String,
    inbox_prefix: String,
    tx: watch::Sender<Option<Conn>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt = 0;
    let mut id = 0;
    loop {
        let connected = tokio::select! {
            r = secmon_nats::connect_once(&cfg, &client_name, Some(inbox_prefix.clone())) => r,
            _ = stop.changed() => break,
        };
        match connected {
            Ok(client) => {
                attempt = 0;
                id += 1;
                tracing::info!(connection = id, url = %cfg.url, "NATS connection up");
                let conn = Conn { client, id };
                tx.send_replace(Some(conn.clone()));
                let mut poll = tokio::time::interval(LINK_POLL);
                poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = poll.tick() => if !conn.connected() { break },
                        _ = stop.changed() => {
                            tx.send_replace(None);
                            return;
                        }
                    }
                }
                tx.send_replace(None);
                tracing::warn!(connection = id, "NATS connection lost; events wait in the spool");
            }
            Err(e) => {
                attempt += 1;
                let d = secmon_nats::backoff(attempt, cfg.reconnect_base_delay, cfg.reconnect_max_delay);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(error = %e, attempt, retry_in = ?d, "cannot connect to NATS; events wait in the spool");
                } else {
                    tracing::debug!(error = %e, attempt, retry_in = ?d, "cannot connect to NATS");
                }
                if sleep_or_stop(d, &mut stop).await {
                    break;
                }
            }
        }
    }
    tx.send_replace(None);
}

#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("registration request failed: {0}")]
    Request(#[from] async_nats::RequestError),
    #[error("bad registration reply: {0}")]
    Reply(#[from] secmon_proto::DecodeError),
}

enum Next {
    /// Register again (new connection, or asked to).
    Register,
    Stopped,
}

/// Registers on every connection, then sends heartbeats until the connection
/// breaks, a re-registration is asked for, or `stop` fires.
pub(crate) async fn run_control(shared: Arc<Shared>, mut conns: Conns, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(conn) = wait_conn(&mut conns, &mut stop).await else { return };
        match register_until_answered(&shared, &conn, &conns, &mut stop).await {
            Some(true) => {}
            Some(false) => continue, // The connection broke first.
            None => return,
        }
        if let Next::Stopped = heartbeat(&shared, &conn, &mut conns, &mut stop).await {
            return;
        }
    }
}

/// Some(true) once accepted; Some(false) when the connection broke; None when stopped.
async fn register_until_answered(
    shared: &Shared,
    conn: &Conn,
    conns: &Conns,
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let nats = &shared.start_config.nats;
    let mut attempt = 0;
    loop {
        if !is_current(conns, conn) {
            return Some(false);
        }
        let answer = tokio::select! {
            r = register(shared, conn) => r,
            _ = stop.changed() => return None,
        };
        let delay = match answer {
            Ok(reply) if reply.accepted => {
                tracing::info!(status = %reply.status, "registered with the manager");
                return Some(true);
            }
            Ok(reply) => {
                tracing::error!(
                    reason = reply.reason.as_deref().unwrap_or("none given"),
                    status = %reply.status,
                    "REGISTRATION REFUSED by the manager; events are still spooled and published, retrying slowly"
                );
                nats.reconnect_max_delay
            }
            Err(e) => {
                attempt += 1;
                let d = secmon_nats::backoff(attempt, nats.reconnect_base_delay, nats.reconnect_max_delay);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(error = %e, attempt, retry_in = ?d, "registration not answered; retrying");
                } else {
                    tracing::debug!(error = %e, attempt, retry_in = ?d, "registration not answered");
                }
                d
            }
        };
        if sleep_or_stop(delay, stop).await {
            return None;
        }
    }
}

async fn register(shared: &Shared, conn: &Conn) -> Result<RegisterReply, RegisterError> {
    let reg = Registration {
        v: PROTOCOL_VERSION,
        agent_id: shared.agent_id.clone(),
        name: shared.name.clone(),
        agent_version: crate::VERSION.into(),
        host: crate::host_facts::collect(),
        started_at: shared.started_at,
        sensors: shared.sensors(),
        config_digest: shared.config_digest(),
        heartbeat_interval_ms: shared.heartbeat_interval.borrow().as_millis() as u64,
        last_seq: shared.spool.last_seq(),
    };
    let payload = serde_json::to_vec(&reg).expect("registration serializes");
    let msg = conn.client.request(shared.subjects.register(&shared.agent_id), payload.into()).await?;
    Ok(decode::<RegisterReply>(&msg.payload, DEFAULT_MAX_EVENT_BYTES)?)
}

/// Sends a heartbeat at once, then every interval (re-read live).
async fn heartbeat(
    shared: &Shared,
    conn: &Conn,
    conns: &mut Conns,
    stop: &mut watch::Receiver<bool>,
) -> Next {
    let mut interval_rx = shared.heartbeat_interval.subscribe();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                if !is_current(conns, conn) {
                    return Next::Register;
                }
                send_heartbeat(shared, conn).await;
                next = Instant::now() + *interval_rx.borrow();
            }
            _ = conns.changed() => return Next::Register,
            changed = interval_rx.changed() => {
                if changed.is_ok() {
                    next = Instant::now() + *interval_rx.borrow_and_update();
                }
            }
            _ = shared.reregister.notified() => return Next::Register,
            _ = stop.changed() => return Next::Stopped,
        }
    }
}

async fn send_heartbeat(shared: &Shared, conn: &Conn) {
    let hb = Heartbeat {
        v: PROTOCOL_VERSION,
        agent_id: shared.agent_id.clone(),
        time: Utc::now(),
        uptime_secs: shared.started.elapsed().as_secs(),
        last_seq: shared.spool.last_seq(),
        spool: shared.spool.stats(),
    };
    let payload = serde_json::to_vec(&hb).expect("heartbeat serializes");
    if let Err(e) = conn.client.publish(shared.subjects.heartbeat(&shared.agent_id), payload.into()).await {
        tracing::warn!(error = %e, "heartbeat not sent");
    }
}
