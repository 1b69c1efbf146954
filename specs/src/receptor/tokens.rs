//! API tokens as the public API shows them (`/v1/tokens`, an extension): the roles a
//! token may have and the request and answers that make, list and revoke them.

use serde::{Deserialize, Serialize};

/// What a token's holder may do through the public API (the decision itself is the
/// BBS's `api::authz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Everything, cluster settings and tokens included.
    Admin,
    /// Apps, tasks, volumes and backups; no cluster settings, no tokens, no deleting
    /// backups or blobs.
    Developer,
    /// Reads only, with environment values and credentials hidden.
    Viewer,
}

impl ApiRole {
    pub const ALL: [ApiRole; 3] = [ApiRole::Admin, ApiRole::Developer, ApiRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Admin => "admin",
            ApiRole::Developer => "developer",
            ApiRole::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for ApiRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiRole {
    type Err = String;
    fn from_str(s: &str) -> Result<ApiRole, String> {
        ApiRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("role {s:?}: use admin, developer or viewer"))
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TokenCreateRequest {
    pub name: String,
    /// admin, developer or viewer.
    pub role: String,
}

/// A token as listed (`GET /v1/tokens`); `token` is the secret, present only in the
/// answer to the `POST` that made it (it is stored hashed and never shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TokenResponse {
    pub name: String,
    pub role: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_only() {
        for r in ApiRole::ALL {
            assert_eq!(r.as_str().parse::<ApiRole>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        let e = "root".parse::<ApiRole>().unwrap_err();
        assert!(e.contains("admin, developer or viewer"), "{e}");
    }
}
