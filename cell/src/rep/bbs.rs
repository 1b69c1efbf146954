//! Every call the rep makes to the BBS, in one place: [`RepBbs`] over the gRPC client.
//! The runners call these methods and nothing else of the BBS, and the pure decisions
//! none, so the concrete client can give way to a trait (the `CellBbs` of issue 20)
//! by changing this file and the type of [`super::Rep`]'s field. The methods are
//! shaped like that trait's where the request the rep sends allows it.

use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::{self as api};
use lattice_specs::events::Event;
use lattice_specs::models;
use tonic::transport::Channel;

/// A BBS call's answer, or why it failed.
pub(super) type Result<T> = std::result::Result<T, tonic::Status>;

/// The rep's BBS: cheap to clone, one call per method.
#[derive(Clone)]
pub(super) struct RepBbs(BbsClient<Channel>);

impl RepBbs {
    pub fn new(client: BbsClient<Channel>) -> RepBbs {
        RepBbs(client)
    }

    fn client(&self) -> BbsClient<Channel> {
        self.0.clone()
    }

    // ---- leases and presence ---------------------------------------------------------

    /// A new lease of `ttl_seconds`: its id.
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        let r = self
            .client()
            .grant_lease(api::GrantLeaseRequest { ttl_seconds })
            .await?;
        Ok(r.into_inner().lease_id)
    }

    /// Renews a lease: its TTL in seconds (0 once it is gone).
    pub async fn keep_alive_lease(&self, lease_id: i64) -> Result<i64> {
        let r = self
            .client()
            .keep_alive_lease(api::LeaseRequest { lease_id })
            .await?;
        Ok(r.into_inner().ttl_seconds)
    }

    pub async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        self.client()
            .revoke_lease(api::LeaseRequest { lease_id })
            .await?;
        Ok(())
    }

    pub async fn set_cell_presence(&self, cell: models::CellPresence, lease_id: i64) -> Result<()> {
        self.client()
            .set_cell_presence(api::SetCellPresenceRequest {
                cell: Some(cell),
                lease_id,
            })
            .await?;
        Ok(())
    }

    // ---- reads -------------------------------------------------------------------------

    /// The BBS's events from now on.
    pub async fn subscribe_events(&self) -> Result<tonic::Streaming<Event>> {
        let r = self
            .client()
            .subscribe_events(api::SubscribeRequest {})
            .await?;
        Ok(r.into_inner())
    }

    /// The stored DesiredLRP `process_guid`, if there is one.
    pub async fn desired_lrp(&self, process_guid: &str) -> Result<Option<models::DesiredLrp>> {
        let r = self
            .client()
            .desired_lrp_by_process_guid(api::ProcessGuidRequest {
                process_guid: process_guid.into(),
            })
            .await?;
        Ok(r.into_inner().desired_lrp)
    }

    /// The stored Task `task_guid`, if there is one.
    pub async fn task(&self, task_guid: &str) -> Result<Option<models::Task>> {
        let r = self
            .client()
            .task_by_guid(api::TaskGuidRequest {
                task_guid: task_guid.into(),
            })
            .await?;
        Ok(r.into_inner().task)
    }

    /// The instance records on `cell_id` (empty: any cell) of `process_guid` (empty:
    /// any) at `index` (none: any).
    pub async fn actual_lrps(
        &self,
        cell_id: &str,
        process_guid: &str,
        index: Option<i32>,
    ) -> Result<Vec<models::ActualLrp>> {
        let r = self
            .client()
            .actual_lr_ps(api::ActualLrPsRequest {
                cell_id: cell_id.into(),
                process_guid: process_guid.into(),
                index,
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().actual_lrps)
    }

    /// The Tasks on `cell_id`.
    pub async fn tasks(&self, cell_id: &str) -> Result<Vec<models::Task>> {
        let r = self
            .client()
            .tasks(api::TasksRequest {
                cell_id: cell_id.into(),
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().tasks)
    }

    /// The volumes of `cell_id`.
    pub async fn volumes(&self, cell_id: &str) -> Result<Vec<models::Volume>> {
        let r = self
            .client()
            .volumes(api::VolumesRequest {
                cell_id: cell_id.into(),
            })
            .await?;
        Ok(r.into_inner().volumes)
    }

    // ---- instances ---------------------------------------------------------------------

    pub async fn claim_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
    ) -> Result<()> {
        self.client()
            .claim_actual_lrp(api::ClaimActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(instance_key.clone()),
            })
            .await?;
        Ok(())
    }

    pub async fn start_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        net_info: &models::ActualLrpNetInfo,
    ) -> Result<()> {
        self.client()
            .start_actual_lrp(api::StartActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(instance_key.clone()),
                net_info: Some(net_info.clone()),
            })
            .await?;
        Ok(())
    }

    pub async fn crash_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<()> {
        self.client()
            .crash_actual_lrp(api::CrashActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(instance_key.clone()),
                error_message: reason.into(),
            })
            .await?;
        Ok(())
    }

    /// Removes an instance's record, if it is still this one.
    pub async fn remove_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
    ) -> Result<()> {
        self.client()
            .remove_actual_lrp(api::RemoveActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(instance_key.clone()),
            })
            .await?;
        Ok(())
    }

    /// Evacuates a running instance: whether to keep its container.
    pub async fn evacuate_running_actual_lrp(&self, req: api::EvacuateRequest) -> Result<bool> {
        let r = self.client().evacuate_running_actual_lrp(req).await?;
        Ok(r.into_inner().keep_container)
    }

    /// Evacuates an instance not yet running: whether to keep its container.
    pub async fn evacuate_claimed_actual_lrp(&self, req: api::EvacuateRequest) -> Result<bool> {
        let r = self.client().evacuate_claimed_actual_lrp(req).await?;
        Ok(r.into_inner().keep_container)
    }

    // ---- tasks -------------------------------------------------------------------------

    /// Starts a Task on `cell_id`: whether the cell should run it.
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        let r = self
            .client()
            .start_task(api::StartTaskRequest {
                task_guid: task_guid.into(),
                cell_id: cell_id.into(),
            })
            .await?;
        Ok(r.into_inner().should_start)
    }

    pub async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<()> {
        self.client()
            .complete_task(api::CompleteTaskRequest {
                task_guid: task_guid.into(),
                cell_id: cell_id.into(),
                failed,
                failure_reason: failure_reason.into(),
                result: result.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        self.client()
            .fail_task(api::FailTaskRequest {
                task_guid: task_guid.into(),
                failure_reason: reason.into(),
            })
            .await?;
        Ok(())
    }

    // ---- volumes -----------------------------------------------------------------------

    pub async fn set_volume_state(&self, report: api::VolumeStateRequest) -> Result<()> {
        self.client().set_volume_state(report).await?;
        Ok(())
    }

    pub async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        self.client()
            .volume_removed(api::VolumeRemovedRequest {
                name: name.into(),
                cell_id: cell_id.into(),
            })
            .await?;
        Ok(())
    }
}
