use std::fmt;

use serde::{Deserialize, Serialize};

/// An agent's identifier. It is a NATS subject token, so it is restricted to
/// `[A-Za-z0-9_-]{1,64}`: no dots, wildcards or whitespace can smuggle an agent
/// onto another agent's subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid agent id {0:?}: expected 1 to 64 characters of [A-Za-z0-9_-]")]
pub struct AgentIdError(pub String);

impl AgentId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<Self, AgentIdError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(Self(s)) } else { Err(AgentIdError(s)) }
    }

    /// A fresh random id (UUIDv7, so ids sort by creation time).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = AgentIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> String {
        id.0
    }
}

impl std::str::FromStr for AgentId {
    type Err = AgentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_subject_metacharacters() {
        for bad in ["", "a.b", "a*", ">", "a b", "ä", &"x".repeat(65)] {
            assert!(AgentId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(AgentId::new("web-01_a").is_ok());
        assert!(AgentId::new(AgentId::generate().to_string()).is_ok());
    }
}
