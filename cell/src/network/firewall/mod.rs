//! The cell's firewall, one nftables table per bridge (`inet lattice_BRIDGE`):
//! - containers may not open connections to the cell's host (every service listening
//!   on the host's addresses would be one connection away), except its DNS server and
//!   its lifecycle file server (at port 8080, redirected) on the gateway;
//! - containers' new outbound connections pass their egress rules (a chain per
//!   container) or are refused at once; container-to-container traffic (the cluster's
//!   container network, or the cell's subnet) passes;
//! - nothing opens a connection into the bridge from elsewhere (containers are reached
//!   through published ports and the router), except other cells' containers;
//! - what leaves for other networks is masqueraded behind the cell's address, with
//!   forwarding on ([`forwarding`]).
//!
//! The rooms: [`table`] and [`egress`] decide (pure, tested), [`forwarding`] keeps the
//! sysctls; this module runs `nft`.

pub mod egress;
pub mod forwarding;
pub mod table;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use super::NetworkConfig;
use egress::EgressChain;

/// The nftables table of a bridge (table names take letters, digits and `_`).
pub fn table_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("lattice_{safe}")
}

/// Runs an nft script, atomically (one transaction).
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install Debian's nftables: scripts/setup.sh does)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The names of the lattice tables installed on the host.
fn tables() -> anyhow::Result<Vec<String>> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .stderr(Stdio::null())
        .output()
        .context("running nft")?;
    anyhow::ensure!(out.status.success(), "nft list tables: {}", out.status);
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(forwarding::lattice_tables(&listing)
        .into_iter()
        .map(String::from)
        .collect())
}

/// Installs (or replaces) the bridge's table and turns forwarding on; `uplink`: the
/// interface directly routed cells' containers arrive through (see [`table::script`]).
pub fn install(cfg: &NetworkConfig, uplink: Option<&str>) -> anyhow::Result<()> {
    forwarding::locked(|| {
        nft(&table::script(cfg, uplink))?;
        forwarding::enable(&cfg.bridge)
    })
    .with_context(|| format!("setting up the firewall and NAT of {}", cfg.bridge))
}

/// Removes the bridge's table, if there is one; with the last lattice table gone,
/// `ip_forward` is restored.
pub fn remove(bridge: &str) {
    let t = table_name(bridge);
    let done = forwarding::locked(|| {
        let _ = nft(&format!("table inet {t}\ndelete table inet {t}\n"));
        forwarding::restore_if_last(tables()?.len())
    });
    if let Err(e) = done {
        tracing::warn!(bridge, "removing the firewall: {e:#}");
    }
}

/// Installs (or replaces) a container's egress chain in the bridge's table.
pub fn set_egress(bridge: &str, chain: &EgressChain) -> anyhow::Result<()> {
    nft(&egress::install_script(&table_name(bridge), chain))
        .with_context(|| format!("installing the egress rules of {}", chain.ip))
}

/// Removes a container's egress chain; a missing one is fine.
pub fn remove_egress(bridge: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
    nft(&egress::remove_script(&table_name(bridge), ip))
        .with_context(|| format!("removing the egress rules of {ip}"))
}

/// Opens the lifecycle file server on the gateway at `port` to the bridge's
/// containers (at the gateway's port 8080), replacing what an earlier call did.
pub fn open_file_server(cfg: &NetworkConfig, port: u16) -> anyhow::Result<()> {
    nft(&table::file_server_script(cfg, port))
        .with_context(|| format!("opening the lifecycle file server to {}", cfg.bridge))
}

/// Whether the bridge's table is installed.
pub fn installed(bridge: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", &table_name(bridge)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the bridge's table holds an egress chain for `ip` (tests, diagnostics).
pub fn has_egress(bridge: &str, ip: Ipv4Addr) -> bool {
    Command::new("nft")
        .args([
            "list",
            "chain",
            "inet",
            &table_name(bridge),
            &egress::chain_name(ip),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
