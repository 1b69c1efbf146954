//! Cells' container subnets: every cell leases one /`prefix` of the cluster's
//! container network from the BBS, the same one back across its restarts, never one
//! another cell holds. [`SubnetPlan`] is the cluster's setting (the network and the
//! cells' prefix), [`pick`] the decision (pure); the BBS stores the leases
//! (`lattice_bbs::db::subnets`) and the cell builds its bridge from its lease.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::errors::ErrorName;
use crate::models::SubnetLease;

/// The container network unless the operator sets another (`--container-network`).
pub const DEFAULT_CONTAINER_NETWORK: &str = "10.255.0.0/16";
/// Each cell's share unless the operator sets another (`--cell-subnet-prefix`).
pub const DEFAULT_CELL_SUBNET_PREFIX: u8 = 24;

/// The cluster's container network and the size of each cell's subnet in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPlan {
    network: Ipv4Net,
    prefix: u8,
}

impl Default for SubnetPlan {
    fn default() -> Self {
        SubnetPlan::new(
            DEFAULT_CONTAINER_NETWORK.parse().expect("a network"),
            DEFAULT_CELL_SUBNET_PREFIX,
        )
        .expect("the default plan is valid")
    }
}

impl SubnetPlan {
    /// Cells get /`prefix` subnets of `network`. `network` must be a network address
    /// (no host bits) and `prefix` between its own prefix and 30 (a cell needs its
    /// gateway and at least one container address).
    pub fn new(network: Ipv4Net, prefix: u8) -> Result<SubnetPlan, String> {
        if network.trunc() != network {
            return Err(format!(
                "container network {network} has host bits set: did you mean {}?",
                network.trunc()
            ));
        }
        if prefix < network.prefix_len() || prefix > 30 {
            return Err(format!(
                "cell subnet prefix /{prefix} must be between the container network's /{} and /30",
                network.prefix_len()
            ));
        }
        Ok(SubnetPlan { network, prefix })
    }

    pub fn network(&self) -> Ipv4Net {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `subnet` is one this plan hands out: a /prefix inside the network.
    fn fits(&self, subnet: &Ipv4Net) -> bool {
        subnet.prefix_len() == self.prefix && self.network.contains(subnet)
    }
}

/// A subnet's gateway: its first address, where the cell's bridge sits (10.255.3.1
/// of 10.255.3.0/24).
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Why no lease could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("every /{prefix} subnet of {network} is leased ({leased} cells): give the BBS a larger --container-network or a longer --cell-subnet-prefix")]
    Exhausted {
        network: Ipv4Net,
        prefix: u8,
        leased: usize,
    },
    #[error("cell {cell_id}'s subnet {subnet} is held by the live cell {cell_id} at overlay address {held_by:?}, not {requested:?}: stop that cell first, or give this one another --cell-id")]
    Held {
        cell_id: String,
        subnet: String,
        held_by: String,
        requested: String,
    },
}

impl PickError {
    pub fn name(&self) -> ErrorName {
        match self {
            PickError::Exhausted { .. } => ErrorName::SubnetsExhausted,
            PickError::Held { .. } => ErrorName::SubnetLeaseHeld,
        }
    }
}

/// What [`pick`] decided: the cell's lease, and whether it must be written (new, or
/// moved to another overlay address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub lease: SubnetLease,
    pub changed: bool,
}

/// The subnet of `cell_id` (asking from `overlay_address`), given every lease and
/// whether a cell id is alive (present in the BBS):
/// - its own lease when it has one in the plan (moved to `overlay_address` unless a
///   live cell of that id holds it from another address: [`PickError::Held`]);
/// - otherwise the first /prefix of the network that overlaps no other lease
///   ([`PickError::Exhausted`] when there is none).
///
/// Leases outside the plan (the operator changed the network) are replaced.
pub fn pick(
    plan: &SubnetPlan,
    leases: &[SubnetLease],
    alive: impl Fn(&str) -> bool,
    cell_id: &str,
    overlay_address: &str,
    now: i64,
) -> Result<Picked, PickError> {
    let own = leases
        .iter()
        .find(|l| l.cell_id == cell_id)
        .filter(|l| l.subnet.parse().is_ok_and(|s| plan.fits(&s)));
    if let Some(l) = own {
        if l.overlay_address == overlay_address {
            return Ok(Picked {
                lease: l.clone(),
                changed: false,
            });
        }
        if alive(cell_id) {
            return Err(PickError::Held {
                cell_id: cell_id.into(),
                subnet: l.subnet.clone(),
                held_by: l.overlay_address.clone(),
                requested: overlay_address.into(),
            });
        }
        let lease = SubnetLease {
            overlay_address: overlay_address.into(),
            updated_at: now,
            ..l.clone()
        };
        return Ok(Picked {
            lease,
            changed: true,
        });
    }
    let taken: Vec<Ipv4Net> = leases
        .iter()
        .filter(|l| l.cell_id != cell_id)
        .filter_map(|l| l.subnet.parse().ok())
        .collect();
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(b) || b.contains(a);
    let free = plan
        .network
        .subnets(plan.prefix)
        .expect("the plan's prefix is within the network")
        .find(|s| !taken.iter().any(|t| overlaps(s, t)));
    let Some(subnet) = free else {
        return Err(PickError::Exhausted {
            network: plan.network,
            prefix: plan.prefix,
            leased: taken.len(),
        });
    };
    Ok(Picked {
        lease: SubnetLease {
            cell_id: cell_id.into(),
            subnet: subnet.to_string(),
            overlay_address: overlay_address.into(),
            updated_at: now,
        },
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(network: &str, prefix: u8) -> SubnetPlan {
        SubnetPlan::new(network.parse().unwrap(), prefix).unwrap()
    }

    fn lease(cell: &str, subnet: &str, addr: &str) -> SubnetLease {
        SubnetLease {
            cell_id: cell.into(),
            subnet: subnet.into(),
            overlay_address: addr.into(),
            updated_at: 1,
        }
    }

    const NOBODY: fn(&str) -> bool = |_| false;

    #[test]
    fn a_plan_takes_a_network_address_and_a_prefix_within_it() {
        assert_eq!(SubnetPlan::default().network().to_string(), "10.255.0.0/16");
        assert_eq!(SubnetPlan::default().prefix(), 24);
        let host_bits = SubnetPlan::new("10.255.0.1/16".parse().unwrap(), 24).unwrap_err();
        assert!(
            host_bits.contains("did you mean 10.255.0.0/16"),
            "{host_bits}"
        );
        for bad in [8, 31] {
            let e = SubnetPlan::new("10.255.0.0/16".parse().unwrap(), bad).unwrap_err();
            assert!(e.contains(&format!("/{bad}")), "{e}");
        }
        assert!(SubnetPlan::new("10.255.0.0/16".parse().unwrap(), 16).is_ok());
    }

    #[test]
    fn cells_get_the_first_free_subnets_in_order_without_overlap() {
        let p = plan("10.255.0.0/16", 24);
        let mut leases = vec![];
        for (i, cell) in ["a", "b", "c"].iter().enumerate() {
            let got = pick(&p, &leases, NOBODY, cell, "192.168.0.1", 7).unwrap();
            assert!(got.changed);
            assert_eq!(got.lease.subnet, format!("10.255.{i}.0/24"));
            assert_eq!(got.lease.updated_at, 7);
            leases.push(got.lease);
        }
        // A hole left by a lease gone is filled first.
        leases.remove(1);
        let got = pick(&p, &leases, NOBODY, "d", "", 8).unwrap();
        assert_eq!(got.lease.subnet, "10.255.1.0/24");
        // A lease of another size (an older plan) is not overlapped.
        let older = [lease("old", "10.255.0.0/23", "x")];
        let got = pick(&p, &older, NOBODY, "e", "", 8).unwrap();
        assert_eq!(got.lease.subnet, "10.255.2.0/24");
    }

    #[test]
    fn the_same_cell_gets_its_lease_back() {
        let p = plan("10.255.0.0/16", 24);
        let leases = [
            lease("a", "10.255.0.0/24", "192.168.0.1"),
            lease("b", "10.255.1.0/24", "192.168.0.2"),
        ];
        let got = pick(&p, &leases, |_| true, "b", "192.168.0.2", 9).unwrap();
        assert_eq!(
            got,
            Picked {
                lease: leases[1].clone(),
                changed: false
            }
        );
        // From another address once the old cell is gone: the same subnet, moved.
        let got = pick(&p, &leases, NOBODY, "b", "192.168.0.9", 9).unwrap();
        assert!(got.changed);
        assert_eq!(got.lease.subnet, "10.255.1.0/24");
        assert_eq!(got.lease.overlay_address, "192.168.0.9");
        // A lease outside the plan is replaced by one inside it.
        let stale = [lease("a", "10.9.0.0/24", "192.168.0.1")];
        let got = pick(&p, &stale, |_| true, "a", "192.168.0.1", 9).unwrap();
        assert_eq!(got.lease.subnet, "10.255.0.0/24");
    }

    #[test]
    fn a_lease_held_by_a_live_cell_elsewhere_is_refused() {
        let p = plan("10.255.0.0/16", 24);
        let leases = [lease("a", "10.255.0.0/24", "192.168.0.1")];
        let err = pick(&p, &leases, |id| id == "a", "a", "192.168.0.5", 9).unwrap_err();
        assert_eq!(err.name(), ErrorName::SubnetLeaseHeld);
        let text = err.to_string();
        assert!(text.contains("\"192.168.0.1\"") && text.contains("\"192.168.0.5\""));
        assert!(text.contains("10.255.0.0/24"), "{text}");
    }

    #[test]
    fn an_exhausted_network_is_a_typed_error() {
        let p = plan("10.255.0.0/23", 24);
        let leases = [
            lease("a", "10.255.0.0/24", ""),
            lease("b", "10.255.1.0/24", ""),
        ];
        let err = pick(&p, &leases, NOBODY, "c", "", 1).unwrap_err();
        assert_eq!(err.name(), ErrorName::SubnetsExhausted);
        assert!(err.to_string().contains("10.255.0.0/23"), "{err}");
        // The ones that have a lease still get it.
        assert!(pick(&p, &leases, NOBODY, "a", "", 1).is_ok());
    }

    #[test]
    fn the_gateway_is_the_first_address() {
        assert_eq!(
            gateway("10.255.3.0/24".parse().unwrap()),
            Ipv4Addr::new(10, 255, 3, 1)
        );
    }
}
