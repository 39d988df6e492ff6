//! Wiring: keys, encoder, audit log, publisher, one task per Wazuh source, the
//! heartbeats, the metrics/health server; graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use secmon_wazuh_bridge::audit::AuditLog;
use secmon_wazuh_bridge::config::BridgeConfig;
use secmon_wazuh_bridge::crypto::Cipher;
use secmon_wazuh_bridge::http::{HealthReport, HealthStatus, SourceHealth};
use secmon_wazuh_bridge::keys;
use secmon_wazuh_bridge::metrics::Metrics;
use secmon_wazuh_bridge::model::{Heartbeat, SCHEMA_VERSION};
use secmon_wazuh_bridge::outgoing::Outgoing;
use secmon_wazuh_bridge::publish::Publisher;
use secmon_wazuh_bridge::source::{SharedStatus, Source};
use secmon_wazuh_bridge::wire::Encoder;
use tokio_util::sync::CancellationToken;

pub async fn run(cfg: BridgeConfig) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("creating state dir {}", cfg.state.dir.display()))?;
    let _ = std::fs::set_permissions(&cfg.state.dir, std::fs::Permissions::from_mode(0o700));
    let signing = match &cfg.security.signing_key_path {
        Some(p) => keys::load_key(p, 32),
        None => keys::load_or_generate(&cfg.signing_key_path()),
    }
    .context("loading the signing key")?;
    let cipher = if cfg.security.encrypt_messages {
        let p =
            cfg.security.encryption_key_path.as_ref().context("security.encryption_key_path is not set")?;
        let key = keys::load_key(p, 32).context("loading the encryption key")?;
        Some(Cipher::new(cfg.security.encryption_algorithm, &key).context("setting up encryption")?)
    } else {
        None
    };
    tracing::info!(
        signing_key_id = %signing.id(),
        encryption = cfg.security.encrypt_messages,
        sources = cfg.all_sources().len(),
        nats = %cfg.nats.url,
        "secmon-wazuh-bridge starting"
    );
    let encoder = Arc::new(Encoder::new(signing, cipher, cfg.publish.compress_batches));
    let audit = Arc::new(AuditLog::open(&cfg.audit_log_path()).context("opening the audit log")?);
    let metrics = Arc::new(Metrics::new());
    let publisher = Publisher::start(&cfg, metrics.clone(), Some(audit));

    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut statuses: Vec<SharedStatus> = Vec::new();
    let mut tasks = Vec::new();
    for sc in cfg.all_sources() {
        let src = Source::new(sc, cfg.clone(), publisher.clone(), encoder.clone(), metrics.clone());
        statuses.push(src.status());
        tasks.push(tokio::spawn(src.run(stop.child_token())));
    }
    let hb = tokio::spawn(heartbeats(
        cfg.clone(),
        statuses.clone(),
        publisher.clone(),
        encoder.clone(),
        started,
        stop.child_token(),
    ));

    let http = if cfg.monitoring.enable_metrics {
        let bind: SocketAddr = format!("{}:{}", cfg.monitoring.metrics_bind, cfg.monitoring.metrics_port)
            .parse()
            .context("monitoring.metrics_bind / metrics_port do not form an address")?;
        let st = statuses.clone();
        let p = publisher.clone();
        let health = Arc::new(move || health_report(&st, &p));
        let (addr, handle) = secmon_wazuh_bridge::http::serve(
            bind,
            metrics.clone(),
            health,
            stop.child_token().cancelled_owned(),
        )
        .await
        .context("starting the metrics server")?;
        tracing::info!(%addr, "metrics and health on http://{addr}/metrics, /health");
        Some(handle)
    } else {
        None
    };

    wait_for_signal().await;
    tracing::info!("shutting down: draining publishes");
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let _ = hb.await;
    let drained = publisher.shutdown(cfg.publish.drain_timeout).await;
    if let Some(h) = http {
        let _ = h.await;
    }
    if drained {
        tracing::info!("stopped; everything published");
    } else {
        tracing::warn!(
            "stopped with messages unpublished; their changes are derived again at the next start"
        );
    }
    Ok(())
}

fn health_report(statuses: &[SharedStatus], publisher: &Publisher) -> HealthReport {
    let ps = publisher.stats();
    let mut reasons = Vec::new();
    if !ps.connected {
        reasons.push("nats disconnected".to_owned());
    }
    let sources = statuses
        .iter()
        .map(|s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            if !s.healthy() {
                reasons.push(match (&s.last_error, s.last_poll_ok) {
                    (Some(e), _) => format!("{}: {e}", s.manager_node),
                    (None, None) => format!("{}: no successful read yet", s.manager_node),
                    (None, Some(_)) => format!("{}: db breaker {}", s.manager_node, s.db_breaker.as_str()),
                });
            }
            SourceHealth {
                manager_node: s.manager_node.clone(),
                last_poll: s.last_poll.clone(),
                db_breaker: s.db_breaker.as_str().into(),
                schema: s.schema.clone(),
                agents: s.agents.total_agents,
            }
        })
        .collect();
    let ok = reasons.is_empty();
    HealthReport {
        status: if ok { HealthStatus::Ok } else { HealthStatus::Degraded },
        reasons,
        nats_connected: ps.connected,
        sources,
        queue_len: ps.queue_len as u64,
        queue_capacity: ps.capacity as u64,
    }
}

async fn heartbeats(
    cfg: Arc<BridgeConfig>,
    statuses: Vec<SharedStatus>,
    publisher: Publisher,
    encoder: Arc<Encoder>,
    started: Instant,
    stop: CancellationToken,
) {
    // The first one after an interval, when the first read has counted the agents.
    let every = cfg.publish.heartbeat_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ps = publisher.stats();
        for st in &statuses {
            let mut hb = {
                let s = st.lock().unwrap_or_else(|e| e.into_inner());
                Heartbeat {
                    schema_version: SCHEMA_VERSION,
                    manager_node: s.manager_node.clone(),
                    timestamp: secmon_wazuh_bridge::model::now_rfc3339(),
                    bridge_version: env!("CARGO_PKG_VERSION").into(),
                    uptime_secs: started.elapsed().as_secs(),
                    schema: s.schema.clone(),
                    db_path: s.db_path.clone(),
                    last_poll: s.last_poll.clone(),
                    last_poll_duration_ms: s.last_poll_duration_ms,
                    db_breaker: s.db_breaker.as_str().into(),
                    nats_breaker: ps.breaker.as_str().into(),
                    queue_len: ps.queue_len as u64,
                    queue_capacity: ps.capacity as u64,
                    deferred_cycles: s.deferred_cycles,
                    published: ps.published,
                    publish_errors: ps.errors,
                    agents: s.agents.clone(),
                    signature: None,
                }
            };
            let enc = encoder.encode_heartbeat(&mut hb);
            let item = Outgoing {
                subject: format!("{}.manager.{}.heartbeat", cfg.nats.subject_prefix, hb.manager_node),
                payload: enc.payload,
                headers: enc.headers,
                msg_id: format!("hb_{}_{}", hb.manager_node, chrono::Utc::now().timestamp_millis()),
                kind: "heartbeat",
                seen_at: None,
            };
            // A heartbeat is not worth waiting for: with the queue full it is skipped
            // (counted by the publisher) and the next one says the same, fresher.
            let _ = publisher.try_enqueue(vec![item]);
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
