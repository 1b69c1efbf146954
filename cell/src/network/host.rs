//! The seam between the cell's network decisions and the host kernel: [`Host`] is
//! everything [`super::Network`] asks of the kernel, [`KernelHost`] does it (through
//! [`super::namespace`], [`super::links`], [`super::addresses`], [`super::firewall`],
//! [`super::forwarder`] and, for the overlay, [`super::vxlan`], one way each), and, in
//! tests, `RecordingHost` records the calls in order and does nothing.
//!
//! A new concern is one more method here, with its kernel side in the module it
//! belongs to, as egress rules ([`Host::set_egress`], [`super::firewall`]) and the
//! overlay ([`Host::set_up_overlay`], [`super::vxlan`]) are.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;

use super::firewall::egress::EgressChain;
use super::forwarder::Forwarder;
use super::overlay::{Peer, Uplink};
use super::OverlayConfig;
use super::{addresses, direct, firewall, links, namespace, vxlan, Attachment, NetworkConfig};

/// What the cell's network asks of the host.
pub trait Host: Send + Sync {
    /// The cell's bridge with the gateway's address (made when missing), its firewall
    /// installed, and the spare namespaces of cells that are gone removed.
    fn set_up_bridge(&self, cfg: &NetworkConfig) -> anyhow::Result<()>;
    /// Removes the bridge and its firewall (what [`Host::set_up_bridge`] made).
    fn remove_bridge(&self, bridge: &str);
    /// Makes an empty network namespace mounted at `path`.
    fn create_netns(&self, path: &Path) -> anyhow::Result<()>;
    /// Moves the namespace mounted at `from` to `to`.
    fn rename_netns(&self, from: &Path, to: &Path) -> anyhow::Result<()>;
    /// Unmounts and removes the namespace at `path`; a missing one is fine.
    fn remove_netns(&self, path: &Path);
    /// Wires an attachment's namespace to the bridge: its veth pair, its address,
    /// its default route.
    fn connect(&self, att: &Attachment, cfg: &NetworkConfig) -> anyhow::Result<()>;
    /// Drops the bridge's neighbour entry for `addr`; none is fine.
    fn forget_neighbour(&self, bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()>;
    /// Listens at `at` and forwards connections to `target` until stopped.
    fn forward(&self, at: SocketAddr, target: SocketAddr) -> std::io::Result<Forwarder>;
    /// Installs (or replaces) a container's egress chain in the bridge's firewall.
    fn set_egress(&self, bridge: &str, chain: &EgressChain) -> anyhow::Result<()>;
    /// Removes the egress chain of the container at `ip`; none is fine.
    fn remove_egress(&self, bridge: &str, ip: Ipv4Addr) -> anyhow::Result<()>;
    /// Opens the cell's lifecycle file server, listening on the gateway at `port`,
    /// to its containers at the gateway's port 8080 (see [`crate::fileserver`]).
    fn open_file_server(&self, cfg: &NetworkConfig, port: u16) -> anyhow::Result<()>;
    /// The overlay's VXLAN device with hardware address `mac`, forwarding on (one
    /// left by an earlier run is made again).
    fn set_up_overlay(&self, cfg: &OverlayConfig, mac: [u8; 6]) -> anyhow::Result<()>;
    /// Removes the VXLAN device, and with it every forwarding entry through it; a
    /// missing one is fine.
    fn remove_overlay(&self, device: &str);
    /// Forwarding to another cell's subnet through the VXLAN device `device`.
    fn add_overlay_peer(&self, device: &str, peer: &Peer) -> anyhow::Result<()>;
    /// Removes what [`Host::add_overlay_peer`] made; what is gone already is fine.
    fn remove_overlay_peer(&self, device: &str, peer: &Peer);
    /// The interface holding the overlay's local address `local`, and its network.
    fn uplink(&self, local: Ipv4Addr) -> anyhow::Result<Uplink>;
    /// A plain route to another cell's subnet through its host, a neighbour on the
    /// interface `uplink` (direct routing, no VXLAN).
    fn add_direct_route(&self, uplink: &str, peer: &Peer) -> anyhow::Result<()>;
    /// Removes what [`Host::add_direct_route`] made; what is gone already is fine.
    fn remove_direct_route(&self, uplink: &str, peer: &Peer);
}

/// The host kernel itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelHost;

impl Host for KernelHost {
    fn set_up_bridge(&self, cfg: &NetworkConfig) -> anyhow::Result<()> {
        if !links::exists(&cfg.bridge) {
            links::create_bridge(&cfg.bridge)?;
            addresses::configure_bridge(&cfg.bridge, cfg.gateway, cfg.prefix)
                .with_context(|| format!("creating bridge {}", cfg.bridge))?;
        }
        // Directly routed cells' containers arrive through the uplink.
        let uplink = match &cfg.overlay {
            Some(o) if o.direct_routing => Some(direct::uplink(o.local)?.device),
            _ => None,
        };
        firewall::install(cfg, uplink.as_deref())?;
        namespace::forget_dead_spares(&cfg.bridge);
        Ok(())
    }

    fn remove_bridge(&self, bridge: &str) {
        firewall::remove(bridge);
        if links::exists(bridge) {
            if let Err(e) = links::delete(bridge) {
                tracing::warn!(bridge, "removing the bridge: {e:#}");
            }
        }
    }

    fn create_netns(&self, path: &Path) -> anyhow::Result<()> {
        namespace::create(path)
    }

    fn rename_netns(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
        namespace::rename(from, to)
    }

    fn remove_netns(&self, path: &Path) {
        namespace::remove(path)
    }

    /// In-process: one netlink request, sent from the cell's namespace, creates the
    /// veth pair with the host side up on the bridge and its peer `eth0` inside; then
    /// a thread that enters the namespace configures loopback, eth0 and the route.
    fn connect(&self, att: &Attachment, cfg: &NetworkConfig) -> anyhow::Result<()> {
        // Opened here, in the cell's namespace: the host side is created where it lives.
        let mut rtnl = links::socket()?;
        let bridge_index = links::index(&cfg.bridge)?;
        let netns = att.netns_path();
        let ns = std::fs::File::open(&netns)
            .with_context(|| format!("opening the namespace {}", netns.display()))?;
        links::new_veth(&mut rtnl, &att.veth, bridge_index, &ns)
            .with_context(|| format!("creating veth {} on {}", att.veth, cfg.bridge))?;
        namespace::run_inside(&ns, || {
            addresses::configure_container(att.ip, cfg.prefix, cfg.gateway)
        })
    }

    fn forget_neighbour(&self, bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        addresses::forget_neighbour(bridge, addr)
    }

    fn forward(&self, at: SocketAddr, target: SocketAddr) -> std::io::Result<Forwarder> {
        Forwarder::start(at, target)
    }

    fn set_egress(&self, bridge: &str, chain: &EgressChain) -> anyhow::Result<()> {
        firewall::set_egress(bridge, chain)
    }

    fn remove_egress(&self, bridge: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        firewall::remove_egress(bridge, ip)
    }

    fn open_file_server(&self, cfg: &NetworkConfig, port: u16) -> anyhow::Result<()> {
        firewall::open_file_server(cfg, port)
    }

    fn set_up_overlay(&self, cfg: &OverlayConfig, mac: [u8; 6]) -> anyhow::Result<()> {
        vxlan::create(cfg, mac)
    }

    fn remove_overlay(&self, device: &str) {
        if links::index(device).is_ok() {
            if let Err(e) = links::delete(device) {
                tracing::warn!(device, "removing the VXLAN device: {e:#}");
            }
        }
    }

    fn add_overlay_peer(&self, device: &str, peer: &Peer) -> anyhow::Result<()> {
        vxlan::add_peer(device, peer)
    }

    fn remove_overlay_peer(&self, device: &str, peer: &Peer) {
        if let Err(e) = vxlan::remove_peer(device, peer) {
            tracing::warn!(device, subnet = %peer.subnet, "removing an overlay peer: {e:#}");
        }
    }

    fn uplink(&self, local: Ipv4Addr) -> anyhow::Result<Uplink> {
        direct::uplink(local)
    }

    fn add_direct_route(&self, uplink: &str, peer: &Peer) -> anyhow::Result<()> {
        direct::add(uplink, peer)
    }

    fn remove_direct_route(&self, uplink: &str, peer: &Peer) {
        if let Err(e) = direct::remove(uplink, peer) {
            tracing::warn!(uplink, subnet = %peer.subnet, "removing a direct route: {e:#}");
        }
    }
}

#[cfg(test)]
pub(super) use fake::{Call, RecordingHost};

#[cfg(test)]
mod fake {
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::{
        Attachment, EgressChain, Forwarder, Host, NetworkConfig, OverlayConfig, Peer, Uplink,
    };

    /// A call the network made of its host.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        SetUpBridge(String),
        RemoveBridge(String),
        CreateNetns(PathBuf),
        RenameNetns(PathBuf, PathBuf),
        RemoveNetns(PathBuf),
        Connect(String, Ipv4Addr),
        ForgetNeighbour(String, Ipv4Addr),
        Forward(SocketAddr, SocketAddr),
        /// The bridge, the container's address and its chain's rules.
        SetEgress(String, Ipv4Addr, Vec<String>),
        RemoveEgress(String, Ipv4Addr),
        /// The bridge and the file server's port.
        OpenFileServer(String, u16),
        SetUpOverlay(String, [u8; 6]),
        RemoveOverlay(String),
        AddOverlayPeer(String, Peer),
        RemoveOverlayPeer(String, Peer),
        Uplink(Ipv4Addr),
        AddDirectRoute(String, Peer),
        RemoveDirectRoute(String, Peer),
    }

    /// A host that records the calls in order and does nothing; renames fail when
    /// told to, ports in `taken` cannot be listened on, and its uplink is `uplink`
    /// (none: no interface holds the overlay's address).
    #[derive(Debug, Default)]
    pub struct RecordingHost {
        calls: Mutex<Vec<Call>>,
        pub refuse_rename: std::sync::atomic::AtomicBool,
        pub taken: Mutex<BTreeSet<u16>>,
        pub uplink: Mutex<Option<Uplink>>,
    }

    impl RecordingHost {
        /// The calls so far, oldest first.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// Forgets the calls so far.
        pub fn clear(&self) {
            self.calls.lock().unwrap().clear();
        }

        fn record(&self, call: Call) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Host for RecordingHost {
        fn set_up_bridge(&self, cfg: &NetworkConfig) -> anyhow::Result<()> {
            self.record(Call::SetUpBridge(cfg.bridge.clone()));
            Ok(())
        }

        fn remove_bridge(&self, bridge: &str) {
            self.record(Call::RemoveBridge(bridge.into()));
        }

        fn create_netns(&self, path: &Path) -> anyhow::Result<()> {
            self.record(Call::CreateNetns(path.into()));
            Ok(())
        }

        fn rename_netns(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
            self.record(Call::RenameNetns(from.into(), to.into()));
            let refuse = self.refuse_rename.load(std::sync::atomic::Ordering::SeqCst);
            anyhow::ensure!(!refuse, "renaming refused");
            Ok(())
        }

        fn remove_netns(&self, path: &Path) {
            self.record(Call::RemoveNetns(path.into()));
        }

        fn connect(&self, att: &Attachment, _: &NetworkConfig) -> anyhow::Result<()> {
            self.record(Call::Connect(att.veth.clone(), att.ip));
            Ok(())
        }

        fn forget_neighbour(&self, bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
            self.record(Call::ForgetNeighbour(bridge.into(), addr));
            Ok(())
        }

        fn forward(&self, at: SocketAddr, target: SocketAddr) -> std::io::Result<Forwarder> {
            self.record(Call::Forward(at, target));
            if self.taken.lock().unwrap().contains(&at.port()) {
                return Err(std::io::ErrorKind::AddrInUse.into());
            }
            Ok(Forwarder::idle())
        }

        fn set_egress(&self, bridge: &str, chain: &EgressChain) -> anyhow::Result<()> {
            self.record(Call::SetEgress(
                bridge.into(),
                chain.ip,
                chain.rules.clone(),
            ));
            Ok(())
        }

        fn remove_egress(&self, bridge: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
            self.record(Call::RemoveEgress(bridge.into(), ip));
            Ok(())
        }

        fn open_file_server(&self, cfg: &NetworkConfig, port: u16) -> anyhow::Result<()> {
            self.record(Call::OpenFileServer(cfg.bridge.clone(), port));
            Ok(())
        }

        fn set_up_overlay(&self, cfg: &OverlayConfig, mac: [u8; 6]) -> anyhow::Result<()> {
            self.record(Call::SetUpOverlay(cfg.device.clone(), mac));
            Ok(())
        }

        fn remove_overlay(&self, device: &str) {
            self.record(Call::RemoveOverlay(device.into()));
        }

        fn add_overlay_peer(&self, device: &str, peer: &Peer) -> anyhow::Result<()> {
            self.record(Call::AddOverlayPeer(device.into(), *peer));
            Ok(())
        }

        fn remove_overlay_peer(&self, device: &str, peer: &Peer) {
            self.record(Call::RemoveOverlayPeer(device.into(), *peer));
        }

        fn uplink(&self, local: Ipv4Addr) -> anyhow::Result<Uplink> {
            self.record(Call::Uplink(local));
            let found = self.uplink.lock().unwrap().clone();
            found.ok_or_else(|| anyhow::anyhow!("no interface has {local}"))
        }

        fn add_direct_route(&self, uplink: &str, peer: &Peer) -> anyhow::Result<()> {
            self.record(Call::AddDirectRoute(uplink.into(), *peer));
            Ok(())
        }

        fn remove_direct_route(&self, uplink: &str, peer: &Peer) {
            self.record(Call::RemoveDirectRoute(uplink.into(), *peer));
        }
    }
}
