//! Cells' container subnets: the cluster's network settings ([`ClusterNetwork`]) and
//! the leases, all in one record (`/lattice/v1/subnets`, a `SubnetLeases`) so that a
//! new lease is one compare-and-swap against every other. Which subnet a cell gets
//! is `lattice_specs::subnets::pick`'s decision; a lease outlives its cell's
//! presence, so a restarted cell gets its subnet (and its containers their
//! addresses) back.

use std::collections::HashSet;

use lattice_specs::models::{SecurityGroupRule, SubnetLease, SubnetLeases};
use lattice_specs::subnets::{self, SubnetPlan};
use lattice_specs::validation::{self, FieldError, ValidationErrors};

use super::txn::Write;
use super::{Db, DbError, Result, SUBNETS};

/// The cluster's container network as the BBS hands it to cells: where their
/// subnets come from, the internal DNS domain and the default egress rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterNetwork {
    pub plan: SubnetPlan,
    pub internal_domain: String,
    /// The egress rules of workloads that bring none (empty: allow everything).
    pub default_egress: Vec<SecurityGroupRule>,
}

/// The internal DNS domain unless the operator sets another.
pub const DEFAULT_INTERNAL_DOMAIN: &str = "apps.internal";

impl Default for ClusterNetwork {
    fn default() -> Self {
        ClusterNetwork {
            plan: SubnetPlan::default(),
            internal_domain: DEFAULT_INTERNAL_DOMAIN.into(),
            default_egress: vec![],
        }
    }
}

fn invalid(field: &str, message: String) -> DbError {
    DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message,
    }]))
}

impl Db {
    /// Leases `cell_id` its subnet (see [`subnets::pick`]): the one it had, or the
    /// first free one. `overlay_address` is where other cells reach its overlay
    /// (empty: it runs none).
    pub async fn lease_cell_subnet(
        &self,
        cell_id: &str,
        overlay_address: &str,
    ) -> Result<SubnetLease> {
        let mut errs = ValidationErrors::default();
        validation::check_guid(&mut errs, "cell_id", cell_id);
        if !errs.0.is_empty() {
            return Err(DbError::Invalid(errs));
        }
        if !overlay_address.is_empty() && overlay_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "overlay_address",
                format!("{overlay_address:?} is not an IP address: give the address other cells reach this cell's host at"),
            ));
        }
        let alive: HashSet<String> = self.cells().await?.into_iter().map(|c| c.cell_id).collect();
        let plan = self.network.plan;
        let now = lattice_specs::now_nanos();
        let lease = self
            .modify(SUBNETS, |cur: Option<SubnetLeases>| {
                let mut all = cur.unwrap_or_default();
                let picked = subnets::pick(
                    &plan,
                    &all.leases,
                    |id| alive.contains(id),
                    cell_id,
                    overlay_address,
                    now,
                )
                .map_err(|e| DbError::Conflict {
                    name: e.name(),
                    message: e.to_string(),
                })?;
                if !picked.changed {
                    return Ok((Write::Nothing, picked.lease));
                }
                all.leases.retain(|l| l.cell_id != cell_id);
                all.leases.push(picked.lease.clone());
                Ok((Write::Put(all), picked.lease))
            })
            .await?;
        tracing::info!(cell = cell_id, subnet = %lease.subnet, overlay = overlay_address, "subnet leased");
        Ok(lease)
    }

    /// Every subnet lease.
    pub async fn subnet_leases(&self) -> Result<Vec<SubnetLease>> {
        Ok(self
            .get::<SubnetLeases>(SUBNETS)
            .await?
            .map(|(all, _)| all.leases)
            .unwrap_or_default())
    }
}
