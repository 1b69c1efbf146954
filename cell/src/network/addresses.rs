//! Addresses: how an existing interface is configured — up, its IPv4 address and
//! netmask, the default route, the bridge's neighbour (ARP) entries. One way to the
//! kernel: the classic interface ioctls on an AF_INET socket, in the namespace of the
//! thread that opens it. Which address a container gets is
//! [`super::allocation`]'s decision, not this module's.
//!
//! Where the next concerns go: a container's resolver configuration (DNS) and routes
//! to other cells (an overlay) are configured next to `configure_container`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::Context;

/// Gives the bridge (up already) the gateway's address in a /`prefix` subnet: the
/// address the cell's containers route through.
pub(super) fn configure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    let sock = inet_socket()?;
    let fd = sock.as_raw_fd();
    if_addr(fd, bridge, libc::SIOCSIFADDR, gateway)?;
    if_addr(fd, bridge, libc::SIOCSIFNETMASK, netmask(prefix))
}

/// Configures the calling thread's namespace as a container's: loopback and eth0 up,
/// eth0 at `addr` in a /`prefix` subnet, the default route through `gateway`.
pub(super) fn configure_container(
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    let sock = inet_socket()?;
    let fd = sock.as_raw_fd();
    if_up(fd, "lo")?;
    if_addr(fd, "eth0", libc::SIOCSIFADDR, addr)?;
    if_addr(fd, "eth0", libc::SIOCSIFNETMASK, netmask(prefix))?;
    if_up(fd, "eth0")?;
    default_route(fd, gateway)
}

/// Drops the bridge's neighbour (ARP) entry for `addr`; none is fine.
pub(super) fn forget_neighbour(bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let sock = inet_socket()?;
    // SAFETY: arpreq is plain old data (integers, byte arrays and sockaddrs); all
    // zeroes is a valid value of it.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    req.arp_pa = sockaddr(addr);
    set_ifname(&mut req.arp_dev, bridge);
    match ioctl(sock.as_raw_fd(), libc::SIOCDARP, &mut req) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        r => r.context("deleting the neighbour entry"),
    }
}

/// The netmask of a /`prefix` subnet.
fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// An AF_INET datagram socket, the handle the interface ioctls go through.
fn inet_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; its result is checked below before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    anyhow::ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh, valid descriptor nobody else owns; the OwnedFd takes
    // sole ownership and closes it once.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Writes an interface name into a zeroed, NUL-terminated name field.
fn set_ifname(dst: &mut [libc::c_char; libc::IFNAMSIZ], name: &str) {
    for (d, b) in dst.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = b as libc::c_char;
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers and
    // sockaddrs); all zeroes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    set_ifname(&mut req.ifr_name, name);
    req
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size and both are plain old data,
    // so every bit pattern of one is a valid other; the kernel reads it as sockaddr_in
    // because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(fd: i32, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: every caller passes as `arg` the structure `request` expects (ifreq,
    // arpreq, rtentry), exclusively borrowed and alive for the call; `fd` is an open
    // socket.
    if unsafe { libc::ioctl(fd, request as _, arg as *mut T) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn if_up(fd: i32, name: &str) -> anyhow::Result<()> {
    let mut req = ifreq(name);
    ioctl(fd, libc::SIOCGIFFLAGS, &mut req)
        .with_context(|| format!("reading the flags of {name}"))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel filled the union's flags member,
    // the one read and written here.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(fd, libc::SIOCSIFFLAGS, &mut req).with_context(|| format!("bringing {name} up"))
}

fn if_addr(fd: i32, name: &str, request: libc::c_ulong, addr: Ipv4Addr) -> anyhow::Result<()> {
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(fd, request, &mut req).with_context(|| format!("setting {addr} on {name}"))
}

/// glibc's `struct rtentry` (not in the libc crate for glibc targets).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn default_route(fd: i32, gateway: Ipv4Addr) -> anyhow::Result<()> {
    const RTF_UP: libc::c_ushort = 0x1;
    const RTF_GATEWAY: libc::c_ushort = 0x2;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(fd, libc::SIOCADDRT, &mut rt)
        .with_context(|| format!("adding the default route via {gateway}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_and_names_are_laid_out_as_the_kernel_reads_them() {
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(29), Ipv4Addr::new(255, 255, 255, 248));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        let req = ifreq("a-name-longer-than-fifteen");
        assert_eq!(req.ifr_name[libc::IFNAMSIZ - 1], 0, "NUL-terminated");
        assert_eq!(req.ifr_name[0], b'a' as libc::c_char);
        let sa = sockaddr(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sin_port (2 bytes) then the address in network order.
        assert_eq!(
            &sa.sa_data[2..6],
            &[10, 0, 0, 2].map(|b: u8| b as libc::c_char)
        );
    }
}
