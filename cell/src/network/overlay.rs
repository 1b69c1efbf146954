//! The overlay between cells, flannel-style: each cell has a VXLAN device whose
//! hardware address is derived from its subnet ([`mac_for`]), and for every other
//! cell that announces a subnet and an overlay address (its `CellPresence`), a
//! forwarding entry (that cell's MAC → its host address), a neighbour entry (its
//! subnet's gateway → its MAC) and an on-link route to its subnet via that gateway.
//! A container's packet to another cell's container goes: bridge → route → VXLAN
//! (UDP to the other host) → its VXLAN device → its bridge.
//!
//! With direct routing on (flannel's `DirectRouting`), a cell whose host is a
//! neighbour on this host's link (the network of the interface holding the overlay's
//! local address, its [`Uplink`]) gets a plain route instead: its subnet via its host's
//! address on the uplink, the packets as they are, no encapsulation ([`Via::Direct`]);
//! the others still go through VXLAN.
//!
//! [`wanted`], [`via`], [`routes`] and [`diff`] decide (pure); [`Overlay`] keeps what
//! is programmed and asks the kernel through [`Host`]; [`follow`] polls the BBS's
//! cells and applies the difference until the cell stops, then removes the device
//! (and everything through it) and the direct routes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use lattice_bbs_client::Reads;
use lattice_specs::models::CellPresence;
use tokio_util::sync::CancellationToken;

use super::{Host, OverlayConfig};

/// Another cell's end of the overlay: its container subnet and its host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    pub subnet: Ipv4Net,
    pub address: Ipv4Addr,
}

impl Peer {
    /// The peer's VXLAN device's hardware address.
    pub fn mac(&self) -> [u8; 6] {
        mac_for(self.subnet)
    }

    /// The peer's gateway (its bridge's address), the next hop to its subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        lattice_specs::subnets::gateway(self.subnet)
    }
}

/// How packets to a peer's subnet go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// Encapsulated, through the VXLAN device, to the peer's host (across routers).
    Vxlan,
    /// As they are, routed to the peer's host: a neighbour on this host's uplink.
    Direct,
}

/// A peer and the way to it: what is programmed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub peer: Peer,
    pub via: Via,
}

/// The interface holding the overlay's local address, and its network: the hosts on
/// it are this host's neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub device: String,
    pub network: Ipv4Net,
}

/// The hardware address of the VXLAN device of the cell with `subnet`: locally
/// administered, unicast, the subnet's network address in its last four bytes, so
/// every cell knows every other's without asking.
pub fn mac_for(subnet: Ipv4Net) -> [u8; 6] {
    let [a, b, c, d] = subnet.network().octets();
    [0x0a, 0x1a, a, b, c, d]
}

/// The peers the cells' records call for: every cell but `own_cell` with a subnet
/// and an IPv4 overlay address, unless its subnet overlaps `own_subnet`. Records
/// that do not parse are left out (and logged).
pub fn wanted(cells: &[CellPresence], own_cell: &str, own_subnet: Ipv4Net) -> BTreeSet<Peer> {
    let mut peers = BTreeSet::new();
    for c in cells {
        if c.cell_id == own_cell || c.subnet.is_empty() || c.overlay_address.is_empty() {
            continue;
        }
        let (Ok(subnet), Ok(address)) = (
            c.subnet.parse::<Ipv4Net>(),
            c.overlay_address.parse::<Ipv4Addr>(),
        ) else {
            tracing::warn!(cell = %c.cell_id, subnet = %c.subnet, overlay = %c.overlay_address, "a cell's overlay record does not parse: not forwarding to it");
            continue;
        };
        if subnet.contains(&own_subnet) || own_subnet.contains(&subnet) {
            tracing::warn!(cell = %c.cell_id, %subnet, "a cell announces a subnet overlapping this cell's: not forwarding to it");
            continue;
        }
        peers.insert(Peer {
            subnet: subnet.trunc(),
            address,
        });
    }
    peers
}

/// The way to `peer` from the host whose overlay address is `local`: directly when
/// direct routing found this host's link (`link`, the uplink's network) and the
/// peer's host is on it (not `local` itself, nor the link's network or broadcast
/// address); through VXLAN otherwise.
pub fn via(peer: &Peer, local: Ipv4Addr, link: Option<Ipv4Net>) -> Via {
    match link {
        Some(n)
            if n.contains(&peer.address)
                && peer.address != local
                && (n.prefix_len() >= 31
                    || (peer.address != n.network() && peer.address != n.broadcast())) =>
        {
            Via::Direct
        }
        _ => Via::Vxlan,
    }
}

/// Every peer with its way ([`via`]).
pub fn routes(peers: &BTreeSet<Peer>, local: Ipv4Addr, link: Option<Ipv4Net>) -> BTreeSet<Route> {
    peers
        .iter()
        .map(|&peer| Route {
            peer,
            via: via(&peer, local, link),
        })
        .collect()
}

/// What to change to go from `programmed` to `wanted`: removals first (a peer whose
/// address or way changed is removed, then added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub remove: Vec<Route>,
    pub add: Vec<Route>,
}

pub fn diff(wanted: &BTreeSet<Route>, programmed: &BTreeSet<Route>) -> Changes {
    Changes {
        remove: programmed.difference(wanted).copied().collect(),
        add: wanted.difference(programmed).copied().collect(),
    }
}

/// The cell's overlay: its VXLAN device, its uplink when routing directly, and the
/// routes programmed.
pub struct Overlay {
    cfg: OverlayConfig,
    subnet: Ipv4Net,
    host: Arc<dyn Host>,
    /// Found at start when direct routing is on.
    uplink: Option<Uplink>,
    programmed: Mutex<BTreeSet<Route>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Overlay {
    /// Sets up the VXLAN device of the cell whose subnet is `subnet` and, with direct
    /// routing, finds its uplink (an overlay address no interface holds is an error).
    pub fn start(
        cfg: OverlayConfig,
        subnet: Ipv4Net,
        host: Arc<dyn Host>,
    ) -> anyhow::Result<Overlay> {
        let uplink = match cfg.direct_routing {
            true => Some(host.uplink(cfg.local)?),
            false => None,
        };
        host.set_up_overlay(&cfg, mac_for(subnet))?;
        tracing::info!(device = %cfg.device, vni = cfg.vni, local = %cfg.local, %subnet, direct = ?uplink, "overlay up");
        Ok(Overlay {
            cfg,
            subnet,
            host,
            uplink,
            programmed: Mutex::default(),
            closed: Default::default(),
        })
    }

    /// This cell's subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The uplink direct routes go through (none: direct routing off).
    pub fn uplink(&self) -> Option<&Uplink> {
        self.uplink.as_ref()
    }

    /// The routes programmed now.
    pub fn routes(&self) -> BTreeSet<Route> {
        self.programmed.lock().unwrap().clone()
    }

    /// The peers programmed now, whichever the way.
    pub fn peers(&self) -> BTreeSet<Peer> {
        self.routes().into_iter().map(|r| r.peer).collect()
    }

    /// Programs `wanted` (each peer the way [`via`] says, what [`diff`] says to
    /// change): the number of peers programmed after. A peer that could not be added
    /// is tried again next time.
    pub fn apply(&self, wanted: &BTreeSet<Peer>) -> usize {
        let link = self.uplink.as_ref().map(|u| u.network);
        let wanted = routes(wanted, self.cfg.local, link);
        let mut programmed = self.programmed.lock().unwrap();
        let changes = diff(&wanted, &programmed);
        for r in &changes.remove {
            self.remove(r);
            programmed.remove(r);
        }
        for r in &changes.add {
            let p = &r.peer;
            match self.add(r) {
                Ok(()) => {
                    programmed.insert(*r);
                    tracing::info!(subnet = %p.subnet, address = %p.address, via = ?r.via, "overlay peer added");
                }
                Err(e) => {
                    tracing::warn!(subnet = %p.subnet, address = %p.address, via = ?r.via, "could not add an overlay peer: {e:#}")
                }
            }
        }
        programmed.len()
    }

    fn add(&self, r: &Route) -> anyhow::Result<()> {
        match (r.via, &self.uplink) {
            (Via::Direct, Some(u)) => self.host.add_direct_route(&u.device, &r.peer),
            _ => self.host.add_overlay_peer(&self.cfg.device, &r.peer),
        }
    }

    fn remove(&self, r: &Route) {
        match (r.via, &self.uplink) {
            (Via::Direct, Some(u)) => self.host.remove_direct_route(&u.device, &r.peer),
            _ => self.host.remove_overlay_peer(&self.cfg.device, &r.peer),
        }
        let p = &r.peer;
        tracing::info!(subnet = %p.subnet, address = %p.address, via = ?r.via, "overlay peer removed");
    }

    /// Removes the direct routes, then the VXLAN device and every forwarding entry
    /// with it. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut programmed = self.programmed.lock().unwrap();
        for r in programmed.iter().filter(|r| r.via == Via::Direct) {
            self.remove(r);
        }
        self.host.remove_overlay(&self.cfg.device);
        programmed.clear();
        tracing::info!(device = %self.cfg.device, "overlay removed");
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.close();
    }
}

/// Follows the cells in the BBS every `every` until `shutdown`, programming the
/// overlay to their subnets (`peers` counts them), then closes it. While the BBS
/// cannot be read, what is programmed stays.
pub async fn follow(
    overlay: Arc<Overlay>,
    bbs: Arc<dyn Reads>,
    own_cell: String,
    every: Duration,
    peers: prometheus::IntGauge,
    shutdown: CancellationToken,
) {
    loop {
        match bbs.cells().await {
            Ok(cells) => {
                let n = overlay.apply(&wanted(&cells, &own_cell, overlay.subnet()));
                peers.set(n as i64);
            }
            Err(e) => {
                tracing::warn!(
                    "overlay: cannot read the cells ({}): keeping the peers programmed",
                    e.message
                )
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    overlay.close();
    peers.set(0);
}

#[cfg(test)]
mod tests {
    use super::super::host::{Call, RecordingHost};
    use super::*;

    fn cell(id: &str, subnet: &str, addr: &str) -> CellPresence {
        CellPresence {
            cell_id: id.into(),
            subnet: subnet.into(),
            overlay_address: addr.into(),
            ..Default::default()
        }
    }

    fn peer(subnet: &str, addr: &str) -> Peer {
        Peer {
            subnet: subnet.parse().unwrap(),
            address: addr.parse().unwrap(),
        }
    }

    fn config() -> OverlayConfig {
        OverlayConfig {
            device: "lvx0".into(),
            vni: 7,
            port: 4789,
            local: Ipv4Addr::new(192, 168, 0, 1),
            direct_routing: false,
        }
    }

    fn vxlan(p: Peer) -> Route {
        Route {
            peer: p,
            via: Via::Vxlan,
        }
    }

    fn direct(p: Peer) -> Route {
        Route {
            peer: p,
            via: Via::Direct,
        }
    }

    #[test]
    fn macs_are_local_unicast_and_name_the_subnet() {
        let mac = mac_for("10.255.3.0/24".parse().unwrap());
        assert_eq!(mac, [0x0a, 0x1a, 10, 255, 3, 0]);
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_ne!(mac, mac_for("10.255.4.0/24".parse().unwrap()));
        assert_eq!(
            peer("10.255.3.0/24", "1.2.3.4").gateway(),
            Ipv4Addr::new(10, 255, 3, 1)
        );
    }

    #[test]
    fn peers_are_the_other_cells_with_a_subnet_and_an_overlay_address() {
        let own: Ipv4Net = "10.255.0.0/24".parse().unwrap();
        let cells = [
            cell("me", "10.255.0.0/24", "192.168.0.1"),
            cell("b", "10.255.1.0/24", "192.168.0.2"),
            cell("no-overlay", "10.255.2.0/24", ""),
            cell("no-subnet", "", "192.168.0.4"),
            cell("garbled", "10.255.5.0/99", "192.168.0.5"),
            cell("v6", "10.255.6.0/24", "fe80::1"),
            cell("overlapping", "10.255.0.0/16", "192.168.0.7"),
            cell("c", "10.255.8.0/24", "192.168.0.8"),
        ];
        let w = wanted(&cells, "me", own);
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            [
                peer("10.255.1.0/24", "192.168.0.2"),
                peer("10.255.8.0/24", "192.168.0.8")
            ]
        );
    }

    #[test]
    fn the_diff_removes_the_gone_and_moved_then_adds_the_new() {
        let programmed: BTreeSet<Route> = [
            vxlan(peer("10.255.1.0/24", "192.168.0.2")),
            vxlan(peer("10.255.2.0/24", "192.168.0.3")),
            vxlan(peer("10.255.3.0/24", "192.168.0.4")),
            vxlan(peer("10.255.5.0/24", "192.168.0.6")),
        ]
        .into();
        let wanted: BTreeSet<Route> = [
            vxlan(peer("10.255.1.0/24", "192.168.0.2")),
            // moved to another host
            vxlan(peer("10.255.3.0/24", "192.168.0.9")),
            vxlan(peer("10.255.4.0/24", "192.168.0.5")),
            // the same host, now routed directly
            direct(peer("10.255.5.0/24", "192.168.0.6")),
        ]
        .into();
        let c = diff(&wanted, &programmed);
        assert_eq!(
            c.remove,
            [
                vxlan(peer("10.255.2.0/24", "192.168.0.3")),
                vxlan(peer("10.255.3.0/24", "192.168.0.4")),
                vxlan(peer("10.255.5.0/24", "192.168.0.6")),
            ]
        );
        assert_eq!(
            c.add,
            [
                vxlan(peer("10.255.3.0/24", "192.168.0.9")),
                vxlan(peer("10.255.4.0/24", "192.168.0.5")),
                direct(peer("10.255.5.0/24", "192.168.0.6")),
            ]
        );
        assert_eq!(diff(&wanted, &wanted), Changes::default());
    }

    #[test]
    fn neighbours_on_the_uplink_are_routed_directly_the_others_through_vxlan() {
        let local = Ipv4Addr::new(192, 168, 0, 1);
        let link: Ipv4Net = "192.168.0.0/24".parse().unwrap();
        let to = |addr: &str| via(&peer("10.255.1.0/24", addr), local, Some(link));
        assert_eq!(to("192.168.0.2"), Via::Direct);
        assert_eq!(to("192.168.0.254"), Via::Direct);
        assert_eq!(to("192.168.1.2"), Via::Vxlan, "beyond a router");
        assert_eq!(to("10.0.0.2"), Via::Vxlan);
        assert_eq!(to("192.168.0.1"), Via::Vxlan, "this host itself");
        assert_eq!(to("192.168.0.0"), Via::Vxlan, "the link's network address");
        assert_eq!(to("192.168.0.255"), Via::Vxlan, "its broadcast");
        let p = peer("10.255.1.0/24", "192.168.0.2");
        assert_eq!(via(&p, local, None), Via::Vxlan, "direct routing off");
        // A point-to-point link has no network or broadcast address to avoid.
        let pair: Ipv4Net = "192.168.0.0/31".parse().unwrap();
        let p0 = peer("10.255.1.0/24", "192.168.0.0");
        assert_eq!(via(&p0, local, Some(pair)), Via::Direct);
        let (near, far) = (
            peer("10.255.1.0/24", "192.168.0.2"),
            peer("10.255.2.0/24", "192.168.9.2"),
        );
        assert_eq!(
            routes(&[near, far].into(), local, Some(link)),
            [direct(near), vxlan(far)].into()
        );
    }

    #[test]
    fn the_overlay_programs_the_difference_and_removes_its_device_on_close() {
        let host = Arc::new(RecordingHost::default());
        let own = "10.255.0.0/24".parse().unwrap();
        let o = Overlay::start(config(), own, host.clone()).unwrap();
        let (b, c) = (
            peer("10.255.1.0/24", "192.168.0.2"),
            peer("10.255.2.0/24", "192.168.0.3"),
        );
        assert_eq!(o.apply(&[b, c].into()), 2);
        assert_eq!(o.apply(&[b, c].into()), 2, "nothing to change");
        assert_eq!(o.apply(&[c].into()), 1);
        o.close();
        o.close();
        drop(o);
        let dev = || "lvx0".to_string();
        assert_eq!(
            host.calls(),
            [
                Call::SetUpOverlay(dev(), mac_for(own)),
                Call::AddOverlayPeer(dev(), b),
                Call::AddOverlayPeer(dev(), c),
                Call::RemoveOverlayPeer(dev(), b),
                Call::RemoveOverlay(dev()),
            ]
        );
    }

    #[test]
    fn routing_directly_the_overlay_routes_neighbours_through_the_uplink_and_removes_them_on_close()
    {
        let host = Arc::new(RecordingHost::default());
        let own = "10.255.0.0/24".parse().unwrap();
        let cfg = OverlayConfig {
            direct_routing: true,
            ..config()
        };
        // No interface holds the overlay's address: no overlay, nothing made.
        let refused = Overlay::start(cfg.clone(), own, host.clone());
        assert!(refused.is_err());
        assert_eq!(host.calls(), [Call::Uplink(cfg.local)]);
        host.clear();
        let uplink = Uplink {
            device: "eth0".into(),
            network: "192.168.0.0/24".parse().unwrap(),
        };
        *host.uplink.lock().unwrap() = Some(uplink.clone());
        let o = Overlay::start(cfg.clone(), own, host.clone()).unwrap();
        assert_eq!(o.uplink(), Some(&uplink));
        let (near, far) = (
            peer("10.255.1.0/24", "192.168.0.2"),
            peer("10.255.2.0/24", "192.168.9.3"),
        );
        assert_eq!(o.apply(&[near, far].into()), 2);
        assert_eq!(o.routes(), [direct(near), vxlan(far)].into());
        // The near cell moves beyond a router: VXLAN now.
        let moved = peer("10.255.1.0/24", "192.168.7.2");
        assert_eq!(o.apply(&[moved, far].into()), 2);
        let back = peer("10.255.1.0/24", "192.168.0.4");
        assert_eq!(o.apply(&[back, far].into()), 2);
        o.close();
        o.close();
        let (dev, eth0) = (|| "lvx0".to_string(), || "eth0".to_string());
        assert_eq!(
            host.calls(),
            [
                Call::Uplink(cfg.local),
                Call::SetUpOverlay(dev(), mac_for(own)),
                Call::AddDirectRoute(eth0(), near),
                Call::AddOverlayPeer(dev(), far),
                Call::RemoveDirectRoute(eth0(), near),
                Call::AddOverlayPeer(dev(), moved),
                Call::RemoveOverlayPeer(dev(), moved),
                Call::AddDirectRoute(eth0(), back),
                // Closing: the direct routes (not through the device) go first.
                Call::RemoveDirectRoute(eth0(), back),
                Call::RemoveOverlay(dev()),
            ]
        );
    }

    /// Over the in-process BBS: peers come as cells announce themselves and go as
    /// they leave; the BBS failing keeps them; shutdown removes the device.
    #[tokio::test]
    async fn following_the_cells_adds_and_removes_peers() {
        use lattice_bbs_client::fake::FakeBbs;
        use lattice_bbs_client::{CellWrites, Leases};
        let bbs = FakeBbs::start().await;
        let host = Arc::new(RecordingHost::default());
        let own = "10.255.0.0/24".parse().unwrap();
        let o = Arc::new(Overlay::start(config(), own, host.clone()).unwrap());
        let gauge = prometheus::IntGauge::new("peers", "test").unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(follow(
            o.clone(),
            Arc::new(bbs.clone()),
            "me".into(),
            Duration::from_millis(10),
            gauge.clone(),
            stop.clone(),
        ));
        let lease = bbs.grant_lease(30).await.unwrap();
        let mut b = cell("b", "10.255.1.0/24", "192.168.0.2");
        b.rep_address = "127.0.0.1:1".into();
        b.capacity = Some(Default::default());
        bbs.set_cell_presence(&b, lease).await.unwrap();
        let wait = |n: usize| {
            let o = o.clone();
            async move {
                for _ in 0..500 {
                    if o.peers().len() == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(wait(1).await, "the peer came");
        assert_eq!(gauge.get(), 1);
        bbs.revoke_lease(lease).await.unwrap();
        assert!(wait(0).await, "the peer went");
        stop.cancel();
        run.await.unwrap();
        assert_eq!(
            host.calls().last(),
            Some(&Call::RemoveOverlay("lvx0".into()))
        );
        assert_eq!(gauge.get(), 0);
    }
}
