//! What the brain, the cells and the router ask of the BBS, as narrow traits split
//! by concern, and the bundle each component depends on ([`BrainBbs`],
//! [`CellBbs`], [`RouterBbs`]). Every method is one BBS call.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use lattice_specs::bbs_api::{FailOverVolumeRequest, LeaseCellSubnetResponse, TendStandbyRequest};
use lattice_specs::events::Event;
use lattice_specs::models::{
    volume, ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, Backup, CellPresence, Deployment,
    DesiredLrp, DesiredLrpGeneration, Domain, Schedule, Task, Volume,
};

use crate::error::Result;

/// The BBS's events, as they happen, until the stream ends or fails.
pub type EventStream = BoxStream<'static, Result<Event>>;

/// Which actual LRPs a listing returns; an empty field (or `None`) matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualLrpFilter {
    pub domain: String,
    pub cell_id: String,
    pub process_guid: String,
    pub index: Option<i32>,
}

/// Which tasks a listing returns; an empty field matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: String,
    pub cell_id: String,
}

/// The answer to a lock request: who holds it, and at which revision if we do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    pub acquired: bool,
    pub owner: String,
    /// The lock's revision: the caller's fencing token once it holds it.
    pub revision: i64,
}

/// What a cell reports of one of its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeReport {
    pub name: String,
    pub cell_id: String,
    pub state: volume::State,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub reason: String,
}

/// Leases: what keeps a cell's presence and a brain's lock alive.
#[async_trait]
pub trait Leases: Send + Sync {
    /// A new lease of `ttl_seconds`: its id.
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64>;
    /// Renews a lease: its TTL in seconds, or 0 once it is gone.
    async fn keep_alive_lease(&self, lease_id: i64) -> Result<i64>;
    async fn revoke_lease(&self, lease_id: i64) -> Result<()>;
}

/// Locks held under a lease (the brain's leadership).
#[async_trait]
pub trait Locks: Send + Sync {
    async fn acquire_lock(&self, key: &str, owner: &str, lease_id: i64) -> Result<Lock>;
    async fn release_lock(&self, key: &str, lease_id: i64) -> Result<()>;
}

/// The BBS's event stream.
#[async_trait]
pub trait Events: Send + Sync {
    async fn subscribe_events(&self) -> Result<EventStream>;
}

/// Reading the BBS's state.
#[async_trait]
pub trait Reads: Send + Sync {
    /// Every desired LRP, of every domain.
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>>;
    /// One desired LRP; a `NotFound` error when there is none.
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp>;
    async fn actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>>;
    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// One task; a `NotFound` error when there is none.
    async fn task(&self, task_guid: &str) -> Result<Task>;
    /// The live cells.
    async fn cells(&self) -> Result<Vec<CellPresence>>;
    /// The fresh domains.
    async fn domains(&self) -> Result<Vec<Domain>>;
    /// Every volume, or only those of `cell_id` when it is not empty.
    async fn volumes(&self, cell_id: &str) -> Result<Vec<Volume>>;
}

/// The brain's writes to actual LRPs (convergence and the auction's failures).
#[async_trait]
pub trait LrpWrites: Send + Sync {
    async fn create_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn unclaim_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn remove_suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn retire_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    /// Records why an instance could not be placed (it stays UNCLAIMED).
    async fn fail_actual_lrp(&self, process_guid: &str, index: i32, reason: &str) -> Result<()>;
    async fn remove_evacuating_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<()>;
}

/// The brain's rolling updates (its deployer): replacing instances, their
/// REPLACED copies, the deployment's progress, rollbacks, and the app's history.
#[async_trait]
pub trait Rollouts: Send + Sync {
    /// Starts replacing instance `index` for `target_generation` (refused if the
    /// app's generation changed): with `surge` the old instance keeps serving
    /// from a REPLACED copy. Returns the new, UNCLAIMED ordinary record.
    async fn replace_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<ActualLrp>;
    /// Marks the REPLACED copy at `index` draining (routers drop it).
    async fn drain_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    /// Removes the REPLACED copy at `index` (its cell stops the instance).
    async fn remove_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    /// Puts the REPLACED copy at `index` back as the ordinary record (a rollback).
    async fn restore_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    /// Records the deployment's progress: compare-and-swap on `expected`, the
    /// deployment read (`ResourceConflict` when it changed).
    async fn update_deployment(
        &self,
        process_guid: &str,
        expected: Deployment,
        new: Deployment,
    ) -> Result<()>;
    /// Rolls the app back to `generation` (0: the deployment's previous one);
    /// `failed`: the target generation failed, for `reason`.
    async fn rollback_desired_lrp(
        &self,
        process_guid: &str,
        generation: i64,
        failed: bool,
        reason: &str,
    ) -> Result<DesiredLrp>;
    /// The app's kept history, oldest first.
    async fn desired_lrp_generations(
        &self,
        process_guid: &str,
    ) -> Result<Vec<DesiredLrpGeneration>>;
}

/// Failing a task: the brain's convergence does, and so does a cell whose sync
/// finds a task RUNNING on it without a container.
#[async_trait]
pub trait TaskFailures: Send + Sync {
    async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()>;
}

/// The brain's other writes to tasks.
#[async_trait]
pub trait TaskWrites: Send + Sync {
    /// Gives up on placing a task (failed after its retries).
    async fn reject_task(&self, task_guid: &str, reason: &str) -> Result<()>;
    async fn resolving_task(&self, task_guid: &str) -> Result<()>;
    async fn delete_task(&self, task_guid: &str) -> Result<()>;
}

/// What came of the brain's claim of a schedule's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimedSlot {
    /// The slot was handled already (another brain, an earlier pass).
    Taken,
    /// Recorded as skipped.
    Skipped,
    /// Its run (a Task's guid, a backup's id) was started.
    Run(String),
    /// Its run could not be started, for this reason (recorded as the slot's failure).
    Failed(String),
}

/// The brain's scheduler: schedules (periodic Tasks and backups), their runs, the
/// claim of a slot that starts a run exactly once, and pruning runs.
#[async_trait]
pub trait ScheduledRuns: Send + Sync {
    async fn schedules(&self) -> Result<Vec<Schedule>>;
    /// The Tasks that are runs of a schedule (`Task::schedule` set).
    async fn scheduled_runs(&self) -> Result<Vec<Task>>;
    async fn backups(&self) -> Result<Vec<Backup>>;
    /// Handles slot `slot_at` (Unix seconds, labelled `slot`) of schedule `name`:
    /// starts its run, or records it skipped when `skip_reason` is not empty.
    async fn claim_schedule_slot(
        &self,
        name: &str,
        slot_at: i64,
        slot: &str,
        skip_reason: &str,
    ) -> Result<ClaimedSlot>;
    /// Handles verification slot `slot_at` (Unix seconds) of backup schedule `name`:
    /// verifies its volume's newest completed backup (the run is the verify task).
    async fn claim_verify_slot(&self, name: &str, slot_at: i64) -> Result<ClaimedSlot>;
    /// The Tasks of the backup domain (backups, restores, verifications, forgets).
    async fn backup_tasks(&self) -> Result<Vec<Task>>;
    /// Removes a completed run: resolves then deletes Task `task_guid`.
    async fn remove_run(&self, task_guid: &str) -> Result<()>;
    /// Removes backup `id`: deletes its archive, or (a repository's) marks it to be
    /// forgotten; `BackupNotFound` if there is none.
    async fn delete_backup(&self, id: &str) -> Result<()>;
}

/// The brain's placement of volumes the BBS recorded without a cell.
#[async_trait]
pub trait VolumePlacement: Send + Sync {
    /// Puts volume `name` on `cell_id`; `VolumeAlreadyPlaced` once it has a cell
    /// (or no longer waits for one).
    async fn place_volume(&self, name: &str, cell_id: &str) -> Result<()>;
    /// Moves a failover volume off its lost cell (`lattice_specs::failover::Step::Move`)
    /// to be refilled from its backup; `VolumeAlreadyPlaced` when it moved on.
    async fn fail_over_volume(&self, req: &FailOverVolumeRequest) -> Result<()>;
    /// Places or refreshes a volume's standby copy
    /// (`lattice_specs::failover::standby::StandbyStep`); `VolumeAlreadyPlaced` when
    /// the volume moved on.
    async fn tend_standby(&self, req: &TendStandbyRequest) -> Result<()>;
}

/// A cell's writes: its presence, the instances and tasks it runs, its volumes.
#[async_trait]
pub trait CellWrites: Send + Sync {
    async fn set_cell_presence(&self, cell: &CellPresence, lease_id: i64) -> Result<()>;
    /// The cell's container subnet (the one it had, or the first free one) and the
    /// cluster's network settings; `overlay_address` is where other cells reach its
    /// overlay (empty: none). `SubnetsExhausted`, `SubnetLeaseHeld` when refused.
    async fn lease_cell_subnet(
        &self,
        cell_id: &str,
        overlay_address: &str,
    ) -> Result<LeaseCellSubnetResponse>;
    /// Claims an instance to run `generation` of the app's definition (the
    /// generation of the DesiredLRP the cell was given).
    async fn claim_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        generation: i64,
    ) -> Result<ActualLrp>;
    async fn start_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<ActualLrp>;
    async fn crash_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<ActualLrp>;
    /// Removes an instance (only if still this one, when `instance_key` is given).
    async fn remove_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: Option<&ActualLrpInstanceKey>,
    ) -> Result<()>;
    /// Evacuates a claimed instance: whether to keep its container.
    async fn evacuate_claimed_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<bool>;
    /// Evacuates a running instance: whether to keep its container.
    async fn evacuate_running_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<bool>;
    /// Starts a task on `cell_id`: whether the cell should run it.
    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool>;
    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<()>;
    async fn set_volume_state(&self, report: &VolumeReport) -> Result<()>;
    async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()>;
    /// The cell fenced its copy of volume `name` off, keeping it at `copy`.
    async fn volume_fenced(&self, name: &str, cell_id: &str, copy: &str) -> Result<()>;
}

/// What the brain asks of the BBS. Once it leads, it writes through
/// [`fenced`](BrainBbs::fenced), so a brain that lost its lock writes nothing.
pub trait BrainBbs:
    Leases
    + Locks
    + Events
    + Reads
    + LrpWrites
    + Rollouts
    + TaskFailures
    + TaskWrites
    + ScheduledRuns
    + VolumePlacement
{
    /// The same BBS, every call made under the fencing token `lock@revision`: the
    /// BBS refuses it with `LockLost` once that lock moved on.
    fn fenced(&self, lock: &str, revision: i64) -> Arc<dyn BrainBbs>;
}

/// What a cell's rep asks of the BBS.
pub trait CellBbs: Leases + Events + Reads + CellWrites + TaskFailures {}

impl<T: Leases + Events + Reads + CellWrites + TaskFailures + ?Sized> CellBbs for T {}

/// What the router's route emitter asks of the BBS.
pub trait RouterBbs: Events + Reads {}

impl<T: Events + Reads + ?Sized> RouterBbs for T {}
