//! `LeaseCellSubnet`: a cell's container subnet (see `db::subnets`) with the
//! cluster's network settings it builds its network from.

use lattice_specs::authz::Call;
use lattice_specs::bbs_api::{LeaseCellSubnetRequest, LeaseCellSubnetResponse};
use lattice_specs::models::SubnetLease;
use tonic::{Request, Response, Status};

use super::authz::{allow, caller_of};
use super::{call, BbsGrpc};
use crate::db::ClusterNetwork;

/// The answer to a cell whose lease is `lease`.
pub fn lease_response(network: &ClusterNetwork, lease: SubnetLease) -> LeaseCellSubnetResponse {
    LeaseCellSubnetResponse {
        subnet: lease.subnet,
        container_network: network.plan.network().to_string(),
        internal_domain: network.internal_domain.clone(),
        default_egress_rules: network.default_egress.clone(),
    }
}

impl BbsGrpc {
    pub(super) async fn lease_subnet(
        &self,
        r: Request<LeaseCellSubnetRequest>,
    ) -> Result<Response<LeaseCellSubnetResponse>, Status> {
        call("LeaseCellSubnet", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::LeaseCellSubnet, Some(&r.cell_id))?;
            let lease = db.lease_cell_subnet(&r.cell_id, &r.overlay_address).await?;
            Ok(lease_response(&db.network, lease))
        })
        .await
    }
}
