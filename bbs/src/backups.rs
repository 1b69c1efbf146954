//! Volumes and backups in the public API (extensions: the receptor had neither), and the
//! settler that turns finished backup and verify tasks into backup records.
//!
//! `/v1/volumes` (POST create → 201; GET list with users; GET/DELETE one),
//! `/v1/backups` (POST → 201 with the backup, whose id the server chose; GET list,
//! `?volume=` filters), `/v1/backups/ID` (GET, DELETE with its archive),
//! `/v1/backups/ID/restore` and `/verify` (POST → 201 with the task's guid),
//! `/v1/backups/import` (POST a backup's record once its archive is in the blob store).
//! What these make belongs to its maker (`api::owners`): a developer backs up and
//! restores into only volumes it owns.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use lattice_specs::backup as plan;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{backup::State as BackupState, task::State as TaskState, Backup, Task};
use lattice_specs::now_nanos;
use lattice_specs::receptor::{
    BackupCreateRequest, BackupResponse, RestoreRequest, TaskStarted, VolumeCreateRequest,
    VolumeResponse,
};

use std::sync::Arc;

use lattice_specs::backup_hooks::{self as hook_plan, HookStatus};
use lattice_specs::models::BackupHooks;
use lattice_specs::repo::RepoOp;

use crate::api::authz::Object;
use crate::api::owners;
use crate::api::{parse_body, ApiError, ApiResult, ApiState, Caller};
use crate::backup_tasks;
use crate::db::{Db, DbError, OwnedKind};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/volumes", post(create_volume).get(list_volumes))
        .route(
            "/v1/volumes/{name}",
            get(get_volume).put(grow_volume).delete(remove_volume),
        )
        .route("/v1/backups", post(create_backup).get(list_backups))
        .route("/v1/backups/import", post(import_backup))
        .route("/v1/backups/{id}", get(get_backup).delete(delete_backup))
        .route("/v1/backups/{id}/restore", post(restore_backup))
        .route("/v1/backups/{id}/verify", post(verify_backup))
}

fn db_err(e: DbError) -> ApiError {
    ApiError::from_db(e, ErrorName::InvalidRequest)
}

// ------------------------------------------------------------------ volumes

async fn create_volume(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let r: VolumeCreateRequest = parse_body(&body)?;
    let failover = lattice_specs::failover::parse_mode(&r.failover)
        .map_err(|e| ApiError::invalid_request(format!("failover: {e}")))?;
    if failover != lattice_specs::models::volume::Failover::None {
        lattice_specs::failover::check_grace(
            r.failover_grace_ns,
            lattice_specs::failover::DEFAULT_PRESENCE_TTL_NS,
        )
        .map_err(|e| ApiError::invalid_request(format!("failover_grace_ns: {e}")))?;
    }
    // A named store must be one this BBS has (the default may come later).
    if !r.backup_store.is_empty() {
        s.stores.get(&r.backup_store)?;
    }
    let mut spec = lattice_specs::models::Volume {
        name: r.name.clone(),
        size_bytes: r.size_bytes,
        cell_id: r.cell_id.clone(),
        backup_store: r.backup_store.clone(),
        failover_grace_ns: r.failover_grace_ns,
        ..Default::default()
    };
    spec.set_failover(failover);
    let v = owners::db_for(&caller, &s.db)
        .create_volume_as(spec)
        .await
        .map_err(db_err)?;
    tracing::info!(volume = %v.name, cell = %v.cell_id, size = v.size_bytes, failover = lattice_specs::failover::mode_name(v.failover()), "volume desired");
    Ok(StatusCode::CREATED)
}

/// Each cell's volume pool warning, from its presence (cells without one left out).
async fn pool_warnings(s: &ApiState) -> ApiResult<std::collections::HashMap<String, String>> {
    let cells = s.db.cells().await.map_err(db_err)?;
    Ok(cells
        .into_iter()
        .filter(|c| !c.volume_pool_warning.is_empty())
        .map(|c| (c.cell_id, c.volume_pool_warning))
        .collect())
}

/// A volume as the API shows it: its users, and its cell's pool warning.
fn volume_response(
    mut v: lattice_specs::models::Volume,
    users: Vec<String>,
    warnings: &std::collections::HashMap<String, String>,
) -> VolumeResponse {
    v.pool_warning = warnings.get(&v.cell_id).cloned().unwrap_or_default();
    VolumeResponse::new(v, users)
}

async fn list_volumes(State(s): State<ApiState>) -> ApiResult<Json<Vec<VolumeResponse>>> {
    let volumes = s.db.volumes().await.map_err(db_err)?;
    let warnings = pool_warnings(&s).await?;
    let mut out = Vec::with_capacity(volumes.len());
    for v in volumes {
        let users = s.db.volume_users(&v.name).await.map_err(db_err)?;
        out.push(volume_response(v, users, &warnings));
    }
    Ok(Json(out))
}

async fn get_volume(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<VolumeResponse>> {
    let v = s.db.volume(&name).await.map_err(db_err)?;
    let users = s.db.volume_users(&name).await.map_err(db_err)?;
    Ok(Json(volume_response(v, users, &pool_warnings(&s).await?)))
}

async fn grow_volume(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let r: lattice_specs::receptor::VolumeUpdateRequest = parse_body(&body)?;
    let v =
        s.db.grow_volume(&name, r.size_bytes)
            .await
            .map_err(db_err)?;
    tracing::info!(volume = %name, size = v.size_bytes, "volume growth requested");
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_volume(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.db.remove_volume(&name).await.map_err(db_err)?;
    tracing::info!(volume = %name, "volume removal requested");
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ backups

/// A new backup's id: the volume and the time, unique to the second plus a suffix.
fn backup_id(volume: &str) -> String {
    let t = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{volume}-{t}-{suffix}")
}

/// What starting a backup did.
pub struct Started {
    pub backup: Backup,
    /// A backup with a pre hook: resolves once its task is desired (Ok) or the backup
    /// failed before it (why). None: the task was desired with the record.
    pub pre_hook: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// Submits the backup of `volume` (id given by a schedule's slot, or made up) into the
/// volume's repository, with `hooks` (an ad-hoc backup's, or its schedule's). The
/// backup and its task belong to the volume's owner, whoever asked (a schedule too);
/// `db` is the caller's (fenced for the brain). Without hooks the record and its task
/// are made together; with hooks the record first, and `backup_hooks::start` runs the
/// pre hook then desires the task.
pub async fn start_backup(
    s: &ApiState,
    db: &Db,
    volume: &str,
    id: Option<String>,
    slot: &str,
    hooks: Option<BackupHooks>,
) -> Result<Started, DbError> {
    let v = db.volume(volume).await?;
    let db = match db.owner(OwnedKind::Volume, volume).await? {
        Some(owner) => db.created_by(owner),
        None => db.clone(),
    };
    let id = id.unwrap_or_else(|| backup_id(volume));
    let hooked = hook_plan::any(hooks.as_ref());
    let b = Backup {
        task_guid: plan::Purpose::Backup { id: id.clone() }.task_guid(),
        id,
        volume: volume.into(),
        cell_id: v.cell_id.clone(),
        state: BackupState::Running as i32,
        created_at: now_nanos(),
        slot: slot.into(),
        volume_used_bytes: v.used_bytes,
        store: if v.backup_store.is_empty() {
            "default".into()
        } else {
            v.backup_store.clone()
        },
        repository: volume.into(),
        hook_status: if hooked {
            HookStatus::PreRunning.as_str().into()
        } else {
            String::new()
        },
        hooks: hooks.filter(|_| hooked),
        ..Default::default()
    };
    // The auction places it on the volume's cell, where the snapshot can be taken.
    let url = s
        .repo_url(volume, &b.task_guid, RepoOp::Backup)
        .map_err(ApiError::into_db)?;
    let def = backup_tasks::backup_task(&b, &url);
    if !hooked {
        db.create_backup(&b, def).await?;
        tracing::info!(backup = %b.id, volume, task = %b.task_guid, "backup started");
        return Ok(Started {
            backup: b,
            pre_hook: None,
        });
    }
    lattice_specs::validation::validate_task(&b.task_guid, plan::DOMAIN, &def)?;
    db.record_backup(&b).await?;
    tracing::info!(backup = %b.id, volume, "backup started: its pre hook first");
    let exec = Arc::new(crate::backup_hooks::RepExec {
        db: s.db.clone(),
        cells: s.cells.clone(),
    });
    let pre_hook = tokio::spawn(crate::backup_hooks::start(exec, db, b.clone(), def));
    Ok(Started {
        backup: b,
        pre_hook: Some(pre_hook),
    })
}

async fn create_backup(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: BackupCreateRequest = parse_body(&body)?;
    let hooks = match r.hooks {
        Some(h) => Some(h.into_model().map_err(ApiError::invalid_request)?),
        None => None,
    };
    owners::ensure_may_act(&s, &caller, "back up", &Object::Volume(r.volume.clone())).await?;
    let started = start_backup(&s, &s.db, &r.volume, None, "", hooks)
        .await
        .map_err(db_err)?;
    // A failing pre hook is this request's failure: the caller sees why at once.
    if let Some(pre) = started.pre_hook {
        match pre.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let b = s.db.backup(&started.backup.id).await.map_err(db_err)?;
                return Err(ApiError::conflict(
                    ErrorName::BackupHookFailed,
                    format!("backup {} failed: {why}; output:\n{}", b.id, b.hook_output),
                ));
            }
            Err(e) => return Err(ApiError::unknown(format!("the pre hook's runner: {e}"))),
        }
    }
    let b = s.db.backup(&started.backup.id).await.map_err(db_err)?;
    Ok((StatusCode::CREATED, Json(BackupResponse::from(b))).into_response())
}

async fn list_backups(
    State(s): State<ApiState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Vec<BackupResponse>>> {
    let mut backups = s.db.backups().await.map_err(db_err)?;
    if let Some(v) = q.get("volume") {
        backups.retain(|b| &b.volume == v);
    }
    // A backup being forgotten is deleted as far as its users are concerned.
    backups.retain(|b| !b.forgetting);
    backups.sort_by_key(|b| b.created_at);
    Ok(Json(
        backups.into_iter().map(BackupResponse::from).collect(),
    ))
}

async fn get_backup(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupResponse>> {
    Ok(Json(s.db.backup(&id).await.map_err(db_err)?.into()))
}

/// Forgets backup `id` (through `db`, which may be fenced) and deletes its archive; a
/// backup in a repository is marked as being forgotten instead (`backup_forget` removes
/// its snapshot, then its record).
pub async fn delete(s: &ApiState, db: &Db, id: &str) -> Result<(), DbError> {
    if !db.backup(id).await?.snapshot.is_empty() {
        db.mark_forgetting(id).await?;
        tracing::info!(backup = %id, "backup to be forgotten from its repository");
        return Ok(());
    }
    let b = db.delete_backup(id).await?;
    if let Some(store) = &s.blobs {
        let _ = store.delete(&b.blob);
    }
    tracing::info!(backup = %id, "backup deleted");
    Ok(())
}

async fn delete_backup(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete(&s, &s.db, &id).await.map_err(db_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where task `task_guid` reads backup `b`'s data, with its own credential: the
/// snapshot's repository, or (a legacy archive) its blob.
pub fn source_url(s: &ApiState, b: &Backup, task_guid: &str) -> ApiResult<String> {
    if plan::in_repository(b) {
        return s.repo_url(&b.repository, task_guid, RepoOp::Restore);
    }
    crate::api::blob_store(s)?;
    Ok(backup_tasks::credential_url(
        &s.blob_url(&b.blob),
        task_guid,
    ))
}

/// A completed backup, or why it cannot be read back.
async fn completed(s: &ApiState, id: &str) -> ApiResult<Backup> {
    let b = s.db.backup(id).await.map_err(db_err)?;
    if b.state() != BackupState::Completed {
        return Err(ApiError::conflict(
            ErrorName::BackupNotCompleted,
            format!(
                "backup {id} is {}: only a COMPLETED backup can be restored or verified",
                plan::state_name(b.state())
            ),
        ));
    }
    Ok(b)
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

async fn restore_backup(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: RestoreRequest = parse_body(&body)?;
    let b = completed(&s, &id).await?;
    let into = Object::Volume(r.volume.clone());
    owners::ensure_may_act(&s, &caller, "restore into", &into).await?;
    let v = s.db.volume(&r.volume).await.map_err(db_err)?;
    if v.state() != lattice_specs::models::volume::State::Ready {
        return Err(ApiError::conflict(
            ErrorName::VolumeNotReady,
            format!(
                "volume {} is {}: restore into a READY volume",
                v.name,
                lattice_specs::volume::state_name(v.state())
            ),
        ));
    }
    // Nothing may use the volume while its data is swapped (another restore included).
    let users = s.db.volume_users(&v.name).await.map_err(db_err)?;
    if !users.is_empty() {
        return Err(ApiError::conflict(
            ErrorName::VolumeInUse,
            format!(
                "volume {} is mounted by {}: remove those apps or wait for those tasks, then restore",
                v.name,
                users.join(", ")
            ),
        ));
    }
    let guid = plan::Purpose::Restore {
        volume: v.name.clone(),
        suffix: suffix(),
    }
    .task_guid();
    let url = source_url(&s, &b, &guid)?;
    let def = backup_tasks::restore_task(&guid, &b, &url, &v.name);
    owners::db_for(&caller, &s.db)
        .desire_task(&guid, plan::DOMAIN, def)
        .await
        .map_err(db_err)?;
    tracing::info!(backup = %id, volume = %v.name, task = %guid, "restore started");
    Ok((StatusCode::CREATED, Json(TaskStarted { task_guid: guid })).into_response())
}

async fn verify_backup(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let b = completed(&s, &id).await?;
    let db = owners::db_for(&caller, &s.db);
    let guid = start_verify(&s, &db, &b).await.map_err(db_err)?;
    Ok((StatusCode::CREATED, Json(TaskStarted { task_guid: guid })).into_response())
}

/// Starts the verification of completed backup `b` through `db` (whose creator owns
/// the task): desires its verify task and records it on the backup; its guid.
pub async fn start_verify(s: &ApiState, db: &Db, b: &Backup) -> Result<String, DbError> {
    let guid = plan::Purpose::Verify {
        id: b.id.clone(),
        suffix: suffix(),
    }
    .task_guid();
    let url = source_url(s, b, &guid).map_err(ApiError::into_db)?;
    let def = backup_tasks::verify_task(&guid, b, &url);
    db.desire_task(&guid, plan::DOMAIN, def).await?;
    db.modify_backup(&b.id, |b| {
        b.verify_task_guid = guid.clone();
        true
    })
    .await?;
    tracing::info!(backup = %b.id, task = %guid, "verification started");
    Ok(guid)
}

/// Records a backup whose archive was put in the blob store (`ltc backup import`): the
/// archive must be there, whole, with the record's checksum.
async fn import_backup(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let r: BackupResponse = parse_body(&body)?;
    let store = crate::api::blob_store(&s)?;
    lattice_specs::volume::check_name("volume", &r.volume).map_err(ApiError::invalid_request)?;
    crate::blobs::check_name(&r.id).map_err(ApiError::invalid_request)?;
    if !plan::is_sha256(&r.manifest) || !plan::is_sha256(&r.checksum) {
        return Err(ApiError::invalid_request(
            "the backup's manifest and checksum must be sha256 hex digests: export it again with `ltc backup export`",
        ));
    }
    let blob = plan::blob_name(&r.id);
    let info = store.info(&blob).ok_or_else(|| {
        ApiError::conflict(
            ErrorName::BlobNotFound,
            format!("put the archive at /v1/blobs/{blob} first (ltc backup import does)"),
        )
    })?;
    if info.sha256 != r.checksum {
        return Err(ApiError::conflict(
            ErrorName::ChecksumMismatch,
            format!(
                "the archive's sha256 is {}, the backup says {}",
                info.sha256, r.checksum
            ),
        ));
    }
    let b = Backup {
        state: BackupState::Completed as i32,
        blob,
        size_bytes: info.size,
        task_guid: String::new(),
        cell_id: String::new(),
        verified: String::new(),
        verify_task_guid: String::new(),
        slot: String::new(),
        ..Backup::from(r)
    };
    owners::db_for(&caller, &s.db)
        .import_backup(&b)
        .await
        .map_err(db_err)?;
    tracing::info!(backup = %b.id, "backup imported");
    Ok(StatusCode::CREATED)
}

// ------------------------------------------------------------------ settling

/// Applies a finished backup or verify task to its backup record (idempotent).
pub async fn settle(s: &ApiState, t: &Task) -> Result<(), DbError> {
    if t.domain != plan::DOMAIN || t.state < TaskState::Running as i32 {
        return Ok(());
    }
    let purpose = plan::Purpose::of(&t.task_guid);
    if let Some(plan::Purpose::Backup { id }) = &purpose {
        let id = id.as_str();
        let Ok(b) = s.db.backup(id).await else {
            return Ok(());
        };
        // RUNNING: the snapshot is taken. The post hook runs now, or at the latest here
        // once the task finished (failed included).
        if b.hook_status == HookStatus::PostPending.as_str() {
            let exec = crate::backup_hooks::RepExec {
                db: s.db.clone(),
                cells: s.cells.clone(),
            };
            let (db, id) = (s.db.clone(), id.to_string());
            tokio::spawn(async move {
                if let Err(e) = crate::backup_hooks::post(&exec, &db, &id).await {
                    tracing::warn!(backup = %id, error = %e, "recording the post hook");
                }
            });
        }
        // Only a BBS holding the blob store can judge an archive.
        let legacy = !plan::in_repository(&b);
        if t.state < TaskState::Completed as i32
            || b.state() != BackupState::Running
            || (legacy && s.blobs.is_none())
        {
            return Ok(());
        }
        let archive = if t.failed || !legacy {
            None
        } else {
            s.blobs
                .as_ref()
                .and_then(|st| st.info(&b.blob))
                .map(|i| (i.size, i.sha256))
        };
        let previous = s
            .db
            .backups()
            .await?
            .into_iter()
            .filter(|p| p.volume == b.volume && p.id != b.id && p.state() == BackupState::Completed)
            .max_by_key(|p| p.created_at);
        let schedule =
            s.db.schedule(&b.volume)
                .await
                .ok()
                .filter(|sc| sc.kind() == lattice_specs::models::schedule::Kind::Backup);
        let thresholds = plan::Thresholds::of(schedule.as_ref());
        let done =
            s.db.modify_backup(id, |b| {
                if b.state() != BackupState::Running {
                    return false;
                }
                plan::settle(
                    b,
                    t.failed,
                    &t.failure_reason,
                    &t.result,
                    archive.clone(),
                    t.updated_at.max(b.created_at),
                );
                // Beside what the hooks said.
                b.warnings
                    .extend(plan::warnings(b, previous.as_ref(), thresholds));
                true
            })
            .await?;
        if done.state() == BackupState::Failed {
            // Whatever reached the store is not a good backup (what reached a
            // repository is in no snapshot: the next prune removes it).
            if let (Some(st), true) = (&s.blobs, legacy) {
                let _ = st.delete(&done.blob);
            }
            crate::metrics::BACKUP_ALERTS
                .with_label_values(&[&done.volume, "failed"])
                .inc();
            tracing::warn!(backup = %done.id, reason = %done.failure_reason, "backup failed");
        } else {
            for w in &done.warnings {
                crate::metrics::BACKUP_ALERTS
                    .with_label_values(&[&done.volume, "warning"])
                    .inc();
                tracing::warn!(backup = %done.id, warning = %w, "backup warning");
            }
            tracing::info!(backup = %done.id, size = done.size_bytes, "backup completed");
        }
        crate::metrics::BACKUPS
            .with_label_values(&[plan::state_name(done.state())])
            .inc();
    } else if let (Some(plan::Purpose::Restore { .. }), true) =
        (&purpose, t.state >= TaskState::Completed as i32)
    {
        crate::failover::settle(s, t).await?;
    } else if let (Some(plan::Purpose::Standby { .. }), true) =
        (&purpose, t.state >= TaskState::Completed as i32)
    {
        crate::standby::settle(s, t).await?;
    } else if let (Some(plan::Purpose::Verify { id, .. }), true) =
        (&purpose, t.state >= TaskState::Completed as i32)
    {
        // One read of that backup, not a scan of them all.
        let Ok(b) = s.db.backup(id).await else {
            return Ok(());
        };
        if b.verify_task_guid != t.task_guid {
            return Ok(());
        }
        let verdict = if t.failed {
            format!("failed: {}", t.failure_reason)
        } else {
            "ok".to_string()
        };
        let mut recorded = false;
        let b =
            s.db.modify_backup(&b.id, |b| {
                // Per attempt: a lost compare-and-swap is tried again.
                recorded = false;
                // A verdict at or after this task's creation is this task's.
                if b.verify_task_guid != t.task_guid
                    || (b.verified_at > 0 && b.verified_at >= t.created_at)
                {
                    return false;
                }
                let finished_at = t.updated_at.max(t.created_at);
                b.verified = verdict.clone();
                b.verified_at = finished_at;
                recorded = true;
                true
            })
            .await?;
        if recorded {
            crate::backup_verify::observe_verdict(&b);
        }
    } else if let Some(plan::Purpose::Forget { .. }) = &purpose {
        crate::backup_forget::settle(s, t).await?;
    }
    Ok(())
}

/// Settles every finished backup task, and fails RUNNING backups whose task is gone
/// (deleted before any settler saw it finish).
async fn sweep_once(s: &ApiState) -> Result<(), DbError> {
    let tasks = s.db.tasks(plan::DOMAIN, "").await?;
    for t in &tasks {
        settle(s, t).await?;
    }
    crate::backup_forget::pass(s, &tasks).await?;
    crate::backup_verify::observe_ages(&s.db.backups().await?, now_nanos());
    for b in s.db.backups().await? {
        if b.state() == BackupState::Running
            && !tasks.iter().any(|t| t.task_guid == b.task_guid)
            && !crate::backup_hooks::in_pre_hook(&b, now_nanos())
            && (plan::in_repository(&b) || s.blobs.is_some())
        {
            // Re-read: the task may have been created after the list above.
            if matches!(s.db.task(&b.task_guid).await, Err(DbError::NotFound { .. })) {
                s.db.modify_backup(&b.id, |b| {
                    if b.state() != BackupState::Running {
                        return false;
                    }
                    b.state = BackupState::Failed as i32;
                    b.failure_reason = if b.hook_status == HookStatus::PreRunning.as_str() {
                        "its pre hook did not finish in time (was the BBS restarted?)".into()
                    } else {
                        "its task disappeared before it finished".into()
                    };
                    b.finished_at = now_nanos();
                    true
                })
                .await?;
                if let (Some(st), false) = (&s.blobs, plan::in_repository(&b)) {
                    let _ = st.delete(&b.blob);
                }
            }
        }
    }
    Ok(())
}

/// Settles every finished backup task: now (what happened while no BBS ran), on each
/// task change, and every 10 s (what a lagging event stream missed).
pub fn spawn_settler(s: ApiState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = s.hub.subscribe();
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    if let Err(e) = sweep_once(&s).await {
                        tracing::warn!(error = %e, "settling backup tasks");
                    }
                }
                e = events.recv() => {
                    use lattice_specs::events::event::Event as E;
                    match e {
                        Ok(e) => {
                            if let Some(E::TaskChanged(c)) = &e.event {
                                if let Some(t) = &c.after {
                                    if let Err(err) = settle(&s, t).await {
                                        tracing::warn!(task = %t.task_guid, error = %err, "settling a backup task");
                                    }
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
                _ = s.hub.closing() => return,
            }
        }
    })
}
