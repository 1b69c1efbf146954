//! Every call the rep makes to the BBS, in one place: [`RepBbs`] over the
//! [`CellBbs`] trait (the gRPC client in a cell, `FakeBbs` in the rep's unit tests).
//! The runners call these methods and nothing else of the BBS, and the pure decisions
//! none. The methods keep the shapes the runners want: instance keys as the rep
//! builds them, a record the BBS does not have as `None`.

use std::sync::Arc;

use lattice_bbs_client::{ActualLrpFilter, BbsError, CellBbs, EventStream, TaskFilter};
use lattice_specs::bbs_api as api;
use lattice_specs::models;

pub(super) use lattice_bbs_client::VolumeReport;

/// A BBS call's answer, or why it failed.
pub(super) type Result<T> = std::result::Result<T, BbsError>;

/// The rep's BBS: cheap to clone, one call per method.
#[derive(Clone)]
pub(super) struct RepBbs(Arc<dyn CellBbs>);

/// A record the BBS does not have (a `NotFound` refusal) as `None`.
fn found<T>(answer: Result<T>) -> Result<Option<T>> {
    match answer {
        Ok(record) => Ok(Some(record)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl RepBbs {
    pub fn new(bbs: Arc<dyn CellBbs>) -> RepBbs {
        RepBbs(bbs)
    }

    // ---- leases and presence ---------------------------------------------------------

    /// A new lease of `ttl_seconds`: its id.
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        self.0.grant_lease(ttl_seconds).await
    }

    /// Renews a lease: its TTL in seconds (0 once it is gone).
    pub async fn keep_alive_lease(&self, lease_id: i64) -> Result<i64> {
        self.0.keep_alive_lease(lease_id).await
    }

    pub async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        self.0.revoke_lease(lease_id).await
    }

    pub async fn set_cell_presence(&self, cell: models::CellPresence, lease_id: i64) -> Result<()> {
        self.0.set_cell_presence(&cell, lease_id).await
    }

    // ---- reads -------------------------------------------------------------------------

    /// The BBS's events from now on.
    pub async fn subscribe_events(&self) -> Result<EventStream> {
        self.0.subscribe_events().await
    }

    /// The stored DesiredLRP `process_guid`, if there is one.
    pub async fn desired_lrp(&self, process_guid: &str) -> Result<Option<models::DesiredLrp>> {
        found(self.0.desired_lrp(process_guid).await)
    }

    /// The stored Task `task_guid`, if there is one.
    pub async fn task(&self, task_guid: &str) -> Result<Option<models::Task>> {
        found(self.0.task(task_guid).await)
    }

    /// The instance records on `cell_id` (empty: any cell) of `process_guid` (empty:
    /// any) at `index` (none: any).
    pub async fn actual_lrps(
        &self,
        cell_id: &str,
        process_guid: &str,
        index: Option<i32>,
    ) -> Result<Vec<models::ActualLrp>> {
        let filter = ActualLrpFilter {
            cell_id: cell_id.into(),
            process_guid: process_guid.into(),
            index,
            ..Default::default()
        };
        self.0.actual_lrps(&filter).await
    }

    /// The Tasks on `cell_id`.
    pub async fn tasks(&self, cell_id: &str) -> Result<Vec<models::Task>> {
        let filter = TaskFilter {
            cell_id: cell_id.into(),
            ..Default::default()
        };
        self.0.tasks(&filter).await
    }

    /// The volumes of `cell_id` (empty: every volume).
    pub async fn volumes(&self, cell_id: &str) -> Result<Vec<models::Volume>> {
        self.0.volumes(cell_id).await
    }

    // ---- instances ---------------------------------------------------------------------

    /// Claims an instance to run `generation` of its app's definition.
    pub async fn claim_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        generation: i64,
    ) -> Result<()> {
        let r = self
            .0
            .claim_actual_lrp(&key.process_guid, key.index, instance_key, generation);
        r.await.map(|_| ())
    }

    pub async fn start_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        net_info: &models::ActualLrpNetInfo,
    ) -> Result<()> {
        let r = self
            .0
            .start_actual_lrp(&key.process_guid, key.index, instance_key, net_info);
        r.await.map(|_| ())
    }

    pub async fn crash_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<()> {
        let r = self
            .0
            .crash_actual_lrp(&key.process_guid, key.index, instance_key, reason);
        r.await.map(|_| ())
    }

    /// Removes an instance's record, if it is still this one.
    pub async fn remove_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
    ) -> Result<()> {
        let r = self
            .0
            .remove_actual_lrp(&key.process_guid, key.index, Some(instance_key));
        r.await
    }

    /// Evacuates a running instance, reachable at `net_info`: whether to keep its
    /// container.
    pub async fn evacuate_running_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
        net_info: &models::ActualLrpNetInfo,
    ) -> Result<bool> {
        let r = self.0.evacuate_running_actual_lrp(
            &key.process_guid,
            key.index,
            instance_key,
            net_info,
        );
        r.await
    }

    /// Evacuates an instance not yet running: whether to keep its container.
    pub async fn evacuate_claimed_actual_lrp(
        &self,
        key: &api::ActualLrpRef,
        instance_key: &models::ActualLrpInstanceKey,
    ) -> Result<bool> {
        let r = self
            .0
            .evacuate_claimed_actual_lrp(&key.process_guid, key.index, instance_key);
        r.await
    }

    // ---- tasks -------------------------------------------------------------------------

    /// Starts a Task on `cell_id`: whether the cell should run it.
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        self.0.start_task(task_guid, cell_id).await
    }

    pub async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<()> {
        let r = self
            .0
            .complete_task(task_guid, cell_id, failed, failure_reason, result);
        r.await
    }

    pub async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        self.0.fail_task(task_guid, reason).await
    }

    // ---- volumes -----------------------------------------------------------------------

    pub async fn set_volume_state(&self, report: &VolumeReport) -> Result<()> {
        self.0.set_volume_state(report).await
    }

    /// The cell fenced its copy of volume `name` off, keeping it at `copy`.
    pub async fn volume_fenced(&self, name: &str, cell_id: &str, copy: &str) -> Result<()> {
        self.0.volume_fenced(name, cell_id, copy).await
    }

    pub async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        self.0.volume_removed(name, cell_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::errors::ErrorName;
    use tonic::Code;

    fn refused(code: Code, name: ErrorName) -> BbsError {
        BbsError {
            name: Some(name),
            code,
            message: "refused".into(),
        }
    }

    #[test]
    fn only_a_not_found_refusal_is_a_missing_record() {
        assert_eq!(found(Ok(7)), Ok(Some(7)));
        let gone = refused(Code::NotFound, ErrorName::DesiredLRPNotFound);
        assert_eq!(found::<i32>(Err(gone)), Ok(None));
        let down = BbsError::from(tonic::Status::unavailable("BBS down"));
        assert_eq!(found::<i32>(Err(down.clone())), Err(down));
        let moved = refused(
            Code::FailedPrecondition,
            ErrorName::ActualLRPCannotBeClaimed,
        );
        assert_eq!(found::<i32>(Err(moved.clone())), Err(moved));
    }
}
