//! Join tokens (`/lattice/v1/jointoken/<id>`, a `JoinTokenRecord`): created by
//! the operator (`lattice token create`), used once by a joining machine. Only the
//! secret's SHA-256 is stored; whether a token may be used is
//! `lattice_specs::join::decide`'s decision, and using it is one compare-and-swap,
//! so two joiners racing with one token cannot both get a certificate.

use lattice_specs::identity::{Identity, Role};
use lattice_specs::join::{
    self, CaFingerprint, JoinRefusal, JoinToken, JoinTokenRecord, TokenRequestError,
};
use lattice_specs::now_nanos;
use lattice_specs::validation::{FieldError, ValidationErrors};
use prost::Message;

use super::txn::Write;
use super::{Db, DbError, Result, JOIN_TOKEN};

/// How long the record of a used or expired token is kept (so a second use says
/// "already used" or "expired" rather than "unknown").
const KEEP_SPENT_NANOS: i64 = 7 * 24 * 3600 * 1_000_000_000;

fn token_key(id: &str) -> String {
    format!("{JOIN_TOKEN}{id}")
}

fn refused(e: JoinRefusal) -> DbError {
    DbError::Conflict {
        name: e.name(),
        message: e.to_string(),
    }
}

impl Db {
    /// A new token for `req`, naming the CA whose fingerprint is `ca`, and when it
    /// expires. The secret is in the returned token only: print it once.
    pub async fn create_join_token(
        &self,
        req: &join::TokenRequest,
        ca: CaFingerprint,
    ) -> Result<(JoinToken, i64)> {
        let token = JoinToken {
            ca,
            id: join::to_hex(&rand::random::<[u8; 8]>()),
            secret: join::to_hex(&rand::random::<[u8; 32]>()),
        };
        let now = now_nanos();
        let record = join::new_record(req, &token.id, &token.secret, now).map_err(|e| {
            let field = match e {
                TokenRequestError::BbsRole => "role",
                TokenRequestError::Name(_) => "name",
                TokenRequestError::Ttl => "ttl",
            };
            DbError::Invalid(ValidationErrors(vec![FieldError {
                field: field.into(),
                message: e.to_string(),
            }]))
        })?;
        self.prune_join_tokens(now).await?;
        let key = token_key(&token.id);
        if self
            .create(&key, record.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(DbError::Contended(key));
        }
        tracing::info!(id = %token.id, role = %req.role, name = ?req.name, ttl = ?req.ttl, "join token created");
        Ok((token, record.expires_at))
    }

    /// Uses `token` for a joiner asking to be `role` named `name`: the identity to
    /// certify, with the token marked used; or the refusal, with nothing changed.
    pub async fn use_join_token(
        &self,
        token: &JoinToken,
        role: Role,
        name: &str,
    ) -> Result<Identity> {
        let now = now_nanos();
        let id = self
            .modify(&token_key(&token.id), |cur: Option<JoinTokenRecord>| {
                let id =
                    join::decide(cur.as_ref(), &token.secret, role, name, now).map_err(refused)?;
                let used = join::mark_used(cur.unwrap_or_default(), &id, now);
                Ok((Write::Put(used), id))
            })
            .await?;
        tracing::info!(token = %token.id, identity = %id, "join token used");
        Ok(id)
    }

    /// Removes the records of tokens that expired more than a week ago.
    async fn prune_join_tokens(&self, now: i64) -> Result<()> {
        let stale: Vec<String> = self
            .list::<JoinTokenRecord>(JOIN_TOKEN)
            .await?
            .into_iter()
            .filter(|r| r.expires_at.saturating_add(KEEP_SPENT_NANOS) < now)
            .map(|r| token_key(&r.id))
            .collect();
        self.delete_all(stale).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use lattice_specs::errors::ErrorName;

    fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("bbs.db")).unwrap();
        (Db::new(Arc::new(store)), dir)
    }

    fn req(role: Role, name: Option<&str>, ttl: Duration) -> join::TokenRequest {
        join::TokenRequest {
            role,
            name: name.map(String::from),
            ttl,
        }
    }

    const FP: CaFingerprint = CaFingerprint([7; 32]);

    #[tokio::test]
    async fn a_token_is_stored_hashed_and_joins_once() {
        let (db, _dir) = db();
        let t = db
            .create_join_token(&req(Role::Cell, None, Duration::from_secs(60)), FP)
            .await
            .unwrap()
            .0;
        assert_eq!(t.ca, FP);
        let stored = db.store().list(JOIN_TOKEN).await.unwrap();
        assert_eq!(stored.len(), 1);
        let secret_in_store = stored[0]
            .value
            .windows(t.secret.len())
            .any(|w| w == t.secret.as_bytes());
        assert!(!secret_in_store, "the secret is stored only hashed");

        let id = db.use_join_token(&t, Role::Cell, "cell-a").await.unwrap();
        assert_eq!(id, Identity::new(Role::Cell, "cell-a").unwrap());
        let e = db
            .use_join_token(&t, Role::Cell, "cell-b")
            .await
            .unwrap_err();
        assert_eq!(e.name(), ErrorName::Forbidden);
        assert!(e.to_string().contains("already used"), "{e}");
        assert!(e.to_string().contains("cell cell-a"), "{e}");
    }

    #[tokio::test]
    async fn refused_uses_leave_the_token_usable() {
        let (db, _dir) = db();
        let t = db
            .create_join_token(
                &req(Role::Brain, Some("brain-1"), Duration::from_secs(60)),
                FP,
            )
            .await
            .unwrap()
            .0;
        let e = db
            .use_join_token(&t, Role::Cell, "brain-1")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("for a brain, not a cell"), "{e}");
        let e = db
            .use_join_token(&t, Role::Brain, "brain-2")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("only as \"brain-1\""), "{e}");
        let forged = JoinToken {
            secret: "00".repeat(32),
            ..t.clone()
        };
        let e = db
            .use_join_token(&forged, Role::Brain, "brain-1")
            .await
            .unwrap_err();
        assert_eq!(e.name(), ErrorName::Unauthorized);
        let unknown = JoinToken {
            id: "ffffffffffffffff".into(),
            ..t.clone()
        };
        let e = db
            .use_join_token(&unknown, Role::Brain, "brain-1")
            .await
            .unwrap_err();
        assert_eq!(e.name(), ErrorName::Unauthorized);
        assert!(db.use_join_token(&t, Role::Brain, "brain-1").await.is_ok());
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let (db, _dir) = db();
        let t = db
            .create_join_token(&req(Role::Router, None, Duration::from_secs(1)), FP)
            .await
            .unwrap()
            .0;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = db.use_join_token(&t, Role::Router, "r1").await.unwrap_err();
        assert_eq!(e.name(), ErrorName::Forbidden);
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[tokio::test]
    async fn a_bad_request_creates_nothing() {
        let (db, _dir) = db();
        let e = db
            .create_join_token(&req(Role::Bbs, None, Duration::from_secs(60)), FP)
            .await
            .unwrap_err();
        assert_eq!(e.name(), ErrorName::InvalidRequest);
        assert!(e.to_string().contains("role"), "{e}");
        assert!(db.store().list(JOIN_TOKEN).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn two_joiners_racing_with_one_token_get_one_identity() {
        let (db, _dir) = db();
        let t = db
            .create_join_token(&req(Role::Cell, None, Duration::from_secs(60)), FP)
            .await
            .unwrap()
            .0;
        let names: Vec<String> = (0..8).map(|i| format!("cell-{i}")).collect();
        let tries = names.iter().map(|n| db.use_join_token(&t, Role::Cell, n));
        let won = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(won, 1);
    }
}
