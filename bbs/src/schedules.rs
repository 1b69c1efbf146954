//! Periodic Tasks in the public API (extension: `/v1/schedules`, the contract is
//! `lattice_specs::receptor::schedule`), volumes' backup schedules (`/v1/backup_schedules`,
//! now schedules of kind backup), and [`claim`], what the brain's claim of a slot does.
//!
//! Ownership: a task schedule belongs to its maker (its runs too, `db::owners`); a
//! backup schedule to its volume's owner. Viewers read only (`api::authz`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::schedule::{Kind, RunResult};
use lattice_specs::models::Retention;
use lattice_specs::models::{Backup, Schedule, Task};
use lattice_specs::receptor::schedule::{
    RunResult as JsonResult, ScheduleCreateRequest, ScheduleKind, ScheduleResponse,
};
use lattice_specs::receptor::{BackupScheduleRequest, TaskResponse};
use lattice_specs::retention;
use lattice_specs::schedule as plan;

use crate::api::{owners, parse_body, ApiError, ApiResult, ApiState, Caller};
use crate::db::{Claim, Db, DbError, OwnedKind};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/schedules", post(create).get(list))
        .route("/v1/schedules/{name}", get(show).delete(remove))
        .route("/v1/schedules/{name}/pause", post(pause))
        .route("/v1/schedules/{name}/resume", post(resume))
        .route("/v1/backup_schedules", get(list_backup_schedules))
        .route(
            "/v1/backup_schedules/{volume}",
            put(set_backup_schedule).delete(remove_backup_schedule),
        )
}

/// What the brain's claim of a slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The slot was handled already (another brain, an earlier pass).
    Taken,
    /// Recorded as skipped.
    Skipped,
    /// Its run (a Task's guid, a backup's id) was started.
    Run(String),
    /// Its run could not be started, for this reason (recorded as the slot's failure).
    Failed(String),
}

/// Claims slot `slot_at` (`label`) of schedule `name` and starts its run: a task
/// schedule's Task comes with the claim; a backup schedule's backup is started here,
/// with the schedule's hooks (`api`: this BBS's API, which serves the repositories;
/// None: it has none), and a backup that cannot start is recorded as the slot's
/// failure.
pub async fn claim(
    db: &Db,
    api: Option<&ApiState>,
    name: &str,
    slot_at: i64,
    label: &str,
    skip_reason: &str,
) -> Result<Claimed, DbError> {
    let s = match db
        .claim_schedule_slot(name, slot_at, label, skip_reason)
        .await?
    {
        Claim::Taken => return Ok(Claimed::Taken),
        Claim::Skipped => {
            tracing::info!(schedule = %name, slot = %label, "scheduled run skipped: {skip_reason}");
            return Ok(Claimed::Skipped);
        }
        Claim::Task(t) => {
            tracing::info!(schedule = %name, slot = %label, task = %t.task_guid, "scheduled run desired");
            return Ok(Claimed::Run(t.task_guid));
        }
        Claim::Failed(why) => {
            tracing::warn!(schedule = %name, slot = %label, "scheduled run not made: {why}");
            return Ok(Claimed::Failed(why));
        }
        Claim::Backup(s) => s,
    };
    let id = s.last_run.clone();
    let started = match api {
        Some(api) => {
            let hooks = s.hooks.clone();
            crate::backups::start_backup(api, db, &s.volume, Some(id.clone()), label, hooks).await
        }
        None => Err(DbError::Conflict {
            name: ErrorName::BlobStoreUnavailable,
            message: "this BBS serves no API, hence no backup repositories".into(),
        }),
    };
    match started {
        // Already taken before this schedule claimed the slot (an older scheduler).
        Ok(_) | Err(DbError::AlreadyExists { .. }) => Ok(Claimed::Run(id)),
        Err(e @ DbError::Fenced { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(schedule = %name, slot = %label, "scheduled backup not started: {e}");
            db.record_schedule_run(name, &id, RunResult::Failed, &e.to_string())
                .await?;
            Ok(Claimed::Failed(e.to_string()))
        }
    }
}

fn db_err(e: DbError) -> ApiError {
    ApiError::from_db(e, ErrorName::InvalidRequest)
}

fn json_result(r: RunResult) -> JsonResult {
    match r {
        RunResult::None => JsonResult::None,
        RunResult::Running => JsonResult::Running,
        RunResult::Succeeded => JsonResult::Succeeded,
        RunResult::Failed => JsonResult::Failed,
        RunResult::Skipped => JsonResult::Skipped,
    }
}

/// A schedule as the API shows it, with its kept runs (newest first) from `tasks` or
/// `backups`, and its owner.
fn response(s: Schedule, tasks: &[Task], backups: &[Backup], owner: String) -> ScheduleResponse {
    let now = lattice_specs::now_nanos() / 1_000_000_000;
    let mut r = ScheduleResponse {
        kind: match s.kind() {
            Kind::Task => ScheduleKind::Task,
            Kind::Backup => ScheduleKind::Backup,
        },
        keep: plan::keep_of(&s) as u32,
        next_run_at: plan::next_run_at(&s, now).unwrap_or_default() * 1_000_000_000,
        last_result: json_result(s.last_result()),
        owner,
        ..Default::default()
    };
    let mut runs: Vec<(i64, String)> = match s.kind() {
        Kind::Task => tasks
            .iter()
            .filter(|t| t.schedule == s.name)
            .map(|t| (t.created_at, t.task_guid.clone()))
            .collect(),
        Kind::Backup => {
            // A backup's outcome is its record's.
            if let Some(b) = backups.iter().find(|b| b.id == s.last_run) {
                r.last_result = match b.state() {
                    BackupState::Completed => JsonResult::Succeeded,
                    BackupState::Failed => JsonResult::Failed,
                    _ => JsonResult::Running,
                };
                if b.state() == BackupState::Failed {
                    r.last_reason = b.failure_reason.clone();
                }
            }
            backups
                .iter()
                .filter(|b| b.volume == s.volume && !b.slot.is_empty())
                .map(|b| (b.created_at, b.id.clone()))
                .collect()
        }
    };
    runs.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    r.runs = runs.into_iter().map(|(_, id)| id).collect();
    if s.task.is_some() {
        let t = Task {
            domain: s.domain.clone(),
            definition: s.task.clone(),
            ..Default::default()
        };
        r.task = Some(TaskResponse::from(t).request);
    }
    if r.last_reason.is_empty() {
        r.last_reason = s.last_reason;
    }
    r.name = s.name;
    r.every = s.every;
    r.paused = s.paused;
    r.created_at = s.created_at;
    r.last_slot = s.last_slot;
    r.last_run = s.last_run;
    r.last_run_at = s.last_run_at;
    r.volume = s.volume;
    r
}

/// The answers for `schedules`, with what they need read once.
async fn responses(s: &ApiState, schedules: Vec<Schedule>) -> ApiResult<Vec<ScheduleResponse>> {
    let tasks = s.db.tasks("", "").await.map_err(db_err)?;
    let backups = s.db.backups().await.map_err(db_err)?;
    let mut schedule_owners = owners::owner_names(s, OwnedKind::Schedule).await?;
    let volume_owners = owners::owner_names(s, OwnedKind::Volume).await?;
    let mut out: Vec<ScheduleResponse> = schedules
        .into_iter()
        .map(|sc| {
            let owner = match sc.kind() {
                Kind::Task => schedule_owners.remove(&sc.name),
                Kind::Backup => volume_owners.get(&sc.volume).cloned(),
            };
            response(sc, &tasks, &backups, owner.unwrap_or_default())
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn one(s: &ApiState, sc: Schedule) -> ApiResult<Json<ScheduleResponse>> {
    let mut all = responses(s, vec![sc]).await?;
    Ok(Json(all.remove(0)))
}

async fn create(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: ScheduleCreateRequest = parse_body(&body)?;
    let (_, domain, def) = r.task.into_model();
    owners::ensure_may_mount(&s, &caller, &def.volume_mounts).await?;
    let sc = Schedule {
        name: r.name,
        kind: Kind::Task as i32,
        every: r.every,
        keep: r.keep,
        domain,
        task: Some(def),
        ..Default::default()
    };
    let sc = owners::db_for(&caller, &s.db)
        .create_schedule(sc)
        .await
        .map_err(db_err)?;
    tracing::info!(schedule = %sc.name, every = %sc.every, "schedule created");
    let Json(body) = one(&s, sc).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(s): State<ApiState>) -> ApiResult<Json<Vec<ScheduleResponse>>> {
    let all = s.db.schedules().await.map_err(db_err)?;
    Ok(Json(responses(&s, all).await?))
}

async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleResponse>> {
    let sc = s.db.schedule(&name).await.map_err(db_err)?;
    one(&s, sc).await
}

async fn remove(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    s.db.remove_schedule(&name, None).await.map_err(db_err)?;
    tracing::info!(schedule = %name, "schedule removed");
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleResponse>> {
    let sc = s.db.pause_schedule(&name, true).await.map_err(db_err)?;
    tracing::info!(schedule = %name, "schedule paused");
    one(&s, sc).await
}

async fn resume(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleResponse>> {
    let sc = s.db.pause_schedule(&name, false).await.map_err(db_err)?;
    tracing::info!(schedule = %name, "schedule resumed");
    one(&s, sc).await
}

// ------------------------------------------------------- backup schedules

async fn list_backup_schedules(
    State(s): State<ApiState>,
) -> ApiResult<Json<Vec<BackupScheduleRequest>>> {
    let all = s.db.schedules().await.map_err(db_err)?;
    let backups = s.db.backups().await.map_err(db_err)?;
    Ok(Json(
        all.into_iter()
            .filter(|sc| sc.kind() == Kind::Backup)
            .map(|sc| backup_schedule(sc, &backups))
            .collect(),
    ))
}

/// A backup schedule as `GET /v1/backup_schedules` shows it, with the newest verdict
/// recorded on its volume's `backups`.
fn backup_schedule(sc: Schedule, backups: &[Backup]) -> BackupScheduleRequest {
    let r = sc.retention.unwrap_or_default();
    let last = backups
        .iter()
        .filter(|b| b.volume == sc.volume && b.verified_at > 0)
        .max_by_key(|b| b.verified_at);
    BackupScheduleRequest {
        keep: if retention::is_empty(&r) {
            sc.keep
        } else {
            r.keep_last
        },
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        verify: sc.verify_every,
        smaller_than: sc.smaller_ratio,
        faster_than: sc.faster_ratio,
        last_verify_at: sc.last_verify_at * 1_000_000_000,
        last_verification: last
            .map(|b| format!("{}: {}", b.id, b.verified))
            .unwrap_or_default(),
        hooks: sc.hooks.map(Into::into),
        volume: sc.volume,
        every: sc.every,
    }
}

async fn set_backup_schedule(
    State(s): State<ApiState>,
    Path(volume): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let r: BackupScheduleRequest = parse_body(&body)?;
    let hooks = match r.hooks.clone() {
        Some(h) => Some(h.into_model().map_err(ApiError::invalid_request)?),
        None => None,
    };
    crate::api::blob_store(&s)?;
    let mut policy = r.policy();
    policy
        .check()
        .map_err(|(field, why)| ApiError::invalid_request(format!("{field}: {why}")))?;
    // By count only: the schedule's `keep` is the policy (no retention record).
    let by_age = r.keep_daily > 0 || r.keep_weekly > 0 || r.keep_monthly > 0;
    if !by_age {
        policy.retention = Retention::default();
    }
    let keep = if by_age { r.keep.max(1) } else { r.keep };
    s.db.set_backup_schedule(&volume, &r.every, keep)
        .await
        .map_err(db_err)?;
    s.db.set_backup_hooks(&volume, hooks)
        .await
        .map_err(db_err)?;
    s.db.set_backup_policy(&volume, &policy)
        .await
        .map_err(db_err)?;
    tracing::info!(%volume, every = %r.every, keep = r.keep, keep_daily = r.keep_daily,
        keep_weekly = r.keep_weekly, keep_monthly = r.keep_monthly, verify = %r.verify,
        "backup schedule set");
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_backup_schedule(
    State(s): State<ApiState>,
    Path(volume): Path<String>,
) -> ApiResult<StatusCode> {
    s.db.remove_schedule(&volume, Some(Kind::Backup))
        .await
        .map_err(|e| match e {
            DbError::NotFound { name, .. } => ApiError::from_db(
                DbError::NotFound {
                    name,
                    message: format!("volume {volume} has no backup schedule"),
                },
                ErrorName::InvalidRequest,
            ),
            e => db_err(e),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
