//! The per-request check: bearer token -> [`Principal`] (in the request's
//! extensions), the route policy, and one audit record per state-changing or
//! denied request.
//!
//! Policy (secure mode): public are `GET /api/health`, `POST /api/login`,
//! `POST /api/enroll`, `GET /api/ca.pem` and `GET /api/openapi.json`; admin only are
//! `DELETE /api/agents/{id}`, `/api/users*`, `/api/tokens*`,
//! `/api/enrollment-tokens*`, `POST /api/agent-config` and `GET /api/audit`;
//! analyst are `PATCH /api/alerts/{id}` and `POST /api/agents/{id}/command`; every
//! other GET is readonly, and any other method defaults to admin (a new
//! state-changing route is closed until the policy names it). Unknown routes also
//! need a token: 401 without one (nothing about which routes exist), 404 after.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;

use super::AuthState;
use super::audit::{self, AuditEntry, AuditNote};
use crate::api::error::ApiError;
use crate::security::{Principal, Role};

/// The client's address as the manager's listener saw it (no proxy header is
/// trusted). Set for every request by [`crate::app`]; handlers may take
/// `Option<Extension<ClientAddr>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(s: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::security::https::TlsListener>> for ClientAddr {
    fn connect_info(s: IncomingStream<'_, crate::security::https::TlsListener>) -> Self {
        Self(*s.remote_addr())
    }
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The least role that may call `method path`; `None` for the public routes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let m = method.as_str();
    let segs: Vec<&str> = path.split('/').collect();
    match (m, path) {
        ("GET" | "HEAD", "/api/health" | "/api/ca.pem" | "/api/openapi.json")
        | ("POST", "/api/login" | "/api/enroll") => {
            return None;
        }
        _ => {}
    }
    if ["/api/users", "/api/tokens", "/api/enrollment-tokens", "/api/audit"].iter().any(|p| under(path, p))
        || (m == "POST" && path == "/api/agent-config")
    {
        return Some(Role::Admin);
    }
    // /api/alerts/{id} and /api/agents/{id}/command
    let analyst = match segs.as_slice() {
        ["", "api", "alerts", id] => m == "PATCH" && !id.is_empty(),
        ["", "api", "agents", id, "command"] => m == "POST" && !id.is_empty(),
        _ => false,
    };
    if analyst {
        return Some(Role::Analyst);
    }
    match m {
        "GET" | "HEAD" => Some(Role::Readonly),
        // Ending one's own session and asking who one is need no more than a login.
        "POST" if path == "/api/logout" => Some(Role::Readonly),
        _ => Some(Role::Admin),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The action name of an audit record, from the route.
fn action_for(method: &Method, route: Option<&str>) -> String {
    let known = match (method.as_str(), route.unwrap_or("")) {
        ("POST", "/api/login") => "login",
        ("POST", "/api/logout") => "logout",
        ("POST", "/api/users") => "user.create",
        ("DELETE", "/api/users/{username}") => "user.delete",
        ("POST", "/api/tokens") => "token.create",
        ("DELETE", "/api/tokens/{id}") => "token.delete",
        ("POST", "/api/agents/{id}/command") => "agent.command",
        ("DELETE", "/api/agents/{id}") => "agent.remove",
        ("PATCH", "/api/alerts/{id}") => "alert.update",
        ("POST", "/api/enrollment-tokens") => "enrollment_token.create",
        ("DELETE", "/api/enrollment-tokens/{id}") => "enrollment_token.delete",
        ("POST", "/api/enroll") => "agent.enroll",
        ("POST", "/api/agent-config") => "agent_config.create",
        ("GET" | "HEAD", _) => "read",
        _ => "request",
    };
    known.to_owned()
}

/// The first `{param}` of the route, as the path gives it (the audit's target).
fn target_for(route: Option<&str>, path: &str) -> Option<String> {
    let route = route?;
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| r.starts_with('{'))
        .map(|(_, p)| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned())
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Authenticates, authorises and audits one request (see the module doc).
pub async fn authenticate(State(auth): State<Arc<AuthState>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let client = req.extensions().get::<ConnectInfo<ClientAddr>>().map(|c| c.0);
    let note = AuditNote::default();
    req.extensions_mut().insert(note.clone());
    if let Some(c) = client {
        req.extensions_mut().insert(c);
    }

    let decided: Result<Option<Principal>, Response> = if !auth.enabled {
        Ok(Some(Principal::local()))
    } else {
        match required_role(&method, &path) {
            None => Ok(None),
            Some(min) => match bearer(req.headers()).map(str::to_owned) {
                None => {
                    Err(unauthorized("this endpoint needs Authorization: Bearer <token> (POST /api/login)"))
                }
                Some(token) => {
                    let now = chrono::Utc::now();
                    match auth.db.call(move |c| super::tokens::lookup(c, &token, now)).await {
                        Ok(Some(p)) if p.role.at_least(min) => Ok(Some(p)),
                        Ok(Some(p)) => {
                            note.set_detail(format!("role {} may not {method} {path}; needs {min}", p.role));
                            let resp = ApiError::new(
                                StatusCode::FORBIDDEN,
                                "forbidden",
                                format!("role {} may not {method} this endpoint (needs {min})", p.role),
                            )
                            .into_response();
                            // Denied, but the record names who was denied.
                            req.extensions_mut().insert(p);
                            Err(resp)
                        }
                        Ok(None) => Err(unauthorized("invalid or expired token")),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot check a bearer token");
                            Err(ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "auth_unavailable",
                                "the manager cannot check credentials now; see its log",
                            )
                            .into_response())
                        }
                    }
                }
            },
        }
    };
    let principal = match &decided {
        Ok(p) => p.clone(),
        Err(_) => req.extensions().get::<Principal>().cloned(),
    };
    let response = match decided {
        Ok(p) => {
            if let Some(p) = p {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
        Err(resp) => resp,
    };

    let status = response.status().as_u16();
    let denied = matches!(status, 401 | 403 | 429);
    if (method != Method::GET && method != Method::HEAD) || denied {
        let n = note.take();
        let target = n.target.or_else(|| target_for(route.as_deref(), &path));
        let entry = AuditEntry {
            time: None,
            actor: n
                .actor
                .or_else(|| principal.as_ref().map(|p| p.name.clone()))
                .unwrap_or_else(|| "anonymous".into()),
            role: principal.as_ref().map(|p| p.role.to_string()),
            remote_addr: client.map(|c| c.0.to_string()),
            method: method.to_string(),
            path,
            action: n.action.unwrap_or_else(|| action_for(&method, route.as_deref())),
            target,
            status,
            result: audit::result_for(status).to_owned(),
            detail: n.detail,
        };
        if let Err(e) = audit::record(&auth.db, entry).await {
            tracing::error!(error = %e, "cannot write an audit record");
        }
    }
    response
}
