//! Secure mode: who may use the API (users, tokens, roles, audit), how agents join
//! (enrollment tokens, NATS user JWTs, revocation) and how their events are trusted
//! (signatures against the enrolled key).
//!
//! Its state lives in `<data_dir>/security.db` (SQLite, 0600), apart from the event
//! store: it holds password hashes and token digests, is small, and is backed up and
//! permissioned on its own.
//!
//! With `[security] enabled = false` (local mode) the API is open and every request
//! acts as the local admin; requests are still audited.

pub mod auth;
pub mod db;
pub mod enroll;
pub mod https;
pub mod roles;

pub use db::{SecurityDb, SecurityDbError};
pub use roles::{AuthKind, Principal, Role};
