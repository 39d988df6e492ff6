//! Passwords: argon2id hashes (PHC strings, salt and parameters inside), generated
//! passwords for new users, and the length policy.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use rand::distr::Alphanumeric;

/// Shortest password accepted when a user sets one.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (hashing cost stays bounded).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Length of a generated password (alphanumeric: ~143 bits).
const GENERATED_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes")]
    Policy,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Checks the length policy (the password itself is never part of an error).
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.len()) {
        Ok(())
    } else {
        Err(PasswordError::Policy)
    }
}

/// argon2id (default parameters: 19 MiB, 2 passes) with a random 16-byte salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string `stored`. A malformed stored hash
/// never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification, so an unknown user answers as slowly as a
/// wrong password (no user enumeration by timing).
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("secmon-dummy-password").unwrap_or_default());
    let _ = verify(password, stored);
}

/// A random alphanumeric password for a new user.
pub fn generate() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(GENERATED_LEN).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let pw = generate();
        assert_eq!(pw.len(), GENERATED_LEN);
        assert_ne!(pw, generate());
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(&pw));
        assert!(verify(&pw, &h));
        assert!(!verify("wrong-password-x", &h));
        assert!(!verify(&pw, "not a hash"));
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        check_policy(&pw).unwrap();
    }
}
