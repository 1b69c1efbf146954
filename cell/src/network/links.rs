//! Links: the cell's bridge and containers' veth pairs, made and removed. One way to
//! the kernel: rtnetlink requests (RTM_NEWLINK, RTM_DELLINK), each answered before
//! the next step. How an interface is configured once it exists (its addresses, its
//! routes) is [`super::addresses`]'s business.
//!
//! Where the next links go: a request builder here, sent through `request` (the
//! overlay's VXLAN device and forwarding entries are [`super::vxlan`]'s).

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use anyhow::Context;

/// A NETLINK_ROUTE socket, opened in the calling thread's network namespace.
pub(super) fn socket() -> anyhow::Result<netlink_sys::Socket> {
    let mut rtnl = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
        .context("opening a netlink socket")?;
    rtnl.bind_auto().context("binding the netlink socket")?;
    Ok(rtnl)
}

/// Whether interface `name` exists in the calling thread's network namespace: an
/// RTM_GETLINK by name. (Not /sys/class/net: sysfs shows the devices of the namespace
/// that mounted it, the root one, even to a cell running in a namespace of its own.)
pub(super) fn exists(name: &str) -> bool {
    match get_link(name) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                interface = name,
                "asking the kernel for an interface: {e:#}"
            );
            false
        }
    }
}

/// RTM_GETLINK for `name`: whether the kernel knows it.
fn get_link(name: &str) -> anyhow::Result<bool> {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.into()));
    let mut msg = NetlinkMessage::new(
        Default::default(),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(link)),
    );
    msg.header.flags = NLM_F_REQUEST;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    let rtnl = socket()?;
    rtnl.send(&buf, 0)?;
    // The answer is the whole link (statistics, bridge settings): room for it.
    let mut answer = vec![0u8; 64 * 1024];
    let n = rtnl.recv(&mut &mut answer[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..n])
        .map_err(|e| anyhow::anyhow!("unreadable netlink answer: {e}"))?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            Some(_) if e.to_io().raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Some(_) => Err(e.to_io().into()),
            None => Ok(true),
        },
        _ => Ok(true),
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub(super) fn index(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads
    // it; the function has no other preconditions.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    anyhow::ensure!(
        index != 0,
        "no interface {name}: {}",
        std::io::Error::last_os_error()
    );
    Ok(index)
}

/// Sends `message` as a request and waits for the kernel's answer.
pub(super) fn request(
    rtnl: &mut netlink_sys::Socket,
    message: RouteNetlinkMessage,
    flags: u16,
) -> std::io::Result<()> {
    let mut msg = NetlinkMessage::new(Default::default(), NetlinkPayload::InnerMessage(message));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    rtnl.send(&buf, 0)?;
    let mut answer = vec![0u8; 4096];
    let n = rtnl.recv(&mut &mut answer[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..n])
        .map_err(|e| std::io::Error::other(format!("unreadable netlink answer: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}

/// Creates bridge `name`, up (what `ip link add NAME type bridge; ip link set NAME
/// up` does).
pub(super) fn create_bridge(name: &str) -> anyhow::Result<()> {
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes.push(LinkAttribute::IfName(name.into()));
    link.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    request(
        &mut socket()?,
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .with_context(|| format!("creating bridge {name}"))
}

/// Deletes interface `name` (what `ip link del NAME` does).
pub(super) fn delete(name: &str) -> anyhow::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = index(name)?;
    request(&mut socket()?, RouteNetlinkMessage::DelLink(link), 0)
        .with_context(|| format!("deleting {name}"))
}

/// One RTM_NEWLINK on `rtnl`: veth `name`, up, enslaved to interface `bridge`, whose
/// peer is `eth0` in the namespace `peer_ns`. Waits for the kernel's answer.
pub(super) fn new_veth(
    rtnl: &mut netlink_sys::Socket,
    name: &str,
    bridge: u32,
    peer_ns: &std::fs::File,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName("eth0".into()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes.push(LinkAttribute::IfName(name.into()));
    link.attributes.push(LinkAttribute::Controller(bridge));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    request(
        rtnl,
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}
