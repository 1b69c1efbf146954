//! The cell's subnet from the BBS: at start, a cell without an explicit subnet
//! leases one (`LeaseCellSubnet`: the same one back across restarts, so its
//! containers keep their addresses) and takes the cluster's network settings with
//! it. [`apply`] is the decision (pure): what the lease makes of the
//! [`NetworkConfig`]; [`lease`] asks the BBS, waiting for it a while when it is not
//! up yet.

use std::time::Duration;

use anyhow::Context;
use ipnet::Ipv4Net;
use lattice_bbs_client::CellWrites;
use lattice_specs::bbs_api::LeaseCellSubnetResponse;

use super::NetworkConfig;

/// Fills `net` from `lease`: the bridge at the subnet's first address, the cluster's
/// container network, internal domain and default egress rules. The cell's subnet.
pub fn apply(lease: &LeaseCellSubnetResponse, net: &mut NetworkConfig) -> anyhow::Result<Ipv4Net> {
    let subnet: Ipv4Net = lease.subnet.parse().with_context(|| {
        format!(
            "the BBS leased a subnet that is no CIDR: {:?}",
            lease.subnet
        )
    })?;
    let cluster: Ipv4Net = lease.container_network.parse().with_context(|| {
        format!(
            "the BBS sent a container network that is no CIDR: {:?}",
            lease.container_network
        )
    })?;
    anyhow::ensure!(
        cluster.contains(&subnet),
        "the BBS leased {subnet}, outside its container network {cluster}"
    );
    net.gateway = lattice_specs::subnets::gateway(subnet);
    net.prefix = subnet.prefix_len();
    net.cluster_network = Some((cluster.network(), cluster.prefix_len()));
    if !lease.internal_domain.is_empty() {
        net.internal_domain = lease.internal_domain.clone();
    }
    net.default_egress = lease.default_egress_rules.clone();
    Ok(subnet)
}

/// Leases `cell_id`'s subnet and fills `net` from it (see [`apply`]). While the BBS
/// is unreachable it tries again, for `patience` at most; a refusal (no subnet
/// left, the lease held by a live cell elsewhere) fails at once.
pub async fn lease(
    bbs: &dyn CellWrites,
    cell_id: &str,
    net: &mut NetworkConfig,
    patience: Duration,
) -> anyhow::Result<Ipv4Net> {
    let overlay = net
        .overlay
        .as_ref()
        .map(|o| o.local.to_string())
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + patience;
    let answer = loop {
        match bbs.lease_cell_subnet(cell_id, &overlay).await {
            Ok(a) => break a,
            Err(e) if e.name.is_none() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    "cannot lease a subnet from the BBS yet ({}); retrying",
                    e.message
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                let name = e.name.map(|n| format!("{n}: ")).unwrap_or_default();
                anyhow::bail!(
                    "leasing cell {cell_id}'s subnet from the BBS: {name}{} (or give the cell --subnet)",
                    e.message
                );
            }
        }
    };
    let subnet = apply(&answer, net)?;
    tracing::info!(cell = cell_id, %subnet, cluster = %answer.container_network, "subnet leased");
    Ok(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn answer(subnet: &str, network: &str) -> LeaseCellSubnetResponse {
        LeaseCellSubnetResponse {
            subnet: subnet.into(),
            container_network: network.into(),
            internal_domain: "apps.example".into(),
            default_egress_rules: vec![lattice_specs::models::SecurityGroupRule {
                protocol: "tcp".into(),
                destinations: vec!["10.0.0.0/8".into()],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_lease_fills_the_network() {
        let mut net = NetworkConfig::default();
        let subnet = apply(&answer("10.255.3.0/24", "10.255.0.0/16"), &mut net).unwrap();
        assert_eq!(subnet.to_string(), "10.255.3.0/24");
        assert_eq!(
            (net.gateway, net.prefix),
            (Ipv4Addr::new(10, 255, 3, 1), 24)
        );
        assert_eq!(
            net.cluster_network,
            Some((Ipv4Addr::new(10, 255, 0, 0), 16))
        );
        assert_eq!(net.internal_domain, "apps.example");
        assert_eq!(net.default_egress.len(), 1);
        assert_eq!(net.container_addresses(), 253);
        for (s, n) in [
            ("garbage", "10.255.0.0/16"),
            ("10.9.0.0/24", "10.255.0.0/16"),
        ] {
            assert!(
                apply(&answer(s, n), &mut NetworkConfig::default()).is_err(),
                "{s}"
            );
        }
    }

    /// Over the in-process BBS: the same cell gets the same subnet twice; another
    /// cell the next one; a refusal names its error.
    #[tokio::test]
    async fn cells_lease_their_subnets_from_the_bbs() {
        let bbs = lattice_bbs_client::fake::FakeBbs::start().await;
        let patience = Duration::from_secs(1);
        let mut net = NetworkConfig::default();
        let a = lease(&bbs, "a", &mut net, patience).await.unwrap();
        assert_eq!(a.to_string(), "10.255.0.0/24");
        assert_eq!(net.gateway, Ipv4Addr::new(10, 255, 0, 1));
        let again = lease(&bbs, "a", &mut NetworkConfig::default(), patience).await;
        assert_eq!(again.unwrap(), a);
        let b = lease(&bbs, "b", &mut NetworkConfig::default(), patience).await;
        assert_eq!(b.unwrap().to_string(), "10.255.1.0/24");
        let err = lease(&bbs, "bad id!", &mut NetworkConfig::default(), patience)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("InvalidRequest"), "{err}");
    }
}
