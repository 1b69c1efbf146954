//! The rolling-update calls the brain makes to replace instances one at a time,
//! record a deployment's progress and roll an app back.
//!
//! Declared in `bbs.proto`; not implemented yet: every call answers
//! `Unimplemented` until the rollout work lands.

use lattice_specs::bbs_api::{
    ActualLrpResponse, DesiredLrpGenerationsResponse, DesiredLrpResponse, Empty,
    ProcessGuidRequest, ReplaceActualLrpRequest, ReplacedActualLrpRequest,
    RollbackDesiredLrpRequest, UpdateDeploymentRequest,
};
use tonic::{Request, Response, Status};

use super::BbsGrpc;

fn not_yet(call: &str) -> Status {
    Status::unimplemented(format!("{call}: rolling updates are not built yet"))
}

impl BbsGrpc {
    pub(super) async fn replace_lrp(
        &self,
        _r: Request<ReplaceActualLrpRequest>,
    ) -> Result<Response<ActualLrpResponse>, Status> {
        Err(not_yet("ReplaceActualLRP"))
    }

    pub(super) async fn drain_replaced_lrp(
        &self,
        _r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(not_yet("DrainReplacedActualLRP"))
    }

    pub(super) async fn remove_replaced_lrp(
        &self,
        _r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(not_yet("RemoveReplacedActualLRP"))
    }

    pub(super) async fn restore_replaced_lrp(
        &self,
        _r: Request<ReplacedActualLrpRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(not_yet("RestoreReplacedActualLRP"))
    }

    pub(super) async fn update_lrp_deployment(
        &self,
        _r: Request<UpdateDeploymentRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(not_yet("UpdateDeployment"))
    }

    pub(super) async fn rollback_lrp(
        &self,
        _r: Request<RollbackDesiredLrpRequest>,
    ) -> Result<Response<DesiredLrpResponse>, Status> {
        Err(not_yet("RollbackDesiredLRP"))
    }

    pub(super) async fn lrp_generations(
        &self,
        _r: Request<ProcessGuidRequest>,
    ) -> Result<Response<DesiredLrpGenerationsResponse>, Status> {
        Err(not_yet("DesiredLRPGenerations"))
    }
}
