//! Enrollment API: `POST/GET /api/enrollment-tokens`, `DELETE /api/enrollment-tokens/{id}`
//! (admin), `GET /api/ca.pem` and `POST /api/enroll` (public), `POST /api/agent-config`
//! (admin). In local mode they answer 409 `secure_mode_required`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use secmon_proto::HostFacts;
use serde::{Deserialize, Serialize};

use super::tokens::{self, TokenInfo, TokenSpec};
use super::{EnrollError, EnrollRequest, Enrollment};
use crate::api::ApiContext;
use crate::api::error::{ApiError, ErrorBody, echo, json_body};
use crate::security::Principal;
use crate::security::auth::audit::AuditNote;

/// Most uses one token may have.
pub const MAX_USES: u32 = 100_000;
/// Longest token lifetime.
pub const MAX_EXPIRY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
const DEFAULT_EXPIRY: &str = "24h";
const MAX_GROUPS: usize = 32;
const MAX_LABELS: usize = 32;
const MAX_TEXT: usize = 256;

/// The enrollment routes, merged into the API router.
pub fn routes() -> Router<Arc<ApiContext>> {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/api/enrollment-tokens", post(create_token).get(list_tokens))
        .route("/api/enrollment-tokens/{id}", delete(delete_token))
        .route("/api/ca.pem", get(ca_pem))
        .route("/api/enroll", post(enroll))
        .route("/api/agent-config", post(agent_config))
}

fn enrollment(ctx: &ApiContext) -> Result<&Arc<Enrollment>, ApiError> {
    ctx.enroll.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "secure_mode_required",
            "enrollment needs secure mode: set [security] enabled = true after secmon-manager init",
        )
    })
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "security database error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", "security database error")
}

fn note(n: &Option<Extension<AuditNote>>, f: impl FnOnce(&AuditNote)) {
    if let Some(Extension(n)) = n {
        f(n);
    }
}

/// A short free-text field: at most 256 characters, no control characters.
fn text(name: &str, v: &str, required: bool) -> Result<String, ApiError> {
    if required && v.trim().is_empty() {
        return Err(ApiError::bad_parameter(name, "must not be empty"));
    }
    if v.chars().count() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(ApiError::bad_parameter(name, "at most 256 characters, no control characters"));
    }
    Ok(v.to_string())
}

/// Groups and label keys: `[A-Za-z0-9_.:-]{1,64}`.
fn ident(name: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(name, format!("{} is not [A-Za-z0-9_.:-]{{1,64}}", echo(v))))
    }
}

fn groups_labels(
    groups: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
) -> Result<(Vec<String>, BTreeMap<String, String>), ApiError> {
    let groups = groups.unwrap_or_default();
    let labels = labels.unwrap_or_default();
    if groups.len() > MAX_GROUPS {
        return Err(ApiError::bad_parameter("groups", format!("at most {MAX_GROUPS}")));
    }
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_parameter("labels", format!("at most {MAX_LABELS}")));
    }
    for g in &groups {
        ident("groups", g)?;
    }
    for (k, v) in &labels {
        ident("labels", k)?;
        text("labels", v, false)?;
    }
    Ok((groups, labels))
}

fn expiry(v: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let s = v.unwrap_or(DEFAULT_EXPIRY);
    let d = secmon_config::duration::re::humantime::parse_duration(s).map_err(|e| {
        ApiError::bad_parameter("expires_in", format!("{}: {e} (e.g. \"24h\", \"7d\")", echo(s)))
    })?;
    if d.is_zero() || d > MAX_EXPIRY {
        return Err(ApiError::bad_parameter("expires_in", "must be more than 0 and at most 366 days"));
    }
    Ok(Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Number of enrollments it allows [default 1].
    pub uses: Option<u32>,
    /// Lifetime ("24h", "7d") [default 24h].
    pub expires_in: Option<String>,
    pub groups: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A new token: the only time its secret is shown. (No Debug: it holds the secret.)
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
    pub ca_fingerprint: String,
}

async fn new_token(e: &Enrollment, req: TokenRequest, by: &str) -> Result<(TokenInfo, String), ApiError> {
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(ApiError::bad_parameter("uses", format!("must be 1 to {MAX_USES}")));
    }
    let (groups, labels) = groups_labels(req.groups, req.labels)?;
    let spec = TokenSpec { uses, expires_at: Some(expiry(req.expires_in.as_deref())?), groups, labels };
    let (by, fp) = (by.to_string(), e.ca_fingerprint.clone());
    e.db.call(move |c| tokens::create(c, &spec, &by, &fp)).await.map_err(db_error)
}

fn principal_name(p: &Option<Extension<Principal>>) -> String {
    p.as_ref().map(|Extension(p)| p.name.clone()).unwrap_or_else(|| Principal::local().name)
}

/// Create an enrollment token (admin). Its secret is shown only in this answer.
#[utoipa::path(
    post, path = "/api/enrollment-tokens", tag = "enrollment",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "The token", body = NewToken),
        (status = 400, description = "Bad field", body = ErrorBody),
        (status = 409, description = "Local mode", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(ctx): State<Arc<ApiContext>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let e = enrollment(&ctx)?;
    let req = json_body(body)?;
    let (info, token) = new_token(e, req, &principal_name(&principal)).await?;
    note(&audit, |n| {
        n.set_action("enrollment_token.create");
        n.set_target(info.id.clone());
        n.set_detail(format!("uses {}", info.uses));
    });
    tracing::info!(token = %info.id, uses = info.uses, "enrollment token created");
    Ok((StatusCode::CREATED, Json(NewToken { info, token, ca_fingerprint: e.ca_fingerprint.clone() })))
}

/// List enrollment tokens (admin), without their secrets.
#[utoipa::path(
    get, path = "/api/enrollment-tokens", tag = "enrollment",
    responses((status = 200, description = "Tokens, newest first", body = Vec<TokenInfo>))
)]
pub async fn list_tokens(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let e = enrollment(&ctx)?;
    Ok(Json(e.db.call(|c| tokens::list(c)).await.map_err(db_error)?))
}

/// Revoke an enrollment token (admin).
#[utoipa::path(
    delete, path = "/api/enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Unknown token", body = ErrorBody),
    )
)]
pub async fn delete_token(
    State(ctx): State<Arc<ApiContext>>,
    audit: Option<Extension<AuditNote>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let e = enrollment(&ctx)?;
    let Ok(Path(id)) = path else { return Err(ApiError::bad_parameter("id", "missing")) };
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::bad_parameter("id", format!("{} is not a token id", echo(&id))));
    }
    note(&audit, |n| {
        n.set_action("enrollment_token.revoke");
        n.set_target(id.clone());
    });
    let i = id.clone();
    if e.db.call(move |c| tokens::revoke(c, &i)).await.map_err(db_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no enrollment token with id {}", echo(&id))))
    }
}

/// The CA certificate (public; agents pin its SHA-256 fingerprint).
#[utoipa::path(
    get, path = "/api/ca.pem", tag = "enrollment",
    responses(
        (status = 200, description = "PEM certificate", content_type = "application/x-pem-file", body = String),
        (status = 404, description = "Local mode", body = ErrorBody),
    )
)]
pub async fn ca_pem(State(ctx): State<Arc<ApiContext>>) -> Result<Response, ApiError> {
    let e = enrollment(&ctx).map_err(|_| ApiError::not_found("no CA: the manager runs in local mode"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], e.ca_pem.clone()).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    pub token: String,
    /// The agent's NKey user public key (`U...`); its seed stays on the agent.
    pub public_key: String,
    pub hostname: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub agent_version: String,
    /// Display name [default: hostname].
    pub name: Option<String>,
    /// PEM certificate signing request for the agent's TLS client key (made on the
    /// agent, never sent). Required when the deployment uses mutual TLS; otherwise
    /// ignored. The certificate's name is the agent id, whatever the CSR asks.
    pub csr: Option<String>,
}

// Never print the token.
impl std::fmt::Debug for EnrollBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollBody")
            .field("public_key", &self.public_key)
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// (No Debug: it holds the agent's JWT.)
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrollAnswer {
    pub agent_id: String,
    pub jwt: String,
    pub ca_pem: String,
    pub nats_url: String,
    pub subject_prefix: String,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The agent's TLS client certificate (PEM, clientAuth, named after `agent_id`),
    /// signed from `csr`: present only when the deployment uses mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
}

fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the enrollment token is invalid, expired or used up",
    )
}

/// Enroll an agent with a token and the public half of its NKey (public). With mutual
/// TLS, also a CSR: the answer then carries the agent's TLS client certificate.
#[utoipa::path(
    post, path = "/api/enroll", tag = "enrollment",
    request_body = EnrollBody,
    responses(
        (status = 201, description = "Enrolled: agent id, NATS user JWT, CA", body = EnrollAnswer),
        (status = 400, description = "Bad public key or field; missing or bad csr with mutual TLS", body = ErrorBody),
        (status = 401, description = "invalid_token: unknown, expired, used up, forged or revoked", body = ErrorBody),
        (status = 409, description = "Key already enrolled, or local mode", body = ErrorBody),
    )
)]
pub async fn enroll(
    State(ctx): State<Arc<ApiContext>>,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<EnrollBody>, JsonRejection>,
) -> Result<(StatusCode, Json<EnrollAnswer>), ApiError> {
    let e = enrollment(&ctx)?;
    let b = json_body(body)?;
    note(&audit, |n| {
        n.set_action("agent.enroll");
        n.set_actor(format!("agent-key:{}", b.public_key.chars().take(56).collect::<String>()));
    });
    if !b.public_key.starts_with('U') || nkeys::KeyPair::from_public_key(&b.public_key).is_err() {
        return Err(ApiError::bad_parameter("public_key", "not an NKey user public key (U...)"));
    }
    let hostname = text("hostname", &b.hostname, true)?;
    let name = match &b.name {
        Some(n) => text("name", n, true)?,
        None => hostname.clone(),
    };
    let req = EnrollRequest {
        public_key: b.public_key.clone(),
        name,
        host: HostFacts {
            hostname,
            os: text("os", &b.os, false)?,
            arch: text("arch", &b.arch, false)?,
            ..Default::default()
        },
        agent_version: text("agent_version", &b.agent_version, false)?,
        csr: b.csr.clone().filter(|c| !c.trim().is_empty()),
    };
    match e.enroll(&b.token, req).await {
        Ok(done) => {
            note(&audit, |n| {
                n.set_target(done.agent_id.to_string());
                n.set_detail(format!("token {}", done.token_id));
            });
            ctx.metrics.enrollments.inc();
            Ok((
                StatusCode::CREATED,
                Json(EnrollAnswer {
                    agent_id: done.agent_id.to_string(),
                    jwt: done.jwt,
                    ca_pem: e.ca_pem.clone(),
                    nats_url: e.agent_nats_url.clone(),
                    subject_prefix: e.subject_prefix.clone(),
                    groups: done.groups,
                    labels: done.labels,
                    client_cert: done.client_cert,
                }),
            ))
        }
        Err(EnrollError::Token(r)) => {
            note(&audit, |n| n.set_detail(r.as_str()));
            ctx.metrics.enroll_refused(r.label());
            if let Some(s) = e.warn.allow() {
                tracing::warn!(reason = r.as_str(), suppressed = s, "enrollment refused");
            }
            Err(invalid_token())
        }
        Err(EnrollError::KeyInUse) => {
            ctx.metrics.enroll_refused("key_in_use");
            Err(ApiError::new(StatusCode::CONFLICT, "key_in_use", EnrollError::KeyInUse.to_string()))
        }
        Err(EnrollError::Jwt(err)) => Err(ApiError::bad_parameter("public_key", err)),
        Err(EnrollError::CsrMissing) => {
            note(&audit, |n| n.set_detail("csr missing (mutual TLS)"));
            ctx.metrics.enroll_refused("csr");
            Err(ApiError::bad_parameter(
                "csr",
                "this deployment requires mutual TLS: send a PEM certificate signing request",
            ))
        }
        Err(EnrollError::Csr(err)) => {
            note(&audit, |n| n.set_detail("bad csr"));
            ctx.metrics.enroll_refused("csr");
            Err(ApiError::bad_parameter("csr", err))
        }
        Err(EnrollError::Db(err)) => Err(db_error(err)),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigRequest {
    /// `[agent] name` [default: the host's name].
    pub name: Option<String>,
    pub groups: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Lifetime of the single-use token inside [default 24h].
    pub expires_in: Option<String>,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The agent config with a fresh single-use token in `[enrollment]`.
pub fn render_agent_config(
    name: &str,
    manager: &str,
    token: &str,
    fingerprint: &str,
    nats_url: &str,
    prefix: &str,
) -> String {
    format!(
        "# secmon-agent configuration, generated by the manager.\n\
         # On its first start the agent enrolls with [enrollment] (the token is single-use and\n\
         # pins the manager's CA), writes its NATS creds and the [nats] keys, then runs.\n\
         # Keys not written here take their defaults (see secmon-agent's default config).\n\
         \n\
         [agent]\n\
         name = {}\n\
         state_dir = \"/var/lib/secmon-agent\"\n\
         heartbeat_interval = \"5s\"\n\
         \n\
         [nats]\n\
         url = {}\n\
         subject_prefix = {}\n\
         \n\
         [enrollment]\n\
         manager = {}\n\
         token = {}\n\
         ca_fingerprint = {}\n",
        toml_str(name),
        toml_str(nats_url),
        toml_str(prefix),
        toml_str(manager),
        toml_str(token),
        toml_str(fingerprint),
    )
}

/// A complete agent config with a fresh single-use enrollment token (admin).
#[utoipa::path(
    post, path = "/api/agent-config", tag = "enrollment",
    request_body = AgentConfigRequest,
    responses(
        (status = 200, description = "Agent TOML config (attachment)", content_type = "text/plain", body = String),
        (status = 400, description = "Bad field", body = ErrorBody),
        (status = 409, description = "Local mode", body = ErrorBody),
    )
)]
pub async fn agent_config(
    State(ctx): State<Arc<ApiContext>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<AgentConfigRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let e = enrollment(&ctx)?;
    let req = json_body(body)?;
    let name = text("name", req.name.as_deref().unwrap_or(""), false)?;
    let spec =
        TokenRequest { uses: Some(1), expires_in: req.expires_in, groups: req.groups, labels: req.labels };
    let (info, token) = new_token(e, spec, &principal_name(&principal)).await?;
    note(&audit, |n| {
        n.set_action("agent_config.create");
        n.set_target(info.id.clone());
    });
    let body = render_agent_config(
        &name,
        &e.public_api_url,
        &token,
        &e.ca_fingerprint,
        &e.agent_nats_url,
        &e.subject_prefix,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"secmon-agent.toml\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_config_quotes_values() {
        let t =
            render_agent_config("web \"1\"", "https://m:8443", "SE1.ab.cd", "ab", "tls://m:4222", "secmon");
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["agent"]["name"].as_str(), Some("web \"1\""));
        assert_eq!(v["enrollment"]["token"].as_str(), Some("SE1.ab.cd"));
        assert_eq!(v["enrollment"]["manager"].as_str(), Some("https://m:8443"));
        assert_eq!(v["nats"]["url"].as_str(), Some("tls://m:4222"));
    }
}
