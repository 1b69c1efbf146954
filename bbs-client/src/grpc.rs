//! [`GrpcBbs`]: every trait of `api` over the BBS's gRPC API, writing under a
//! fencing token once fenced; and [`bbs_client()`], the transport to the BBS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::*;
use lattice_specs::errors::FENCE_KEY;
use lattice_specs::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, Backup, CellPresence, Deployment,
    DesiredLrp, DesiredLrpGeneration, Domain, Schedule, Task, Volume,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Request;

use crate::api::*;
use crate::error::{BbsError, Result};

/// How long connecting to the BBS may take before a call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer accepted: a full snapshot of a big installation.
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// A client for the BBS's gRPC API at `addr` (`host:port` or a URL). It connects lazily
/// and reconnects by itself, so components may start before the BBS does.
pub fn bbs_client(addr: &str) -> std::result::Result<BbsClient<Channel>, tonic::transport::Error> {
    bbs_client_tls(addr, None)
}

/// [`bbs_client`] over mutual TLS with `tls` (our certificate, the BBS's expected
/// identity); None: plaintext (a BBS on loopback).
pub fn bbs_client_tls(
    addr: &str,
    tls: Option<&lattice_tls::client::ClientTls>,
) -> std::result::Result<BbsClient<Channel>, tonic::transport::Error> {
    let channel = lattice_tls::client::lazy_channel(addr, tls, |e| {
        e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true)
    })?;
    Ok(BbsClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// The BBS over gRPC; cheap to clone. Fenced, it sends its fencing token with
/// every call.
#[derive(Clone)]
pub struct GrpcBbs {
    client: BbsClient<Channel>,
    fence: Option<MetadataValue<Ascii>>,
}

fn key(process_guid: &str, index: i32) -> Option<ActualLrpRef> {
    Some(ActualLrpRef {
        process_guid: process_guid.to_string(),
        index,
    })
}

impl GrpcBbs {
    /// The BBS at `addr` (host:port or a URL); connects lazily and reconnects.
    pub fn connect_lazy(addr: &str) -> std::result::Result<GrpcBbs, tonic::transport::Error> {
        Ok(GrpcBbs::new(bbs_client(addr)?))
    }

    /// The BBS at `addr` over mutual TLS with `tls` (None: plaintext).
    pub fn connect_lazy_tls(
        addr: &str,
        tls: Option<&lattice_tls::client::ClientTls>,
    ) -> std::result::Result<GrpcBbs, tonic::transport::Error> {
        Ok(GrpcBbs::new(bbs_client_tls(addr, tls)?))
    }

    /// The BBS behind an existing generated client.
    pub fn new(client: BbsClient<Channel>) -> GrpcBbs {
        GrpcBbs {
            client,
            fence: None,
        }
    }

    /// The same client, writing under the fencing token `lock@revision`.
    pub fn fenced_by(&self, lock: &str, revision: i64) -> GrpcBbs {
        let token = format!("{lock}@{revision}")
            .parse()
            .expect("lock names are ASCII");
        GrpcBbs {
            client: self.client.clone(),
            fence: Some(token),
        }
    }

    /// Wrap a message as a request carrying the fence, if any.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(f) = &self.fence {
            r.metadata_mut().insert(FENCE_KEY, f.clone());
        }
        r
    }

    /// The generated client, for tests and benchmarks that drive the BBS
    /// directly (wrap their messages with [`req`](GrpcBbs::req)).
    pub fn client(&self) -> BbsClient<Channel> {
        self.client.clone()
    }
}

#[async_trait]
impl Leases for GrpcBbs {
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        let mut c = self.client();
        let r = c.grant_lease(self.req(GrantLeaseRequest { ttl_seconds }));
        Ok(r.await?.into_inner().lease_id)
    }
    async fn keep_alive_lease(&self, lease_id: i64) -> Result<i64> {
        let mut c = self.client();
        let r = c.keep_alive_lease(self.req(LeaseRequest { lease_id }));
        Ok(r.await?.into_inner().ttl_seconds)
    }
    async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        let mut c = self.client();
        let r = c.revoke_lease(self.req(LeaseRequest { lease_id }));
        r.await?;
        Ok(())
    }
}

#[async_trait]
impl Locks for GrpcBbs {
    async fn acquire_lock(&self, key: &str, owner: &str, lease_id: i64) -> Result<Lock> {
        let req = AcquireLockRequest {
            key: key.into(),
            owner: owner.into(),
            lease_id,
        };
        let mut c = self.client();
        let r = c.acquire_lock(self.req(req)).await?.into_inner();
        Ok(Lock {
            acquired: r.acquired,
            owner: r.owner,
            revision: r.revision,
        })
    }
    async fn release_lock(&self, key: &str, lease_id: i64) -> Result<()> {
        let req = ReleaseLockRequest {
            key: key.into(),
            lease_id,
        };
        self.client().release_lock(self.req(req)).await?;
        Ok(())
    }
}

#[async_trait]
impl Events for GrpcBbs {
    async fn subscribe_events(&self) -> Result<EventStream> {
        let mut c = self.client();
        let r = c.subscribe_events(self.req(SubscribeRequest {}));
        let stream = r.await?.into_inner();
        Ok(stream.map(|e| e.map_err(BbsError::from)).boxed())
    }
}

#[async_trait]
impl Reads for GrpcBbs {
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>> {
        let mut c = self.client();
        let r = c.desired_lr_ps(self.req(DesiredLrPsRequest::default()));
        Ok(r.await?.into_inner().desired_lrps)
    }
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        let req = ProcessGuidRequest {
            process_guid: process_guid.into(),
        };
        let mut c = self.client();
        let r = c.desired_lrp_by_process_guid(self.req(req));
        Ok(r.await?.into_inner().desired_lrp.unwrap_or_default())
    }
    async fn actual_lrps(&self, f: &ActualLrpFilter) -> Result<Vec<ActualLrp>> {
        let req = ActualLrPsRequest {
            domain: f.domain.clone(),
            cell_id: f.cell_id.clone(),
            process_guid: f.process_guid.clone(),
            index: f.index,
        };
        let mut c = self.client();
        let r = c.actual_lr_ps(self.req(req));
        Ok(r.await?.into_inner().actual_lrps)
    }
    async fn tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let req = TasksRequest {
            domain: f.domain.clone(),
            cell_id: f.cell_id.clone(),
        };
        Ok(self.client().tasks(self.req(req)).await?.into_inner().tasks)
    }
    async fn task(&self, task_guid: &str) -> Result<Task> {
        let req = TaskGuidRequest {
            task_guid: task_guid.into(),
        };
        let mut c = self.client();
        let r = c.task_by_guid(self.req(req));
        Ok(r.await?.into_inner().task.unwrap_or_default())
    }
    async fn cells(&self) -> Result<Vec<CellPresence>> {
        Ok(self
            .client()
            .cells(self.req(Empty {}))
            .await?
            .into_inner()
            .cells)
    }
    async fn domains(&self) -> Result<Vec<Domain>> {
        let mut c = self.client();
        let r = c.domains(self.req(Empty {}));
        Ok(r.await?.into_inner().domains)
    }
    async fn volumes(&self, cell_id: &str) -> Result<Vec<Volume>> {
        let req = VolumesRequest {
            cell_id: cell_id.into(),
        };
        Ok(self
            .client()
            .volumes(self.req(req))
            .await?
            .into_inner()
            .volumes)
    }
}

#[async_trait]
impl LrpWrites for GrpcBbs {
    async fn create_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(key(process_guid, index).unwrap_or_default());
        self.client().create_actual_lrp(req).await?;
        Ok(())
    }
    async fn unclaim_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(key(process_guid, index).unwrap_or_default());
        self.client().unclaim_actual_lrp(req).await?;
        Ok(())
    }
    async fn suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(key(process_guid, index).unwrap_or_default());
        self.client().suspect_actual_lrp(req).await?;
        Ok(())
    }
    async fn remove_suspect_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(key(process_guid, index).unwrap_or_default());
        self.client().remove_suspect_actual_lrp(req).await?;
        Ok(())
    }
    async fn retire_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = RetireActualLrpRequest {
            key: key(process_guid, index),
        };
        self.client().retire_actual_lrp(self.req(req)).await?;
        Ok(())
    }
    async fn fail_actual_lrp(&self, process_guid: &str, index: i32, reason: &str) -> Result<()> {
        let req = FailActualLrpRequest {
            key: key(process_guid, index),
            error_message: reason.into(),
        };
        self.client().fail_actual_lrp(self.req(req)).await?;
        Ok(())
    }
    async fn remove_evacuating_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<()> {
        let req = EvacuateRequest {
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
            ..Default::default()
        };
        self.client()
            .remove_evacuating_actual_lrp(self.req(req))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Rollouts for GrpcBbs {
    async fn replace_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<ActualLrp> {
        let req = ReplaceActualLrpRequest {
            key: key(process_guid, index),
            surge,
            target_generation,
        };
        let r = self.client().replace_actual_lrp(self.req(req)).await?;
        Ok(r.into_inner().actual_lrp.unwrap_or_default())
    }
    async fn drain_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(ReplacedActualLrpRequest {
            key: key(process_guid, index),
        });
        self.client().drain_replaced_actual_lrp(req).await?;
        Ok(())
    }
    async fn remove_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(ReplacedActualLrpRequest {
            key: key(process_guid, index),
        });
        self.client().remove_replaced_actual_lrp(req).await?;
        Ok(())
    }
    async fn restore_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let req = self.req(ReplacedActualLrpRequest {
            key: key(process_guid, index),
        });
        self.client().restore_replaced_actual_lrp(req).await?;
        Ok(())
    }
    async fn update_deployment(
        &self,
        process_guid: &str,
        expected: Deployment,
        new: Deployment,
    ) -> Result<()> {
        let req = UpdateDeploymentRequest {
            process_guid: process_guid.into(),
            expected: Some(expected),
            deployment: Some(new),
        };
        self.client().update_deployment(self.req(req)).await?;
        Ok(())
    }
    async fn rollback_desired_lrp(
        &self,
        process_guid: &str,
        generation: i64,
        failed: bool,
        reason: &str,
    ) -> Result<DesiredLrp> {
        let req = RollbackDesiredLrpRequest {
            process_guid: process_guid.into(),
            generation,
            failed,
            reason: reason.into(),
        };
        let r = self.client().rollback_desired_lrp(self.req(req)).await?;
        Ok(r.into_inner().desired_lrp.unwrap_or_default())
    }
    async fn desired_lrp_generations(
        &self,
        process_guid: &str,
    ) -> Result<Vec<DesiredLrpGeneration>> {
        let req = self.req(ProcessGuidRequest {
            process_guid: process_guid.into(),
        });
        let r = self.client().desired_lrp_generations(req).await?;
        Ok(r.into_inner().generations)
    }
}

#[async_trait]
impl TaskFailures for GrpcBbs {
    async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        let req = FailTaskRequest {
            task_guid: task_guid.into(),
            failure_reason: reason.into(),
        };
        self.client().fail_task(self.req(req)).await?;
        Ok(())
    }
}

#[async_trait]
impl TaskWrites for GrpcBbs {
    async fn reject_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        let req = RejectTaskRequest {
            task_guid: task_guid.into(),
            rejection_reason: reason.into(),
        };
        self.client().reject_task(self.req(req)).await?;
        Ok(())
    }
    async fn resolving_task(&self, task_guid: &str) -> Result<()> {
        let req = TaskGuidRequest {
            task_guid: task_guid.into(),
        };
        self.client().resolving_task(self.req(req)).await?;
        Ok(())
    }
    async fn delete_task(&self, task_guid: &str) -> Result<()> {
        let req = TaskGuidRequest {
            task_guid: task_guid.into(),
        };
        self.client().delete_task(self.req(req)).await?;
        Ok(())
    }
}

impl GrpcBbs {
    async fn claim(&self, req: ClaimScheduleSlotRequest) -> Result<ClaimedSlot> {
        let r = self.client().claim_schedule_slot(self.req(req)).await?;
        let r = r.into_inner();
        Ok(if !r.claimed {
            ClaimedSlot::Taken
        } else if !r.failure.is_empty() {
            ClaimedSlot::Failed(r.failure)
        } else if !r.run.is_empty() {
            ClaimedSlot::Run(r.run)
        } else {
            ClaimedSlot::Skipped
        })
    }
}

#[async_trait]
impl ScheduledRuns for GrpcBbs {
    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let mut c = self.client();
        let r = c.schedules(self.req(Empty {}));
        Ok(r.await?.into_inner().schedules)
    }
    async fn scheduled_runs(&self) -> Result<Vec<Task>> {
        let mut tasks = Reads::tasks(self, &TaskFilter::default()).await?;
        tasks.retain(|t| !t.schedule.is_empty());
        Ok(tasks)
    }
    async fn backups(&self) -> Result<Vec<Backup>> {
        Ok(self
            .client()
            .backups(self.req(Empty {}))
            .await?
            .into_inner()
            .backups)
    }
    async fn claim_schedule_slot(
        &self,
        name: &str,
        slot_at: i64,
        slot: &str,
        skip_reason: &str,
    ) -> Result<ClaimedSlot> {
        let req = ClaimScheduleSlotRequest {
            name: name.into(),
            slot_at,
            slot: slot.into(),
            skip_reason: skip_reason.into(),
            verify: false,
        };
        self.claim(req).await
    }
    async fn claim_verify_slot(&self, name: &str, slot_at: i64) -> Result<ClaimedSlot> {
        let req = ClaimScheduleSlotRequest {
            name: name.into(),
            slot_at,
            verify: true,
            ..Default::default()
        };
        self.claim(req).await
    }
    async fn backup_tasks(&self) -> Result<Vec<Task>> {
        let filter = TaskFilter {
            domain: lattice_specs::backup::DOMAIN.into(),
            ..Default::default()
        };
        Reads::tasks(self, &filter).await
    }
    async fn remove_run(&self, task_guid: &str) -> Result<()> {
        TaskWrites::resolving_task(self, task_guid).await?;
        TaskWrites::delete_task(self, task_guid).await
    }
    async fn delete_backup(&self, id: &str) -> Result<()> {
        let req = BackupIdRequest { id: id.into() };
        self.client().delete_backup(self.req(req)).await?;
        Ok(())
    }
}

#[async_trait]
impl VolumePlacement for GrpcBbs {
    async fn place_volume(&self, name: &str, cell_id: &str) -> Result<()> {
        let req = PlaceVolumeRequest {
            name: name.into(),
            cell_id: cell_id.into(),
        };
        self.client().place_volume(self.req(req)).await?;
        Ok(())
    }
    async fn fail_over_volume(&self, req: &FailOverVolumeRequest) -> Result<()> {
        self.client()
            .fail_over_volume(self.req(req.clone()))
            .await?;
        Ok(())
    }
    async fn tend_standby(&self, req: &TendStandbyRequest) -> Result<()> {
        self.client().tend_standby(self.req(req.clone())).await?;
        Ok(())
    }
}

impl BrainBbs for GrpcBbs {
    fn fenced(&self, lock: &str, revision: i64) -> Arc<dyn BrainBbs> {
        Arc::new(self.fenced_by(lock, revision))
    }
}

#[async_trait]
impl CellWrites for GrpcBbs {
    async fn set_cell_presence(&self, cell: &CellPresence, lease_id: i64) -> Result<()> {
        let req = SetCellPresenceRequest {
            cell: Some(cell.clone()),
            lease_id,
        };
        self.client().set_cell_presence(self.req(req)).await?;
        Ok(())
    }
    async fn lease_cell_subnet(
        &self,
        cell_id: &str,
        overlay_address: &str,
    ) -> Result<LeaseCellSubnetResponse> {
        let req = LeaseCellSubnetRequest {
            cell_id: cell_id.into(),
            overlay_address: overlay_address.into(),
        };
        Ok(self
            .client()
            .lease_cell_subnet(self.req(req))
            .await?
            .into_inner())
    }
    async fn claim_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        generation: i64,
    ) -> Result<ActualLrp> {
        let req = ClaimActualLrpRequest {
            generation,
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
        };
        let mut c = self.client();
        let r = c.claim_actual_lrp(self.req(req));
        Ok(r.await?.into_inner().actual_lrp.unwrap_or_default())
    }
    async fn start_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<ActualLrp> {
        let req = StartActualLrpRequest {
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
            net_info: Some(net_info.clone()),
        };
        let mut c = self.client();
        let r = c.start_actual_lrp(self.req(req));
        Ok(r.await?.into_inner().actual_lrp.unwrap_or_default())
    }
    async fn crash_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<ActualLrp> {
        let req = CrashActualLrpRequest {
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
            error_message: reason.into(),
        };
        let mut c = self.client();
        let r = c.crash_actual_lrp(self.req(req));
        Ok(r.await?.into_inner().actual_lrp.unwrap_or_default())
    }
    async fn remove_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: Option<&ActualLrpInstanceKey>,
    ) -> Result<()> {
        let req = RemoveActualLrpRequest {
            key: key(process_guid, index),
            instance_key: instance_key.cloned(),
        };
        self.client().remove_actual_lrp(self.req(req)).await?;
        Ok(())
    }
    async fn evacuate_claimed_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<bool> {
        let req = EvacuateRequest {
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
            ..Default::default()
        };
        let mut c = self.client();
        let r = c.evacuate_claimed_actual_lrp(self.req(req));
        Ok(r.await?.into_inner().keep_container)
    }
    async fn evacuate_running_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<bool> {
        let req = EvacuateRequest {
            key: key(process_guid, index),
            instance_key: Some(instance_key.clone()),
            net_info: Some(net_info.clone()),
            error_message: String::new(),
        };
        let mut c = self.client();
        let r = c.evacuate_running_actual_lrp(self.req(req));
        Ok(r.await?.into_inner().keep_container)
    }
    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        let req = StartTaskRequest {
            task_guid: task_guid.into(),
            cell_id: cell_id.into(),
        };
        let mut c = self.client();
        let r = c.start_task(self.req(req));
        Ok(r.await?.into_inner().should_start)
    }
    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<()> {
        let req = CompleteTaskRequest {
            task_guid: task_guid.into(),
            cell_id: cell_id.into(),
            failed,
            failure_reason: failure_reason.into(),
            result: result.into(),
        };
        self.client().complete_task(self.req(req)).await?;
        Ok(())
    }
    async fn set_volume_state(&self, r: &VolumeReport) -> Result<()> {
        let req = VolumeStateRequest {
            name: r.name.clone(),
            cell_id: r.cell_id.clone(),
            state: r.state as i32,
            used_bytes: r.used_bytes,
            reason: r.reason.clone(),
            size_bytes: r.size_bytes,
        };
        self.client().set_volume_state(self.req(req)).await?;
        Ok(())
    }
    async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        let req = VolumeRemovedRequest {
            name: name.into(),
            cell_id: cell_id.into(),
        };
        self.client().volume_removed(self.req(req)).await?;
        Ok(())
    }
    async fn volume_fenced(&self, name: &str, cell_id: &str, copy: &str) -> Result<()> {
        let req = VolumeFencedRequest {
            name: name.into(),
            cell_id: cell_id.into(),
            copy: copy.into(),
        };
        self.client().volume_fenced(self.req(req)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fenced_client_sends_its_token_and_an_unfenced_one_none() {
        let bbs = GrpcBbs::connect_lazy("127.0.0.1:1").unwrap();
        assert!(bbs.req(Empty {}).metadata().get(FENCE_KEY).is_none());
        let fenced = bbs.fenced_by("brain", 42);
        let r = fenced.req(Empty {});
        assert_eq!(r.metadata().get(FENCE_KEY).unwrap(), "brain@42");
    }
}
