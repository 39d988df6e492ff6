//! The metrics port: `GET /metrics` (Prometheus / OpenMetrics text) and
//! `GET /health` (JSON [`HealthReport`], HTTP 200 when `ok`, 503 when `degraded`,
//! so a load balancer or `curl -f` needs no JSON parsing).
//!
//! The caller decides the health status (NATS disconnected, a database breaker open,
//! no successful poll within 3 poll intervals → degraded); this module renders it.
//! Shutdown: `serve` takes any future; when it completes the server stops accepting,
//! finishes the requests in flight and the returned task ends (pass
//! `token.cancelled_owned()` of a `CancellationToken`, or a oneshot receiver).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// What Prometheus 2.x+ negotiates for the text that `prometheus-client` writes
/// (OpenMetrics, ending in `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub nats_connected: bool,
    pub sources: Vec<SourceHealth>,
    pub queue_len: u64,
    pub queue_capacity: u64,
    /// Why the status is `degraded`, in words (`"nats disconnected"`,
    /// `"wazuh-manager-01: db breaker open"`); empty when ok.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// One manager node's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub manager_node: String,
    /// RFC 3339 time of the last successful read; `None` before the first.
    pub last_poll: Option<String>,
    /// `closed`, `open`, `half_open`.
    pub db_breaker: String,
    /// `4.x`, `5.x` or `unknown`.
    pub schema: String,
    pub agents: u64,
}

/// Builds the current report on each `/health` request; must be cheap and must not
/// block (it runs on the server's task).
pub type HealthFn = Arc<dyn Fn() -> HealthReport + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} for /metrics and /health: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: HealthFn,
}

/// Listens on `bind` (port 0 picks a free port) and serves until `shutdown`
/// completes. Returns the bound address and the server task; the task ends after
/// shutdown once the requests in flight are answered.
pub async fn serve(
    bind: SocketAddr,
    metrics: Arc<Metrics>,
    health: HealthFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), HttpError> {
    let listener =
        tokio::net::TcpListener::bind(bind).await.map_err(|source| HttpError::Bind { addr: bind, source })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr: bind, source })?;
    let app = router(metrics, health);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, %addr, "metrics server stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics and /health");
    Ok((addr, task))
}

/// The routes alone (for embedding in another server).
pub fn router(metrics: Arc<Metrics>, health: HealthFn) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], s.metrics.render()).into_response()
}

async fn health_handler(State(s): State<AppState>) -> Response {
    let report = (s.health)();
    let code = match report.status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, [(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::NodeStatusLabels;

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// A plain HTTP/1.1 request over a real socket, as curl would send it.
    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP response");
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Reply { status, headers, body: body.to_owned() }
    }

    fn report(status: HealthStatus) -> HealthReport {
        HealthReport {
            status,
            nats_connected: status == HealthStatus::Ok,
            sources: vec![SourceHealth {
                manager_node: "wazuh-manager-01".into(),
                last_poll: Some("2026-11-23T10:00:00.000Z".into()),
                db_breaker: "closed".into(),
                schema: "4.x".into(),
                agents: 1234,
            }],
            queue_len: 3,
            queue_capacity: 10_000,
            reasons: if status == HealthStatus::Ok { vec![] } else { vec!["nats disconnected".into()] },
        }
    }

    #[tokio::test]
    async fn metrics_and_health_over_a_real_socket_then_graceful_shutdown() {
        let metrics = Arc::new(Metrics::new());
        metrics.queue_len.set(3);
        metrics
            .agents
            .get_or_create(&NodeStatusLabels {
                manager_node: "wazuh-manager-01".into(),
                status: "Active".into(),
            })
            .set(1234);
        let current = Arc::new(Mutex::new(report(HealthStatus::Ok)));
        let c = current.clone();
        let health: HealthFn = Arc::new(move || c.lock().unwrap().clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), health, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        assert_ne!(addr.port(), 0, "port 0 resolves to the bound port");

        let m = get(addr, "/metrics").await;
        assert_eq!(m.status, 200);
        assert_eq!(m.header("content-type"), Some(METRICS_CONTENT_TYPE));
        assert!(m.body.contains("secmon_wazuh_bridge_queue_len 3\n"), "{}", m.body);
        assert!(
            m.body.contains(
                r#"secmon_wazuh_bridge_agents{manager_node="wazuh-manager-01",status="Active"} 1234"#
            ),
            "{}",
            m.body
        );
        assert!(m.body.ends_with("# EOF\n"));
        // Rendered per request: a change shows up on the next scrape.
        metrics.queue_len.set(9);
        assert!(get(addr, "/metrics").await.body.contains("secmon_wazuh_bridge_queue_len 9\n"));

        let h = get(addr, "/health").await;
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["nats_connected"], true);
        assert_eq!(v["queue_len"], 3);
        assert_eq!(v["queue_capacity"], 10_000);
        assert_eq!(v["sources"][0]["manager_node"], "wazuh-manager-01");
        assert_eq!(v["sources"][0]["last_poll"], "2026-11-23T10:00:00.000Z");
        assert_eq!(v["sources"][0]["db_breaker"], "closed");
        assert_eq!(v["sources"][0]["schema"], "4.x");
        assert_eq!(v["sources"][0]["agents"], 1234);
        assert!(v.get("reasons").is_none(), "no reasons when ok: {v}");

        *current.lock().unwrap() = report(HealthStatus::Degraded);
        let h = get(addr, "/health").await;
        assert_eq!(h.status, 503, "degraded is 503 so `curl -f` fails");
        let back: HealthReport = serde_json::from_str(&h.body).unwrap();
        assert_eq!(back, report(HealthStatus::Degraded));

        assert_eq!(get(addr, "/nope").await.status, 404);

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops").unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens after shutdown");
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let health: HealthFn = Arc::new(|| report(HealthStatus::Ok));
        let err = serve(addr, Arc::new(Metrics::new()), health, std::future::pending()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("cannot listen on {addr}")), "{msg}");
    }
}
