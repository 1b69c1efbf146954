//! Hosts on a LAN for end-to-end tests: each component runs on a "host" of its own, a
//! network namespace with its own address on 10.77.N.0/24, joined by a veth pair to a
//! bridge living in a "switch" namespace, as machines on a LAN. Nothing is made in the
//! root namespace.
//!
//! A [`Lan`] makes the switch; [`Lan::host`] a host ([`Lan::host_beyond_router`]
//! one on another segment, the switch routing between the two). Processes run on a host with
//! [`Host::command`], which enters the host's network namespace with setns(2) between
//! fork and exec (not `ip netns exec`, which also makes a mount namespace: a cell must
//! share the test's mounts, so its containers' namespace and overlay mounts are seen
//! and cleaned). The test itself reaches a host's services through a [`Tunnel`] (a
//! loopback port of the test's namespace relayed from inside the host) or asks from
//! inside a host with [`Host::run`] / [`Host::http_get`]. [`Host::link_down`] cuts a
//! host off the LAN (its switch port down) and [`Host::link_up`] joins it again.
//!
//! Clean-up: dropping the last handle of a host removes its namespace (the kernel
//! destroys its interfaces and nftables tables with it); dropping the [`Lan`] removes
//! the switch. A cell on a host records itself under [`STATE_DIR`] so that when the
//! test process is killed, the next [`Lan::new`] of any test finds the namespaces of
//! runs whose process is gone (their names carry its pid and start time), kills what
//! runs in them, destroys the containers their cells left (overlay mounts, cgroups and
//! container namespaces live outside the host's namespace), and removes them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where network namespaces are mounted (as `ip netns` keeps them).
const NETNS_DIR: &str = "/var/run/netns";
/// Every namespace of the harness is called `ltlan-PID.START-LAN-HOST`.
const PREFIX: &str = "ltlan-";
/// Where a run records its cells (for the sweep after a killed run).
pub const STATE_DIR: &str = "/run/lattice-test-lans";

/// This process as names record it: its pid and start time (clock ticks after boot).
fn this_process() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", start_time(pid).unwrap_or(0))
}

/// A process's start time, `None` when there is no such process (or a zombie).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    let started = rest.nth(18)?.parse().ok()?;
    (state != "Z").then_some(started)
}

/// Whether the process an owner string (`PID.START`) names is still running.
fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once('.') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// The owner (`PID.START`) in a harness name `ltlan-PID.START-…`.
fn owner_of(name: &str) -> Option<&str> {
    name.strip_prefix(PREFIX)?.split('-').next()
}

/// Runs `ip ARGS`, insisting it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, removed (unmounted) when dropped.
struct Netns {
    name: String,
    file: std::fs::File,
}

impl Netns {
    fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        Netns {
            name: name.into(),
            file: std::fs::File::open(Path::new(NETNS_DIR).join(name))
                .expect("opening the new namespace"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// Unmounts and removes namespace `name` (what `ip netns del` does); gone is fine.
fn remove_netns(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    let _ = nix_umount(&path);
    let _ = std::fs::remove_file(&path);
}

fn nix_umount(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, which only reads it.
    match unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Runs `work` on a thread of its own that entered the network namespace `ns`.
fn inside<T: Send>(ns: &std::fs::File, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns takes a descriptor we hold open and a flag; it moves only
            // this thread, which ends with `work`.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .expect("the thread inside the host panicked")
    })
}

/// A LAN: a switch namespace with a bridge `br0` whose address, 10.77.N.1, is the
/// hosts' default gateway (it forwards nowhere: it is there for routes to point at),
/// and, once a host beyond a router is asked for, a second segment (`br1`,
/// 10.78.N.1) the switch routes to.
pub struct Lan {
    inner: Arc<LanInner>,
}

struct LanInner {
    /// `ltlan-PID.START-LAN`: every namespace of this LAN starts with it.
    name: String,
    /// The third octet of this LAN's 10.77.N.0/24.
    octet: u8,
    next_host: AtomicU8,
    /// Whether the switch routes to a second segment ([`Lan::host_beyond_router`]).
    routing: AtomicBool,
    state: PathBuf,
    switch: Netns,
}

impl Drop for LanInner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Lan {
    /// Sweeps what killed earlier runs left, then makes the switch.
    pub fn new() -> Lan {
        lattice_cell::testing::require_root();
        sweep_leftovers();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}", this_process());
        let state = Path::new(STATE_DIR).join(&name);
        std::fs::create_dir_all(&state).expect("creating the harness's state directory");
        let octet = ((std::process::id() + n * 37) % 250 + 2) as u8;
        let switch = Netns::create(&format!("{name}-switch"));
        let gw = format!("10.77.{octet}.1/24");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", &gw, "dev", "br0"],
            vec!["link", "set", "br0", "up"],
        ] {
            ip(&[&["-n", &switch.name], &args[..]].concat());
        }
        Lan {
            inner: Arc::new(LanInner {
                name,
                octet,
                next_host: AtomicU8::new(10),
                routing: AtomicBool::new(false),
                state,
                switch,
            }),
        }
    }

    /// The hosts' default gateway (the switch's own address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.inner.octet, 1)
    }

    /// A new host `name` (letters and digits) with the next address of the LAN.
    pub fn host(&self, name: &str) -> Host {
        let k = self.inner.next_host.fetch_add(1, Ordering::SeqCst);
        let address = Ipv4Addr::new(10, 77, self.inner.octet, k);
        self.attach(name, "br0", address, self.gateway())
    }

    /// A new host `name` on another segment, 10.78.N.0/24 (the switch's bridge `br1`),
    /// one router (the switch) away from the LAN's hosts: not their neighbour.
    pub fn host_beyond_router(&self, name: &str) -> Host {
        let lan = &self.inner;
        if !lan.routing.swap(true, Ordering::SeqCst) {
            let gw = format!("10.78.{}.1/24", lan.octet);
            let sw = lan.switch.name.as_str();
            for args in [
                vec!["link", "add", "br1", "type", "bridge"],
                vec!["addr", "add", &gw, "dev", "br1"],
                vec!["link", "set", "br1", "up"],
            ] {
                ip(&[&["-n", sw], &args[..]].concat());
            }
            let forward = inside(&lan.switch.file, || {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            });
            forward.expect("turning on forwarding in the switch's namespace");
        }
        let k = lan.next_host.fetch_add(1, Ordering::SeqCst);
        let address = Ipv4Addr::new(10, 78, lan.octet, k);
        self.attach(name, "br1", address, Ipv4Addr::new(10, 78, lan.octet, 1))
    }

    /// Host `name` at `address`/24, its port on the switch's `bridge`, its default
    /// route via `gateway`.
    fn attach(&self, name: &str, bridge: &str, address: Ipv4Addr, gateway: Ipv4Addr) -> Host {
        let lan = &self.inner;
        let ns = Netns::create(&format!("{}-{name}", lan.name));
        let port = format!("h{}", address.octets()[3]);
        let sw = lan.switch.name.as_str();
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        ip(&["-n", sw, "link", "set", &port, "master", bridge, "up"]);
        let cidr = format!("{address}/24");
        let gw = gateway.to_string();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &cidr, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", &gw],
        ] {
            ip(&[&["-n", &ns.name], &args[..]].concat());
        }
        Host(Arc::new(HostInner {
            name: name.into(),
            address,
            port,
            ns,
            lan: lan.clone(),
        }))
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

/// A host on a [`Lan`]; clones share it. Its namespace goes with the last clone.
#[derive(Clone)]
pub struct Host(Arc<HostInner>);

struct HostInner {
    name: String,
    address: Ipv4Addr,
    /// Its port on the switch (the switch's end of its veth pair).
    port: String,
    ns: Netns,
    lan: Arc<LanInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} ({})", self.0.name, self.0.address)
    }
}

impl Host {
    /// Its address on the LAN.
    pub fn ip(&self) -> Ipv4Addr {
        self.0.address
    }

    /// `IP:PORT` on this host.
    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.0.address)
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The name of its network namespace (under /var/run/netns, for `ip -n`).
    pub fn netns(&self) -> &str {
        &self.0.ns.name
    }

    /// Makes `cmd` run on this host: it enters the host's network namespace between
    /// fork and exec (setns(2); the mount namespace stays the test's).
    pub fn command<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let fd = self.0.ns.file.as_raw_fd();
        // SAFETY: between fork and exec only setns(2) runs, which is async-signal-safe;
        // `fd` stays open as long as `self`, which the caller holds while spawning.
        unsafe {
            cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            })
        }
    }

    /// Runs `work` on a thread inside this host (its sockets are the host's).
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        inside(&self.0.ns.file, work)
    }

    /// The A records `server` (a DNS server reachable from this host) answers for
    /// `name`, asked with busybox `nslookup` from this host; none for NXDOMAIN.
    pub fn resolve(&self, server: std::net::Ipv4Addr, name: &str) -> Vec<std::net::Ipv4Addr> {
        let out = self
            .command(Command::new("busybox").args(["nslookup", name, &server.to_string()]))
            .output()
            .expect("running busybox nslookup");
        let text = String::from_utf8_lossy(&out.stdout);
        // The server's own address comes first, before the `Name:` line.
        text.split_once("Name:")
            .map(|(_, answers)| {
                answers
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("Address:"))
                    .filter_map(|a| a.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A TCP connection from this host to `target` (usable from any thread).
    pub fn connect(&self, target: &str) -> std::io::Result<TcpStream> {
        let target: SocketAddr = target.parse().expect("an IP:PORT address");
        self.run(|| TcpStream::connect_timeout(&target, Duration::from_secs(3)))
    }

    /// `GET path` from this host to `addr` (IP:PORT) with `Host: host_header` (the
    /// address when `None`): the status and body, `None` when there is no answer
    /// within 5 s.
    pub fn http_get(
        &self,
        addr: &str,
        path: &str,
        host_header: Option<&str>,
    ) -> Option<(u16, String)> {
        let s = self.connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        get(s, path, host_header.unwrap_or(addr))
    }

    /// `GET path` over HTTPS from this host to `addr` (IP:PORT), the server's
    /// certificate verified by `tls` for the address's IP (as `ltc` does): the status
    /// and body, `None` when there is no answer within 5 s or the server is refused.
    pub fn https_get(
        &self,
        addr: &str,
        path: &str,
        tls: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Option<(u16, String)> {
        self.https_request(addr, "GET", path, &[], "", tls)
    }

    /// `METHOD path` over HTTPS from this host to `addr` (IP:PORT), verified as
    /// [`Host::https_get`] does, with `headers` (e.g. `Authorization`) and a JSON `body`.
    pub fn https_request(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        tls: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Option<(u16, String)> {
        let s = self.connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let ip = addr.parse::<SocketAddr>().ok()?.ip();
        let conn = rustls::ClientConnection::new(tls.clone(), ip.into()).ok()?;
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        request(
            rustls::StreamOwned::new(conn, s),
            method,
            path,
            addr,
            &all,
            body,
        )
    }

    /// A loopback port of the test's own namespace relayed to `target` from inside
    /// this host, for clients that cannot enter it (gRPC, reqwest).
    pub fn tunnel(&self, target: &str) -> Tunnel {
        Tunnel::open(
            self.0
                .ns
                .file
                .try_clone()
                .expect("duplicating the namespace"),
            target.parse().expect("an IP:PORT address"),
        )
    }

    /// Cuts the host off the LAN: its switch port goes down (its own interface and
    /// routes stay, as when a cable is pulled).
    pub fn link_down(&self) {
        self.set_port("down");
    }

    /// Joins the LAN again after [`Host::link_down`].
    pub fn link_up(&self) {
        self.set_port("up");
    }

    /// Sets the host's switch port `up` or `down`.
    fn set_port(&self, state: &str) {
        ip(&[
            "-n",
            &self.0.lan.switch.name,
            "link",
            "set",
            &self.0.port,
            state,
        ]);
    }

    /// Records a cell running on this host, so that a later run sweeps its
    /// containers if this one is killed; [`Host::forget_cell`] when cleaned up.
    pub(crate) fn record_cell(
        &self,
        id: &str,
        data_dir: &Path,
        net: &lattice_cell::network::NetworkConfig,
    ) {
        let record = serde_json::json!({
            "netns": self.0.ns.name, "data_dir": data_dir, "bridge": net.bridge,
            "gateway": net.gateway.to_string(), "prefix": net.prefix,
            "ports": [net.ports.0, net.ports.1],
        });
        std::fs::write(self.cell_record(id), record.to_string()).expect("recording the cell");
    }

    pub(crate) fn forget_cell(&self, id: &str) {
        let _ = std::fs::remove_file(self.cell_record(id));
    }

    fn cell_record(&self, id: &str) -> PathBuf {
        self.0.lan.state.join(format!("{id}.cell"))
    }
}

/// A loopback listener in the test's namespace whose connections are relayed to a
/// target from inside a host. Stops accepting when dropped.
pub struct Tunnel {
    /// 127.0.0.1:PORT
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Tunnel {
    fn open(ns: std::fs::File, target: SocketAddr) -> Tunnel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let ns = Arc::new(ns);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), ns) = (client, ns.clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let far = inside(&ns, || {
                        TcpStream::connect_timeout(&target, Duration::from_secs(3))
                    });
                    if let Ok(far) = far {
                        relay(client, far);
                    }
                });
            }
        });
        Tunnel { addr, stop }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees the flag and ends.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies both ways until each side has said all it has to say.
fn relay(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let there = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Write);
    let _ = there.join();
}

/// A process that is not `lattice` (etcd, busybox httpd) run on a host; killed when
/// dropped.
pub struct HostProcess {
    child: Child,
    _host: Host,
}

impl HostProcess {
    /// Spawns `cmd` on `host` and waits (up to 20 s) until `host:port` accepts.
    pub fn start(host: &Host, cmd: &mut Command, port: u16) -> HostProcess {
        let child = host
            .command(cmd.stdout(Stdio::null()))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?} on {host:?}: {e}"));
        let mut p = HostProcess {
            child,
            _host: host.clone(),
        };
        let t0 = Instant::now();
        while host.connect(&host.addr(port)).is_err() {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{cmd:?} on {host:?} exited: {status}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{cmd:?} on {host:?} did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd on a host: clients at `IP:2379`, its data in a temporary directory.
pub struct EtcdOnHost {
    pub process: HostProcess,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl EtcdOnHost {
    pub fn start(host: &Host) -> EtcdOnHost {
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://{}", host.addr(2379));
        let peer = format!("http://{}", host.addr(2380));
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "error"])
            .stderr(Stdio::null());
        EtcdOnHost {
            process: HostProcess::start(host, &mut cmd, 2379),
            endpoint: host.addr(2379),
            _dir: dir,
        }
    }
}

/// busybox httpd on a host, serving `body` at `/` on port 80.
pub struct HttpServer {
    pub process: HostProcess,
    /// IP:80
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl HttpServer {
    pub fn start(host: &Host, body: &str) -> HttpServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), body).unwrap();
        let addr = host.addr(80);
        let mut cmd = Command::new("busybox");
        cmd.args(["httpd", "-f", "-p", &addr, "-h"]).arg(dir.path());
        HttpServer {
            process: HostProcess::start(host, &mut cmd, 80),
            addr,
            _dir: dir,
        }
    }
}

/// Removes what harness runs whose process is gone left: kills what runs in their
/// namespaces, destroys their cells' containers, removes the namespaces and records.
fn sweep_leftovers() {
    let dead = |name: &str| owner_of(name).is_some_and(|o| o != this_process() && !owner_alive(o));
    let netns: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| dead(n))
        .collect();
    kill_processes_in(&netns);
    for lan in std::fs::read_dir(STATE_DIR).into_iter().flatten().flatten() {
        let name = lan.file_name().to_string_lossy().into_owned();
        if !dead(&name) {
            continue;
        }
        for record in std::fs::read_dir(lan.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            destroy_recorded_cell(&record.path());
        }
        let _ = std::fs::remove_dir_all(lan.path());
    }
    for name in netns {
        remove_netns(&name);
    }
}

/// SIGKILLs every process whose network namespace is one of `netns`, and waits
/// (up to 10 s) for them to be gone.
fn kill_processes_in(netns: &[String]) {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> = netns
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .map(|m| m.ino())
        .collect();
    if inodes.is_empty() {
        return;
    }
    let in_them = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| inodes.contains(&m.ino()))
            })
            .collect()
    };
    let t0 = Instant::now();
    loop {
        let pids = in_them();
        if pids.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return;
        }
        for pid in pids {
            crate::signal(pid as u32, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Destroys the containers of a cell recorded by [`Host::record_cell`], from inside
/// its host's namespace (where its bridge is), and removes its data directory.
fn destroy_recorded_cell(record: &Path) {
    let Some(r) = std::fs::read_to_string(record)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
    else {
        return;
    };
    let (Some(netns), Some(data_dir), Some(bridge)) = (
        r["netns"].as_str(),
        r["data_dir"].as_str(),
        r["bridge"].as_str(),
    ) else {
        return;
    };
    let net = lattice_cell::network::NetworkConfig {
        bridge: bridge.into(),
        gateway: r["gateway"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or(Ipv4Addr::new(10, 253, 0, 1)),
        prefix: r["prefix"].as_u64().unwrap_or(24) as u8,
        ports: (
            r["ports"][0].as_u64().unwrap_or(0) as u16,
            r["ports"][1].as_u64().unwrap_or(0) as u16,
        ),
        ..Default::default()
    };
    let Ok(ns) = std::fs::File::open(Path::new(NETNS_DIR).join(netns)) else {
        return;
    };
    let data_dir = PathBuf::from(data_dir);
    inside(&ns, || crate::destroy_cell_leftovers(&data_dir, &net));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// One `GET path` (`Host: host`, then close) on `s`: the status and body.
fn get(s: impl Read + Write, path: &str, host: &str) -> Option<(u16, String)> {
    request(s, "GET", path, host, &[], "")
}

/// `METHOD path` with `headers` and `body` on `s`: the status and body.
fn request(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}{length}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut resp = vec![];
    // A TLS peer may close without close_notify once it has answered.
    if let Err(e) = s.read_to_end(&mut resp) {
        if resp.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        String::from_utf8_lossy(&crate::dechunk(body.as_bytes())?).into_owned()
    } else {
        body.to_string()
    };
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner_of("ltlan-123.456-0-cell1"), Some("123.456"));
        assert_eq!(owner_of("lattice-spare-x"), None);
        assert!(owner_alive(&this_process()));
        assert!(
            !owner_alive(&format!("1.{}", u64::MAX)),
            "pid 1 did not start then"
        );
        assert!(!owner_alive("garbage"));
    }
}
