//! Container networking (issue 21), in one run, each figure against a peer measured
//! alongside it:
//! - two "hosts" (network namespaces joined by a veth pair, one segment), each with a
//!   cell's real bridge, firewall and overlay made by the cell's own code
//!   (`Network::with_host` and `Overlay` over `NsHost`), and a container namespace on
//!   each bridge wired by `Network::connect`: TCP throughput (iperf3) and round trips
//!   container to container across the overlay, against the same between the two
//!   host namespaces over their veth, in each round in turn; twice: the cells routing
//!   each other directly (`direct_routing`, neighbours on one segment), then through
//!   VXLAN (as cells beyond a router are reached); each transfer also with each host
//!   on a CPU of its own (its processes pinned there, its uplink's packets steered
//!   there), as on machines of their own, beside the CPUs shared;
//! - outbound connection set-up from a container through the bridge and the
//!   masquerade to a listener in an "outside" namespace, against the same connect
//!   from the host namespace itself;
//! - the cell's DNS server (fed by an in-process BBS) against dnsmasq answering the
//!   same name under the same paced load, and an instance's start in the BBS → its
//!   name answering.
//!
//! `sudo scripts/setup-bench.sh && sudo cargo run --release -p lattice-bench --bin network`
//!
//! Options: `--seconds 5` (each iperf3 transfer), `--rounds 5` (paths in turn),
//! `--trips 5000` (round trips per path and round), `--connects 2000`, `--qps 1000`,
//! `--dns-seconds 6`, `--starts 20`. Everything made (namespaces with their devices,
//! firewall tables, the saved `ip_forward`) is removed at the end, also on a panic.

mod dns;
mod probe;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lattice_bench::arg;
use lattice_cell::network::overlay::{Overlay, Peer, Via};
use lattice_cell::network::{Attachment, Network, NetworkConfig, OverlayConfig};
use lattice_cell::testing::{require_root, Lab, NsHost};
use probe::{p50_p99, Server, Transfer};

/// A cell on a host namespace: its network, its overlay and one container.
struct Cell {
    container: File,
    att: Attachment,
    overlay: Overlay,
    net: Network,
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.overlay.close();
        self.net.detach(&self.att);
        // Idle: the bridge and the firewall go, and the saved ip_forward with them.
        self.net.close(true);
    }
}

/// Host `h`'s cell: subnet 10.250.`n`.0/24 of the cluster's 10.250.0.0/16, its
/// overlay's local address 192.168.77.`n + 1`, routing directly or not.
fn cell(host_ns: &File, n: u8, direct_routing: bool) -> Cell {
    let host = Arc::new(NsHost::new(host_ns.try_clone().unwrap()));
    let cfg = NetworkConfig {
        bridge: format!("lnb{n}"),
        gateway: Ipv4Addr::new(10, 250, n, 1),
        prefix: 24,
        ports: (40000, 40009),
        cluster_network: Some((Ipv4Addr::new(10, 250, 0, 0), 16)),
        overlay: Some(OverlayConfig {
            device: "lvx0".into(),
            vni: 42,
            port: 4789,
            local: Ipv4Addr::new(192, 168, 77, n + 1),
            direct_routing,
        }),
        ..Default::default()
    };
    let overlay = Overlay::start(
        cfg.overlay.clone().unwrap(),
        format!("10.250.{n}.0/24").parse().unwrap(),
        host.clone(),
    )
    .expect("the overlay");
    let net = Network::with_host(cfg, host).expect("the cell's bridge and firewall");
    let att = net
        .reserve(&format!("netbench-{}-{n}", std::process::id()))
        .unwrap();
    let made = net
        .create(&att)
        .and_then(|()| net.connect(&att, &[]))
        .and_then(|()| Ok(File::open(att.netns_path())?));
    match made {
        Ok(container) => Cell {
            container,
            att,
            overlay,
            net,
        },
        Err(e) => {
            net.detach(&att);
            net.close(true);
            overlay.close();
            panic!("the container's network: {e:#}");
        }
    }
}

fn peer(n: u8) -> Peer {
    Peer {
        subnet: format!("10.250.{n}.0/24").parse().unwrap(),
        address: Ipv4Addr::new(192, 168, 77, n + 1),
    }
}

fn ms(us: f64) -> f64 {
    us / 1e3
}

/// The smallest, the median and the largest.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// How long and how often each path is measured.
struct Plan {
    seconds: u64,
    rounds: usize,
    trips: usize,
    conns: usize,
    /// Each transfer is also measured with each host on a CPU of its own, as if
    /// on machines of their own (`Some((first host's CPU, second's))`, when there
    /// are two CPUs): its processes pinned there and what arrives on its uplink
    /// processed there (receive packet steering). Otherwise the sender's CPU does
    /// most of the kernel work of both hosts, while the other CPU idles.
    pin: probe::Pin,
}

/// One overlay mode's figures, each round's container path beside its host path.
struct Paths {
    over: Vec<Transfer>,
    host: Vec<Transfer>,
    /// The same transfers with each host a machine of its own (see [`Plan::pin`]).
    over_pinned: Vec<Transfer>,
    host_pinned: Vec<Transfer>,
    rt_over: Vec<Duration>,
    rt_host: Vec<Duration>,
    /// Outbound connection set-up, through the NAT and from the host (when asked).
    nat: Vec<Duration>,
    from_host: Vec<Duration>,
}

/// Sets up a cell on each host (routing directly or not), then measures container →
/// container across the overlay and host → host, in turn, `plan.rounds` times;
/// `outside` (if any): connection set-up from the container through the NAT and from
/// the host to it, in the same rounds. The cells are gone after.
fn overlay_paths(
    lab: &Lab,
    h: (&File, &File),
    direct: bool,
    plan: &Plan,
    outside: Option<SocketAddr>,
) -> Paths {
    let (c1, c2) = (cell(h.0, 0, direct), cell(h.1, 1, direct));
    assert_eq!(c1.overlay.apply(&[peer(1)].into()), 1);
    assert_eq!(c2.overlay.apply(&[peer(0)].into()), 1);
    let via = if direct { Via::Direct } else { Via::Vxlan };
    assert!(c1.overlay.routes().iter().all(|r| r.via == via));
    let (a2, h2_addr) = (c2.att.ip, Ipv4Addr::new(192, 168, 77, 2));
    let echo_c2 = Server::start(&c2.container, (a2, 9001).into(), probe::echo);
    let echo_h2 = Server::start(h.1, (h2_addr, 9001).into(), probe::echo);
    probe::round_trips(&c1.container, (a2, 9001).into(), 200);
    probe::round_trips(h.0, (h2_addr, 9001).into(), 200);
    let mut p = Paths {
        over: vec![],
        host: vec![],
        over_pinned: vec![],
        host_pinned: vec![],
        rt_over: vec![],
        rt_host: vec![],
        nat: vec![],
        from_host: vec![],
    };
    for _ in 0..plan.rounds {
        let (trips, secs) = (plan.trips, plan.seconds);
        p.rt_over
            .extend(probe::round_trips(&c1.container, (a2, 9001).into(), trips));
        p.rt_host
            .extend(probe::round_trips(h.0, (h2_addr, 9001).into(), trips));
        p.over
            .push(probe::iperf3(&c1.container, &c2.container, a2, secs, None));
        p.host.push(probe::iperf3(h.0, h.1, h2_addr, secs, None));
        if let Some((cpu1, cpu2)) = plan.pin {
            steer(lab, ("h1", "nb1"), Some(cpu1));
            steer(lab, ("h2", "nb2"), Some(cpu2));
            let (c, s) = (&c1.container, &c2.container);
            p.over_pinned.push(probe::iperf3(c, s, a2, secs, plan.pin));
            p.host_pinned
                .push(probe::iperf3(h.0, h.1, h2_addr, secs, plan.pin));
            steer(lab, ("h1", "nb1"), None);
            steer(lab, ("h2", "nb2"), None);
        }
        if let Some(to) = outside {
            let n = plan.conns / plan.rounds;
            p.nat.extend(probe::connects(&c1.container, to, n));
            p.from_host.extend(probe::connects(h.0, to, n));
        }
    }
    drop((echo_c2, echo_h2));
    p
}

/// What arrives on host `ns`'s uplink `dev` is processed on `cpu` (receive packet
/// steering), or on the CPU it arrives on (`None`, the kernel's default). Through
/// `ip netns exec`, whose /sys is the namespace's.
fn steer(lab: &Lab, (ns, dev): (&str, &str), cpu: Option<usize>) {
    let mask = cpu.map_or(0u64, |c| 1 << c);
    let set = format!("echo {mask:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.name(ns), "sh", "-c", &set])
        .output()
        .expect("running ip netns exec");
    assert!(
        out.status.success(),
        "{set} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prints the throughput of the container path against the host path, round by round.
fn report_throughput(what: &str, over: &[Transfer], host: &[Transfer], plan: &Plan) {
    let gbit = |t: &[Transfer]| t.iter().map(|t| t.bps / 1e9).collect::<Vec<_>>();
    let (o, h) = (gbit(over), gbit(host));
    let ratios: Vec<f64> = o.iter().zip(&h).map(|(o, h)| o / h).collect();
    let per_cpu: Vec<f64> = over
        .iter()
        .zip(host)
        .map(|(o, h)| o.gbit_per_cpu_second() / h.gbit_per_cpu_second())
        .collect();
    let rounds: Vec<String> = o
        .iter()
        .zip(&h)
        .map(|(o, h)| format!("{o:.2}/{h:.2}"))
        .collect();
    println!(
        "    TCP throughput, {what}, container/host Gbit/s per round ({} s each): {}",
        plan.seconds,
        rounds.join(", ")
    );
    let (lo, mid, hi) = spread(ratios);
    println!("      ratio min/median/max {lo:.2} / {mid:.2} / {hi:.2}x (target >= 0.9x)");
    let (lo, mid, hi) = spread(per_cpu);
    println!("      per CPU-second of both iperf3 ends, ratio min/median/max {lo:.2} / {mid:.2} / {hi:.2}x");
}

/// Prints one overlay mode's throughput and round-trip figures.
fn report(what: &str, p: &Paths, plan: &Plan) {
    println!("  {what}");
    report_throughput("the CPUs shared", &p.over, &p.host, plan);
    if !p.over_pinned.is_empty() {
        let each = "each host on a CPU of its own";
        report_throughput(each, &p.over_pinned, &p.host_pinned, plan);
    }
    let ((o50, o99), (h50, h99)) = (p50_p99(p.rt_over.clone()), p50_p99(p.rt_host.clone()));
    println!(
        "    TCP round trip ({} per path): host p50 {h50:.1} µs p99 {h99:.1} µs; container p50 {o50:.1} µs p99 {o99:.1} µs -> +{:.1} µs at p50",
        p.rt_over.len(),
        o50 - h50
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_root();
    let plan = Plan {
        seconds: arg("--seconds", 5) as u64,
        rounds: arg("--rounds", 5),
        trips: arg("--trips", 5000),
        conns: arg("--connects", 2000),
        pin: match std::thread::available_parallelism().map_or(1, |n| n.get()) {
            1 => None,
            _ => Some((0, 1)),
        },
    };
    let qps = arg("--qps", 1000) as u64;
    let dns_seconds = arg("--dns-seconds", 6) as u64;
    let starts = arg("--starts", 20);

    let mut lab = Lab::new("netbench");
    let (h1, h2, out) = (lab.netns("h1"), lab.netns("h2"), lab.netns("out"));
    lab.link(("h1", "nb1", "192.168.77.1"), ("h2", "nb2", "192.168.77.2"));
    lab.link(
        ("h1", "nbo", "192.168.78.1"),
        ("out", "nbx", "192.168.78.2"),
    );
    let outside: SocketAddr = (Ipv4Addr::new(192, 168, 78, 2), 9000).into();
    let closer = Server::start(&out, outside, probe::close);
    let direct = overlay_paths(&lab, (&h1, &h2), true, &plan, Some(outside));
    let vxlan = overlay_paths(&lab, (&h1, &h2), false, &plan, None);
    drop(closer);
    drop((h1, h2, out));
    drop(lab);

    let d = dns::measure(qps, dns_seconds, starts).await;

    println!(
        "container networking, {} rounds, the paths in turn in each",
        plan.rounds
    );
    report(
        "cells on one segment, routed directly (--overlay-direct-routing)",
        &direct,
        &plan,
    );
    report("the same cells through VXLAN", &vxlan, &plan);
    let ((n50, n99), (d50, d99)) = (
        p50_p99(direct.nat.clone()),
        p50_p99(direct.from_host.clone()),
    );
    println!(
        "  outbound TCP connection set-up ({} per path)",
        direct.nat.len()
    );
    println!(
        "    from the host namespace          p50 {:6.1} µs  p99 {:6.1} µs",
        d50, d99
    );
    println!(
        "    from a container, through NAT    p50 {:6.1} µs  p99 {:6.1} µs  -> {:.2}x",
        n50,
        n99,
        n50 / d50
    );
    println!(
        "  DNS, {qps} queries/s for {dns_seconds} s per server, the servers in turn ({} queries each)",
        d.queries
    );
    let line = |who: &str, (p50, p99, lost): (f64, f64, usize)| {
        println!(
            "    {who:<42} p50 {:6.3} ms  p99 {:6.3} ms  unanswered {lost}",
            ms(p50),
            ms(p99)
        )
    };
    line("dnsmasq (host record)", d.dnsmasq);
    line("the cell's DNS server (target p99 < 1 ms)", d.ours);
    println!(
        "  instance started in the BBS -> its name answers ({} starts): p50 {:.1} ms, max {:.1} ms (target < 100 ms)",
        d.starts, d.resolvable.0, d.resolvable.1
    );
}
