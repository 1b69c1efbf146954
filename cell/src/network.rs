//! Container networking: a bridge per cell, a network namespace and a veth pair per
//! container, an address from the cell's subnet, and container ports published on the
//! cell at allocated host ports by an in-process TCP forwarder.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;
use tokio::task::JoinHandle;

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
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "lattice0".into(),
            gateway: Ipv4Addr::new(10, 254, 0, 1),
            prefix: 16,
            ports: (61000, 61999),
            publish_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

impl NetworkConfig {
    /// How many container addresses the subnet holds: what the address pool hands out
    /// (offsets 2..=size-2 of `gateway/prefix`: not the network, not .1, not the
    /// broadcast), less the gateway's own when it falls among them.
    pub fn container_addresses(&self) -> u64 {
        let host_bits = 32 - u32::from(self.prefix.min(32));
        let size = 1u64 << host_bits;
        let span = size.saturating_sub(3);
        let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
        let offset = u64::from(u32::from(self.gateway) & !mask);
        span - u64::from(span > 0 && (2..2 + span).contains(&offset))
    }
}

/// Removes a cell's bridge and its firewall table (what [`Network::new`] made).
pub fn remove_bridge(bridge: &str) {
    crate::firewall::remove(bridge);
    if std::path::Path::new("/sys/class/net").join(bridge).exists() {
        if let Err(e) = ip(&["link", "del", bridge], None) {
            tracing::warn!(bridge, "removing the bridge: {e:#}");
        }
    }
}

/// A container's network, as recorded for re-adoption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
}

impl Attachment {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.netns)
    }
}

pub struct Network {
    cfg: NetworkConfig,
    ips: Mutex<IpPool>,
    ports: Mutex<BTreeSet<u16>>,
    forwarders: Mutex<HashMap<u16, JoinHandle<()>>>,
    /// An empty namespace made ahead for the next container (see
    /// [`Network::refill`]): making one is ~0.6 ms of kernel work on the path of a
    /// container's start.
    spare: Mutex<Option<PathBuf>>,
    /// Set by [`Network::close`]: no more spares.
    closed: std::sync::atomic::AtomicBool,
}

/// The names of a cell's spare namespaces: `lattice-spare-BRIDGE-PID.START-N`, PID
/// and START (its start time) naming the process that made it, so that a later cell on
/// the bridge knows which ones a process that is gone left behind.
fn spare_name(bridge: &str, owner: (i32, u64), n: u64) -> String {
    format!("lattice-spare-{bridge}-{}.{}-{n}", owner.0, owner.1)
}

/// The process (pid, start time) that made the spare namespace `name` of `bridge`.
fn spare_owner(bridge: &str, name: &str) -> Option<(i32, u64)> {
    let rest = name.strip_prefix(&format!("lattice-spare-{bridge}-"))?;
    let (owner, n) = rest.split_once('-')?;
    let (pid, start) = owner.split_once('.')?;
    n.parse::<u64>().ok()?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// This process, as spare names record it (read once).
fn this_process() -> (i32, u64) {
    static THIS: std::sync::LazyLock<(i32, u64)> = std::sync::LazyLock::new(|| {
        let pid = std::process::id() as i32;
        (pid, crate::shim::proc_stat(pid).map_or(0, |(t, _)| t))
    });
    *THIS
}

/// Removes the spare namespaces of `bridge` whose process is gone.
fn forget_dead_spares(bridge: &str) {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((pid, start)) = spare_owner(bridge, &name) else {
            continue;
        };
        let alive = crate::shim::proc_stat(pid).is_some_and(|(t, zombie)| t == start && !zombie);
        if !alive {
            remove_netns(&entry.path());
        }
    }
}

/// Unmounts and removes the namespace file at `path` (what `ip netns del` does). The
/// kernel destroys the namespace, and what is in it, once nothing holds it.
fn remove_netns(path: &std::path::Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            tracing::warn!(netns = %path.display(), error = %e, "could not unmount the network namespace")
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(netns = %path.display(), error = %e, "could not remove the network namespace")
        }
    }
}

/// Creates the empty file a namespace is mounted on (and its directory); fails when
/// the name is taken.
fn new_mount_point(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// Mounts the namespace mounted at `from` at `to` instead (a bind mount, then the
/// old one goes: moving a mount fails under a shared mount, as `ip netns` makes
/// /run/netns).
fn rename_netns(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    new_mount_point(to)?;
    if let Err(e) = nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(to);
        anyhow::bail!("bind-mounting {} at {}: {e}", from.display(), to.display());
    }
    remove_netns(from);
    Ok(())
}

fn ip(args: &[&str], batch: Option<&str>) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdin(if batch.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("running `ip` (install iproute2: scripts/setup.sh)")?;
    if let Some(b) = batch {
        child.stdin.take().expect("piped").write_all(b.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates an empty network namespace mounted at `netns`, in-process (what `ip netns
/// add` does): a thread of its own unshares a new namespace and bind-mounts it there,
/// so no other thread changes namespace.
fn create_netns(netns: &std::path::Path) -> anyhow::Result<()> {
    new_mount_point(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("creating a network namespace")?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                netns,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the namespace at {}", netns.display()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace creating thread panicked"))?
    })
}

/// Connects the namespace at `netns` to the cell, in-process: one netlink request,
/// sent from the cell's namespace, creates the veth pair with the host side `veth` up
/// on the bridge and its peer `eth0` inside; then a thread that enters the namespace
/// brings loopback and eth0 up with the address and adds the default route.
fn connect_netns(
    netns: &std::path::Path,
    veth: &str,
    bridge: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    // Opened here, in the cell's namespace: the host side is created where it lives.
    let mut rtnl = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
        .context("opening a netlink socket")?;
    rtnl.bind_auto().context("binding the netlink socket")?;
    let bridge_index = if_index(bridge)?;
    let ns = std::fs::File::open(netns)
        .with_context(|| format!("opening the namespace {}", netns.display()))?;
    new_veth(&mut rtnl, veth, bridge_index, &ns)
        .with_context(|| format!("creating veth {veth} on {bridge}"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            // Only this thread moves, and it ends here.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the network namespace")?;
            let sock = inet_socket()?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            if_up(fd, "lo")?;
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            if_addr(fd, "eth0", libc::SIOCSIFADDR, addr)?;
            if_addr(fd, "eth0", libc::SIOCSIFNETMASK, Ipv4Addr::from(mask))?;
            if_up(fd, "eth0")?;
            default_route(fd, gateway)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the network setup thread panicked"))?
    })
}

fn if_index(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a NUL-terminated name, read only for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    anyhow::ensure!(
        index != 0,
        "no interface {name}: {}",
        std::io::Error::last_os_error()
    );
    Ok(index)
}

/// One RTM_NEWLINK: veth `name`, up, enslaved to interface `bridge`, whose peer is
/// `eth0` in the namespace `peer_ns`. Waits for the kernel's answer.
fn new_veth(
    rtnl: &mut netlink_sys::Socket,
    name: &str,
    bridge: u32,
    peer_ns: &std::fs::File,
) -> std::io::Result<()> {
    use netlink_packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
    };
    use netlink_packet_route::link::{
        InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    };
    use netlink_packet_route::RouteNetlinkMessage;
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
    let mut msg = NetlinkMessage::new(
        Default::default(),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)),
    );
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
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

/// Drops the bridge's neighbour (ARP) entry for `addr`; none is fine.
fn forget_neighbour(bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let sock = inet_socket()?;
    // SAFETY: arpreq is plain data; all zeroes is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    req.arp_pa = sockaddr(addr);
    set_ifname(&mut req.arp_dev, bridge);
    match ioctl(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        libc::SIOCDARP,
        &mut req,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        r => r.context("deleting the neighbour entry"),
    }
}

/// An AF_INET datagram socket, the handle the interface ioctls go through.
fn inet_socket() -> anyhow::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    anyhow::ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Writes an interface name into a zeroed, NUL-terminated name field.
fn set_ifname(dst: &mut [libc::c_char; libc::IFNAMSIZ], name: &str) {
    for (d, b) in dst.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = b as libc::c_char;
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
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
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as
    // sockaddr_in because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(fd: i32, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure `request` expects, alive for the call.
    if unsafe { libc::ioctl(fd, request as _, arg as *mut T) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn if_up(fd: i32, name: &str) -> anyhow::Result<()> {
    let mut req = ifreq(name);
    ioctl(fd, libc::SIOCGIFFLAGS, &mut req)
        .with_context(|| format!("reading the flags of {name}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
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

impl Drop for Network {
    fn drop(&mut self) {
        self.close(false);
    }
}

/// Where network namespaces are mounted (where `ip netns` keeps them).
const NETNS_DIR: &str = "/var/run/netns";

/// Where the network namespace of container `handle` is mounted.
pub fn netns_path(handle: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(names(handle).0)
}

/// Interface and namespace names for a container handle (interface names are limited
/// to 15 characters, so the handle is hashed).
pub fn names(handle: &str) -> (String, String) {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in handle.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (
        format!("lattice-{handle}"),
        format!("lv{:012x}", h & 0xffff_ffff_ffff),
    )
}

/// The bridge's addresses in use, handed out round-robin: an address freed by a
/// stopped container comes back only after the rest of the subnet had its turn, so a
/// restarted instance never meets the host's stale ARP entry for its predecessor
/// (which cost seconds of failed health checks).
#[derive(Default)]
struct IpPool {
    used: BTreeSet<Ipv4Addr>,
    /// Offset in the subnet where the next search starts.
    next: u32,
}

impl IpPool {
    fn allocate(&mut self, gateway: Ipv4Addr, prefix: u8) -> anyhow::Result<Ipv4Addr> {
        let base = u32::from(gateway) & (u32::MAX << (32 - prefix as u32));
        let size = 1u32 << (32 - prefix as u32);
        // Offsets 2..size-1: not the network, not .1 by convention, not broadcast.
        let span = size.saturating_sub(3);
        for i in 0..span {
            let off = 2 + (self.next + i) % span;
            let a = Ipv4Addr::from(base + off);
            if a != gateway && !self.used.contains(&a) {
                self.used.insert(a);
                self.next = off - 2 + 1;
                return Ok(a);
            }
        }
        anyhow::bail!("no free address left in {gateway}/{prefix}")
    }
}

impl Network {
    /// Creates the bridge when it is missing.
    pub fn new(cfg: NetworkConfig) -> anyhow::Result<Network> {
        let exists = std::path::Path::new("/sys/class/net")
            .join(&cfg.bridge)
            .exists();
        if !exists {
            let addr = format!("{}/{}", cfg.gateway, cfg.prefix);
            let batch = format!(
                "link add {b} type bridge\naddr add {addr} dev {b}\nlink set {b} up\n",
                b = cfg.bridge
            );
            ip(&["-batch", "-"], Some(&batch))
                .with_context(|| format!("creating bridge {}", cfg.bridge))?;
        }
        crate::firewall::install(&cfg.bridge)?;
        forget_dead_spares(&cfg.bridge);
        Ok(Network {
            cfg,
            ips: Mutex::new(IpPool::default()),
            ports: Mutex::new(BTreeSet::new()),
            forwarders: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            closed: Default::default(),
        })
    }

    /// Makes an empty namespace ahead for the next container, unless one waits.
    pub fn refill(&self) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut spare = self.spare.lock().unwrap();
        if spare.is_some() || self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(NETNS_DIR).join(spare_name(&self.cfg.bridge, this_process(), n));
        // A name of this process's own: nothing else made it.
        match create_netns(&path) {
            Ok(()) => *spare = Some(path),
            Err(e) => {
                tracing::warn!("could not make a spare network namespace: {e:#}");
                remove_netns(&path);
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
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(path) = spare.take() {
            remove_netns(&path);
        }
        if idle {
            remove_bridge(&self.cfg.bridge);
        }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    fn allocate_ip(&self) -> anyhow::Result<Ipv4Addr> {
        self.ips
            .lock()
            .unwrap()
            .allocate(self.cfg.gateway, self.cfg.prefix)
    }

    /// Reserves a container's address and names its namespace and veth; nothing is
    /// made yet: [`Network::create`] makes the namespace, [`Network::connect`] wires it
    /// to the cell (in steps: the container can be created in the namespace while it
    /// is being connected), [`Network::detach`] undoes whatever was done.
    pub fn reserve(&self, handle: &str) -> anyhow::Result<Attachment> {
        let (netns, veth) = names(handle);
        Ok(Attachment {
            netns,
            veth,
            ip: self.allocate_ip()?,
        })
    }

    /// Makes a reserved attachment's network namespace, empty: the spare one renamed
    /// when there is one.
    pub fn create(&self, att: &Attachment) -> anyhow::Result<()> {
        let target = att.netns_path();
        if let Some(spare) = self.spare.lock().unwrap().take() {
            match rename_netns(&spare, &target) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!("could not use the spare network namespace: {e:#}");
                    remove_netns(&spare);
                }
            }
        }
        // In-process, no `ip` run: an exec costs milliseconds.
        create_netns(&target).with_context(|| format!("making the network namespace {}", att.netns))
    }

    /// Wires a created namespace to the cell: its veth pair on the bridge, the
    /// container's address and default route.
    pub fn connect(&self, att: &Attachment) -> anyhow::Result<()> {
        connect_netns(
            &att.netns_path(),
            &att.veth,
            &self.cfg.bridge,
            att.ip,
            self.cfg.prefix,
            self.cfg.gateway,
        )
        .with_context(|| format!("connecting the network namespace {}", att.netns))
    }

    /// Records an attachment that survived a rep restart.
    pub fn adopt(&self, att: &Attachment) {
        self.ips.lock().unwrap().used.insert(att.ip);
    }

    /// Removes a container's veth and namespace and frees its address. Idempotent.
    pub fn detach(&self, att: &Attachment) {
        // In-process, no `ip` run (an exec costs milliseconds). The neighbour entry
        // goes first: the host must not keep talking to the old MAC when the address
        // comes back. Then the namespace's mount and file go, which is what `ip netns
        // del` does; that is enough: the kernel destroys the namespace and the veth pair
        // with it once nothing holds it, in the background (deleting the veth ourselves
        // waits for RCU: 15-50 ms per container).
        if let Err(e) = forget_neighbour(&self.cfg.bridge, att.ip) {
            tracing::warn!(ip = %att.ip, error = %e, "could not remove the container's neighbour entry");
        }
        remove_netns(&att.netns_path());
        self.ips.lock().unwrap().used.remove(&att.ip);
    }

    /// Publishes `target` at a free host port (or at `want`, when re-adopting), with a
    /// forwarder that runs until [`Network::unpublish`].
    pub async fn publish(&self, target: SocketAddr, want: Option<u16>) -> anyhow::Result<u16> {
        let candidates: Vec<u16> = match want {
            Some(p) => vec![p],
            None => {
                let used = self.ports.lock().unwrap().clone();
                (self.cfg.ports.0..=self.cfg.ports.1)
                    .filter(|p| !used.contains(p))
                    .collect()
            }
        };
        for port in candidates {
            if !self.ports.lock().unwrap().insert(port) {
                continue;
            }
            // A port we must have back (re-adoption) may still be held for a moment
            // by the process that had it: retry that one briefly.
            let attempts = if want.is_some() { 40 } else { 1 };
            for attempt in 0..attempts {
                match tokio::net::TcpListener::bind((self.cfg.publish_ip, port)).await {
                    Ok(listener) => {
                        let task = tokio::spawn(forward(listener, target));
                        self.forwarders.lock().unwrap().insert(port, task);
                        return Ok(port);
                    }
                    Err(_) if attempt + 1 < attempts => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(_) => {}
                }
            }
            if want.is_some() {
                self.ports.lock().unwrap().remove(&port);
            }
            // Otherwise someone else holds it: leave it marked so we do not try again.
        }
        anyhow::bail!(
            "no free host port in {}-{} for {target}",
            self.cfg.ports.0,
            self.cfg.ports.1
        )
    }

    /// Stops publishing a host port and frees it.
    pub fn unpublish(&self, port: u16) {
        if let Some(task) = self.forwarders.lock().unwrap().remove(&port) {
            task.abort();
        }
        self.ports.lock().unwrap().remove(&port);
    }

    /// Host ports in use (metrics, tests).
    pub fn published(&self) -> usize {
        self.forwarders.lock().unwrap().len()
    }
}

async fn forward(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(async move {
            // A refused backend closes the client at once: routers retry elsewhere.
            if let Ok(mut backend) = tokio::net::TcpStream::connect(target).await {
                let _ = backend.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_say_whose_they_are() {
        let name = spare_name("lbr0", (4242, 123456), 7);
        assert_eq!(spare_owner("lbr0", &name), Some((4242, 123456)));
        // Another bridge's spares are not this one's, even when its name extends it.
        let other = spare_name("lbr0-2", (4242, 123456), 7);
        assert_eq!(spare_owner("lbr0", &other), None);
        assert_eq!(spare_owner("lbr0", "lattice-spare-lbr0-12-3"), None);
        assert_eq!(spare_owner("lbr0", "lattice-web-1"), None);
    }

    #[test]
    fn addresses_come_back_only_after_the_others() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut pool = IpPool::default();
        let a = pool.allocate(gw, 29).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        pool.used.remove(&a);
        let got: Vec<_> = (0..5).map(|_| pool.allocate(gw, 29).unwrap()).collect();
        assert_eq!(
            got.iter().map(|a| a.octets()[3]).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 2],
            "the freed .2 comes last"
        );
        assert!(pool.allocate(gw, 29).is_err(), "a /29 holds 5");
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        let (ns, veth) = names("0b6c1f2e-4e1c-4c55-9f0e-8b2a4b0f9d11");
        assert!(veth.len() <= 15, "{veth}");
        assert!(ns.starts_with("lattice-"));
        assert_ne!(names("a").1, names("b").1);
    }
}
