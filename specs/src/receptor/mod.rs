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

mod storage;
pub use storage::*;

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
