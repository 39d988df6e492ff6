//! `GET /metrics` and the middleware that times every API request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiContext;
use crate::metrics::RequestLabels;

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics of this manager.
#[utoipa::path(
    get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], ctx.metrics.render()).into_response()
}

/// Label values must stay a small set: unknown methods are `other`, unmatched
/// paths `unmatched` (a scanner must not grow the registry without bound).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records `secmon_api_request_duration_seconds{method, route, status}`.
pub async fn record_latency(State(ctx): State<Arc<ApiContext>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let resp = next.run(req).await;
    let labels = RequestLabels { method: method.to_owned(), route, status: resp.status().as_u16() };
    ctx.metrics.api_request_duration.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    resp
}
