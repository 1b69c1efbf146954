//! The evacuation calls: an evacuating cell hands back its claimed, running,
//! stopped and crashed instances; the brain removes the evacuating records.

use lattice_specs::authz::Call;
use lattice_specs::bbs_api::{Empty, EvacuateRequest, EvacuationResponse};
use tonic::{Request, Response, Status};

use super::authz::{allow, caller_of, may};
use super::request::{ik_of, key_of};
use super::{call, BbsGrpc};

impl BbsGrpc {
    pub(super) async fn evacuate_claimed_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        call("EvacuateClaimedActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::EvacuateClaimedActualLrp, Some(&ik.cell_id))?;
            let k = self.db.evacuate_claimed(&guid, index, &ik).await?;
            Ok(EvacuationResponse {
                keep_container: k.0,
            })
        })
        .await
    }

    pub(super) async fn evacuate_running_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        call("EvacuateRunningActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::EvacuateRunningActualLrp, Some(&ik.cell_id))?;
            let k = self
                .db
                .evacuate_running(&guid, index, &ik, r.net_info.unwrap_or_default())
                .await?;
            Ok(EvacuationResponse {
                keep_container: k.0,
            })
        })
        .await
    }

    pub(super) async fn evacuate_stopped_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        call("EvacuateStoppedActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::EvacuateStoppedActualLrp, Some(&ik.cell_id))?;
            let k = self.db.evacuate_stopped(&guid, index, &ik).await?;
            Ok(EvacuationResponse {
                keep_container: k.0,
            })
        })
        .await
    }

    pub(super) async fn evacuate_crashed_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<EvacuationResponse>, Status> {
        call("EvacuateCrashedActualLRP", async {
            let who = caller_of(&r);
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            let ik = ik_of(r.instance_key)?;
            allow(&who, Call::EvacuateCrashedActualLrp, Some(&ik.cell_id))?;
            let k = self
                .db
                .evacuate_crashed(&guid, index, &ik, &r.error_message)
                .await?;
            Ok(EvacuationResponse {
                keep_container: k.0,
            })
        })
        .await
    }

    pub(super) async fn remove_evacuating_lrp(
        &self,
        r: Request<EvacuateRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("RemoveEvacuatingActualLRP", async {
            may(&r, Call::RemoveEvacuatingActualLrp)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let (guid, index) = key_of(r.key)?;
            db.remove_evacuating(&guid, index, &ik_of(r.instance_key)?)
                .await
                .map(|_| Empty {})
        })
        .await
    }
}
