//! The overlay's direct routes, kernel side: the interface holding the overlay's
//! local address and its network (what `ip -4 addr show` tells), and, per peer cell
//! whose host is a neighbour on it, what `ip route replace SUBNET via PEER_HOST dev
//! UPLINK` does, as an rtnetlink request sent through [`super::links`]. Each works in
//! the calling thread's network namespace. Which peers are routed directly is
//! [`super::overlay`]'s decision.

use std::net::Ipv4Addr;

use anyhow::Context;
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links;
use super::overlay::{Peer, Uplink};

/// The interface holding `local`, and its network (the address's prefix).
pub(super) fn uplink(local: Ipv4Addr) -> anyhow::Result<Uplink> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing this host's addresses")?;
    for a in addrs {
        let address = a.address.as_ref().and_then(|s| s.as_sockaddr_in());
        let netmask = a.netmask.as_ref().and_then(|s| s.as_sockaddr_in());
        let (Some(address), Some(netmask)) = (address, netmask) else {
            continue;
        };
        if address.ip() != local {
            continue;
        }
        let prefix = u32::from(netmask.ip()).count_ones() as u8;
        let network = Ipv4Net::new(local, prefix)
            .context("an interface's netmask")?
            .trunc();
        return Ok(Uplink {
            device: a.interface_name,
            network,
        });
    }
    anyhow::bail!(
        "direct routing: no interface of this host has the overlay's address {local} (give --overlay-address an address of this host)"
    )
}

/// The route to `subnet` through `gateway` on interface `index` (the gateway a
/// neighbour on its network, as the kernel checks).
pub(super) fn route(index: u32, subnet: Ipv4Net, gateway: Ipv4Addr) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.destination_prefix_length = subnet.prefix_len();
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = RouteProtocol::Static;
    r.header.scope = RouteScope::Universe;
    r.header.kind = RouteType::Unicast;
    r.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            subnet.network(),
        )));
    r.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    r.attributes.push(RouteAttribute::Oif(index));
    r
}

/// The peer's subnet through its host, on `uplink`.
pub(super) fn add(uplink: &str, peer: &Peer) -> anyhow::Result<()> {
    let r = route(links::index(uplink)?, peer.subnet, peer.address);
    links::request(
        &mut links::socket()?,
        RouteNetlinkMessage::NewRoute(r),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .with_context(|| format!("routing {} via {} on {uplink}", peer.subnet, peer.address))
}

/// Removes what [`add`] made; a route already gone is fine.
pub(super) fn remove(uplink: &str, peer: &Peer) -> anyhow::Result<()> {
    let r = route(links::index(uplink)?, peer.subnet, peer.address);
    match links::request(&mut links::socket()?, RouteNetlinkMessage::DelRoute(r), 0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
        r => {
            r.with_context(|| format!("removing the route to {} via {}", peer.subnet, peer.address))
        }
    }
}
