//! `/v1/tokens` (an extension; admin only, see `authz`): `POST` makes a token and
//! answers 201 with its secret (the only time it is shown), `GET` lists them (no
//! secrets), `DELETE /v1/tokens/NAME` revokes one at once.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{TokenCreateRequest, TokenResponse};

use super::{parse_body, ApiError, ApiResult, ApiState};
use crate::db::{ApiToken, DbError};

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
