//! `/v1/tokens` (an extension; admin only, see `authz`): `POST` makes a token and
//! answers 201 with its secret (the only time it is shown), `GET` lists them (no
//! secrets), `DELETE /v1/tokens/NAME` revokes one at once. And the first admin token
//! a single-machine cluster makes for itself ([`bootstrap_admin_token`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{TokenCreateRequest, TokenResponse};

use super::{parse_body, ApiError, ApiResult, ApiState};
use crate::db::{ApiToken, Db, DbError};

/// The name of the admin token `lattice up` makes on its first start.
pub const BOOTSTRAP_TOKEN: &str = "admin";

/// Makes admin token [`BOOTSTRAP_TOKEN`] and writes its secret to `file` (0600) unless
/// `file` exists; true when it made one. A token of that name whose file is gone (its
/// secret lost with it) is replaced.
pub async fn bootstrap_admin_token(db: &Db, file: &std::path::Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    use tokio::io::AsyncWriteExt;
    if file.exists() {
        return Ok(false);
    }
    let admin = lattice_specs::receptor::ApiRole::Admin.as_str();
    let (_, secret) = match db.create_token(BOOTSTRAP_TOKEN, admin).await {
        Err(DbError::AlreadyExists { .. }) => {
            db.revoke_token(BOOTSTRAP_TOKEN).await?;
            db.create_token(BOOTSTRAP_TOKEN, admin).await?
        }
        r => r?,
    };
    let write = async {
        let mut f = crate::private::write_file(file).await?;
        f.write_all(format!("{secret}\n").as_bytes()).await?;
        f.sync_all().await
    };
    write
        .await
        .with_context(|| format!("writing the admin token to {}", file.display()))?;
    tracing::info!(file = %file.display(), "admin API token made");
    Ok(true)
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{name}", delete(revoke_token))
}

fn db_err(e: DbError) -> ApiError {
    ApiError::from_db(e, ErrorName::InvalidRequest)
}

fn shown(t: ApiToken, secret: String) -> TokenResponse {
    TokenResponse {
        name: t.name,
        role: t.role,
        created_at: t.created_at,
        token: secret,
    }
}

async fn create_token(State(s): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let r: TokenCreateRequest = parse_body(&body)?;
    let (t, secret) = s.db.create_token(&r.name, &r.role).await.map_err(db_err)?;
    tracing::info!(token = %t.name, role = %t.role, "API token created");
    Ok((StatusCode::CREATED, Json(shown(t, secret))).into_response())
}

async fn list_tokens(State(s): State<ApiState>) -> ApiResult<Json<Vec<TokenResponse>>> {
    let all = s.db.tokens().await.map_err(db_err)?;
    Ok(Json(
        all.into_iter().map(|t| shown(t, String::new())).collect(),
    ))
}

async fn revoke_token(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.db.revoke_token(&name).await.map_err(db_err)?;
    tracing::info!(token = %name, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_start_makes_an_admin_token_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(std::sync::Arc::new(
            crate::store::embedded::EmbeddedStore::open(dir.path().join("s.db")).unwrap(),
        ));
        let file = dir.path().join("admin.token");
        assert!(bootstrap_admin_token(&db, &file).await.unwrap());
        let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let t = db.token_by_secret(&secret).await.unwrap().unwrap();
        assert_eq!((t.name.as_str(), t.role.as_str()), ("admin", "admin"));
        assert!(
            !bootstrap_admin_token(&db, &file).await.unwrap(),
            "later starts keep it"
        );
        // The file lost: a new secret, the old one refused.
        std::fs::remove_file(&file).unwrap();
        assert!(bootstrap_admin_token(&db, &file).await.unwrap());
        assert_eq!(db.token_by_secret(&secret).await.unwrap(), None);
        assert_eq!(db.tokens().await.unwrap().len(), 1);
    }
}
