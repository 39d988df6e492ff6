//! API users: name, role and argon2id password hash in the `users` table. The
//! blocking functions here serve `secmon-manager init` and the `user` subcommand;
//! the API handlers are in [`super::routes`].

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use super::password::{self, PasswordError};
use super::{from_ms, role_from_sql};
use crate::security::{Role, SecurityDb, SecurityDbError};

/// Name of the admin `secmon-manager init` creates.
pub const FIRST_ADMIN: &str = "admin";

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);";

/// A user as the API lists it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserRecord {
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name: expected 1 to 64 characters of A-Z a-z 0-9 . _ @ -")]
    BadName,
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("user {0:?} is the last admin; create another admin first")]
    LastAdmin(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Db(#[from] SecurityDbError),
}

impl From<rusqlite::Error> for UserError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// User and API-token names: short, printable, no separators that could be
/// confused with `token:<name>` principals or forge log lines.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

pub(crate) fn ensure_schema(db: &SecurityDb) -> Result<(), SecurityDbError> {
    db.ensure_schema(SCHEMA)
}

/// Inserts a user; `Exists` when the name is taken.
pub(crate) fn insert(conn: &Connection, name: &str, role: Role, hash: &str) -> Result<(), UserError> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO users (username, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.as_str(), hash, Utc::now().timestamp_millis()],
    )?;
    if n == 0 { Err(UserError::Exists(name.to_owned())) } else { Ok(()) }
}

/// The role and password hash of `name`.
pub(crate) fn find(conn: &Connection, name: &str) -> rusqlite::Result<Option<(Role, String)>> {
    conn.query_row("SELECT role, password_hash FROM users WHERE username = ?1", [name], |r| {
        Ok((role_from_sql(r, 0)?, r.get(1)?))
    })
    .optional()
}

pub(crate) fn list(conn: &Connection) -> rusqlite::Result<Vec<UserRecord>> {
    let mut st = conn.prepare("SELECT username, role, created_at FROM users ORDER BY username")?;
    st.query_map([], |r| {
        Ok(UserRecord { username: r.get(0)?, role: role_from_sql(r, 1)?, created_at: from_ms(r.get(2)?) })
    })?
    .collect()
}

/// Deletes `name` (its sessions go with it: foreign key cascade). Refuses the last
/// admin, so the deployment cannot lock itself out.
pub(crate) fn delete(conn: &mut Connection, name: &str) -> Result<(), UserError> {
    let tx = conn.transaction()?;
    let role = find(&tx, name)?.map(|(r, _)| r).ok_or_else(|| UserError::NotFound(name.to_owned()))?;
    if role == Role::Admin {
        let admins: i64 =
            tx.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| r.get(0))?;
        if admins <= 1 {
            return Err(UserError::LastAdmin(name.to_owned()));
        }
    }
    tx.execute("DELETE FROM auth_sessions WHERE username = ?1", [name])?;
    tx.execute("DELETE FROM users WHERE username = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

/// The password to set: the given one (policy-checked) or a generated one, which
/// is returned so the caller can show it once.
pub(crate) fn choose_password(given: Option<&str>) -> Result<(String, Option<String>), UserError> {
    match given {
        Some(p) => {
            password::check_policy(p)?;
            Ok((password::hash(p)?, None))
        }
        None => {
            let p = password::generate();
            Ok((password::hash(&p)?, Some(p)))
        }
    }
}

/// Adds a user (blocking; `init` and `secmon-manager user add`). Returns the
/// generated password when none was given.
pub fn add_user(
    db: &SecurityDb,
    name: &str,
    role: Role,
    pw: Option<&str>,
) -> Result<Option<String>, UserError> {
    if !valid_name(name) {
        return Err(UserError::BadName);
    }
    // The tokens schema includes the users table (sessions reference it).
    super::tokens::ensure_schema(db)?;
    let (hash, generated) = choose_password(pw)?;
    db.with_conn(|c| Ok(insert(c, name, role, &hash)))??;
    Ok(generated)
}

/// Creates the first admin ([`FIRST_ADMIN`]) with a generated password, unless the
/// database already has a user: then `None`, and nothing changes.
pub fn create_first_admin(db: &SecurityDb) -> Result<Option<String>, UserError> {
    ensure_schema(db)?;
    let users: i64 = db.with_conn(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))?;
    if users > 0 {
        return Ok(None);
    }
    add_user(db, FIRST_ADMIN, Role::Admin, None)
}

/// Sets a new password (generated when `pw` is `None`, then returned) and ends the
/// user's sessions.
pub fn reset_password(db: &SecurityDb, name: &str, pw: Option<&str>) -> Result<Option<String>, UserError> {
    // The tokens schema includes the users table (sessions reference it).
    super::tokens::ensure_schema(db)?;
    let (hash, generated) = choose_password(pw)?;
    let changed = db.with_conn(|c| {
        let n = c.execute("UPDATE users SET password_hash = ?2 WHERE username = ?1", params![name, hash])?;
        c.execute("DELETE FROM auth_sessions WHERE username = ?1", [name])?;
        Ok(n)
    })?;
    if changed == 0 {
        return Err(UserError::NotFound(name.to_owned()));
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_admin_once_and_last_admin_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = SecurityDb::open(dir.path()).unwrap();
        let pw = create_first_admin(&db).unwrap().expect("created");
        assert!(create_first_admin(&db).unwrap().is_none(), "second run must not reset");
        let (role, hash) = db.with_conn(|c| find(c, FIRST_ADMIN)).unwrap().unwrap();
        assert_eq!(role, Role::Admin);
        assert!(password::verify(&pw, &hash));
        assert!(matches!(
            db.with_conn(|c| Ok(delete(c, FIRST_ADMIN))).unwrap(),
            Err(UserError::LastAdmin(_))
        ));
        assert!(matches!(add_user(&db, "a b", Role::Readonly, None), Err(UserError::BadName)));
        assert!(matches!(add_user(&db, FIRST_ADMIN, Role::Readonly, None), Err(UserError::Exists(_))));
        let new = reset_password(&db, FIRST_ADMIN, None).unwrap().unwrap();
        let (_, hash) = db.with_conn(|c| find(c, FIRST_ADMIN)).unwrap().unwrap();
        assert!(password::verify(&new, &hash) && !password::verify(&pw, &hash));
    }
}
