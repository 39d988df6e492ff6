//! `POST /api/login`, `POST /api/logout`, `GET /api/me`, users (`/api/users*`),
//! API tokens (`/api/tokens*`) and `GET /api/audit`. The role each needs is
//! enforced by [`super::middleware`]; these handlers validate and act.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::audit::{AuditNote, AuditQuery, AuditRecord};
use super::middleware::{ClientAddr, bearer};
use super::users::{UserError, UserRecord, valid_name};
use super::{locks, password, tokens, users};
use crate::api::ApiContext;
use crate::api::error::{ApiError, ErrorBody, echo, json_body};
use crate::api::params::{self, NoParams};
use crate::security::{Principal, Role};
use crate::store::Page;

/// Longest `expires_in` of an API token.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

fn db_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "security database failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_error",
        "the manager's security database failed; see its log",
    )
}

fn note(n: &Option<Extension<AuditNote>>) -> AuditNote {
    n.as_ref().map(|e| e.0.clone()).unwrap_or_default()
}

/// The caller; the middleware always sets one on authenticated routes, so its
/// absence is refused rather than guessed.
fn caller(p: Option<Extension<Principal>>) -> Result<Principal, ApiError> {
    p.map(|e| e.0).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not authenticated"))
}

fn role_param(role: &str) -> Result<Role, ApiError> {
    role.parse().map_err(|_| {
        ApiError::bad_request(format!("invalid role {}: expected admin, analyst or readonly", echo(role)))
    })
}

/// Credentials. (No Debug: it holds a password.)
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginAnswer {
    /// Bearer token for `Authorization: Bearer <token>`; shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
    pub role: Role,
}

/// Log in: a session token valid for `[security] session_ttl`.
#[utoipa::path(
    post, path = "/api/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = LoginAnswer),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password (`unauthorized`, the same for both)", body = ErrorBody),
        (status = 429, description = "Locked out after too many failures (`locked`); see Retry-After", body = ErrorBody),
    )
)]
pub async fn login(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
    client: Option<Extension<ClientAddr>>,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Json<LoginAnswer>, Response> {
    let auth = &ctx.auth;
    let audit = note(&audit);
    let _: NoParams = params::query(&uri).map_err(IntoResponse::into_response)?;
    let b = json_body(body).map_err(IntoResponse::into_response)?;
    // A user name is recorded as given only when it is one (not, say, a password
    // typed into the wrong field).
    audit.set_actor(if valid_name(&b.username) { b.username.clone() } else { "<invalid user name>".into() });
    let ip = client.map(|c| c.0.0.ip());
    // Names that cannot exist share one limiter key, so junk names cannot fill its memory.
    let key = if valid_name(&b.username) { b.username.as_str() } else { "<invalid>" };
    if let Err(wait) = auth.limiter.check(key, ip) {
        audit.set_detail("locked out");
        return Err(locked(wait));
    }
    let bad = || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid user name or password");
    let user = if valid_name(&b.username) {
        let name = b.username.clone();
        auth.db.call(move |c| users::find(c, &name)).await.map_err(|e| db_error(e).into_response())?
    } else {
        None
    };
    // argon2 runs outside the database lock (one connection serves every request's
    // token check) and at most `verify_slots` at once.
    let permit = auth.verify_slots.acquire().await.map_err(|_| bad().into_response())?;
    let pw = b.password;
    let found = tokio::task::spawn_blocking(move || match user {
        Some((role, hash)) => password::verify(&pw, &hash).then_some(role),
        None => {
            password::verify_dummy(&pw);
            None
        }
    })
    .await
    .map_err(|e| db_error(e).into_response())?;
    drop(permit);
    let Some(role) = found else {
        audit.set_detail("bad credentials");
        let failure = auth.limiter.failure(key, ip);
        if failure.retry_after.is_some() {
            audit.set_detail("bad credentials; now locked out");
            tracing::warn!(user = %echo(&b.username), client = ?ip, "login locked out after repeated failures");
        }
        if !failure.new_locks.is_empty() {
            // Kept across restarts; a write that fails leaves the lock in memory only.
            let new_locks = failure.new_locks;
            if let Err(e) = auth.db.call(move |c| locks::save(c, &new_locks, Utc::now())).await {
                tracing::error!(error = %e, "cannot record a login lockout in the security database");
            }
        }
        return Err(bad().into_response());
    };
    auth.limiter.success(key);
    let (ttl, name) = (auth.session_ttl, b.username.clone());
    let (token, expires_at) = auth
        .db
        .call(move |c| tokens::create_session(c, &name, ttl))
        .await
        .map_err(|e| db_error(e).into_response())?;
    Ok(Json(LoginAnswer { token, expires_at, username: b.username, role }))
}

fn locked(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "locked",
        format!("too many failed logins; try again in {secs} s"),
    )
    .into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// End the session of the bearer token (API tokens are revoked with DELETE /api/tokens/{id}).
#[utoipa::path(
    post, path = "/api/logout", tag = "auth",
    responses((status = 204, description = "Session ended"), (status = 401, description = "No valid token", body = ErrorBody))
)]
pub async fn logout(
    State(ctx): State<Arc<ApiContext>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let _: NoParams = params::query(&uri)?;
    if let Some(token) = bearer(&headers).map(str::to_owned) {
        ctx.auth.db.call(move |c| tokens::end_session(c, &token)).await.map_err(db_error)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[utoipa::path(
    get, path = "/api/me", tag = "auth",
    responses((status = 200, description = "The caller", body = Principal), (status = 401, description = "No valid token", body = ErrorBody))
)]
pub async fn me(p: Option<Extension<Principal>>, uri: Uri) -> Result<Json<Principal>, ApiError> {
    let _: NoParams = params::query(&uri)?;
    Ok(Json(caller(p)?))
}

/// List users (admin).
#[utoipa::path(
    get, path = "/api/users", tag = "auth",
    responses((status = 200, description = "Users", body = [UserRecord]), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub async fn list_users(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    let _: NoParams = params::query(&uri)?;
    Ok(Json(ctx.auth.db.call(|c| users::list(c)).await.map_err(db_error)?))
}

/// A new user. (No Debug: it may hold a password.)
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    #[schema(example = "analyst")]
    pub role: String,
    /// 12 to 1024 bytes; generated (and returned once) when absent.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub username: String,
    pub role: Role,
    /// Only when generated; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::BadName => ApiError::bad_request(e.to_string()),
        UserError::Password(password::PasswordError::Policy) => ApiError::bad_request(e.to_string()),
        UserError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        UserError::NotFound(_) => ApiError::not_found(e.to_string()),
        UserError::LastAdmin(_) => ApiError::new(StatusCode::CONFLICT, "last_admin", e.to_string()),
        other => db_error(other),
    }
}

/// Create a user (admin).
#[utoipa::path(
    post, path = "/api/users", tag = "auth",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = CreatedUser),
        (status = 400, description = "Bad name, role or password", body = ErrorBody),
        (status = 409, description = "Name taken (`exists`)", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let _: NoParams = params::query(&uri)?;
    let b = json_body(body)?;
    if !valid_name(&b.username) {
        return Err(user_error(UserError::BadName));
    }
    note(&audit).set_target(b.username.clone());
    let role = role_param(&b.role)?;
    note(&audit).set_detail(format!("role {role}"));
    let (hash, generated) =
        tokio::task::spawn_blocking(move || users::choose_password(b.password.as_deref()))
            .await
            .map_err(db_error)?
            .map_err(user_error)?;
    let name = b.username.clone();
    ctx.auth
        .db
        .call(move |c| Ok(users::insert(c, &name, role, &hash)))
        .await
        .map_err(db_error)?
        .map_err(user_error)?;
    Ok((StatusCode::CREATED, Json(CreatedUser { username: b.username, role, password: generated })))
}

/// Delete a user (admin); its sessions end. The last admin cannot be deleted.
#[utoipa::path(
    delete, path = "/api/users/{username}", tag = "auth",
    params(("username" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 409, description = "The last admin (`last_admin`)", body = ErrorBody),
    )
)]
pub async fn delete_user(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let _: NoParams = params::query(&uri)?;
    let name = match path {
        Ok(Path(n)) if valid_name(&n) => n,
        Ok(Path(n)) => {
            return Err(ApiError::bad_parameter("username", format!("{} is not a user name", echo(&n))));
        }
        Err(e) => return Err(ApiError::bad_parameter("username", e.body_text())),
    };
    ctx.auth.db.call(move |c| Ok(users::delete(c, &name))).await.map_err(db_error)?.map_err(user_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 characters of A-Z a-z 0-9 . _ @ -; the caller appears as `token:<name>`.
    pub name: String,
    #[schema(example = "readonly")]
    pub role: String,
    /// Lifetime such as `30d` or `12h` (at most 5 years); none: does not expire.
    #[serde(default)]
    pub expires_in: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The bearer token; shown once, only its digest is kept.
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Create an API token (admin).
#[utoipa::path(
    post, path = "/api/tokens", tag = "auth",
    request_body = NewToken,
    responses((status = 201, description = "Created; the token is shown once", body = CreatedToken), (status = 400, description = "Bad body", body = ErrorBody))
)]
pub async fn create_token(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
    p: Option<Extension<Principal>>,
    audit: Option<Extension<AuditNote>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let _: NoParams = params::query(&uri)?;
    let by = caller(p)?;
    let b = json_body(body)?;
    if !valid_name(&b.name) {
        return Err(ApiError::bad_request(
            "invalid token name: expected 1 to 64 characters of A-Z a-z 0-9 . _ @ -",
        ));
    }
    let role = role_param(&b.role)?;
    let expires_at = match b.expires_in.as_deref() {
        None => None,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() && d <= MAX_TOKEN_LIFETIME => Some(
                Utc::now()
                    + chrono::Duration::from_std(d)
                        .map_err(|_| ApiError::bad_request("expires_in too long"))?,
            ),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid expires_in {}: expected a duration such as 30d or 12h, at most 5 years",
                    echo(s)
                )));
            }
        },
    };
    let name = b.name.clone();
    let (info, token) = ctx
        .auth
        .db
        .call(move |c| tokens::create_api_token(c, &name, role, &by.name, expires_at))
        .await
        .map_err(db_error)?;
    let n = note(&audit);
    n.set_target(info.id.clone());
    n.set_detail(format!("name {} role {role}", info.name));
    Ok((StatusCode::CREATED, Json(CreatedToken { id: info.id, name: info.name, role, token, expires_at })))
}

/// List API tokens (admin; no secrets).
#[utoipa::path(
    get, path = "/api/tokens", tag = "auth",
    responses((status = 200, description = "API tokens", body = [tokens::ApiTokenInfo]))
)]
pub async fn list_tokens(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Vec<tokens::ApiTokenInfo>>, ApiError> {
    let _: NoParams = params::query(&uri)?;
    Ok(Json(ctx.auth.db.call(|c| tokens::list_api_tokens(c)).await.map_err(db_error)?))
}

/// Revoke an API token (admin).
#[utoipa::path(
    delete, path = "/api/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "Unknown token", body = ErrorBody))
)]
pub async fn delete_token(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let _: NoParams = params::query(&uri)?;
    let id = match path {
        Ok(Path(id)) if uuid::Uuid::parse_str(&id).is_ok() => id,
        Ok(Path(id)) => {
            return Err(ApiError::bad_parameter("id", format!("{} is not a token id", echo(&id))));
        }
        Err(e) => return Err(ApiError::bad_parameter("id", e.body_text())),
    };
    let shown = id.clone();
    if ctx.auth.db.call(move |c| tokens::delete_api_token(c, &id)).await.map_err(db_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no API token with id {shown}")))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only records of this actor (user name, `token:<name>`, `local`, `anonymous`).
    actor: Option<String>,
    /// Only this action (`login`, `agent.command`, ...).
    action: Option<String>,
    /// At or after: RFC 3339 or an age (`15m`, `7d`).
    since: Option<String>,
    /// Before: RFC 3339 or an age.
    until: Option<String>,
    /// Rows to skip (at most 1000000).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Rows to return (default 50, at most 1000).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// The audit log, newest first (admin).
#[utoipa::path(
    get, path = "/api/audit", tag = "auth",
    params(AuditParams),
    responses(
        (status = 200, description = "One page of audit records", body = Page<AuditRecord>),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
pub async fn list_audit(
    State(ctx): State<Arc<ApiContext>>,
    uri: Uri,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    let p: AuditParams = params::query(&uri)?;
    let now = Utc::now();
    let (offset, limit) = params::paging(p.offset.as_deref(), p.limit.as_deref())?;
    let since = params::time("since", p.since.as_deref(), now)?;
    let until = params::time("until", p.until.as_deref(), now)?;
    params::time_range(since, until)?;
    let q = AuditQuery {
        actor: params::text("actor", p.actor)?,
        action: params::text("action", p.action)?,
        since,
        until,
        offset,
        limit,
    };
    let (items, total) = ctx.auth.db.call(move |c| super::audit::query(c, &q)).await.map_err(db_error)?;
    Ok(Json(Page { items, total, offset, limit }))
}
