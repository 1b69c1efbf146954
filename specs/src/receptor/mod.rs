//! The public JSON API's shapes, as Lattice's receptor spoke them (snake_case
//! field names, actions as one-key objects, states as strings, `since` and
//! `created_at` in Unix nanoseconds), plus our extensions as extra fields that
//! old clients simply do not send. `ltc`, curl and old receptor clients all
//! use these; conversions to and from the model live here too.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

mod body;
pub mod rollout;
pub mod schedule;
mod tokens;

pub use body::{parse_request, BodyError};
pub use tokens::{ApiRole, TokenCreateRequest, TokenResponse};

use crate::models::{
    actual_lrp, task, Action, ActualLrp, CellPresence, CheckDefinition, CrashPolicy, DesiredLrp,
    DesiredLrpUpdate, EnvironmentVariable, ModificationTag, SecurityGroupRule, Task,
    TaskDefinition, VolumeMount,
};

/// The CPU weight given to requests that do not say (receptor clients often send 0).
pub const DEFAULT_CPU_WEIGHT: u32 = 100;
pub const DEFAULT_DOMAIN: &str = "lattice";

fn is_empty<T>(v: &[T]) -> bool {
    v.is_empty()
}

fn str_empty(s: &str) -> bool {
    s.is_empty()
}

/// `{"name": "TaskNotFound", "message": "…"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub name: String,
    pub message: String,
}

// ------------------------------------------------------------------ tasks

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TaskCreateRequest {
    pub task_guid: String,
    pub domain: String,
    pub rootfs: String,
    pub action: Option<Action>,
    #[serde(skip_serializing_if = "is_empty")]
    pub env: Vec<EnvironmentVariable>,
    pub cpu_weight: u32,
    pub disk_mb: i32,
    pub memory_mb: i32,
    pub log_guid: String,
    pub log_source: String,
    pub metrics_guid: String,
    pub result_file: String,
    pub completion_callback_url: String,
    #[serde(skip_serializing_if = "str_empty")]
    pub annotation: String,
    pub privileged: bool,
    #[serde(skip_serializing_if = "is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    // extensions
    #[serde(skip_serializing_if = "is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "is_zero")]
    pub max_pids: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl TaskCreateRequest {
    /// The guid, domain and definition the BBS stores (defaults filled in).
    pub fn into_model(self) -> (String, String, TaskDefinition) {
        let def = TaskDefinition {
            rootfs: self.rootfs,
            env: self.env,
            action: self.action,
            disk_mb: self.disk_mb,
            memory_mb: self.memory_mb,
            cpu_weight: if self.cpu_weight == 0 {
                DEFAULT_CPU_WEIGHT
            } else {
                self.cpu_weight
            },
            max_pids: self.max_pids,
            privileged: self.privileged,
            log_guid: self.log_guid,
            log_source: self.log_source,
            metrics_guid: self.metrics_guid,
            result_file: self.result_file,
            completion_callback_url: self.completion_callback_url,
            annotation: self.annotation,
            egress_rules: self.egress_rules,
            placement_tags: self.placement_tags,
            volume_mounts: self.volume_mounts,
        };
        let domain = if self.domain.is_empty() {
            DEFAULT_DOMAIN.to_string()
        } else {
            self.domain
        };
        (self.task_guid, domain, def)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TaskResponse {
    #[serde(flatten)]
    pub request: TaskCreateRequest,
    pub cell_id: String,
    pub created_at: i64,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
    pub state: String,
    /// Extension: the developer token that owns the task, in the API's GET answers;
    /// absent: the admins'.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

pub fn task_state_name(s: i32) -> &'static str {
    crate::task::state_name(task::State::try_from(s).unwrap_or(task::State::Invalid))
}

impl From<Task> for TaskResponse {
    fn from(t: Task) -> TaskResponse {
        let d = t.definition.unwrap_or_default();
        TaskResponse {
            request: TaskCreateRequest {
                task_guid: t.task_guid,
                domain: t.domain,
                rootfs: d.rootfs,
                action: d.action,
                env: d.env,
                cpu_weight: d.cpu_weight,
                disk_mb: d.disk_mb,
                memory_mb: d.memory_mb,
                log_guid: d.log_guid,
                log_source: d.log_source,
                metrics_guid: d.metrics_guid,
                result_file: d.result_file,
                completion_callback_url: d.completion_callback_url,
                annotation: d.annotation,
                privileged: d.privileged,
                egress_rules: d.egress_rules,
                placement_tags: d.placement_tags,
                volume_mounts: d.volume_mounts,
                max_pids: d.max_pids,
            },
            cell_id: t.cell_id,
            created_at: t.created_at,
            failed: t.failed,
            failure_reason: t.failure_reason,
            result: t.result,
            state: task_state_name(t.state).to_string(),
            owner: String::new(),
        }
    }
}

// ----------------------------------------------------------- desired LRPs

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DesiredLrpCreateRequest {
    pub process_guid: String,
    pub domain: String,
    pub rootfs: String,
    pub instances: i32,
    #[serde(skip_serializing_if = "is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    pub action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Action>,
    /// Seconds.
    pub start_timeout: u64,
    pub disk_mb: i32,
    pub memory_mb: i32,
    pub cpu_weight: u32,
    pub privileged: bool,
    pub ports: Vec<u32>,
    /// Router name → that router's raw JSON.
    pub routes: BTreeMap<String, serde_json::Value>,
    pub log_guid: String,
    pub log_source: String,
    pub metrics_guid: String,
    #[serde(skip_serializing_if = "str_empty")]
    pub annotation: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    // extensions
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_definition: Option<CheckDefinition>,
    #[serde(skip_serializing_if = "is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "is_zero")]
    pub max_pids: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_policy: Option<CrashPolicy>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

fn routes_to_model(routes: BTreeMap<String, serde_json::Value>) -> HashMap<String, String> {
    routes
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

fn routes_from_model(routes: HashMap<String, String>) -> BTreeMap<String, serde_json::Value> {
    routes
        .into_iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
            (k, value)
        })
        .collect()
}

impl DesiredLrpCreateRequest {
    pub fn into_model(self) -> DesiredLrp {
        DesiredLrp {
            process_guid: self.process_guid,
            domain: if self.domain.is_empty() {
                DEFAULT_DOMAIN.to_string()
            } else {
                self.domain
            },
            rootfs: self.rootfs,
            instances: self.instances,
            env: self.env,
            setup: self.setup,
            action: self.action,
            monitor: self.monitor,
            check_definition: self.check_definition,
            ports: self.ports,
            routes: routes_to_model(self.routes),
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            cpu_weight: if self.cpu_weight == 0 {
                DEFAULT_CPU_WEIGHT
            } else {
                self.cpu_weight
            },
            max_pids: self.max_pids,
            privileged: self.privileged,
            placement_tags: self.placement_tags,
            volume_mounts: self.volume_mounts,
            log_guid: self.log_guid,
            log_source: self.log_source,
            metrics_guid: self.metrics_guid,
            start_timeout_ms: self.start_timeout.saturating_mul(1000),
            annotation: self.annotation,
            modification_tag: None,
            egress_rules: self.egress_rules,
            crash_policy: self.crash_policy,
            host_network: self.host_network,
            generation: 0,
            deployment: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DesiredLrpResponse {
    #[serde(flatten)]
    pub request: DesiredLrpCreateRequest,
    pub modification_tag: ModificationTag,
    /// Extension: the definition's generation (1 when created).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub generation: i64,
    /// Extension: the app's last rolling update, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<rollout::DeploymentJson>,
    /// Extension: the developer token that owns the app, in the API's GET answers;
    /// absent: the admins'.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl From<DesiredLrp> for DesiredLrpCreateRequest {
    fn from(d: DesiredLrp) -> DesiredLrpCreateRequest {
        DesiredLrpCreateRequest {
            process_guid: d.process_guid,
            domain: d.domain,
            rootfs: d.rootfs,
            instances: d.instances,
            env: d.env,
            setup: d.setup,
            action: d.action,
            monitor: d.monitor,
            start_timeout: d.start_timeout_ms / 1000,
            disk_mb: d.disk_mb,
            memory_mb: d.memory_mb,
            cpu_weight: d.cpu_weight,
            privileged: d.privileged,
            ports: d.ports,
            routes: routes_from_model(d.routes),
            log_guid: d.log_guid,
            log_source: d.log_source,
            metrics_guid: d.metrics_guid,
            annotation: d.annotation,
            egress_rules: d.egress_rules,
            check_definition: d.check_definition,
            placement_tags: d.placement_tags,
            volume_mounts: d.volume_mounts,
            max_pids: d.max_pids,
            crash_policy: d.crash_policy,
            host_network: d.host_network,
        }
    }
}

impl From<DesiredLrp> for DesiredLrpResponse {
    fn from(mut d: DesiredLrp) -> DesiredLrpResponse {
        DesiredLrpResponse {
            modification_tag: d.modification_tag.take().unwrap_or_default(),
            generation: d.generation,
            deployment: d.deployment.take().map(Into::into),
            owner: String::new(),
            request: d.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DesiredLrpUpdateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

impl DesiredLrpUpdateRequest {
    pub fn into_model(self) -> DesiredLrpUpdate {
        DesiredLrpUpdate {
            instances: self.instances,
            has_routes: self.routes.is_some(),
            routes: self.routes.map(routes_to_model).unwrap_or_default(),
            annotation: self.annotation,
        }
    }
}

// ------------------------------------------------------------ actual LRPs

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ActualLrpResponse {
    pub process_guid: String,
    pub instance_guid: String,
    pub cell_id: String,
    pub domain: String,
    pub index: i32,
    pub address: String,
    pub ports: Vec<PortMapping>,
    pub state: String,
    pub crash_count: i32,
    pub crash_reason: String,
    pub placement_error: String,
    /// Unix nanoseconds of the last state change.
    pub since: i64,
    pub evacuating: bool,
    pub modification_tag: ModificationTag,
    /// Extension: ORDINARY, EVACUATING, SUSPECT (cell vanished; a replacement is
    /// being placed) or REPLACED (a rolling update's old instance, still serving).
    pub presence: String,
    /// Extension: the app generation this instance runs.
    pub generation: i64,
    /// Extension: routers no longer send it traffic; it is about to stop.
    pub draining: bool,
}

pub fn actual_state_name(s: i32) -> &'static str {
    crate::actual_lrp::state_name(
        actual_lrp::State::try_from(s).unwrap_or(actual_lrp::State::Unclaimed),
    )
}

impl From<ActualLrp> for ActualLrpResponse {
    fn from(l: ActualLrp) -> ActualLrpResponse {
        let key = l.key.clone().unwrap_or_default();
        let ik = l.instance_key.clone().unwrap_or_default();
        let net = l.net_info.clone().unwrap_or_default();
        ActualLrpResponse {
            process_guid: key.process_guid,
            instance_guid: ik.instance_guid,
            cell_id: ik.cell_id,
            domain: key.domain,
            index: key.index,
            address: net.address,
            ports: net
                .ports
                .into_iter()
                .map(|p| PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                })
                .collect(),
            state: actual_state_name(l.state).to_string(),
            crash_count: l.crash_count,
            crash_reason: l.crash_reason,
            placement_error: l.placement_error,
            since: l.since,
            evacuating: l.presence == actual_lrp::Presence::Evacuating as i32,
            modification_tag: l.modification_tag.unwrap_or_default(),
            presence: crate::actual_lrp::presence_name(
                actual_lrp::Presence::try_from(l.presence)
                    .unwrap_or(actual_lrp::Presence::Ordinary),
            )
            .to_string(),
            generation: l.generation,
            draining: l.draining,
        }
    }
}

/// Extension: what one instance's container uses right now
/// (`GET /v1/actual_lrps/:process_guid/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContainerUsage {
    pub instance_guid: String,
    pub cell_id: String,
    pub memory_bytes: u64,
    /// CPU time used since the container started.
    pub cpu_seconds: f64,
    /// Bytes written to the container's own filesystem.
    pub disk_bytes: u64,
}

// ------------------------------------------------------------------ cells

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CellCapacity {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CellResponse {
    pub cell_id: String,
    pub zone: String,
    pub capacity: CellCapacity,
    pub rootfs_providers: BTreeMap<String, Vec<String>>,
    // extensions
    pub rep_address: String,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub volume_drivers: Vec<String>,
    /// The cell's container subnet (CIDR).
    pub subnet: String,
    /// Where other cells send its overlay traffic (empty: no overlay).
    pub overlay_address: String,
    /// Its `local` volume pool: size now, the most it grows to, bytes used, and its
    /// warning ("" when none); all 0 before the pool is made.
    pub volume_pool_bytes: u64,
    pub volume_pool_max_bytes: u64,
    pub volume_pool_used_bytes: u64,
    pub volume_pool_warning: String,
}

impl From<CellPresence> for CellResponse {
    fn from(c: CellPresence) -> CellResponse {
        let cap = c.capacity.unwrap_or_default();
        CellResponse {
            cell_id: c.cell_id,
            zone: c.zone,
            capacity: CellCapacity {
                memory_mb: cap.memory_mb,
                disk_mb: cap.disk_mb,
                containers: cap.containers,
            },
            rootfs_providers: c
                .rootfs_providers
                .into_iter()
                .map(|p| (p.name, p.properties))
                .collect(),
            rep_address: c.rep_address,
            placement_tags: c.placement_tags,
            optional_placement_tags: c.optional_placement_tags,
            volume_drivers: c.volume_drivers,
            subnet: c.subnet,
            overlay_address: c.overlay_address,
            volume_pool_bytes: c.volume_pool_bytes,
            volume_pool_max_bytes: c.volume_pool_max_bytes,
            volume_pool_used_bytes: c.volume_pool_used_bytes,
            volume_pool_warning: c.volume_pool_warning,
        }
    }
}

// ---------------------------------------------------------- volumes, backups

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

// ----------------------------------------------------------------- events

/// Server-sent event payloads, keyed as the receptor's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // built once per event, serialized right away
pub enum EventPayload {
    DesiredLrp {
        desired_lrp: DesiredLrpResponse,
    },
    DesiredLrpChanged {
        desired_lrp_before: DesiredLrpResponse,
        desired_lrp_after: DesiredLrpResponse,
    },
    ActualLrp {
        actual_lrp: ActualLrpResponse,
    },
    ActualLrpChanged {
        actual_lrp_before: ActualLrpResponse,
        actual_lrp_after: ActualLrpResponse,
    },
    Task {
        task: TaskResponse,
    },
    TaskChanged {
        task_before: TaskResponse,
        task_after: TaskResponse,
    },
    Cell {
        cell: CellResponse,
    },
    Volume {
        volume: VolumeResponse,
    },
    Backup {
        backup: BackupResponse,
    },
}

impl EventPayload {
    pub fn from_event(e: &crate::events::Event) -> Option<EventPayload> {
        use crate::events::event::Event as K;
        let d = |x: &Option<DesiredLrp>| DesiredLrpResponse::from(x.clone().unwrap_or_default());
        let a = |x: &Option<ActualLrp>| ActualLrpResponse::from(x.clone().unwrap_or_default());
        let t = |x: &Option<Task>| TaskResponse::from(x.clone().unwrap_or_default());
        let c = |x: &Option<CellPresence>| CellResponse::from(x.clone().unwrap_or_default());
        Some(match e.event.as_ref()? {
            K::DesiredLrpCreated(v) => EventPayload::DesiredLrp {
                desired_lrp: d(&v.desired_lrp),
            },
            K::DesiredLrpChanged(v) => EventPayload::DesiredLrpChanged {
                desired_lrp_before: d(&v.before),
                desired_lrp_after: d(&v.after),
            },
            K::DesiredLrpRemoved(v) => EventPayload::DesiredLrp {
                desired_lrp: d(&v.desired_lrp),
            },
            K::ActualLrpCreated(v) => EventPayload::ActualLrp {
                actual_lrp: a(&v.actual_lrp),
            },
            K::ActualLrpChanged(v) => EventPayload::ActualLrpChanged {
                actual_lrp_before: a(&v.before),
                actual_lrp_after: a(&v.after),
            },
            K::ActualLrpRemoved(v) => EventPayload::ActualLrp {
                actual_lrp: a(&v.actual_lrp),
            },
            K::ActualLrpCrashed(v) => EventPayload::ActualLrp {
                actual_lrp: a(&v.actual_lrp),
            },
            K::TaskCreated(v) => EventPayload::Task { task: t(&v.task) },
            K::TaskChanged(v) => EventPayload::TaskChanged {
                task_before: t(&v.before),
                task_after: t(&v.after),
            },
            K::TaskRemoved(v) => EventPayload::Task { task: t(&v.task) },
            K::CellAppeared(v) => EventPayload::Cell { cell: c(&v.cell) },
            K::CellDisappeared(v) => EventPayload::Cell { cell: c(&v.cell) },
            K::CellChanged(v) => EventPayload::Cell { cell: c(&v.after) },
            K::BackupChanged(v) => EventPayload::Backup {
                backup: v.after.clone().or(v.before.clone())?.into(),
            },
            K::VolumeChanged(v) => EventPayload::Volume {
                volume: VolumeResponse::new(v.after.clone().or(v.before.clone())?, vec![]),
            },
        })
    }
}

#[cfg(test)]
mod tests;
