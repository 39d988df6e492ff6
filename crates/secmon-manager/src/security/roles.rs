//! Roles and the authenticated caller of an API request.

use serde::{Deserialize, Serialize};

/// API roles, from least to most privileged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything except the audit log and users.
    Readonly,
    /// Readonly, plus acknowledging alerts and read-only agent commands.
    Analyst,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Readonly, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// True when this role has at least the rights of `min`.
    pub fn at_least(self, min: Role) -> bool {
        self >= min
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected admin, analyst or readonly"))
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// A bearer token from `POST /api/login`.
    Session,
    /// A long-lived API token.
    ApiToken,
    /// Local mode: no authentication.
    Local,
}

/// The caller of an API request, put into the request's extensions by the auth
/// middleware; handlers read it with `Extension<Principal>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// User name (for API tokens: `token:<name>`; local mode: `local`).
    pub name: String,
    pub role: Role,
    pub auth: AuthKind,
}

impl Principal {
    /// The caller in local mode.
    pub fn local() -> Self {
        Self { name: "local".into(), role: Role::Admin, auth: AuthKind::Local }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin.at_least(Role::Analyst));
        assert!(Role::Analyst.at_least(Role::Readonly));
        assert!(!Role::Readonly.at_least(Role::Analyst));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("admin, analyst or readonly"));
    }
}
