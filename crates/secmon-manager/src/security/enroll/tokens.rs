//! Enrollment tokens: `SE1.<ca fingerprint hex>.<32 random bytes, base64url>`. The
//! fingerprint lets an agent pin the CA from the token alone; only the SHA-256 of the
//! whole string is stored. Using a token checks and decrements it in one transaction.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

pub use crate::security::auth::tokens::digest;

/// Version tag at the start of every enrollment token.
pub const TOKEN_PREFIX: &str = "SE1";

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    uses INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    expires_at TEXT,
    groups TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);";

/// An enrollment token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub uses: u32,
    pub uses_left: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

/// What a new token allows.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub uses: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Why a token was refused. The client always gets the same `invalid_token`; the
/// audit log and the manager log get this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `SE1.<64 hex>.<base64url>`.
    Malformed,
    /// Carries another CA's fingerprint.
    WrongCa,
    /// Right format, no such digest: unknown or forged.
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed token",
            Refusal::WrongCa => "token for another CA",
            Refusal::Unknown => "unknown or forged token",
            Refusal::Expired => "expired token",
            Refusal::UsedUp => "used-up token",
            Refusal::Revoked => "revoked token",
        }
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::WrongCa => "wrong_ca",
            Refusal::Unknown => "unknown",
            Refusal::Expired => "expired",
            Refusal::UsedUp => "used_up",
            Refusal::Revoked => "revoked",
        }
    }
}

/// A fresh token string for the CA with this fingerprint.
pub fn new_token(ca_fingerprint: &str) -> String {
    let secret: [u8; 32] = rand::rng().random();
    format!("{TOKEN_PREFIX}.{ca_fingerprint}.{}", URL_SAFE_NO_PAD.encode(secret))
}

/// Checks the shape of a token and that it names our CA.
pub fn check_format(token: &str, ca_fingerprint: &str) -> Result<(), Refusal> {
    let mut parts = token.split('.');
    let (Some(TOKEN_PREFIX), Some(fp), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::Malformed);
    }
    match URL_SAFE_NO_PAD.decode(secret) {
        Ok(b) if b.len() == 32 => {}
        _ => return Err(Refusal::Malformed),
    }
    if !fp.eq_ignore_ascii_case(ca_fingerprint) {
        return Err(Refusal::WrongCa);
    }
    Ok(())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Stores a new token; returns it listed and its secret string (shown once).
pub fn create(
    conn: &Connection,
    spec: &TokenSpec,
    created_by: &str,
    ca_fingerprint: &str,
) -> rusqlite::Result<(TokenInfo, String)> {
    let token = new_token(ca_fingerprint);
    let info = TokenInfo {
        id: uuid::Uuid::now_v7().to_string(),
        uses: spec.uses,
        uses_left: spec.uses,
        expires_at: spec.expires_at,
        groups: spec.groups.clone(),
        labels: spec.labels.clone(),
        created_by: created_by.to_string(),
        created_at: Utc::now(),
        revoked: false,
    };
    conn.execute(
        "INSERT INTO enrollment_tokens (id, digest, uses, uses_left, expires_at, groups, labels, created_by, created_at, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
        params![
            info.id,
            digest(&token),
            info.uses,
            info.uses_left,
            info.expires_at.map(ts),
            json_text(&info.groups),
            json_text(&info.labels),
            info.created_by,
            ts(info.created_at),
        ],
    )?;
    Ok((info, token))
}

const COLUMNS: &str = "id, uses, uses_left, expires_at, groups, labels, created_by, created_at, revoked";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let expires: Option<String> = r.get(3)?;
    let groups: String = r.get(4)?;
    let labels: String = r.get(5)?;
    let created: String = r.get(7)?;
    Ok(TokenInfo {
        id: r.get(0)?,
        uses: r.get(1)?,
        uses_left: r.get(2)?,
        expires_at: expires.as_deref().map(parse_ts),
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        created_by: r.get(6)?,
        created_at: parse_ts(&created),
        revoked: r.get::<_, i64>(8)? != 0,
    })
}

/// Every token, newest first.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<TokenInfo>> {
    let mut st =
        conn.prepare(&format!("SELECT {COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC, id DESC"))?;
    st.query_map([], row)?.collect()
}

/// Revokes a token; false when there is no such token.
pub fn revoke(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("UPDATE enrollment_tokens SET revoked = 1 WHERE id = ?1", [id])? == 1)
}

/// Checks a token without taking a use: it exists, is not revoked or expired, and has
/// a use left. For work worth doing only for a good token (signing a CSR); the use is
/// taken by [`consume`], which checks again.
pub fn check(
    conn: &Connection,
    token: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Result<TokenInfo, Refusal>> {
    let found = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM enrollment_tokens WHERE digest = ?1"),
            [digest(token)],
            row,
        )
        .optional()?;
    let Some(info) = found else { return Ok(Err(Refusal::Unknown)) };
    if info.revoked {
        return Ok(Err(Refusal::Revoked));
    }
    if info.expires_at.is_some_and(|t| t <= now) {
        return Ok(Err(Refusal::Expired));
    }
    if info.uses_left == 0 {
        return Ok(Err(Refusal::UsedUp));
    }
    Ok(Ok(info))
}

/// Checks a token and takes one use, inside the caller's transaction (which also
/// records the enrolled key, so a failed enrollment gives the use back).
pub fn consume(
    tx: &Transaction<'_>,
    token: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Result<TokenInfo, Refusal>> {
    let info = match check(tx, token, now)? {
        Ok(info) => info,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // The condition in the UPDATE makes the use atomic even without the transaction.
    let n = tx.execute(
        "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1 AND uses_left > 0",
        [&info.id],
    )?;
    if n == 0 {
        return Ok(Err(Refusal::UsedUp));
    }
    Ok(Ok(TokenInfo { uses_left: info.uses_left - 1, ..info }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    const FP: &str = "ab00000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_token_is_used_up_expires_and_is_revoked() {
        let mut c = conn();
        let spec = TokenSpec { uses: 2, ..Default::default() };
        let (info, token) = create(&c, &spec, "admin", FP).unwrap();
        check_format(&token, FP).unwrap();
        let secret = token.rsplit('.').next().unwrap();
        assert!(!format!("{info:?}").contains(secret));
        // Only the digest is stored: no column of any row holds the token or its secret.
        let stored: Vec<String> = c
            .prepare("SELECT * FROM enrollment_tokens")
            .unwrap()
            .query_map([], |r| {
                Ok((0..r.as_ref().column_count())
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(stored.iter().all(|row| !row.contains(secret)), "{stored:?}");
        assert!(stored.iter().any(|row| row.contains(&digest(&token))), "{stored:?}");
        let now = Utc::now();
        // A check takes no use.
        for _ in 0..3 {
            assert_eq!(check(&c, &token, now).unwrap().unwrap().uses_left, 2);
        }
        for left in [1, 0] {
            let tx = c.transaction().unwrap();
            assert_eq!(consume(&tx, &token, now).unwrap().unwrap().uses_left, left);
            tx.commit().unwrap();
        }
        let tx = c.transaction().unwrap();
        assert_eq!(consume(&tx, &token, now).unwrap(), Err(Refusal::UsedUp));
        drop(tx);
        assert_eq!(check(&c, &token, now).unwrap(), Err(Refusal::UsedUp));

        let spec =
            TokenSpec { uses: 1, expires_at: Some(now - chrono::Duration::seconds(1)), ..Default::default() };
        let (_, expired) = create(&c, &spec, "admin", FP).unwrap();
        let (other, revoked) = create(&c, &TokenSpec { uses: 1, ..Default::default() }, "admin", FP).unwrap();
        assert!(revoke(&c, &other.id).unwrap());
        assert!(!revoke(&c, "nope").unwrap());
        let tx = c.transaction().unwrap();
        assert_eq!(consume(&tx, &expired, now).unwrap(), Err(Refusal::Expired));
        assert_eq!(consume(&tx, &revoked, now).unwrap(), Err(Refusal::Revoked));
        assert_eq!(consume(&tx, &new_token(FP), now).unwrap(), Err(Refusal::Unknown));
        assert_eq!(check(&tx, &expired, now).unwrap(), Err(Refusal::Expired));
        assert_eq!(check(&tx, &revoked, now).unwrap(), Err(Refusal::Revoked));
        assert_eq!(check(&tx, &new_token(FP), now).unwrap(), Err(Refusal::Unknown));
        drop(tx);
        assert_eq!(list(&c).unwrap().len(), 3);
    }

    #[test]
    fn formats_are_checked() {
        assert_eq!(check_format(&new_token(FP), FP), Ok(()));
        let other = "cd".repeat(32);
        assert_eq!(check_format(&new_token(&other), FP), Err(Refusal::WrongCa));
        for bad in ["", "SE1", "SE1.x.y", &format!("SE2.{FP}.{}", "A".repeat(43)), &format!("SE1.{FP}.short")]
        {
            assert_eq!(check_format(bad, FP), Err(Refusal::Malformed), "{bad:?}");
        }
    }
}
