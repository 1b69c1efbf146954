//! The receptor API's extensions for volumes and backups (the receptor had neither):
//! their requests and responses, and how they map to and from the models.

use super::*;

/// `POST /v1/volumes` (an extension: the receptor had no volumes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VolumeCreateRequest {
    pub name: String,
    pub size_bytes: u64,
    /// The cell to make it on; empty: the BBS picks one with the `local` driver.
    pub cell_id: String,
    /// The named backup store its repository lives in (`lattice bbs --backup-store
    /// NAME=URL`); empty: the cluster's default store.
    pub backup_store: String,
    /// What happens when its cell is lost: `restore`, `standby` or `none` (empty).
    pub failover: String,
    /// How long its cell must be gone before it fails over (0: 60 s).
    pub failover_grace_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VolumeResponse {
    pub name: String,
    pub cell_id: String,
    pub size_bytes: u64,
    /// The size on its cell (below `size_bytes` while a growth is pending).
    pub actual_size_bytes: u64,
    pub used_bytes: u64,
    /// PENDING, READY, REMOVING or FAILED.
    pub state: String,
    pub reason: String,
    pub created_at: i64,
    /// Desired LRPs (process guids) and unfinished tasks (task guids) that mount it.
    pub users: Vec<String>,
    /// The named backup store its repository lives in ("" = the default).
    pub backup_store: String,
    /// `none`, `restore` or `standby`, and how long its cell may be gone first.
    pub failover: String,
    pub failover_grace_ns: i64,
    /// Bumped by each failover.
    pub epoch: u64,
    /// The last failover: when, from which cell and backup, and the data it lost
    /// (nanoseconds between the backup and the cell's loss).
    pub failed_over_at: i64,
    pub failed_over_from: String,
    pub failed_over_backup: String,
    pub data_loss_window_ns: i64,
    /// The task refilling it after a failover (nothing else mounts it meanwhile).
    pub restoring: String,
    /// `standby`: the cell keeping its standby copy ("" none yet), whether that cell
    /// made it, the backup it holds, the backup being restored into it, and why the
    /// last refresh failed.
    pub standby_cell_id: String,
    pub standby_ready: bool,
    pub standby_backup: String,
    pub standby_refreshing: String,
    pub standby_reason: String,
    /// Copies fenced off on cells that came back ("CELL:PATH"), kept for the operator.
    pub fenced_copies: Vec<String>,
    /// Its cell's volume pool warning (past the watermark at its maximum, or a growth
    /// that failed), "" when none.
    pub pool_warning: String,
}

impl VolumeResponse {
    pub fn new(v: crate::models::Volume, users: Vec<String>) -> VolumeResponse {
        let (failover, failover_grace_ns) = (
            crate::failover::mode_name(v.failover()).into(),
            crate::failover::grace_ns(&v),
        );
        VolumeResponse {
            state: crate::volume::state_name(v.state()).into(),
            name: v.name,
            cell_id: v.cell_id,
            size_bytes: v.size_bytes,
            actual_size_bytes: v.actual_size_bytes,
            used_bytes: v.used_bytes,
            reason: v.reason,
            created_at: v.created_at,
            users,
            backup_store: v.backup_store,
            failover,
            failover_grace_ns,
            epoch: v.epoch,
            failed_over_at: v.failed_over_at,
            failed_over_from: v.failed_over_from,
            failed_over_backup: v.failed_over_backup,
            data_loss_window_ns: v.data_loss_window_ns,
            restoring: v.failover_restore_task,
            standby_cell_id: v.standby_cell_id,
            standby_ready: v.standby_ready,
            standby_backup: v.standby_backup,
            standby_refreshing: v.standby_task_backup,
            standby_reason: v.standby_reason,
            fenced_copies: v.fenced_copies,
            pool_warning: v.pool_warning,
        }
    }
}

/// `PUT /v1/volumes/NAME`: grow the volume (online) to `size_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VolumeUpdateRequest {
    pub size_bytes: u64,
}

/// `POST /v1/backups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BackupCreateRequest {
    pub volume: String,
    /// Application-consistent backups: commands run in an instance of an app mounting
    /// the volume before the snapshot and after it (`lattice_specs::backup_hooks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<BackupHooksRequest>,
}

/// A backup's (or a backup schedule's) hooks, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BackupHooksRequest {
    /// `sh -c PRE` before the snapshot; non-zero or too slow fails the backup.
    pub pre: String,
    /// `sh -c POST` once the snapshot is taken (or the backup failed after PRE).
    pub post: String,
    /// The app (process guid) whose instance runs them; "" = the first app mounting
    /// the volume that has a running instance.
    pub app: String,
    /// Each hook's timeout in milliseconds (0: 60 s).
    pub timeout_ms: u64,
}

impl BackupHooksRequest {
    /// The model's hooks, or why they are bad (naming the field).
    pub fn into_model(self) -> Result<crate::models::BackupHooks, String> {
        let h = crate::models::BackupHooks {
            pre: self.pre,
            post: self.post,
            app: self.app,
            timeout_ns: i64::try_from(self.timeout_ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or("hooks.timeout_ms is too large")?,
        };
        crate::backup_hooks::check(&h)?;
        Ok(h)
    }
}

impl From<crate::models::BackupHooks> for BackupHooksRequest {
    fn from(h: crate::models::BackupHooks) -> BackupHooksRequest {
        BackupHooksRequest {
            pre: h.pre,
            post: h.post,
            app: h.app,
            timeout_ms: (h.timeout_ns.max(0) / 1_000_000) as u64,
        }
    }
}

/// `PUT /v1/backup_schedules/VOLUME`, and what GET lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BackupScheduleRequest {
    pub volume: String,
    /// hourly, daily, weekly, monthly, or a period like 1h, 30m, 2d.
    pub every: String,
    /// How many completed backups the schedule keeps (restic's keep-last; with a
    /// keep_daily/weekly/monthly rule, 0 is none by count).
    pub keep: u32,
    /// Each backup's hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<BackupHooksRequest>,
    /// restic's retention by age (lattice_specs::retention): the newest backup of each
    /// of the last N days, ISO weeks, months (UTC) that have one. 0: no such rule.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub keep_daily: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub keep_weekly: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub keep_monthly: u32,
    /// Scheduled verification of the newest backup: "" (never), "daily", "weekly", or a
    /// backup cadence.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub verify: String,
    /// Alert thresholds: a backup under this ratio of the previous one's size or
    /// duration is "much smaller" / "much faster" (0: 0.5 and 0.2).
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub smaller_than: f64,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub faster_than: f64,
    /// In answers only: when the last verification slot was handled (Unix nanoseconds,
    /// 0: never) and the newest verdict recorded on the volume's backups
    /// ("BACKUP: ok", "BACKUP: failed: why").
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub last_verify_at: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_verification: String,
}

impl BackupScheduleRequest {
    /// The retention, verification and alert thresholds it asks for.
    pub fn policy(&self) -> crate::retention::BackupPolicy {
        crate::retention::BackupPolicy {
            retention: crate::models::Retention {
                keep_last: self.keep,
                keep_daily: self.keep_daily,
                keep_weekly: self.keep_weekly,
                keep_monthly: self.keep_monthly,
            },
            verify_every: self.verify.clone(),
            smaller_ratio: self.smaller_than,
            faster_ratio: self.faster_than,
        }
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// `POST /v1/backups/ID/restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RestoreRequest {
    /// The volume to restore into (it must exist: create it first).
    pub volume: String,
}

/// The task a restore or verify request started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TaskStarted {
    pub task_guid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BackupResponse {
    pub id: String,
    pub volume: String,
    pub cell_id: String,
    pub task_guid: String,
    /// RUNNING, COMPLETED or FAILED.
    pub state: String,
    pub failure_reason: String,
    pub blob: String,
    pub size_bytes: u64,
    pub checksum: String,
    pub manifest: String,
    pub created_at: i64,
    pub finished_at: i64,
    pub duration_ms: u64,
    pub warnings: Vec<String>,
    /// "" (never verified), "ok", or "failed: why".
    pub verified: String,
    pub verify_task_guid: String,
    /// The schedule slot that made it, if any.
    pub slot: String,
    /// A snapshot in a restic-format repository (`lattice_specs::repo`): its store and
    /// repository, its id, the files and bytes it holds and the bytes it added (then
    /// `size_bytes`); all empty for a legacy archive (`blob`).
    pub store: String,
    pub repository: String,
    pub snapshot: String,
    pub files: u64,
    pub total_bytes: u64,
    pub added_bytes: u64,
    /// When the last verification finished (Unix nanoseconds, 0: never).
    pub verified_at: i64,
    /// Its hooks, how far they got (`lattice_specs::backup_hooks::HookStatus`), the
    /// instance they ran in (`APP/INDEX`) and what they printed (bounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<BackupHooksRequest>,
    pub hook_status: String,
    pub hook_instance: String,
    pub hook_output: String,
}

impl From<crate::models::Backup> for BackupResponse {
    fn from(b: crate::models::Backup) -> BackupResponse {
        BackupResponse {
            state: crate::backup::state_name(b.state()).into(),
            duration_ms: if b.finished_at > 0 {
                crate::backup::duration(&b).as_millis() as u64
            } else {
                0
            },
            id: b.id,
            volume: b.volume,
            cell_id: b.cell_id,
            task_guid: b.task_guid,
            failure_reason: b.failure_reason,
            blob: b.blob,
            size_bytes: b.size_bytes,
            checksum: b.checksum,
            manifest: b.manifest,
            created_at: b.created_at,
            finished_at: b.finished_at,
            warnings: b.warnings,
            verified: b.verified,
            verify_task_guid: b.verify_task_guid,
            slot: b.slot,
            store: b.store,
            repository: b.repository,
            snapshot: b.snapshot,
            files: b.files,
            total_bytes: b.total_bytes,
            added_bytes: b.added_bytes,
            verified_at: b.verified_at,
            hooks: b.hooks.map(BackupHooksRequest::from),
            hook_status: b.hook_status,
            hook_instance: b.hook_instance,
            hook_output: b.hook_output,
        }
    }
}

impl From<BackupResponse> for crate::models::Backup {
    fn from(b: BackupResponse) -> crate::models::Backup {
        let state = match b.state.as_str() {
            "COMPLETED" => crate::models::backup::State::Completed,
            "FAILED" => crate::models::backup::State::Failed,
            "RUNNING" => crate::models::backup::State::Running,
            _ => crate::models::backup::State::Invalid,
        };
        crate::models::Backup {
            id: b.id,
            volume: b.volume,
            cell_id: b.cell_id,
            task_guid: b.task_guid,
            state: state as i32,
            failure_reason: b.failure_reason,
            blob: b.blob,
            size_bytes: b.size_bytes,
            checksum: b.checksum,
            manifest: b.manifest,
            created_at: b.created_at,
            finished_at: b.finished_at,
            warnings: b.warnings,
            verified: b.verified,
            verify_task_guid: b.verify_task_guid,
            slot: b.slot,
            store: b.store,
            repository: b.repository,
            snapshot: b.snapshot,
            files: b.files,
            total_bytes: b.total_bytes,
            added_bytes: b.added_bytes,
            verified_at: b.verified_at,
            hook_status: b.hook_status,
            hook_instance: b.hook_instance,
            hook_output: b.hook_output,
            ..Default::default()
        }
    }
}
