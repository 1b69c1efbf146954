//! Container networking: a bridge per cell, a network namespace and a veth pair per
//! container, an address from the cell's subnet, and container ports published on the
//! cell at allocated host ports by an in-process TCP forwarder.
//!
//! [`Network`] holds the decisions and the state (which address, which port, the
//! spare namespace, the forwarders) and asks the kernel through [`Host`]. The rooms:
//! - [`allocation`]: container addresses and host ports, pure;
//! - [`namespace`]: network namespaces (unshare, setns, bind mounts);
//! - [`links`]: the bridge and veth pairs (rtnetlink);
//! - [`addresses`]: interfaces' addresses, routes and neighbours (interface ioctls);
//! - [`firewall`]: the host's nftables table per bridge (`nft`): the host closed to
//!   containers, their egress rules, outbound NAT and forwarding;
//! - [`forwarder`]: published ports (tokio sockets);
//! - [`nflog`]: connections logged by egress rules (NFLOG over netlink);
//! - [`host`]: the [`Host`] trait, the kernel's implementation and a recording fake;
//! - [`lease`]: the cell's subnet and the cluster's settings, from its BBS lease;
//! - [`overlay`]: the overlay to the other cells' subnets (pure decisions, runner),
//!   its kernel side in [`vxlan`] and, for peers routed directly, [`direct`].
//!
//! A container's DNS lives in [`crate::dns`]; its files are written with its root.

pub mod addresses;
pub mod allocation;
pub mod direct;
pub mod firewall;
pub mod forwarder;
pub mod host;
pub mod lease;
pub mod links;
pub mod namespace;
pub mod nflog;
pub mod overlay;
#[cfg(test)]
mod overlay_kernel;
#[cfg(test)]
mod tests;
pub mod vxlan;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use lattice_specs::models::SecurityGroupRule;

use allocation::{IpPool, PortPool};
use forwarder::Forwarder;
pub use host::{Host, KernelHost};
pub use namespace::{names, netns_path};

/// The cell's network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bridge name (at most 15 characters).
    pub bridge: String,
    /// The bridge's address; containers get the other addresses of its /prefix.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// Host ports handed out to published container ports (inclusive).
    pub ports: (u16, u16),
    /// The host address published ports listen on (the cell's address), never every
    /// interface: apps are reached through it or the router, not on every address of
    /// the host.
    pub publish_ip: std::net::IpAddr,
    /// The whole cluster's container network, every cell's subnet inside it (from the
    /// BBS's subnet lease); `None`: only this cell's subnet. Traffic to it is
    /// container-to-container: never masqueraded, governed apart from egress rules.
    pub cluster_network: Option<(Ipv4Addr, u8)>,
    /// The cluster's internal DNS domain: `APP.<domain>` names an app's instances.
    pub internal_domain: String,
    /// The egress rules of workloads that bring none (empty: allow everything).
    pub default_egress: Vec<SecurityGroupRule>,
    /// The overlay to the other cells' container subnets; `None`: no overlay.
    pub overlay: Option<OverlayConfig>,
}

/// The VXLAN overlay between cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// The VXLAN device's name (at most 15 characters).
    pub device: String,
    /// The VXLAN network identifier, the same on every cell of the cluster.
    pub vni: u32,
    /// The UDP port VXLAN traffic goes to (the same on every cell).
    pub port: u16,
    /// This cell's address on the hosts' network (where other cells send its traffic).
    pub local: Ipv4Addr,
    /// Direct routing: the cells whose host is on this host's link (the network of
    /// the interface holding `local`) are reached by a plain route through their host,
    /// without VXLAN; the others through VXLAN. The same on every cell of the
    /// cluster (a cell routing directly sends its containers' packets as they are,
    /// which a cell without direct routing refuses). Leave off where the hosts'
    /// network drops packets whose addresses are not the hosts' own (clouds'
    /// source/destination checks).
    pub direct_routing: bool,
}

/// The internal DNS domain unless the cluster sets another.
pub const DEFAULT_INTERNAL_DOMAIN: &str = "apps.internal";

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "lattice0".into(),
            gateway: Ipv4Addr::new(10, 254, 0, 1),
            prefix: 16,
            ports: (61000, 61999),
            publish_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            cluster_network: None,
            internal_domain: DEFAULT_INTERNAL_DOMAIN.into(),
            default_egress: Vec::new(),
            overlay: None,
        }
    }
}

impl NetworkConfig {
    /// How many container addresses the subnet holds: what the address pool hands out
    /// (offsets 2..=size-2 of `gateway/prefix`: not the network, not .1, not the
    /// broadcast), less the gateway's own when it falls among them.
    pub fn container_addresses(&self) -> u64 {
        allocation::container_addresses(self.gateway, self.prefix)
    }
}

/// Removes a cell's bridge and its firewall table (what [`Network::new`] made).
pub fn remove_bridge(bridge: &str) {
    KernelHost.remove_bridge(bridge);
}

/// A container's network, as recorded for re-adoption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
}

impl Attachment {
    /// Where the attachment's namespace is mounted.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(namespace::NETNS_DIR).join(&self.netns)
    }
}

/// The cell's container network: the addresses and host ports handed out, the spare
/// namespace made ahead, the forwarders of published ports, and the [`Host`] that does
/// what is decided here.
pub struct Network {
    cfg: NetworkConfig,
    host: Arc<dyn Host>,
    ips: Mutex<IpPool>,
    ports: Mutex<PortPool>,
    forwarders: Mutex<HashMap<u16, Forwarder>>,
    /// An empty namespace made ahead for the next container (see
    /// [`Network::refill`]): making one is ~0.6 ms of kernel work on the path of a
    /// container's start.
    spare: Mutex<Option<PathBuf>>,
    /// Set by [`Network::close`]: no more spares.
    closed: AtomicBool,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.close(false);
    }
}

impl Network {
    /// Creates the bridge when it is missing.
    pub fn new(cfg: NetworkConfig) -> anyhow::Result<Network> {
        Network::with_host(cfg, Arc::new(KernelHost))
    }

    /// A network on `host`: its bridge set up.
    pub fn with_host(cfg: NetworkConfig, host: Arc<dyn Host>) -> anyhow::Result<Network> {
        host.set_up_bridge(&cfg)?;
        Ok(Network {
            ports: Mutex::new(PortPool::new(cfg.ports)),
            cfg,
            host,
            ips: Mutex::new(IpPool::default()),
            forwarders: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            closed: Default::default(),
        })
    }

    /// Makes an empty namespace ahead for the next container, unless one waits.
    pub fn refill(&self) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut spare = self.spare.lock().unwrap();
        if spare.is_some() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = namespace::spare_name(&self.cfg.bridge, namespace::this_process(), n);
        let path = PathBuf::from(namespace::NETNS_DIR).join(name);
        // A name of this process's own: nothing else made it.
        match self.host.create_netns(&path) {
            Ok(()) => *spare = Some(path),
            Err(e) => {
                tracing::warn!("could not make a spare network namespace: {e:#}");
                self.host.remove_netns(&path);
            }
        }
    }

    /// The spare namespace made ahead, if one waits.
    pub fn spare_netns(&self) -> Option<PathBuf> {
        self.spare.lock().unwrap().clone()
    }

    /// Removes the spare namespace and makes no more (the cell stops); with no
    /// container left (`idle`), the bridge and its firewall go too.
    pub fn close(&self, idle: bool) {
        let mut spare = self.spare.lock().unwrap();
        self.closed.store(true, Ordering::SeqCst);
        if let Some(path) = spare.take() {
            self.host.remove_netns(&path);
        }
        if idle {
            self.host.remove_bridge(&self.cfg.bridge);
        }
    }

    /// The settings the network was made with.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// Reserves a container's address and names its namespace and veth; nothing is
    /// made yet: [`Network::create`] makes the namespace, [`Network::connect`] wires it
    /// to the cell (in steps: the container can be created in the namespace while it
    /// is being connected), [`Network::detach`] undoes whatever was done.
    pub fn reserve(&self, handle: &str) -> anyhow::Result<Attachment> {
        let (netns, veth) = names(handle);
        let ip = self
            .ips
            .lock()
            .unwrap()
            .allocate(self.cfg.gateway, self.cfg.prefix)?;
        Ok(Attachment { netns, veth, ip })
    }

    /// Makes a reserved attachment's network namespace, empty: the spare one renamed
    /// when there is one.
    pub fn create(&self, att: &Attachment) -> anyhow::Result<()> {
        let target = att.netns_path();
        if let Some(spare) = self.spare.lock().unwrap().take() {
            match self.host.rename_netns(&spare, &target) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!("could not use the spare network namespace: {e:#}");
                    self.host.remove_netns(&spare);
                }
            }
        }
        self.host
            .create_netns(&target)
            .with_context(|| format!("making the network namespace {}", att.netns))
    }

    /// Wires a created namespace to the cell: its egress rules (`egress`, the
    /// workload's; none: the cell's default ones) in the firewall first, then its veth
    /// pair on the bridge, the container's address and default route. Rules the
    /// firewall cannot enforce refuse the container.
    pub fn connect(&self, att: &Attachment, egress: &[SecurityGroupRule]) -> anyhow::Result<()> {
        self.set_egress(att, egress)?;
        self.host
            .connect(att, &self.cfg)
            .with_context(|| format!("connecting the network namespace {}", att.netns))
    }

    /// Records an attachment that survived a rep restart, its egress rules installed
    /// again (the firewall was made anew with the bridge).
    pub fn adopt(&self, att: &Attachment, egress: &[SecurityGroupRule]) -> anyhow::Result<()> {
        self.ips.lock().unwrap().adopt(att.ip);
        self.set_egress(att, egress)
    }

    /// The effective egress rules of a container (its own, or the default ones when it
    /// brings none) in the firewall.
    fn set_egress(&self, att: &Attachment, egress: &[SecurityGroupRule]) -> anyhow::Result<()> {
        let (rules, field) = if egress.is_empty() {
            (&self.cfg.default_egress[..], "default_egress")
        } else {
            (egress, "egress_rules")
        };
        let group = nflog::group(&self.cfg.bridge);
        let chain = firewall::egress::chain(att.ip, rules, field, group)?;
        tracing::debug!(ip = %att.ip, rules = rules.len(), "egress rules");
        self.host.set_egress(&self.cfg.bridge, &chain)
    }

    /// Removes a container's veth, namespace and egress rules and frees its address.
    /// Idempotent.
    pub fn detach(&self, att: &Attachment) {
        // The neighbour entry goes first: the host must not keep talking to the old
        // MAC when the address comes back. Then the namespace's mount and file go,
        // which is what `ip netns del` does; that is enough: the kernel destroys the
        // namespace and the veth pair with it once nothing holds it, in the background
        // (deleting the veth ourselves waits for RCU: 15-50 ms per container).
        if let Err(e) = self.host.forget_neighbour(&self.cfg.bridge, att.ip) {
            tracing::warn!(ip = %att.ip, error = %e, "could not remove the container's neighbour entry");
        }
        self.host.remove_netns(&att.netns_path());
        if let Err(e) = self.host.remove_egress(&self.cfg.bridge, att.ip) {
            tracing::warn!(ip = %att.ip, error = %e, "could not remove the container's egress rules");
        }
        self.ips.lock().unwrap().free(att.ip);
    }

    /// Publishes `target` at a free host port (or at `want`, when re-adopting), with a
    /// forwarder that runs until [`Network::unpublish`].
    pub async fn publish(&self, target: SocketAddr, want: Option<u16>) -> anyhow::Result<u16> {
        let candidates = self.ports.lock().unwrap().candidates(want);
        for port in candidates {
            if !self.ports.lock().unwrap().take(port) {
                continue;
            }
            // A port we must have back (re-adoption) may still be held for a moment
            // by the process that had it: retry that one briefly.
            let attempts = if want.is_some() { 40 } else { 1 };
            for attempt in 0..attempts {
                match self
                    .host
                    .forward((self.cfg.publish_ip, port).into(), target)
                {
                    Ok(forwarder) => {
                        self.forwarders.lock().unwrap().insert(port, forwarder);
                        return Ok(port);
                    }
                    Err(_) if attempt + 1 < attempts => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(_) => {}
                }
            }
            if want.is_some() {
                self.ports.lock().unwrap().free(port);
            }
            // Otherwise someone else holds it: leave it marked so we do not try again.
        }
        Err(self.ports.lock().unwrap().exhausted(target).into())
    }

    /// Stops publishing a host port and frees it.
    pub fn unpublish(&self, port: u16) {
        if let Some(forwarder) = self.forwarders.lock().unwrap().remove(&port) {
            forwarder.stop();
        }
        self.ports.lock().unwrap().free(port);
    }

    /// Opens the cell's lifecycle file server (on the gateway at `port`) to the
    /// containers, at the gateway's port 8080.
    pub fn open_file_server(&self, port: u16) -> anyhow::Result<()> {
        self.host.open_file_server(&self.cfg, port)
    }

    /// Host ports in use (metrics, tests).
    pub fn published(&self) -> usize {
        self.forwarders.lock().unwrap().len()
    }
}
