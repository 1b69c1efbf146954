//! Logged connections: an egress rule with `log: true` sends the first packet of each
//! connection it allows to the bridge's NFLOG group ([`group`]); [`Reader`] reads
//! them from a NETLINK_NETFILTER socket (netlink-packet-netfilter) and hands each to
//! a callback as a [`Logged`] connection, which the cell writes to the app's log.
//! [`parse`] (what a packet says) is pure.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

/// The NFLOG group of a bridge's logged connections (1-65535, from its name: cells
/// on one host have groups of their own).
pub fn group(bridge: &str) -> u16 {
    let mut h: u32 = 0x811c9dc5;
    for b in bridge.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    (h % 65535) as u16 + 1
}

/// A connection a container opened that a logged rule allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    /// `tcp`, `udp`, `icmp`, or the IP protocol number.
    pub protocol: String,
    /// The destination port (tcp, udp) or the ICMP type and code.
    pub port: Option<String>,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "egress {} {}", self.protocol, self.destination)?;
        match (&self.port, self.protocol.as_str()) {
            (Some(p), "icmp") => write!(f, " type/code {p}"),
            (Some(p), _) => write!(f, ":{p}"),
            (None, _) => Ok(()),
        }?;
        write!(f, " allowed (a logged egress rule)")
    }
}

/// What an IPv4 packet says about its connection; `None` for anything else.
pub fn parse(packet: &[u8]) -> Option<Logged> {
    let version = packet.first()? >> 4;
    let header = usize::from(packet.first()? & 0x0f) * 4;
    if version != 4 || header < 20 || packet.len() < header {
        return None;
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    let l4 = &packet[header..];
    let (protocol, port) = match packet[9] {
        6 | 17 if l4.len() >= 4 => (
            if packet[9] == 6 { "tcp" } else { "udp" }.to_string(),
            Some(u16::from_be_bytes([l4[2], l4[3]]).to_string()),
        ),
        1 if l4.len() >= 2 => ("icmp".to_string(), Some(format!("{}/{}", l4[0], l4[1]))),
        p => (p.to_string(), None),
    };
    Some(Logged {
        source: addr(12),
        destination: addr(16),
        protocol,
        port,
    })
}

/// Reads a bridge's NFLOG group on a thread of its own until dropped.
pub struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    /// Binds `group` (a group has one reader per host) and calls `on` with each
    /// logged connection.
    pub fn start(group: u16, on: impl Fn(Logged) + Send + 'static) -> anyhow::Result<Reader> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .context("opening a netfilter netlink socket")?;
        socket.bind_auto().context("binding the netfilter socket")?;
        request(
            &mut socket,
            config_request(
                NetfilterProtoFamily::IPv4,
                0,
                vec![ConfigCmd::PfBind.into()],
            ),
        )
        .context("binding NFLOG to IPv4")?;
        request(
            &mut socket,
            config_request(
                NetfilterProtoFamily::IPv4,
                group,
                vec![ConfigCmd::Bind.into()],
            ),
        )
        .with_context(|| format!("binding NFLOG group {group}"))?;
        set_read_timeout(&socket, Duration::from_millis(200))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nflog-{group}"))
            .spawn(move || read(socket, &flag, on))?;
        Ok(Reader {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a configuration request and waits for the kernel's acknowledgement.
fn request(
    socket: &mut netlink_sys::Socket,
    msg: NetlinkMessage<NetfilterMessage>,
) -> anyhow::Result<()> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answer = vec![0u8; 4096];
    let n = socket.recv(&mut &mut answer[..], 0)?;
    let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&answer[..n])
        .map_err(|e| anyhow::anyhow!("unreadable netlink answer: {e}"))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io().into()),
        _ => Ok(()),
    }
}

fn set_read_timeout(socket: &netlink_sys::Socket, timeout: Duration) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval that outlives the call, passed with its size;
    // the descriptor is the open socket's.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        r == 0,
        "setting a read timeout: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reads logged packets until `stop` is set.
fn read(socket: netlink_sys::Socket, stop: &AtomicBool, on: impl Fn(Logged)) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("reading logged connections: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let mut at = 0;
        while at < n {
            let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[at..n]) else {
                break;
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = &msg.payload
            {
                for nla in nlas {
                    if let PacketNla::Payload(p) = nla {
                        if let Some(logged) = parse(p) {
                            on(logged);
                        }
                    }
                }
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_say_who_connected_where() {
        let mut tcp = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 9, 0, 2, 1, 2, 3, 4,
        ];
        tcp.extend([0xc0, 0x00, 0x01, 0xbb]);
        let got = parse(&tcp).unwrap();
        assert_eq!(got.source, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(
            got.to_string(),
            "egress tcp 1.2.3.4:443 allowed (a logged egress rule)"
        );
        let mut icmp = tcp[..20].to_vec();
        icmp[9] = 1;
        icmp.extend([8, 0]);
        assert_eq!(
            parse(&icmp).unwrap().to_string(),
            "egress icmp 1.2.3.4 type/code 8/0 allowed (a logged egress rule)"
        );
        assert_eq!(parse(&[0x60, 0, 0, 0]), None, "IPv6");
        assert_eq!(parse(&tcp[..10]), None, "cut short");
        assert_ne!(group("lattice0"), group("lattice1"));
        assert_ne!(group("x"), 0);
    }
}
