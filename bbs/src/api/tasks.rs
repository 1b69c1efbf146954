//! `/v1/tasks`: create, list, get, cancel and delete (the receptor's resolve-then-delete).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{self, TaskResponse};

use super::{
    created, domain_filter, no_content, owners, parse_body, ApiError, ApiResult, ApiState, Caller,
};
use crate::db::{DbError, OwnedKind};

/// Desires a task; it belongs to whoever desired it (`owners`). Its volumes must be
/// the caller's.
pub(super) async fn create_task(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: receptor::TaskCreateRequest = parse_body(&body)?;
    let (guid, domain, def) = req.into_model();
    crate::repos::rules::check_user_work(&domain, &[("action", def.action.as_ref())])
        .map_err(ApiError::invalid_request)?;
    owners::ensure_may_mount(&s, &caller, &def.volume_mounts).await?;
    owners::db_for(&caller, &s.db)
        .desire_task(&guid, &domain, def)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidTask))?;
    tracing::info!(task_guid = %guid, "task desired");
    Ok(created())
}

pub(super) async fn list_tasks(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<TaskResponse>>> {
    let tasks =
        s.db.tasks(
            domain_filter(&q),
            q.get("cell_id").map(String::as_str).unwrap_or(""),
        )
        .await;
    let tasks = tasks.map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    let mut owners = owners::owner_names(&s, OwnedKind::Task).await?;
    Ok(Json(
        tasks
            .into_iter()
            .map(|t| {
                let mut r = TaskResponse::from(t);
                r.owner = owners.remove(&r.request.task_guid).unwrap_or_default();
                r
            })
            .collect(),
    ))
}

pub(super) async fn get_task(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<TaskResponse>> {
    let mut r = TaskResponse::from(
        s.db.task(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?,
    );
    r.owner = owners::owner_name(&s, OwnedKind::Task, &guid).await?;
    Ok(Json(r))
}

/// The receptor's delete: mark the completed task resolving, then remove it.
pub(super) async fn delete_task(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    match s.db.resolving_task(&guid).await {
        Ok(_) => {}
        // Already resolving (a retried delete): go on and remove it.
        Err(DbError::Refused(_))
            if s.db
                .task(&guid)
                .await
                .is_ok_and(|t| t.state == lattice_specs::models::task::State::Resolving as i32) => {
        }
        Err(DbError::Refused(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorName::TaskNotDeletable,
                format!("task {guid} has not completed; cancel it or retry when it is COMPLETED"),
            ))
        }
        Err(e) => return Err(ApiError::from_db(e, ErrorName::InvalidRequest)),
    }
    s.db.delete_task(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

pub(super) async fn cancel_task(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    s.db.cancel_task(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}
