//! Bearer tokens: sessions from `POST /api/login` (short-lived, bound to a user, so
//! deleting the user or resetting its password ends them) and long-lived API tokens
//! (own name and role, optional expiry). A token is 32 random bytes, shown once;
//! only its SHA-256 digest is stored, and lookups go by digest (no comparison of
//! secrets in Rust code, so nothing to time).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{from_ms, role_from_sql};
use crate::security::{AuthKind, Principal, Role, SecurityDb, SecurityDbError};

/// Prefix of session tokens (tells the kind apart without a lookup).
const SESSION_PREFIX: &str = "sms_";
/// Prefix of API tokens.
const API_TOKEN_PREFIX: &str = "smt_";
/// Longer bearer values are refused before hashing.
const MAX_TOKEN_LEN: usize = 128;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS auth_sessions (
    digest TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_sessions_expiry ON auth_sessions(expires_at);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);";

pub(crate) fn ensure_schema(db: &SecurityDb) -> Result<(), SecurityDbError> {
    super::users::ensure_schema(db)?;
    db.ensure_schema(SCHEMA)
}

/// An API token as listed (never the secret nor its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// `null`: does not expire.
    pub expires_at: Option<DateTime<Utc>>,
}

fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Lowercase hex SHA-256 of a token: what is stored and looked up.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new session for `username`; returns the token (shown once) and its expiry.
pub(crate) fn create_session(
    conn: &Connection,
    username: &str,
    ttl: std::time::Duration,
) -> rusqlite::Result<(String, DateTime<Utc>)> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    // Expired sessions are only garbage: clear them on the way.
    conn.execute("DELETE FROM auth_sessions WHERE expires_at <= ?1", [now.timestamp_millis()])?;
    let token = new_token(SESSION_PREFIX);
    conn.execute(
        "INSERT INTO auth_sessions (digest, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![digest(&token), username, now.timestamp_millis(), expires.timestamp_millis()],
    )?;
    Ok((token, expires))
}

/// Ends the session `token` belongs to (no-op for API tokens).
pub(crate) fn end_session(conn: &Connection, token: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM auth_sessions WHERE digest = ?1", [digest(token)])? > 0)
}

/// The caller a bearer token stands for, if it is a live session or API token.
pub(crate) fn lookup(
    conn: &Connection,
    token: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Principal>> {
    if token.len() > MAX_TOKEN_LEN {
        return Ok(None);
    }
    let now = now.timestamp_millis();
    if token.starts_with(SESSION_PREFIX) {
        conn.query_row(
            "SELECT u.username, u.role FROM auth_sessions s JOIN users u ON u.username = s.username
             WHERE s.digest = ?1 AND s.expires_at > ?2",
            params![digest(token), now],
            |r| Ok(Principal { name: r.get(0)?, role: role_from_sql(r, 1)?, auth: AuthKind::Session }),
        )
        .optional()
    } else if token.starts_with(API_TOKEN_PREFIX) {
        conn.query_row(
            "SELECT name, role FROM api_tokens WHERE digest = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            params![digest(token), now],
            |r| {
                let name: String = r.get(0)?;
                Ok(Principal {
                    name: format!("token:{name}"),
                    role: role_from_sql(r, 1)?,
                    auth: AuthKind::ApiToken,
                })
            },
        )
        .optional()
    } else {
        Ok(None)
    }
}

/// A new API token; returns its record and the token (shown once).
pub(crate) fn create_api_token(
    conn: &Connection,
    name: &str,
    role: Role,
    created_by: &str,
    expires_at: Option<DateTime<Utc>>,
) -> rusqlite::Result<(ApiTokenInfo, String)> {
    let token = new_token(API_TOKEN_PREFIX);
    let info = ApiTokenInfo {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        role,
        created_by: created_by.to_owned(),
        created_at: Utc::now(),
        expires_at,
    };
    conn.execute(
        "INSERT INTO api_tokens (id, name, role, digest, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            info.id,
            info.name,
            role.as_str(),
            digest(&token),
            info.created_by,
            info.created_at.timestamp_millis(),
            expires_at.map(|t| t.timestamp_millis())
        ],
    )?;
    Ok((info, token))
}

pub(crate) fn list_api_tokens(conn: &Connection) -> rusqlite::Result<Vec<ApiTokenInfo>> {
    let mut st = conn.prepare(
        "SELECT id, name, role, created_by, created_at, expires_at FROM api_tokens ORDER BY created_at, id",
    )?;
    st.query_map([], |r| {
        Ok(ApiTokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            role: role_from_sql(r, 2)?,
            created_by: r.get(3)?,
            created_at: from_ms(r.get(4)?),
            expires_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
        })
    })?
    .collect()
}

/// Revokes an API token; false when there is none with that id.
pub(crate) fn delete_api_token(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])? > 0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tokens_are_stored_as_digests_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = SecurityDb::open(dir.path()).unwrap();
        ensure_schema(&db).unwrap();
        super::super::users::add_user(&db, "ann", Role::Analyst, None).unwrap();
        let (session, _) = db.with_conn(|c| create_session(c, "ann", Duration::from_secs(60))).unwrap();
        let (info, api) = db.with_conn(|c| create_api_token(c, "ci", Role::Readonly, "ann", None)).unwrap();
        let dump: String = db
            .with_conn(|c| {
                c.query_row(
                    "SELECT group_concat(digest) || (SELECT group_concat(digest) FROM api_tokens) FROM auth_sessions",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert!(!dump.contains(&session) && !dump.contains(&api) && dump.contains(&digest(&api)));
        let now = Utc::now();
        let p = db.with_conn(|c| lookup(c, &session, now)).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.role, p.auth), ("ann", Role::Analyst, AuthKind::Session));
        let p = db.with_conn(|c| lookup(c, &api, now)).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.role, p.auth), ("token:ci", Role::Readonly, AuthKind::ApiToken));
        let later = now + chrono::Duration::seconds(61);
        assert!(db.with_conn(|c| lookup(c, &session, later)).unwrap().is_none(), "expired session");
        assert!(db.with_conn(|c| lookup(c, "sms_forged", now)).unwrap().is_none());
        assert!(db.with_conn(|c| delete_api_token(c, &info.id)).unwrap());
        assert!(db.with_conn(|c| lookup(c, &api, now)).unwrap().is_none(), "revoked");
    }
}
