//! Public API tokens: each stored twice, under its name (`/lattice/v1/token/name/NAME`,
//! for listing and revoking) and under the SHA-256 of its secret
//! (`/lattice/v1/token/hash/SHA256`, for checking a request in one read), both written
//! and deleted in one transaction. The secret itself is never stored: it is shown once,
//! in the answer to its creation.

use base64::Engine;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::ApiRole;
use lattice_specs::validation::{FieldError, ValidationErrors};
use sha2::Digest;

use super::{Db, DbError, Result};
use crate::store::{Compare, Op, Txn};

pub const TOKEN_NAME: &str = "/lattice/v1/token/name/";
pub const TOKEN_HASH: &str = "/lattice/v1/token/hash/";

/// What every token's secret starts with (so a leaked one is recognisable).
pub const SECRET_PREFIX: &str = "lat_";

/// A token as stored (protobuf, like every other record).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiToken {
    #[prost(string, tag = "1")]
    pub name: String,
    /// admin, developer or viewer.
    #[prost(string, tag = "2")]
    pub role: String,
    /// Hex SHA-256 of the secret.
    #[prost(string, tag = "3")]
    pub sha256: String,
    /// Unix nanoseconds.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
}

impl ApiToken {
    /// Its role (a record with another is corrupt and grants nothing).
    pub fn api_role(&self) -> Option<ApiRole> {
        self.role.parse().ok()
    }
}

/// The hex SHA-256 a secret is stored and looked up by.
pub fn secret_hash(secret: &str) -> String {
    format!("{:x}", sha2::Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: [`SECRET_PREFIX`] and 256 random bits, base64url.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Token names: what reads well in an audit line and a URL.
pub fn check_token_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@' (e.g. ci-deploy or alice@laptop)"
        ))
    }
}

fn invalid(field: &str, message: String) -> DbError {
    DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message,
    }]))
}

fn token_not_found(name: &str) -> DbError {
    DbError::NotFound {
        name: ErrorName::TokenNotFound,
        message: format!("no token named {name}: `ltc token list` shows them"),
    }
}

impl Db {
    /// Makes token `name` with `role`: the record and its secret (shown once).
    pub async fn create_token(&self, name: &str, role: &str) -> Result<(ApiToken, String)> {
        check_token_name(name).map_err(|m| invalid("name", m))?;
        let role: ApiRole = role.parse().map_err(|m| invalid("role", m))?;
        let secret = new_secret();
        let t = ApiToken {
            name: name.into(),
            role: role.as_str().into(),
            sha256: secret_hash(&secret),
            created_at: lattice_specs::now_nanos(),
        };
        let (by_name, by_hash) = (
            format!("{TOKEN_NAME}{name}"),
            format!("{TOKEN_HASH}{}", t.sha256),
        );
        let value = prost::Message::encode_to_vec(&t);
        let txn = Txn::new()
            .when(Compare::absent(&by_name))
            .when(Compare::absent(&by_hash))
            .then(Op::put(&by_name, value.clone()))
            .then(Op::put(&by_hash, value));
        if !self.txn(txn).await?.succeeded {
            return Err(DbError::AlreadyExists {
                name: ErrorName::TokenAlreadyExists,
                message: format!(
                    "a token named {name} exists: revoke it first (`ltc token revoke {name}`) or pick another name"
                ),
            });
        }
        Ok((t, secret))
    }

    /// Every token, by name.
    pub async fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.list(TOKEN_NAME).await
    }

    /// The token whose secret is `secret`, if any (revoked ones are gone).
    pub async fn token_by_secret(&self, secret: &str) -> Result<Option<ApiToken>> {
        let key = format!("{TOKEN_HASH}{}", secret_hash(secret));
        Ok(self.get::<ApiToken>(&key).await?.map(|(t, _)| t))
    }

    /// Revokes token `name`: from now on its secret is refused.
    pub async fn revoke_token(&self, name: &str) -> Result<ApiToken> {
        let by_name = format!("{TOKEN_NAME}{name}");
        let mut attempts = super::txn::Attempts::on(&by_name);
        loop {
            attempts.next()?;
            let Some((t, rev)) = self.get::<ApiToken>(&by_name).await? else {
                return Err(token_not_found(name));
            };
            let txn = Txn::new()
                .when(Compare::ModRevision(by_name.clone(), rev))
                .then(Op::delete(&by_name))
                .then(Op::delete(format!("{TOKEN_HASH}{}", t.sha256)));
            if self.txn(txn).await?.succeeded {
                return Ok(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn tokens_are_found_by_secret_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(std::sync::Arc::new(
            EmbeddedStore::open(dir.path().join("s.db")).unwrap(),
        ));
        let (t, secret) = db.create_token("ci", "developer").await.unwrap();
        assert!(
            secret.starts_with(SECRET_PREFIX) && secret.len() == 4 + 43,
            "{secret}"
        );
        assert_eq!(t.sha256, secret_hash(&secret));
        assert_ne!(t.sha256, secret, "stored hashed");
        let found = db.token_by_secret(&secret).await.unwrap().unwrap();
        assert_eq!(
            (found.name.as_str(), found.api_role()),
            ("ci", Some(ApiRole::Developer))
        );
        assert_eq!(db.token_by_secret("lat_wrong").await.unwrap(), None);

        let e = db.create_token("ci", "viewer").await.unwrap_err();
        assert_eq!(e.name(), ErrorName::TokenAlreadyExists);
        let e = db.create_token("ci two", "viewer").await.unwrap_err();
        assert!(e.to_string().contains("token name"), "{e}");
        let e = db.create_token("x", "root").await.unwrap_err();
        assert!(e.to_string().contains("admin, developer or viewer"), "{e}");

        db.create_token("a", "viewer").await.unwrap();
        let names: Vec<_> = db
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["a", "ci"]);
        db.revoke_token("ci").await.unwrap();
        assert_eq!(db.token_by_secret(&secret).await.unwrap(), None);
        assert_eq!(
            db.revoke_token("ci").await.unwrap_err().name(),
            ErrorName::TokenNotFound
        );
        assert_eq!(db.tokens().await.unwrap().len(), 1);
    }
}
