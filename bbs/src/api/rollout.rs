//! Rolling updates through the public API (`lattice_specs::receptor::rollout`):
//! a new definition (`POST /v1/desired_lrps/:guid/generations`: 201 with a new
//! generation, 200 in place or unchanged), the kept history (`GET` of the same
//! path), `POST …/rollback` and `POST …/promote`. Viewers may only read (see
//! `authz`); every change leaves its audit line (see `auth`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::rollout::{GenerationRequest, GenerationResponse, RollbackRequest};
use lattice_specs::receptor::DesiredLrpResponse;

use super::{owners, parse_body, ApiError, ApiResult, ApiState, Caller};
use crate::db::Rollback;

pub(super) async fn create_generation(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(guid): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: GenerationRequest = parse_body(&body)?;
    let definition = req.definition.into_model();
    crate::repos::rules::check_user_work(
        &definition.domain,
        &[
            ("definition.setup", definition.setup.as_ref()),
            ("definition.action", definition.action.as_ref()),
            ("definition.monitor", definition.monitor.as_ref()),
        ],
    )
    .map_err(ApiError::invalid_request)?;
    owners::ensure_may_mount(&s, &caller, &definition.volume_mounts).await?;
    let (d, made) =
        s.db.create_generation(&guid, definition, req.strategy.into(), &caller.name)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidLRP))?;
    let status = if made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(DesiredLrpResponse::from(d))).into_response())
}

pub(super) async fn list_generations(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Vec<GenerationResponse>>> {
    let all =
        s.db.generations(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

pub(super) async fn rollback(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(guid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<DesiredLrpResponse>> {
    let req: RollbackRequest = parse_body(&body)?;
    let reason = format!("rolled back by {}", caller.name);
    let r = Rollback {
        generation: req.generation,
        failed: false,
        reason: &reason,
        requested_by: &caller.name,
    };
    let d =
        s.db.rollback_desired_lrp(&guid, r)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(d.into()))
}

pub(super) async fn promote(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<DesiredLrpResponse>> {
    let d =
        s.db.promote(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(d.into()))
}
