//! The container network's flags: the BBS's (`--container-network`,
//! `--cell-subnet-prefix`, `--internal-domain`, `--default-egress-rules`) as the
//! cluster network it leases cells' subnets of, and the cell's overlay flags
//! (`--overlay` and its device, VNI, port and address) as its overlay settings.
//! Bad values are refused at start with the flag named.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_bbs::db::ClusterNetwork;
use lattice_cell::network::OverlayConfig;
use lattice_specs::models::SecurityGroupRule;
use lattice_specs::subnets::SubnetPlan;

/// `lattice bbs`'s container network flags.
#[derive(clap::Args, Clone)]
pub struct BbsNetworkArgs {
    /// The container network (CIDR) every cell leases its subnet of.
    #[arg(
        long,
        env = "LATTICE_BBS_CONTAINER_NETWORK",
        default_value = lattice_specs::subnets::DEFAULT_CONTAINER_NETWORK
    )]
    container_network: String,
    /// The prefix length of each cell's subnet in --container-network (24: 253
    /// containers a cell, 256 cells in a /16).
    #[arg(long, env = "LATTICE_BBS_CELL_SUBNET_PREFIX", default_value_t = lattice_specs::subnets::DEFAULT_CELL_SUBNET_PREFIX)]
    cell_subnet_prefix: u8,
    /// The internal DNS domain: APP.DOMAIN names an app's instances inside containers.
    #[arg(
        long,
        env = "LATTICE_BBS_INTERNAL_DOMAIN",
        default_value = lattice_bbs::db::DEFAULT_INTERNAL_DOMAIN
    )]
    internal_domain: String,
    /// A JSON file holding an array of egress rules (the receptor's shape, e.g.
    /// [{"protocol":"tcp","destinations":["0.0.0.0/0"],"ports":[443]}]) for workloads
    /// that bring none; without it they may reach everything.
    #[arg(long, env = "LATTICE_BBS_DEFAULT_EGRESS_RULES")]
    default_egress_rules: Option<PathBuf>,
}

impl BbsNetworkArgs {
    /// The flags as the cluster's network, or what is wrong with them.
    pub fn cluster_network(&self) -> anyhow::Result<ClusterNetwork> {
        let network = self.container_network.parse().with_context(|| {
            format!(
                "--container-network {:?}: expected a CIDR, e.g. 10.255.0.0/16",
                self.container_network
            )
        })?;
        let plan = SubnetPlan::new(network, self.cell_subnet_prefix)
            .map_err(|e| anyhow::anyhow!("--container-network/--cell-subnet-prefix: {e}"))?;
        check_domain(&self.internal_domain)?;
        let default_egress = match &self.default_egress_rules {
            Some(path) => egress_rules(path)?,
            None => vec![],
        };
        Ok(ClusterNetwork {
            plan,
            internal_domain: self.internal_domain.clone(),
            default_egress,
        })
    }
}

fn check_domain(domain: &str) -> anyhow::Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    anyhow::ensure!(
        domain.len() <= 200 && domain.split('.').all(label_ok),
        "--internal-domain {domain:?}: expected a DNS name such as apps.internal (letters, digits and '-' in dot-separated labels)"
    );
    Ok(())
}

/// The egress rules in the JSON file at `path`, checked as a workload's are.
fn egress_rules(path: &Path) -> anyhow::Result<Vec<SecurityGroupRule>> {
    let flag = format!("--default-egress-rules {}", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag}: reading it"))?;
    let rules: Vec<SecurityGroupRule> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{flag}: expected a JSON array of egress rules, e.g. [{{\"protocol\":\"tcp\",\"destinations\":[\"0.0.0.0/0\"],\"ports\":[443]}}]"
        )
    })?;
    lattice_specs::validation::validate_egress_rules(&rules)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok(rules)
}

/// `lattice cell`'s overlay flags.
#[derive(clap::Args, Clone)]
pub struct OverlayArgs {
    /// Reach the other cells' container subnets through a VXLAN overlay (needs a
    /// subnet leased from the BBS: not with --subnet).
    #[arg(long, env = "LATTICE_CELL_OVERLAY")]
    overlay: bool,
    /// This host's address other cells send overlay traffic to (default: --address).
    #[arg(long, env = "LATTICE_CELL_OVERLAY_ADDRESS")]
    overlay_address: Option<Ipv4Addr>,
    /// The VXLAN device's name.
    #[arg(long, default_value = "lattice-vx0")]
    overlay_device: String,
    /// The VXLAN network identifier (the same on every cell).
    #[arg(long, default_value_t = 1)]
    overlay_vni: u32,
    /// The UDP port of VXLAN traffic (the same on every cell).
    #[arg(long, default_value_t = 4789)]
    overlay_port: u16,
    /// Route directly to the cells whose host is on this host's network (the one of
    /// the interface holding the overlay address), without VXLAN: faster; the others
    /// still through VXLAN. Give it to every cell or none. Not where the network
    /// drops packets that are not from the hosts' own addresses (clouds with
    /// source/destination checks on).
    #[arg(long, env = "LATTICE_CELL_OVERLAY_DIRECT_ROUTING")]
    overlay_direct_routing: bool,
}

impl OverlayArgs {
    /// The overlay settings (None: no overlay), `address` being the cell's --address.
    pub fn overlay(
        &self,
        address: IpAddr,
        explicit_subnet: bool,
    ) -> anyhow::Result<Option<OverlayConfig>> {
        if !self.overlay {
            anyhow::ensure!(
                !self.overlay_direct_routing,
                "--overlay-direct-routing routes the overlay: give --overlay too"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            !explicit_subnet,
            "--overlay needs the cell's subnet leased from the BBS: drop --subnet"
        );
        let local = match (self.overlay_address, address) {
            (Some(a), _) => a,
            (None, IpAddr::V4(a)) if !a.is_loopback() && !a.is_unspecified() => a,
            (None, a) => anyhow::bail!(
                "--overlay: --address {a} is not one other cells reach: give --overlay-address (or --address) an IPv4 address of this host"
            ),
        };
        anyhow::ensure!(
            !self.overlay_device.is_empty() && self.overlay_device.len() <= 15,
            "--overlay-device {:?}: an interface name of 1 to 15 characters",
            self.overlay_device
        );
        anyhow::ensure!(
            self.overlay_vni > 0 && self.overlay_vni < 1 << 24,
            "--overlay-vni {}: must be between 1 and 16777215",
            self.overlay_vni
        );
        anyhow::ensure!(self.overlay_port > 0, "--overlay-port must not be 0");
        Ok(Some(OverlayConfig {
            device: self.overlay_device.clone(),
            vni: self.overlay_vni,
            port: self.overlay_port,
            local,
            direct_routing: self.overlay_direct_routing,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbs_args(network: &str, prefix: u8, domain: &str) -> BbsNetworkArgs {
        BbsNetworkArgs {
            container_network: network.into(),
            cell_subnet_prefix: prefix,
            internal_domain: domain.into(),
            default_egress_rules: None,
        }
    }

    #[test]
    fn bad_network_flags_are_named() {
        let ok = bbs_args("10.255.0.0/16", 24, "apps.internal");
        assert_eq!(ok.cluster_network().unwrap(), ClusterNetwork::default());
        for (args, flag) in [
            (
                bbs_args("10.255.0.0", 24, "apps.internal"),
                "--container-network",
            ),
            (
                bbs_args("10.255.0.1/16", 24, "apps.internal"),
                "did you mean",
            ),
            (
                bbs_args("10.255.0.0/16", 8, "apps.internal"),
                "--cell-subnet-prefix",
            ),
            (
                bbs_args("10.255.0.0/16", 24, "apps..internal"),
                "--internal-domain",
            ),
        ] {
            let e = format!("{:#}", args.cluster_network().unwrap_err());
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn default_egress_rules_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("egress.json");
        let mut args = bbs_args("10.255.0.0/16", 24, "apps.internal");
        args.default_egress_rules = Some(file.clone());
        std::fs::write(
            &file,
            r#"[{"protocol":"tcp","destinations":["169.254.169.254"],"ports":[80],"log":true}]"#,
        )
        .unwrap();
        let net = args.cluster_network().unwrap();
        assert_eq!(net.default_egress.len(), 1);
        assert_eq!(net.default_egress[0].ports, [80]);
        assert!(net.default_egress[0].log);
        std::fs::write(&file, r#"[{"protocol":"tcpp","destinations":["1.2.3.4"]}]"#).unwrap();
        let e = format!("{:#}", args.cluster_network().unwrap_err());
        assert!(e.contains("egress_rules[0].protocol"), "{e}");
        std::fs::write(&file, r#"{"protocol":"tcp"}"#).unwrap();
        let e = format!("{:#}", args.cluster_network().unwrap_err());
        assert!(e.contains("expected a JSON array"), "{e}");
    }

    #[test]
    fn the_overlay_needs_a_leased_subnet_and_a_reachable_address() {
        let on = OverlayArgs {
            overlay: true,
            overlay_address: None,
            overlay_device: "lattice-vx0".into(),
            overlay_vni: 1,
            overlay_port: 4789,
            overlay_direct_routing: false,
        };
        let host: IpAddr = "192.168.5.2".parse().unwrap();
        let o = on.overlay(host, false).unwrap().unwrap();
        assert_eq!(o.local, Ipv4Addr::new(192, 168, 5, 2));
        assert!(!o.direct_routing);
        let direct = OverlayArgs {
            overlay_direct_routing: true,
            ..on.clone()
        };
        assert!(direct.overlay(host, false).unwrap().unwrap().direct_routing);
        let e = on.overlay(host, true).unwrap_err().to_string();
        assert!(e.contains("drop --subnet"), "{e}");
        let e = on.overlay("127.0.0.1".parse().unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("--overlay-address"), "{e}");
        let off = OverlayArgs {
            overlay: false,
            ..on
        };
        assert_eq!(off.overlay(host, true).unwrap(), None);
        let e = OverlayArgs {
            overlay: false,
            ..direct
        };
        let e = e.overlay(host, false).unwrap_err().to_string();
        assert!(
            e.contains("--overlay-direct-routing") && e.contains("--overlay too"),
            "{e}"
        );
    }
}
