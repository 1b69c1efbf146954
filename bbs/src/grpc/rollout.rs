//! The rolling-update calls the brain makes to replace instances one at a time,
//! record a deployment's progress and roll an app back (brain-only, fenced by
//! its lock), and the history read (any identity).

use lattice_specs::authz::{Call, Caller};
use lattice_specs::bbs_api::{
    ActualLrpResponse, DesiredLrpGenerationsResponse, DesiredLrpResponse, Empty,
    ProcessGuidRequest, ReplaceActualLrpRequest, ReplacedActualLrpRequest,
    RollbackDesiredLrpRequest, UpdateDeploymentRequest,
};
use tonic::{Request, Response, Status};

use super::authz::{caller_of, may};
use super::request::{key_of, missing};
use super::{call, BbsGrpc};
use crate::db::Rollback;

/// Who asked for a rollback, as the deployment records it.
fn requested_by(caller: &Caller) -> String {
    match caller {
        Caller::Peer(id) => id.to_string(),
        _ => "brain".to_string(),
    }
}

impl BbsGrpc {
    pub(super) async fn replace_lrp(
        &self,
        r: Request<ReplaceActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        call("ReplaceActualLRP", async {
            may(&r, Call::ReplaceActualLrp)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let l = db
                .replace_actual_lrp(&guid, index, r.surge, r.target_generation)
                .await?;
            Ok(ActualLrpResponse {
                actual_lrp: Some(l),
            })
        })
        .await
    }

    pub(super) async fn drain_replaced_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("DrainReplacedActualLRP", async {
            may(&r, Call::DrainReplacedActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(r.into_inner().key)?;
            db.drain_replaced_actual_lrp(&guid, index).await?;
            Ok(Empty {})
        })
        .await
    }

    pub(super) async fn remove_replaced_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RemoveReplacedActualLRP", async {
            may(&r, Call::RemoveReplacedActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(r.into_inner().key)?;
            db.remove_replaced_actual_lrp(&guid, index).await?;
            Ok(Empty {})
        })
        .await
    }

    pub(super) async fn restore_replaced_lrp(
        &self,
        r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RestoreReplacedActualLRP", async {
            may(&r, Call::RestoreReplacedActualLrp)?;
            let db = self.db_for(&r)?;
            let (guid, index) = key_of(r.into_inner().key)?;
            db.restore_replaced_actual_lrp(&guid, index).await?;
            Ok(Empty {})
        })
        .await
    }

    pub(super) async fn update_lrp_deployment(
        &self,
        r: Request<UpdateDeploymentRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("UpdateDeployment", async {
            may(&r, Call::UpdateDeployment)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            if r.process_guid.is_empty() {
                return Err(missing("process_guid"));
            }
            let new = r.deployment.ok_or_else(|| missing("deployment"))?;
            db.update_deployment(&r.process_guid, &r.expected.unwrap_or_default(), &new)
                .await?;
            Ok(Empty {})
        })
        .await
    }

    pub(super) async fn rollback_lrp(
        &self,
        r: Request<RollbackDesiredLrpRequest>,
    ) -> Result<Response<DesiredLrpResponse>, Status> {
        call("RollbackDesiredLRP", async {
            may(&r, Call::RollbackDesiredLrp)?;
            let db = self.db_for(&r)?;
            let by = requested_by(&caller_of(&r));
            let r = r.into_inner();
            if r.process_guid.is_empty() {
                return Err(missing("process_guid"));
            }
            let rollback = Rollback {
                generation: r.generation,
                failed: r.failed,
                reason: &r.reason,
                requested_by: &by,
            };
            let d = db.rollback_desired_lrp(&r.process_guid, rollback).await?;
            Ok(DesiredLrpResponse {
                desired_lrp: Some(d),
            })
        })
        .await
    }

    pub(super) async fn lrp_generations(
        &self,
        r: Request<ProcessGuidRequest>,
    ) -> Result<Response<DesiredLrpGenerationsResponse>, Status> {
        call("DesiredLRPGenerations", async {
            may(&r, Call::DesiredLrpGenerations)?;
            let generations = self.db.generations(&r.into_inner().process_guid).await?;
            Ok(DesiredLrpGenerationsResponse { generations })
        })
        .await
    }
}
