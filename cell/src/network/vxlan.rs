//! The overlay's kernel side: the VXLAN device and, per peer cell, its forwarding
//! entries — what `ip link add DEV type vxlan id VNI local ADDR dstport PORT
//! nolearning`, `bridge fdb replace MAC dev DEV dst PEER self permanent`, `ip neigh
//! replace GW lladdr MAC dev DEV nud permanent` and `ip route replace SUBNET via GW
//! dev DEV onlink` do, as rtnetlink requests sent through [`super::links`]. Each
//! works in the calling thread's network namespace. Which peers there are is
//! [`super::overlay`]'s decision.

use std::net::Ipv4Addr;

use anyhow::Context;
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags};
use netlink_packet_route::link::{LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlags, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links;
use super::overlay::Peer;
use super::OverlayConfig;

/// The VXLAN device's MTU: a 1500-byte underlay less VXLAN's 50 bytes of headers, so
/// that encapsulated packets are never fragmented (a container's larger packets get
/// "fragmentation needed" and its TCP sends smaller segments).
pub const MTU: u32 = 1450;

/// Makes the VXLAN device of `cfg` with hardware address `mac`, up, learning off (the
/// forwarding entries say where every peer is), forwarding on. One left by an
/// earlier run is made again.
pub(super) fn create(cfg: &OverlayConfig, mac: [u8; 6]) -> anyhow::Result<()> {
    if links::index(&cfg.device).is_ok() {
        links::delete(&cfg.device)?;
    }
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes
        .push(LinkAttribute::IfName(cfg.device.clone()));
    link.attributes.push(LinkAttribute::Address(mac.to_vec()));
    link.attributes.push(LinkAttribute::Mtu(MTU));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(cfg.vni),
            InfoVxlan::Local(cfg.local),
            InfoVxlan::Port(cfg.port),
            InfoVxlan::Learning(false),
        ])),
    ]));
    links::request(
        &mut links::socket()?,
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .with_context(|| format!("creating the VXLAN device {}", cfg.device))?;
    let sysctl = format!("/proc/sys/net/ipv4/conf/{}/forwarding", cfg.device);
    std::fs::write(&sysctl, "1").with_context(|| format!("turning on {sysctl}"))
}

/// The neighbour-table message of `mac` at `addr` on interface `index`.
fn neighbour(family: AddressFamily, index: u32, addr: Ipv4Addr, mac: [u8; 6]) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header.family = family;
    n.header.ifindex = index;
    n.header.state = NeighbourState::Permanent;
    if family == AddressFamily::Bridge {
        // The VXLAN device's own forwarding database, not a bridge's.
        n.header.flags = NeighbourFlags::Own;
    }
    n.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    n.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    n
}

/// The route to `subnet` through `gateway` on interface `index`, on-link (the
/// gateway need not be on the interface's network: it is resolved by the neighbour
/// entry [`add_peer`] makes).
fn route(index: u32, subnet: Ipv4Net, gateway: Ipv4Addr) -> RouteMessage {
    let mut r = super::direct::route(index, subnet, gateway);
    r.header.flags = RouteFlags::Onlink;
    r
}

/// Forwarding to `peer` through `device`: its MAC at its host address (FDB), its
/// gateway at its MAC (neighbour), its subnet through its gateway (route).
pub(super) fn add_peer(device: &str, peer: &Peer) -> anyhow::Result<()> {
    let index = links::index(device)?;
    let mut rtnl = links::socket()?;
    let (mac, gw) = (peer.mac(), peer.gateway());
    let fdb = neighbour(AddressFamily::Bridge, index, peer.address, mac);
    let replace = NLM_F_CREATE | NLM_F_REPLACE;
    links::request(&mut rtnl, RouteNetlinkMessage::NewNeighbour(fdb), replace)
        .with_context(|| format!("forwarding {} to {} on {device}", peer.subnet, peer.address))?;
    let neigh = neighbour(AddressFamily::Inet, index, gw, mac);
    links::request(&mut rtnl, RouteNetlinkMessage::NewNeighbour(neigh), replace)
        .with_context(|| format!("adding the neighbour {gw} on {device}"))?;
    let r = route(index, peer.subnet, gw);
    links::request(&mut rtnl, RouteNetlinkMessage::NewRoute(r), replace)
        .with_context(|| format!("routing {} via {gw} on {device}", peer.subnet))
}

/// Removes what [`add_peer`] made; what is already gone is fine.
pub(super) fn remove_peer(device: &str, peer: &Peer) -> anyhow::Result<()> {
    let index = links::index(device)?;
    let mut rtnl = links::socket()?;
    let (mac, gw) = (peer.mac(), peer.gateway());
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
        r => r,
    };
    let r = route(index, peer.subnet, gw);
    gone(links::request(
        &mut rtnl,
        RouteNetlinkMessage::DelRoute(r),
        0,
    ))
    .with_context(|| format!("removing the route to {}", peer.subnet))?;
    let neigh = neighbour(AddressFamily::Inet, index, gw, mac);
    gone(links::request(
        &mut rtnl,
        RouteNetlinkMessage::DelNeighbour(neigh),
        0,
    ))
    .with_context(|| format!("removing the neighbour {gw}"))?;
    let fdb = neighbour(AddressFamily::Bridge, index, peer.address, mac);
    gone(links::request(
        &mut rtnl,
        RouteNetlinkMessage::DelNeighbour(fdb),
        0,
    ))
    .with_context(|| format!("removing the forwarding entry to {}", peer.address))
}
