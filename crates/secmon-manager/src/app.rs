//! Wires the manager together: storage, NATS, streams, registry, ingest and the
//! REST API, and takes them down in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use chrono::{DateTime, Utc};
use secmon_proto::Subjects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertsHandle;
use crate::alerts::publisher::Publisher;
use crate::api::{ApiContext, router};
use crate::config::ManagerConfig;
use crate::detection::{self, RulesHandle};
use crate::ingest::{self, IngestContext, IngestSettings};
use crate::metrics::Metrics;
use crate::registry::{self, RegistryConfig, RegistryHandle};
use crate::security::auth::{AuthState, ClientAddr};
use crate::security::https::{TlsListener, server_config};
use crate::status_events;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::streams::{self, EventStreamLimits};

/// How long shutdown waits for each task before leaving it behind.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The manager service.
pub struct Manager;

/// A running manager. Dropping it stops the tasks without waiting; call
/// [`ManagerHandle::shutdown`] to stop cleanly.
pub struct ManagerHandle {
    api_addr: SocketAddr,
    /// The API serves HTTPS.
    api_tls: bool,
    auth: Arc<AuthState>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    registry: RegistryHandle,
    alerts: AlertsHandle,
    rules: RulesHandle,
    nats: async_nats::Client,
    started_at: DateTime<Utc>,
    stop: CancellationToken,
    /// In stop order: API first (no new commands), then ingest, rule evaluation
    /// (drains what ingest and the agent status events stored; it ends when both
    /// have stopped) and the registry.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// The API's certificate and key: `[api] tls_cert`/`tls_key` when set, else in
/// secure mode the ones `secmon-manager init` wrote into the pki dir, else none
/// (plain HTTP).
pub fn api_tls_files(cfg: &ManagerConfig) -> Option<(PathBuf, PathBuf)> {
    match (&cfg.api.tls_cert, &cfg.api.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ if cfg.security.enabled => {
            let pki = cfg.pki_dir();
            Some((pki.join(crate::init::SERVER_CERT), pki.join(crate::init::SERVER_KEY)))
        }
        _ => None,
    }
}

/// Plain HTTP is for loopback, unless `[security] allow_plain_http` says otherwise
/// (e.g. behind a TLS-terminating proxy on a private network).
fn check_plain_http(cfg: &ManagerConfig, listen: SocketAddr) -> anyhow::Result<()> {
    if listen.ip().is_loopback() || cfg.security.allow_plain_http {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve the API over plain HTTP on {listen} ([api] listen is not a loopback address): \
         turn on [security] enabled (HTTPS with the certificate from `secmon-manager init`), set \
         [api] tls_cert and tls_key, listen on 127.0.0.1, or set [security] allow_plain_http = true"
    )
}

/// Serves `app` on `listener` (plain TCP or TLS) until `stop`, with each request's
/// [`ClientAddr`].
fn spawn_api<L>(listener: L, app: axum::Router, stop: CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    ClientAddr: for<'a> Connected<IncomingStream<'a, L>>,
{
    let app = app.into_make_service_with_connect_info::<ClientAddr>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "API server failed");
        }
    })
}

impl Manager {
    /// Opens storage, connects to NATS (failing at once when it is unreachable),
    /// creates or checks the streams, and starts the registry, ingest and the API.
    pub async fn start(cfg: ManagerConfig) -> anyhow::Result<ManagerHandle> {
        let started_at = Utc::now();
        let data_dir = &cfg.storage.data_dir;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data_dir).with_context(|| {
            format!("cannot open storage in {} ([storage] data_dir)", data_dir.display())
        })?);
        let listen = cfg.api_listen();
        let tls = match api_tls_files(&cfg) {
            Some((cert, key)) => Some(server_config(&cert, &key).with_context(|| {
                if cfg.security.enabled && cfg.api.tls_cert.is_none() {
                    format!(
                        "secure mode serves the API over HTTPS with {} from the pki dir: run `secmon-manager init`, \
                         or set [api] tls_cert and tls_key",
                        cert.display()
                    )
                } else {
                    "cannot set up HTTPS for the API".to_owned()
                }
            })?),
            None => {
                check_plain_http(&cfg, listen)?;
                None
            }
        };
        let auth = Arc::new(AuthState::open(data_dir, &cfg.security).with_context(|| {
            format!("cannot open the security database in {} ([storage] data_dir)", data_dir.display())
        })?);
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen} ([api] listen): is another manager running?")
        })?;
        let api_addr = listener.local_addr().context("API listener address")?;

        let nats = secmon_nats::connect(&cfg.nats, "secmon-manager", None, false)
            .await
            .map_err(|e| anyhow::anyhow!("{e}; start nats-server or set [nats] url"))?;
        let subjects = Subjects::new(cfg.nats.subject_prefix.clone());
        let js = async_nats::jetstream::new(nats.clone());
        let limits = EventStreamLimits {
            max_age: cfg.ingest.max_age,
            max_bytes: cfg.ingest.max_bytes,
            duplicate_window: cfg.ingest.duplicate_window,
        };
        streams::ensure_streams(&js, &subjects, &limits).await?;

        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        // Stops what already runs if a later step fails.
        let started = stop.clone().drop_guard();
        let (status_tx, status_rx) = status_events::channel();
        let (registry, registry_task) = registry::start(
            nats.clone(),
            subjects.clone(),
            store.clone(),
            metrics.clone(),
            RegistryConfig {
                heartbeat_timeout: cfg.agents.heartbeat_timeout,
                check_interval: cfg.agents.check_interval,
            },
            started_at,
            status_tx,
            stop.child_token(),
        )
        .await?;
        let alerts = AlertsHandle::new(store.clone(), metrics.clone(), cfg.alerts.dedup_window);
        let publisher = Publisher {
            js: js.clone(),
            subjects: subjects.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            wake: alerts.wake_signal(),
        };
        let alert_publisher = tokio::spawn(publisher.run(stop.child_token()));
        // Rules load before ingest starts, so the first events meet them.
        let rules = RulesHandle::load(cfg.rules.dirs.clone(), metrics.clone()).await;
        let (eval_tx, eval_rx) = detection::evaluate::channel();
        // Ends when ingest drops its sender, after the last stored batch.
        let evaluator =
            tokio::spawn(detection::evaluate::run(eval_rx, rules.clone(), alerts.clone(), metrics.clone()));
        // Ends when the registry drops its sender, after its last flush.
        let status_events_task =
            tokio::spawn(status_events::run(status_rx, store.clone(), eval_tx.clone(), metrics.clone()));
        let rule_watch =
            tokio::spawn(detection::watch::run(rules.clone(), cfg.rules.watch_interval, stop.child_token()));
        // enroll wiring begin (security::enroll: agent keys, revocation, signature checks)
        let enroll = crate::security::enroll::Enrollment::start(
            &cfg,
            auth.db.clone(),
            api_addr,
            registry.clone(),
            stop.child_token(),
        )
        .await
        .context("enrollment ([security] pki_dir)")?;
        let signatures = enroll
            .as_ref()
            .filter(|_| cfg.security.require_signatures)
            .map(|e| ingest::SignatureCheck { verifier: e.verifier(), alerts: alerts.clone() });
        if cfg.security.enabled && !cfg.security.require_signatures {
            tracing::warn!("[security] require_signatures = false: unsigned events are accepted");
        }
        // enroll wiring end
        let ingest_tasks = ingest::start(
            IngestContext {
                js,
                subjects: subjects.clone(),
                store: store.clone(),
                registry: registry.clone(),
                metrics: metrics.clone(),
                settings: IngestSettings {
                    consumer: cfg.ingest.consumer.clone(),
                    batch_size: cfg.ingest.batch_size,
                    max_event_bytes: cfg.ingest.max_event_bytes,
                },
                evaluate: eval_tx,
                // enroll wiring begin (IngestContext fields)
                signatures,
                // enroll wiring end
            },
            stop.child_token(),
        )
        .await?;

        let ctx = Arc::new(ApiContext {
            store: store.clone(),
            registry: registry.clone(),
            alerts: alerts.clone(),
            rules: rules.clone(),
            nats: nats.clone(),
            subjects,
            metrics: metrics.clone(),
            started_at,
            command_timeout: cfg.api.command_timeout,
            auth: auth.clone(),
            // enroll wiring begin (ApiContext fields)
            enroll,
            // enroll wiring end
        });
        let api_stop = stop.child_token();
        let app = router(ctx);
        let api_tls = tls.is_some();
        let api = match tls {
            Some(tls) => {
                spawn_api(TlsListener::new(listener, tls).context("API TLS listener")?, app, api_stop)
            }
            None => spawn_api(listener, app, api_stop),
        };
        tracing::info!(api = %api_addr, https = api_tls, auth = cfg.security.enabled, data_dir = %data_dir.display(), nats = %cfg.nats.url, "manager started");
        started.disarm();
        Ok(ManagerHandle {
            api_addr,
            api_tls,
            auth,
            store,
            metrics,
            registry,
            alerts,
            rules,
            nats,
            started_at,
            stop,
            tasks: vec![
                ("api", api),
                ("ingest", ingest_tasks.ingest),
                ("rule evaluation", evaluator),
                ("rule watch", rule_watch),
                ("lag monitor", ingest_tasks.lag),
                ("registry", registry_task),
                ("agent status events", status_events_task),
                ("alert publisher", alert_publisher),
            ],
        })
    }
}

impl ManagerHandle {
    /// Where the REST API listens (the real port when `[api] listen` used port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// `https://IP:PORT` or `http://IP:PORT`.
    pub fn api_url(&self) -> String {
        format!("{}://{}", if self.api_tls { "https" } else { "http" }, self.api_addr)
    }

    /// Whether the API serves HTTPS.
    pub fn api_tls(&self) -> bool {
        self.api_tls
    }

    /// Users, tokens and the audit log (tests, and in-process callers).
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth.clone()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn registry(&self) -> RegistryHandle {
        self.registry.clone()
    }

    /// Raises alerts inside the running manager (the detection stage, and tests).
    pub fn alerts(&self) -> AlertsHandle {
        self.alerts.clone()
    }

    /// The loaded rules; [`RulesHandle::reload`] reloads them (SIGHUP).
    pub fn rules(&self) -> RulesHandle {
        self.rules.clone()
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Stops the API, lets ingest store and acknowledge the pull request in flight,
    /// flushes the registry, then closes storage.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for (name, task) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(TASK_STOP_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "task failed"),
                Err(_) => tracing::warn!(task = name, "task did not stop in time"),
            }
        }
        if let Err(e) = self.nats.flush().await {
            tracing::debug!(error = %e, "cannot flush NATS on shutdown");
        }
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "cannot close storage cleanly");
        }
        tracing::info!("manager stopped");
    }
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
