//! Containers' outbound traffic, for real (as root): through NAT to an "outside"
//! network namespace the test makes (a veth to the cell's host, a plain listener in
//! it), their egress rules allowing (and logging) and refusing, nothing opening connections into the
//! bridge from outside, and the host left as found (no table, no sysctl change, no
//! namespace).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::process::Command;
use std::time::{Duration, Instant};

use lattice_cell::network::firewall::{self, forwarding};
use lattice_cell::network::nflog;
use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;
use lattice_specs::models::SecurityGroupRule;
use tokio::io::AsyncReadExt as _;

/// One test at a time: each checks the global `ip_forward` it leaves.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_string()
}

fn lattice_tables() -> usize {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft list tables: {out:?}");
    forwarding::lattice_tables(&String::from_utf8_lossy(&out.stdout)).len()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// A network namespace "outside" the cell, joined to the cell's host by a veth pair
/// (host side `HOST_ADDR`/30, outside `ADDR`/30); removed on drop.
struct Outside {
    name: String,
    veth: String,
    /// The host side's address: the cell's address as the outside sees it.
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
}

impl Outside {
    fn new() -> Outside {
        let n = std::process::id() % 250;
        let name = format!("lattice-outside-{}", std::process::id());
        let veth = format!("ltout{n}");
        let (host_addr, addr) = (
            Ipv4Addr::new(198, 18, n as u8, 1),
            Ipv4Addr::new(198, 18, n as u8, 2),
        );
        let out = Outside {
            name,
            veth,
            host_addr,
            addr,
        };
        ip(&["netns", "add", &out.name]);
        ip(&[
            "link", "add", &out.veth, "type", "veth", "peer", "name", "eth0", "netns", &out.name,
        ]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &out.veth]);
        ip(&["link", "set", &out.veth, "up"]);
        for args in [
            vec!["addr", "add", &format!("{addr}/30"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
            // Only for the inbound check: the outside knows where containers are.
            vec!["route", "add", "10.0.0.0/8", "via", &host_addr.to_string()],
        ] {
            let mut all = vec!["-n", out.name.as_str()];
            all.extend(args.iter().map(|s| &**s));
            ip(&all);
        }
        out
    }

    /// Runs `work` on a thread inside the outside namespace (sockets made there stay
    /// there).
    fn inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                work()
            })
            .join()
            .unwrap()
        })
    }

    /// A plain TCP listener in the outside namespace, on its address.
    fn listen(&self) -> tokio::net::TcpListener {
        let l = self.inside(|| std::net::TcpListener::bind((self.addr, 0)).unwrap());
        l.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(l).unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The host as found: the outside namespace and veth gone, the cell's table gone, and
/// `ip_forward` back to `found` once no lattice table is left.
fn assert_clean(outside_name: &str, veth: &str, bridge: &str, found: &str) {
    assert!(!std::path::Path::new("/var/run/netns")
        .join(outside_name)
        .exists());
    assert!(!std::path::Path::new("/sys/class/net").join(veth).exists());
    assert!(
        !firewall::installed(bridge),
        "the firewall of {bridge} is left"
    );
    if lattice_tables() == 0 {
        assert_eq!(ip_forward(), found, "ip_forward is not as found");
        assert!(!std::path::Path::new(&forwarding::saved_path().unwrap()).exists());
    }
}

/// Accepts one connection within `limit`: who it came from and what it sent.
async fn accept(l: &tokio::net::TcpListener, limit: Duration) -> (SocketAddr, String) {
    let (mut c, from) = tokio::time::timeout(limit, l.accept())
        .await
        .expect("no connection from the container")
        .unwrap();
    let mut got = String::new();
    let _ = tokio::time::timeout(limit, c.read_to_string(&mut got)).await;
    (from, got.trim().to_string())
}

async fn exited(t: &TestExecutor, handle: &str) -> (bool, String) {
    match wait_event(&t.exec, handle, Duration::from_secs(30), |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await
    {
        ShimEvent::Exited { failed, reason, .. } => (failed, reason),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_the_outside_through_nat_as_the_cell_and_nothing_comes_in() {
    let _serial = SERIAL.lock().await;
    let found = ip_forward();
    let outside = Outside::new();
    let (name, veth) = (outside.name.clone(), outside.veth.clone());
    let listener = outside.listen();
    let port = listener.local_addr().unwrap().port();
    let t = TestExecutor::new();
    let bridge = t.exec.network().config().bridge.clone();
    assert_eq!(ip_forward(), "1", "the cell forwards");
    let script = format!("echo hello | nc {} {port}; nc -l -p 8080", outside.addr);
    let info = t.exec.create(request("out", sh(&script))).await.unwrap();
    let (from, got) = accept(&listener, Duration::from_secs(20)).await;
    assert_eq!(got, "hello");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(outside.host_addr),
        "the outside sees the cell's address, not the container's"
    );
    // The outside knows a route to the container, yet cannot open a connection to it.
    let target = SocketAddr::from((info.ip(), 8080));
    let inbound =
        outside.inside(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)));
    assert!(
        inbound.is_err(),
        "a connection from outside reached the container"
    );
    t.exec.destroy("out").await;
    assert!(
        !firewall::has_egress(&bridge, info.ip()),
        "egress chain left"
    );
    drop(t);
    drop(outside);
    assert_clean(&name, &veth, &bridge, &found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_rules_let_one_port_through_and_refuse_another_fast() {
    let _serial = SERIAL.lock().await;
    let found = ip_forward();
    let outside = Outside::new();
    let (name, veth) = (outside.name.clone(), outside.veth.clone());
    let allowed = outside.listen();
    let denied = outside.listen();
    let (a, d) = (
        allowed.local_addr().unwrap().port(),
        denied.local_addr().unwrap().port(),
    );
    let t = TestExecutor::new();
    let bridge = t.exec.network().config().bridge.clone();
    let dest = outside.addr;
    // First through the allowed port; then the denied one (its exit code sent
    // through the allowed port right after): a refusal that is a timeout would take
    // the full 10 s.
    let script = format!(
        "echo first | nc {dest} {a}; \
         echo x | timeout 10 nc {dest} {d}; echo denied-$? | nc {dest} {a}"
    );
    let mut req = request("rules", sh(&script));
    req.egress_rules = vec![SecurityGroupRule {
        protocol: "tcp".into(),
        destinations: vec![format!("{dest}/32")],
        ports: vec![a as u32],
        log: true,
        ..Default::default()
    }];
    // What the cell reads of the connections the logged rule allows.
    let (tx, logged) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let reader = nflog::Reader::start(nflog::group(&bridge), move |c| {
        let _ = tx.lock().unwrap().send(c);
    })
    .unwrap();
    let info = t.exec.create(req).await.unwrap();
    assert!(firewall::has_egress(&bridge, info.ip()));
    let (_, first) = accept(&allowed, Duration::from_secs(20)).await;
    let start = Instant::now();
    assert_eq!(first, "first");
    let (_, second) = accept(&allowed, Duration::from_secs(20)).await;
    let took = start.elapsed();
    assert!(
        second.starts_with("denied-") && second != "denied-0",
        "{second}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the denied connection was not refused fast: {took:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), denied.accept())
            .await
            .is_err(),
        "the denied port was reached"
    );
    let (failed, reason) = exited(&t, "rules").await;
    assert!(!failed, "{reason}");
    // Each allowed connection is logged once, the refused one never.
    for _ in 0..2 {
        let c = logged
            .recv_timeout(Duration::from_secs(5))
            .expect("a logged connection");
        assert_eq!((c.source, c.destination), (info.ip(), dest));
        assert_eq!(
            c.to_string(),
            format!("egress tcp {dest}:{a} allowed (a logged egress rule)")
        );
    }
    assert!(
        logged.recv_timeout(Duration::from_millis(200)).is_err(),
        "logged more"
    );
    drop(reader);
    t.exec.destroy("rules").await;
    assert!(
        !firewall::has_egress(&bridge, info.ip()),
        "egress chain left"
    );
    drop(t);
    drop(outside);
    assert_clean(&name, &veth, &bridge, &found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_of_every_kind_install_in_the_kernel_come_back_on_adoption_and_bad_ones_refuse_the_container(
) {
    let _serial = SERIAL.lock().await;
    let found = ip_forward();
    let t = TestExecutor::new();
    let bridge = t.exec.network().config().bridge.clone();
    let rule = |protocol: &str, dests: &[&str]| SecurityGroupRule {
        protocol: protocol.into(),
        destinations: dests.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    let mut tcp = rule("tcp", &["10.0.0.0/8", "192.168.0.1-192.168.0.9", "1.1.1.1"]);
    tcp.ports = vec![80, 443, 444];
    let mut udp = rule("udp", &["0.0.0.0/0"]);
    udp.port_range = Some(lattice_specs::models::PortRange { start: 53, end: 60 });
    let mut echo = rule("icmp", &["8.8.8.8"]);
    echo.icmp_info = Some(lattice_specs::models::IcmpInfo { r#type: 8, code: 0 });
    let mut unreachable = rule("icmp", &["8.8.8.8"]);
    unreachable.icmp_info = Some(lattice_specs::models::IcmpInfo {
        r#type: 3,
        code: -1,
    });
    let mut req = request("kinds", sh("sleep 30"));
    req.egress_rules = vec![
        tcp,
        udp,
        echo,
        unreachable,
        rule("all", &["169.254.0.0/16"]),
    ];
    let info = t.exec.create(req).await.unwrap();
    assert!(firewall::has_egress(&bridge, info.ip()));
    // A restarted cell makes its table anew; adopting the container brings its rules
    // back.
    let again = t.restart();
    assert!(!firewall::has_egress(&bridge, info.ip()));
    again.adopt(&info).await.unwrap();
    assert!(firewall::has_egress(&bridge, info.ip()));
    drop(again);

    let mut bad = request("bad", sh("true"));
    bad.egress_rules = vec![rule("all", &["not-an-address"])];
    let err = t.exec.create(bad).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("egress_rules[0].destinations[0]"),
        "{err:#}"
    );
    t.exec.destroy("kinds").await;
    assert!(!firewall::has_egress(&bridge, info.ip()));
    drop(t);
    assert!(!firewall::installed(&bridge));
    if lattice_tables() == 0 {
        assert_eq!(ip_forward(), found);
    }
}
