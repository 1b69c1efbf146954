//! `/v1/desired_lrps` and `/v1/actual_lrps`: desiring, updating and removing
//! LRPs, their instances, one instance's kill, and their containers' usage.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{self, ActualLrpResponse, DesiredLrpResponse};

use crate::db::OwnedKind;

use super::{
    created, domain_filter, no_content, owners, parse_body, ApiError, ApiResult, ApiState, Caller,
};

/// Desires an app; it belongs to whoever desired it (`owners`). Its volumes must be
/// the caller's.
pub(super) async fn create_desired_lrp(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: receptor::DesiredLrpCreateRequest = parse_body(&body)?;
    let d = req.into_model();
    let guid = d.process_guid.clone();
    crate::repos::rules::check_user_work(
        &d.domain,
        &[
            ("setup", d.setup.as_ref()),
            ("action", d.action.as_ref()),
            ("monitor", d.monitor.as_ref()),
        ],
    )
    .map_err(ApiError::invalid_request)?;
    owners::ensure_may_mount(&s, &caller, &d.volume_mounts).await?;
    owners::db_for(&caller, &s.db)
        .desire_lrp(d)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidLRP))?;
    tracing::info!(process_guid = %guid, "LRP desired");
    Ok(created())
}

pub(super) async fn list_desired_lrps(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<DesiredLrpResponse>>> {
    let all =
        s.db.desired_lrps(domain_filter(&q))
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    let mut owners = owners::owner_names(&s, OwnedKind::App).await?;
    Ok(Json(
        all.into_iter()
            .map(|d| {
                let mut r = DesiredLrpResponse::from(d);
                r.owner = owners.remove(&r.request.process_guid).unwrap_or_default();
                r
            })
            .collect(),
    ))
}

pub(super) async fn get_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<DesiredLrpResponse>> {
    let mut r = DesiredLrpResponse::from(
        s.db.desired_lrp(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?,
    );
    r.owner = owners::owner_name(&s, OwnedKind::App, &guid).await?;
    Ok(Json(r))
}

pub(super) async fn update_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: receptor::DesiredLrpUpdateRequest = parse_body(&body)?;
    s.db.update_desired_lrp(&guid, req.into_model())
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidLRP))?;
    Ok(no_content())
}

pub(super) async fn delete_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    s.db.remove_desired_lrp(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

pub(super) async fn list_actual_lrps(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<ActualLrpResponse>>> {
    let all =
        s.db.actual_lrps(domain_filter(&q), "", "", None)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(all.into_iter().map(ActualLrpResponse::from).collect()))
}

pub(super) async fn actual_lrps_by_guid(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Vec<ActualLrpResponse>>> {
    let all =
        s.db.actual_lrps("", "", &guid, None)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(all.into_iter().map(ActualLrpResponse::from).collect()))
}

/// `GET /v1/actual_lrps/:process_guid/usage` (extension): memory, CPU time and disk
/// of each of the LRP's containers, from the cells that run them.
pub(super) async fn actual_lrp_usage(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Vec<receptor::ContainerUsage>>> {
    let invalid = |e| ApiError::from_db(e, ErrorName::InvalidRequest);
    let instances: HashMap<String, String> =
        s.db.actual_lrps("", "", &guid, None)
            .await
            .map_err(invalid)?
            .into_iter()
            .filter_map(|a| a.instance_key)
            .filter(|k| !k.cell_id.is_empty())
            .map(|k| (k.instance_guid, k.cell_id))
            .collect();
    let reps: HashMap<String, String> =
        s.db.cells()
            .await
            .map_err(invalid)?
            .into_iter()
            .filter_map(|c| {
                Some((
                    c.cell_id.clone(),
                    s.cells.base_url(&c.cell_id, &c.rep_address)?,
                ))
            })
            .collect();
    Ok(Json(
        crate::usage::gather(s.cells.http(), &reps, &instances).await,
    ))
}

pub(super) fn parse_index(raw: &str) -> ApiResult<i32> {
    raw.parse::<i32>().ok().filter(|i| *i >= 0).ok_or_else(|| {
        ApiError::invalid_request(format!("index must be a non-negative integer, got {raw:?}"))
    })
}

pub(super) async fn actual_lrp_by_index(
    State(s): State<ApiState>,
    Path((guid, index)): Path<(String, String)>,
) -> ApiResult<Json<ActualLrpResponse>> {
    let index = parse_index(&index)?;
    let all =
        s.db.actual_lrps("", "", &guid, Some(index))
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    // Prefer the ordinary record; an evacuating or suspect copy alone is still reported.
    let mut all: Vec<_> = all.into_iter().map(ActualLrpResponse::from).collect();
    all.sort_by_key(|a| a.presence != "ORDINARY");
    all.into_iter().next().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorName::ActualLRPIndexNotFound,
            format!("actual LRP {guid} index {index} not found"),
        )
    })
}

/// Kill one instance: its record goes, the cell stops it, convergence restarts it.
pub(super) async fn kill_actual_lrp(
    State(s): State<ApiState>,
    Path((guid, index)): Path<(String, String)>,
) -> ApiResult<Response> {
    let index = parse_index(&index)?;
    s.db.retire_actual_lrp(&guid, index)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}
