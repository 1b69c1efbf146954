//! The internal gRPC API (proto/bbs.proto) over `db`. Errors become gRPC
//! statuses whose `lattice-error` metadata carries the error name.
//!
//! This module holds the service (one handler per call, each a thin wrapper
//! over `db` that first asks `authz` whether the caller's identity may make
//! it); `status` maps errors to statuses, `request` reads required fields and
//! the fencing token, `events` streams the change feed, `leases` grants, renews
//! and revokes leases, `subnets` answers cells' subnet leases, `evacuation`
//! takes evacuating cells' instances back, `join` lets machines join with a
//! token and renew their certificates.

mod authz;
mod evacuation;
mod events;
mod join;
mod leases;
mod request;
mod rollout;
mod status;
mod storage;
mod subnets;

use lattice_specs::authz::Call;
use lattice_specs::bbs_api::bbs_server::{Bbs, BbsServer};
use lattice_specs::bbs_api::*;
use lattice_specs::errors::ErrorName;
use tonic::{Request, Response, Status};

use crate::db::{Db, DbError};
use crate::events::EventHub;
use crate::metrics::observe;
use authz::{allow, caller_of, may};
use events::EventStream;
pub use join::{JoinAuthority, DEFAULT_ISSUED_VALIDITY};
pub use lattice_specs::errors::{ERROR_NAME_KEY, FENCE_KEY};
use request::{fence_of, ik_of, key_of, missing};
pub use status::{error_name, status_of};
pub use subnets::lease_response;

pub struct BbsGrpc {
    db: Db,
    hub: EventHub,
    /// The public API's state: backups need its blob store and URL.
    api: Option<crate::api::ApiState>,
    /// The CA joiners' and renewers' certificates come from (none: no joining).
    join: Option<JoinAuthority>,
}

impl BbsGrpc {
    pub fn new(db: Db, hub: EventHub) -> BbsGrpc {
        BbsGrpc {
            db,
            hub,
            api: None,
            join: None,
        }
    }

    /// Serves backup calls too, with the public API's blob store and URL.
    pub fn with_api(mut self, api: crate::api::ApiState) -> BbsGrpc {
        self.api = Some(api);
        self
    }

    /// Lets machines join (and renew) with certificates from `join`'s CA.
    pub fn with_join(mut self, join: JoinAuthority) -> BbsGrpc {
        self.join = Some(join);
        self
    }

    fn api(&self) -> Result<&crate::api::ApiState, DbError> {
        self.api.as_ref().ok_or_else(|| DbError::Conflict {
            name: ErrorName::BlobStoreUnavailable,
            message: "this BBS keeps no blobs: start it with --blob-dir DIR".into(),
        })
    }

    /// The db view for a request: fenced when the caller sent a fencing token.
    fn db_for<T>(&self, r: &Request<T>) -> Result<Db, DbError> {
        Ok(match fence_of(r.metadata())? {
            Some((name, rev)) => self.db.fenced(&name, rev),
            None => self.db.clone(),
        })
    }

    pub fn into_server(self) -> BbsServer<BbsGrpc> {
        BbsServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

async fn call<T>(
    name: &str,
    f: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<Response<T>, Status> {
    match observe("grpc", name, f).await {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            tracing::debug!(call = name, error = %e, "grpc request failed");
            Err(status_of(&e))
        }
    }
}

#[tonic::async_trait]
impl Bbs for BbsGrpc {
    async fn ping(&self, r: Request<Empty>) -> Result<Response<Empty>, Status> {
        call("Ping", async { may(&r, Call::Ping).map(|_| Empty {}) }).await
    }

    async fn desire_lrp(&self, r: Request<DesireLrpRequest>) -> Result<Response<Empty>, Status> {
        call("DesireLRP", async {
            may(&r, Call::DesireLrp)?;
            let db = self.db_for(&r)?;
            let d = r
                .into_inner()
                .desired_lrp
                .ok_or_else(|| missing("desired_lrp"))?;
            db.desire_lrp(d).await.map(|_| Empty {})
        })
        .await
    }

    async fn update_desired_lrp(
        &self,
        r: Request<UpdateDesiredLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("UpdateDesiredLRP", async {
            may(&r, Call::UpdateDesiredLrp)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            db.update_desired_lrp(&r.process_guid, r.update.unwrap_or_default())
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn remove_desired_lrp(
        &self,
        r: Request<ProcessGuidRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RemoveDesiredLRP", async {
            may(&r, Call::RemoveDesiredLrp)?;
            let db = self.db_for(&r)?;
            db.remove_desired_lrp(&r.into_inner().process_guid)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn desired_lr_ps(
        &self,
        r: Request<DesiredLrPsRequest>,
    ) -> Result<Response<DesiredLrPsResponse>, Status> {
        call("DesiredLRPs", async {
            may(&r, Call::DesiredLrps)?;
            let db = self.db_for(&r)?;
            Ok(DesiredLrPsResponse {
                desired_lrps: db.desired_lrps(&r.into_inner().domain).await?,
            })
        })
        .await
    }

    async fn desired_lrp_by_process_guid(
        &self,
        r: Request<ProcessGuidRequest>,
    ) -> Result<Response<DesiredLrpResponse>, Status> {
        call("DesiredLRPByProcessGuid", async {
            may(&r, Call::DesiredLrpByProcessGuid)?;
            let db = self.db_for(&r)?;
            Ok(DesiredLrpResponse {
                desired_lrp: Some(db.desired_lrp(&r.into_inner().process_guid).await?),
            })
        })
        .await
    }

    async fn actual_lr_ps(
        &self,
        r: Request<ActualLrPsRequest>,
    ) -> Result<Response<ActualLrPsResponse>, Status> {
        call("ActualLRPs", async {
            may(&r, Call::ActualLrps)?;
            let r = r.into_inner();
            Ok(ActualLrPsResponse {
                actual_lrps: self
                    .db
                    .actual_lrps(&r.domain, &r.cell_id, &r.process_guid, r.index)
                    .await?,
            })
        })
        .await
    }

    async fn claim_actual_lrp(
        &self,
        r: Request<ClaimActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("ClaimActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::ClaimActualLrp, Some(&ik.cell_id))?;
            let l = self
                .db
                .claim_actual_lrp(&guid, index, &ik, r.generation)
                .await?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(l),
            })
        })
        .await
    }

    async fn start_actual_lrp(
        &self,
        r: Request<StartActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("StartActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::StartActualLrp, Some(&ik.cell_id))?;
            let l = self
                .db
                .start_actual_lrp(&guid, index, &ik, r.net_info.unwrap_or_default())
                .await?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(l),
            })
        })
        .await
    }

    async fn crash_actual_lrp(
        &self,
        r: Request<CrashActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("CrashActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::CrashActualLrp, Some(&ik.cell_id))?;
            let l = self
                .db
                .crash_actual_lrp(&guid, index, &ik, &r.error_message)
                .await?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(l),
            })
        })
        .await
    }

    async fn fail_actual_lrp(
        &self,
        r: Request<FailActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("FailActualLRP", async {
            may(&r, Call::FailActualLrp)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(db.fail_actual_lrp(&guid, index, &r.error_message).await?),
            })
        })
        .await
    }

    async fn remove_actual_lrp(
        &self,
        r: Request<RemoveActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RemoveActualLRP", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let cell = r.instance_key.as_ref().map(|k| k.cell_id.as_str());
            allow(&who, Call::RemoveActualLrp, cell)?;
            db.remove_actual_lrp(&guid, index, r.instance_key.as_ref())
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn retire_actual_lrp(
        &self,
        r: Request<RetireActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RetireActualLRP", async {
            may(&r, Call::RetireActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(r.into_inner().key)?;
            db.retire_actual_lrp(&guid, index).await.map(|_| Empty {})
        })
        .await
    }

    async fn create_actual_lrp(&self, r: Request<ActualLrpRef>) -> Result<Response<Empty>, Status> {
        call("CreateActualLRP", async {
            may(&r, Call::CreateActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(Some(r.into_inner()))?;
            db.create_actual_lrp(&guid, index).await.map(|_| Empty {})
        })
        .await
    }

    async fn unclaim_actual_lrp(
        &self,
        r: Request<ActualLrpRef>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("UnclaimActualLRP", async {
            may(&r, Call::UnclaimActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(Some(r.into_inner()))?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(db.unclaim_actual_lrp(&guid, index).await?),
            })
        })
        .await
    }

    async fn suspect_actual_lrp(
        &self,
        r: Request<ActualLrpRef>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("SuspectActualLRP", async {
            may(&r, Call::SuspectActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(Some(r.into_inner()))?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(db.suspect_actual_lrp(&guid, index).await?),
            })
        })
        .await
    }

    async fn remove_suspect_actual_lrp(
        &self,
        r: Request<ActualLrpRef>,
    ) -> Result<Response<Empty>, Status> {
        call("RemoveSuspectActualLRP", async {
            may(&r, Call::RemoveSuspectActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(Some(r.into_inner()))?;
            db.remove_suspect_actual_lrp(&guid, index)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn evacuate_claimed_actual_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        self.evacuate_claimed_lrp(r).await
    }

    async fn evacuate_running_actual_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        self.evacuate_running_lrp(r).await
    }

    async fn evacuate_stopped_actual_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        self.evacuate_stopped_lrp(r).await
    }

    async fn evacuate_crashed_actual_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        self.evacuate_crashed_lrp(r).await
    }

    async fn remove_evacuating_actual_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.remove_evacuating_lrp(r).await
    }

    async fn replace_actual_lrp(
        &self,
        r: Request<ReplaceActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        self.replace_lrp(r).await
    }

    async fn drain_replaced_actual_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.drain_replaced_lrp(r).await
    }

    async fn remove_replaced_actual_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.remove_replaced_lrp(r).await
    }

    async fn restore_replaced_actual_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.restore_replaced_lrp(r).await
    }

    async fn update_deployment(
        &self,
        r: Request<UpdateDeploymentRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.update_lrp_deployment(r).await
    }

    async fn rollback_desired_lrp(
        &self,
        r: Request<RollbackDesiredLrpRequest>,
    ) -> Result<Response<DesiredLrpResponse>, Status> {
        self.rollback_lrp(r).await
    }

    async fn desired_lrp_generations(
        &self,
        r: Request<ProcessGuidRequest>,
    ) -> Result<Response<DesiredLrpGenerationsResponse>, Status> {
        self.lrp_generations(r).await
    }

    async fn desire_task(&self, r: Request<DesireTaskRequest>) -> Result<Response<Empty>, Status> {
        call("DesireTask", async {
            may(&r, Call::DesireTask)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let def = r.definition.ok_or_else(|| missing("definition"))?;
            db.desire_task(&r.task_guid, &r.domain, def)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn tasks(&self, r: Request<TasksRequest>) -> Result<Response<TasksResponse>, Status> {
        call("Tasks", async {
            may(&r, Call::Tasks)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            Ok(TasksResponse {
                tasks: db.tasks(&r.domain, &r.cell_id).await?,
            })
        })
        .await
    }

    async fn task_by_guid(
        &self,
        r: Request<TaskGuidRequest>,
    ) -> Result<Response<TaskResponse>, Status> {
        call("TaskByGuid", async {
            may(&r, Call::TaskByGuid)?;
            let db = self.db_for(&r)?;
            Ok(TaskResponse {
                task: Some(db.task(&r.into_inner().task_guid).await?),
            })
        })
        .await
    }

    async fn start_task(
        &self,
        r: Request<StartTaskRequest>,
    ) -> Result<Response<StartTaskResponse>, Status> {
        call("StartTask", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::StartTask, Some(&r.cell_id))?;
            if r.cell_id.is_empty() {
                return Err(missing("cell_id"));
            }
            Ok(StartTaskResponse {
                should_start: db.start_task(&r.task_guid, &r.cell_id).await?,
            })
        })
        .await
    }

    async fn cancel_task(&self, r: Request<TaskGuidRequest>) -> Result<Response<Empty>, Status> {
        call("CancelTask", async {
            may(&r, Call::CancelTask)?;
            let db = self.db_for(&r)?;
            db.cancel_task(&r.into_inner().task_guid)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn fail_task(&self, r: Request<FailTaskRequest>) -> Result<Response<Empty>, Status> {
        call("FailTask", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            self.may_fail_task(&who, &r.task_guid).await?;
            db.fail_task(&r.task_guid, &r.failure_reason)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn reject_task(&self, r: Request<RejectTaskRequest>) -> Result<Response<Empty>, Status> {
        call("RejectTask", async {
            may(&r, Call::RejectTask)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            db.reject_task(&r.task_guid, &r.rejection_reason)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn complete_task(
        &self,
        r: Request<CompleteTaskRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("CompleteTask", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::CompleteTask, Some(&r.cell_id))?;
            db.complete_task(
                &r.task_guid,
                &r.cell_id,
                r.failed,
                &r.failure_reason,
                &r.result,
            )
            .await
            .map(|_| Empty {})
        })
        .await
    }

    async fn resolving_task(&self, r: Request<TaskGuidRequest>) -> Result<Response<Empty>, Status> {
        call("ResolvingTask", async {
            may(&r, Call::ResolvingTask)?;
            let db = self.db_for(&r)?;
            db.resolving_task(&r.into_inner().task_guid)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn delete_task(&self, r: Request<TaskGuidRequest>) -> Result<Response<Empty>, Status> {
        call("DeleteTask", async {
            may(&r, Call::DeleteTask)?;
            let db = self.db_for(&r)?;
            db.delete_task(&r.into_inner().task_guid)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn cells(&self, r: Request<Empty>) -> Result<Response<CellsResponse>, Status> {
        call("Cells", async {
            may(&r, Call::Cells)?;
            Ok(CellsResponse {
                cells: self.db.cells().await?,
            })
        })
        .await
    }

    async fn volumes(
        &self,
        r: Request<VolumesRequest>,
    ) -> Result<Response<VolumesResponse>, Status> {
        self.volumes_rpc(r).await
    }

    async fn set_volume_state(
        &self,
        r: Request<VolumeStateRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.set_volume_state_rpc(r).await
    }

    async fn volume_removed(
        &self,
        r: Request<VolumeRemovedRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.volume_removed_rpc(r).await
    }

    async fn place_volume(
        &self,
        r: Request<PlaceVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.place_volume_rpc(r).await
    }

    async fn fail_over_volume(
        &self,
        r: Request<FailOverVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.fail_over_volume_rpc(r).await
    }

    async fn tend_standby(
        &self,
        r: Request<TendStandbyRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.tend_standby_rpc(r).await
    }

    async fn volume_fenced(
        &self,
        r: Request<VolumeFencedRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.volume_fenced_rpc(r).await
    }

    async fn schedules(&self, r: Request<Empty>) -> Result<Response<SchedulesResponse>, Status> {
        self.schedules_rpc(r).await
    }

    async fn claim_schedule_slot(
        &self,
        r: Request<ClaimScheduleSlotRequest>,
    ) -> Result<Response<ClaimScheduleSlotResponse>, Status> {
        self.claim_schedule_slot_rpc(r).await
    }

    async fn backups(&self, r: Request<Empty>) -> Result<Response<BackupsResponse>, Status> {
        self.backups_rpc(r).await
    }

    async fn delete_backup(&self, r: Request<BackupIdRequest>) -> Result<Response<Empty>, Status> {
        self.delete_backup_rpc(r).await
    }

    async fn grant_lease(
        &self,
        r: Request<GrantLeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        self.grant(r).await
    }

    async fn keep_alive_lease(
        &self,
        r: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        self.keep_alive(r).await
    }

    async fn revoke_lease(&self, r: Request<LeaseRequest>) -> Result<Response<Empty>, Status> {
        self.revoke(r).await
    }

    async fn set_cell_presence(
        &self,
        r: Request<SetCellPresenceRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("SetCellPresence", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            let cell = r.cell.ok_or_else(|| missing("cell"))?;
            allow(&who, Call::SetCellPresence, Some(&cell.cell_id))?;
            db.set_cell_presence(&cell, r.lease_id)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    async fn lease_cell_subnet(
        &self,
        r: Request<LeaseCellSubnetRequest>,
    ) -> Result<Response<LeaseCellSubnetResponse>, Status> {
        self.lease_subnet(r).await
    }

    async fn upsert_domain(
        &self,
        r: Request<UpsertDomainRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("UpsertDomain", async {
            may(&r, Call::UpsertDomain)?;
            let db = self.db_for(&r)?;
            let d = r.into_inner().domain.ok_or_else(|| missing("domain"))?;
            db.upsert_domain(&d).await.map(|_| Empty {})
        })
        .await
    }

    async fn domains(&self, r: Request<Empty>) -> Result<Response<DomainsResponse>, Status> {
        call("Domains", async {
            may(&r, Call::Domains)?;
            Ok(DomainsResponse {
                domains: self.db.domains().await?,
            })
        })
        .await
    }

    async fn acquire_lock(
        &self,
        r: Request<AcquireLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        call("AcquireLock", async {
            may(&r, Call::AcquireLock)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            if r.key.is_empty() || r.owner.is_empty() || r.lease_id == 0 {
                return Err(missing("key, owner and lease_id"));
            }
            let s = db.acquire_lock(&r.key, &r.owner, r.lease_id).await?;
            Ok(LockResponse {
                acquired: s.acquired,
                owner: s.owner,
                revision: s.revision,
            })
        })
        .await
    }

    async fn release_lock(
        &self,
        r: Request<ReleaseLockRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("ReleaseLock", async {
            may(&r, Call::ReleaseLock)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            db.release_lock(&r.key, r.lease_id).await.map(|_| Empty {})
        })
        .await
    }

    async fn join_ca(&self, r: Request<Empty>) -> Result<Response<JoinCaResponse>, Status> {
        self.join_ca_pem(r).await
    }

    async fn join(&self, r: Request<JoinRequest>) -> Result<Response<CertificateResponse>, Status> {
        self.join_cluster(r).await
    }

    async fn renew_certificate(
        &self,
        r: Request<RenewCertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        self.renew_identity(r).await
    }

    async fn create_join_token(
        &self,
        r: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        self.new_join_token(r).await
    }

    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        r: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        may(&r, Call::SubscribeEvents).map_err(|e| status_of(&e))?;
        Ok(Response::new(events::subscribe(&self.hub)))
    }
}
