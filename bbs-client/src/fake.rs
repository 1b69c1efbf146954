//! [`FakeBbs`]: the BBS in-process, for unit tests of its clients. It is the real
//! BBS database (`lattice_bbs::db::Db`) over an embedded store in a temporary
//! directory, called directly (no network), so it refuses exactly what the real
//! BBS refuses and answers with the same error names and codes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lattice_bbs::db::{Db, DbError};
use lattice_bbs::events::EventHub;
use lattice_bbs::grpc::status_of;
use lattice_bbs::schedules::Claimed;
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_specs::bbs_api::{FailOverVolumeRequest, TendStandbyRequest};
use lattice_specs::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, Backup, CellPresence, Deployment,
    DesiredLrp, DesiredLrpGeneration, Domain, Schedule, Task, Volume,
};
use lattice_specs::validation::{FieldError, ValidationErrors};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use crate::api::*;
use crate::error::{BbsError, Result};

/// An in-process BBS; cheap to clone. Its store lives as long as any clone.
#[derive(Clone)]
pub struct FakeBbs {
    /// The unfenced database: reads and the calls the real BBS never fences.
    db: Db,
    /// The database writes go through: fenced once [`BrainBbs::fenced`].
    writes: Db,
    hub: EventHub,
    /// What scheduled backups and verifications start through: repositories in
    /// memory, a key file and a blob store in the fake's directory, no cells to reach.
    api: lattice_bbs::api::ApiState,
    _dir: Arc<tempfile::TempDir>,
}

/// The BBS's answer to a refused call, as a client sees it.
fn refused(e: DbError) -> BbsError {
    BbsError::from(status_of(&e))
}

fn invalid(field: &str, message: &str) -> BbsError {
    refused(DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])))
}

impl FakeBbs {
    /// A fresh, empty BBS in a new temporary directory.
    pub async fn start() -> FakeBbs {
        let dir = tempfile::tempdir().expect("a temporary directory for the fake BBS");
        let store = EmbeddedStore::open(dir.path().join("bbs.db")).expect("an embedded store");
        let store: Arc<dyn lattice_bbs::store::Store> = Arc::new(store);
        let hub = EventHub::start(store.clone()).await;
        let db = Db::new(store);
        let repos: Arc<dyn lattice_bbs::repos::RepoStore> =
            Arc::new(lattice_bbs::repos::MemStore::default());
        let api = lattice_bbs::api::ApiState {
            db: db.clone(),
            hub: hub.clone(),
            basic_auth: None,
            logs: Default::default(),
            cells: lattice_bbs::cell_client::CellClient::new(None, Arc::new(db.clone()))
                .expect("a cell client"),
            blobs: Some(
                lattice_bbs::blobs::BlobStore::open(&dir.path().join("blobs"))
                    .expect("a blob store"),
            ),
            public_url: "https://fake-bbs:8888/".into(),
            stores: lattice_bbs::repos::Stores::from_stores(vec![("default".into(), repos)]),
            backup_key: Some(
                lattice_bbs::repos::BackupKey::load_or_create(&dir.path().join("backup.key"))
                    .expect("a backup key"),
            ),
            lattice_release: lattice_bbs::api::VERSION.into(),
            cpu_samples: Default::default(),
        };
        FakeBbs {
            writes: db.clone(),
            db,
            hub,
            api,
            _dir: Arc::new(dir),
        }
    }

    /// The database behind it, to set up state (desire work, create volumes…).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The view of a brain that now leads `lock`: every write fenced with its token.
    pub async fn leader(&self, lock: &str) -> Arc<dyn BrainBbs> {
        let revision = self.take_lock(lock, "leader").await;
        self.fenced(lock, revision)
    }

    /// The view of a brain that led `lock` and lost it to another brain: every write
    /// through it is refused with `LockLost`.
    pub async fn superseded(&self, lock: &str) -> Arc<dyn BrainBbs> {
        let first = self.grant_lease(60).await.expect("a lease");
        let held = self
            .acquire_lock(lock, "superseded", first)
            .await
            .expect("the lock");
        assert!(held.acquired, "{lock} is free to take");
        self.release_lock(lock, first).await.expect("releasing");
        self.take_lock(lock, "successor").await;
        self.fenced(lock, held.revision)
    }

    /// Takes `lock` for `owner` under a new lease: its fencing revision.
    async fn take_lock(&self, lock: &str, owner: &str) -> i64 {
        let lease = self.grant_lease(60).await.expect("a lease");
        let held = self
            .acquire_lock(lock, owner, lease)
            .await
            .expect("the lock");
        assert!(held.acquired, "{lock} is free to take");
        held.revision
    }
}

#[async_trait]
impl Leases for FakeBbs {
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        if ttl_seconds <= 0 {
            return Err(invalid("ttl_seconds", "must be > 0"));
        }
        let ttl = Duration::from_secs(ttl_seconds as u64);
        self.writes.grant_lease(ttl).await.map_err(refused)
    }
    async fn keep_alive_lease(&self, lease_id: i64) -> Result<i64> {
        match self.writes.keep_alive(lease_id).await {
            Ok(ttl) => Ok(ttl),
            Err(DbError::Store(lattice_bbs::store::StoreError::LeaseNotFound(_))) => Ok(0),
            Err(e) => Err(refused(e)),
        }
    }
    async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        self.writes.revoke_lease(lease_id).await.map_err(refused)
    }
}

#[async_trait]
impl Locks for FakeBbs {
    async fn acquire_lock(&self, key: &str, owner: &str, lease_id: i64) -> Result<Lock> {
        if key.is_empty() || owner.is_empty() || lease_id == 0 {
            return Err(invalid("key, owner and lease_id", "is required"));
        }
        let s = self.writes.acquire_lock(key, owner, lease_id).await;
        let s = s.map_err(refused)?;
        Ok(Lock {
            acquired: s.acquired,
            owner: s.owner,
            revision: s.revision,
        })
    }
    async fn release_lock(&self, key: &str, lease_id: i64) -> Result<()> {
        self.writes
            .release_lock(key, lease_id)
            .await
            .map_err(refused)
    }
}

#[async_trait]
impl Events for FakeBbs {
    async fn subscribe_events(&self) -> Result<EventStream> {
        let events = BroadcastStream::new(self.hub.subscribe()).map(|e| match e {
            Ok(e) => Ok((*e).clone()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Err(BbsError::from(
                tonic::Status::data_loss(format!("subscriber fell {n} events behind")),
            )),
        });
        Ok(events.boxed())
    }
}

#[async_trait]
impl Reads for FakeBbs {
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>> {
        self.db.desired_lrps("").await.map_err(refused)
    }
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        self.db.desired_lrp(process_guid).await.map_err(refused)
    }
    async fn actual_lrps(&self, f: &ActualLrpFilter) -> Result<Vec<ActualLrp>> {
        let r = self
            .db
            .actual_lrps(&f.domain, &f.cell_id, &f.process_guid, f.index);
        r.await.map_err(refused)
    }
    async fn tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        self.db.tasks(&f.domain, &f.cell_id).await.map_err(refused)
    }
    async fn task(&self, task_guid: &str) -> Result<Task> {
        self.db.task(task_guid).await.map_err(refused)
    }
    async fn cells(&self) -> Result<Vec<CellPresence>> {
        self.db.cells().await.map_err(refused)
    }
    async fn domains(&self) -> Result<Vec<Domain>> {
        self.db.domains().await.map_err(refused)
    }
    async fn volumes(&self, cell_id: &str) -> Result<Vec<Volume>> {
        let all = self.db.volumes().await.map_err(refused)?;
        Ok(all
            .into_iter()
            .filter(|v| cell_id.is_empty() || v.cell_id == cell_id)
            .collect())
    }
}

#[async_trait]
impl LrpWrites for FakeBbs {
    async fn create_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.create_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn unclaim_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.unclaim_actual_lrp(process_guid, index);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.suspect_actual_lrp(process_guid, index);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn remove_suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.remove_suspect_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn retire_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.retire_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn fail_actual_lrp(&self, process_guid: &str, index: i32, reason: &str) -> Result<()> {
        let r = self.writes.fail_actual_lrp(process_guid, index, reason);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn remove_evacuating_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<()> {
        let r = self
            .writes
            .remove_evacuating(process_guid, index, instance_key);
        r.await.map_err(refused)
    }
}

#[async_trait]
impl Rollouts for FakeBbs {
    async fn replace_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<ActualLrp> {
        let r = self
            .writes
            .replace_actual_lrp(process_guid, index, surge, target_generation);
        r.await.map_err(refused)
    }
    async fn drain_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.drain_replaced_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn remove_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.remove_replaced_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn restore_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let r = self.writes.restore_replaced_actual_lrp(process_guid, index);
        r.await.map_err(refused)
    }
    async fn update_deployment(
        &self,
        process_guid: &str,
        expected: Deployment,
        new: Deployment,
    ) -> Result<()> {
        let r = self.writes.update_deployment(process_guid, &expected, &new);
        r.await.map_err(refused)
    }
    async fn rollback_desired_lrp(
        &self,
        process_guid: &str,
        generation: i64,
        failed: bool,
        reason: &str,
    ) -> Result<DesiredLrp> {
        let rollback = lattice_bbs::db::Rollback {
            generation,
            failed,
            reason,
            requested_by: "brain",
        };
        let r = self.writes.rollback_desired_lrp(process_guid, rollback);
        r.await.map_err(refused)
    }
    async fn desired_lrp_generations(
        &self,
        process_guid: &str,
    ) -> Result<Vec<DesiredLrpGeneration>> {
        self.db.generations(process_guid).await.map_err(refused)
    }
}

#[async_trait]
impl TaskFailures for FakeBbs {
    async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        let r = self.writes.fail_task(task_guid, reason);
        r.await.map(|_| ()).map_err(refused)
    }
}

#[async_trait]
impl TaskWrites for FakeBbs {
    async fn reject_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        let r = self.writes.reject_task(task_guid, reason);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn resolving_task(&self, task_guid: &str) -> Result<()> {
        let r = self.writes.resolving_task(task_guid);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn delete_task(&self, task_guid: &str) -> Result<()> {
        self.writes.delete_task(task_guid).await.map_err(refused)
    }
}

fn claimed(c: Claimed) -> ClaimedSlot {
    match c {
        Claimed::Taken => ClaimedSlot::Taken,
        Claimed::Skipped => ClaimedSlot::Skipped,
        Claimed::Run(run) => ClaimedSlot::Run(run),
        Claimed::Failed(why) => ClaimedSlot::Failed(why),
    }
}

#[async_trait]
impl ScheduledRuns for FakeBbs {
    async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.db.schedules().await.map_err(refused)
    }
    async fn scheduled_runs(&self) -> Result<Vec<Task>> {
        let mut tasks = self.db.tasks("", "").await.map_err(refused)?;
        tasks.retain(|t| !t.schedule.is_empty());
        Ok(tasks)
    }
    async fn backups(&self) -> Result<Vec<Backup>> {
        self.db.backups().await.map_err(refused)
    }
    async fn claim_schedule_slot(
        &self,
        name: &str,
        slot_at: i64,
        slot: &str,
        skip_reason: &str,
    ) -> Result<ClaimedSlot> {
        let r = lattice_bbs::schedules::claim(
            &self.writes,
            Some(&self.api),
            name,
            slot_at,
            slot,
            skip_reason,
        );
        Ok(claimed(r.await.map_err(refused)?))
    }
    async fn claim_verify_slot(&self, name: &str, slot_at: i64) -> Result<ClaimedSlot> {
        let r = lattice_bbs::backup_verify::claim(&self.writes, Some(&self.api), name, slot_at);
        Ok(claimed(r.await.map_err(refused)?))
    }
    async fn backup_tasks(&self) -> Result<Vec<Task>> {
        let r = self.db.tasks(lattice_specs::backup::DOMAIN, "");
        r.await.map_err(refused)
    }
    async fn remove_run(&self, task_guid: &str) -> Result<()> {
        self.writes
            .resolving_task(task_guid)
            .await
            .map_err(refused)?;
        self.writes.delete_task(task_guid).await.map_err(refused)
    }
    async fn delete_backup(&self, id: &str) -> Result<()> {
        self.writes
            .delete_backup(id)
            .await
            .map(|_| ())
            .map_err(refused)
    }
}

#[async_trait]
impl VolumePlacement for FakeBbs {
    async fn place_volume(&self, name: &str, cell_id: &str) -> Result<()> {
        let r = self.writes.place_volume(name, cell_id);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn fail_over_volume(&self, r: &FailOverVolumeRequest) -> Result<()> {
        let m = lattice_bbs::db::Move {
            name: &r.name,
            from: &r.from_cell,
            to: &r.to_cell,
            epoch: r.epoch,
            lost_at: r.lost_at,
        };
        lattice_bbs::failover::fail_over(&self.writes, true, &m, &r.backup_id)
            .await
            .map(|_| ())
            .map_err(refused)
    }
    async fn tend_standby(&self, r: &TendStandbyRequest) -> Result<()> {
        lattice_bbs::standby::tend(None, &self.writes, r)
            .await
            .map_err(refused)
    }
}

impl BrainBbs for FakeBbs {
    fn fenced(&self, lock: &str, revision: i64) -> Arc<dyn BrainBbs> {
        Arc::new(FakeBbs {
            writes: self.db.fenced(lock, revision),
            ..self.clone()
        })
    }
}

#[async_trait]
impl CellWrites for FakeBbs {
    async fn set_cell_presence(&self, cell: &CellPresence, lease_id: i64) -> Result<()> {
        let r = self.writes.set_cell_presence(cell, lease_id);
        r.await.map_err(refused)
    }
    async fn lease_cell_subnet(
        &self,
        cell_id: &str,
        overlay_address: &str,
    ) -> Result<lattice_specs::bbs_api::LeaseCellSubnetResponse> {
        let r = self.writes.lease_cell_subnet(cell_id, overlay_address);
        let lease = r.await.map_err(refused)?;
        Ok(lattice_bbs::grpc::lease_response(
            &self.writes.network,
            lease,
        ))
    }
    async fn claim_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        generation: i64,
    ) -> Result<ActualLrp> {
        let r = self
            .db
            .claim_actual_lrp(process_guid, index, instance_key, generation);
        r.await.map_err(refused)
    }
    async fn start_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<ActualLrp> {
        let r = self
            .db
            .start_actual_lrp(process_guid, index, instance_key, net_info.clone());
        r.await.map_err(refused)
    }
    async fn crash_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<ActualLrp> {
        let r = self
            .db
            .crash_actual_lrp(process_guid, index, instance_key, reason);
        r.await.map_err(refused)
    }
    async fn remove_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: Option<&ActualLrpInstanceKey>,
    ) -> Result<()> {
        let r = self
            .writes
            .remove_actual_lrp(process_guid, index, instance_key);
        r.await.map_err(refused)
    }
    async fn evacuate_claimed_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<bool> {
        let r = self.db.evacuate_claimed(process_guid, index, instance_key);
        r.await.map(|k| k.0).map_err(refused)
    }
    async fn evacuate_running_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<bool> {
        let r = self
            .db
            .evacuate_running(process_guid, index, instance_key, net_info.clone());
        r.await.map(|k| k.0).map_err(refused)
    }
    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        if cell_id.is_empty() {
            return Err(invalid("cell_id", "is required"));
        }
        self.writes
            .start_task(task_guid, cell_id)
            .await
            .map_err(refused)
    }
    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<()> {
        let r = self
            .writes
            .complete_task(task_guid, cell_id, failed, failure_reason, result);
        r.await.map(|_| ()).map_err(refused)
    }
    async fn set_volume_state(&self, r: &VolumeReport) -> Result<()> {
        let sizes = (r.size_bytes, r.used_bytes);
        let w = self
            .writes
            .set_volume_state(&r.name, &r.cell_id, r.state, sizes, &r.reason);
        w.await.map_err(refused)
    }
    async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        self.writes
            .volume_removed(name, cell_id)
            .await
            .map_err(refused)
    }
    async fn volume_fenced(&self, name: &str, cell_id: &str, copy: &str) -> Result<()> {
        self.writes
            .volume_fenced(name, cell_id, copy)
            .await
            .map_err(refused)
    }
}
