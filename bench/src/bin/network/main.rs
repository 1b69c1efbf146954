//! Container networking (issue 21), in one run, each figure against a peer measured
//! alongside it:
//! - two "hosts" (network namespaces joined by a veth pair), each with a cell's real
//!   bridge, firewall and VXLAN overlay made by the cell's own code
//!   (`Network::with_host` and `Overlay` over `NsHost`), and a container namespace on
//!   each bridge wired by `Network::connect`: TCP throughput (iperf3) and round trips
//!   container to container through the overlay, against the same between the two
//!   host namespaces over their veth;
//! - outbound connection set-up from a container through the bridge and the
//!   masquerade to a listener in an "outside" namespace, against the same connect
//!   from the host namespace itself;
//! - the cell's DNS server (fed by an in-process BBS) against dnsmasq answering the
//!   same name under the same paced load, and an instance's start in the BBS → its
//!   name answering.
//!
//! `sudo scripts/setup-bench.sh && sudo cargo run --release -p lattice-bench --bin network`
//!
//! Options: `--seconds 5` (each iperf3 transfer), `--rounds 3` (paths in turn),
//! `--trips 5000` (round trips per path and round), `--connects 2000`, `--qps 1000`,
//! `--dns-seconds 6`, `--starts 20`. Everything made (namespaces with their devices,
//! firewall tables, the saved `ip_forward`) is removed at the end, also on a panic.

mod dns;
mod probe;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use lattice_bench::arg;
use lattice_cell::network::overlay::{Overlay, Peer};
use lattice_cell::network::{Attachment, Network, NetworkConfig, OverlayConfig};
use lattice_cell::testing::{require_root, Lab, NsHost};
use probe::{p50_p99, Server};

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
/// overlay's local address 192.168.77.`n + 1`.
fn cell(host_ns: &File, n: u8) -> Cell {
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
            direct_routing: false,
        }),
        ..Default::default()
    };
    let overlay = Overlay::start(
        cfg.overlay.clone().unwrap(),
        format!("10.250.{n}.0/24").parse().unwrap(),
        host.clone(),
    )
    .expect("the overlay's VXLAN device");
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_root();
    let seconds = arg("--seconds", 5) as u64;
    let rounds = arg("--rounds", 3);
    let trips = arg("--trips", 5000);
    let conns = arg("--connects", 2000);
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
    let (c1, c2) = (cell(&h1, 0), cell(&h2, 1));
    assert_eq!(c1.overlay.apply(&[peer(1)].into()), 1);
    assert_eq!(c2.overlay.apply(&[peer(0)].into()), 1);
    let (a2, h2_addr) = (c2.att.ip, Ipv4Addr::new(192, 168, 77, 2));
    let outside: SocketAddr = (Ipv4Addr::new(192, 168, 78, 2), 9000).into();

    // Round trips and throughput, the two paths in turn.
    let echo_c2 = Server::start(&c2.container, (a2, 9001).into(), probe::echo);
    let echo_h2 = Server::start(&h2, (h2_addr, 9001).into(), probe::echo);
    let closer = Server::start(&out, outside, probe::close);
    probe::round_trips(&c1.container, (a2, 9001).into(), 200);
    probe::round_trips(&h1, (h2_addr, 9001).into(), 200);
    let (mut rt_o, mut rt_h, mut bw_o, mut bw_h) = (vec![], vec![], vec![], vec![]);
    let (mut nat, mut direct) = (vec![], vec![]);
    for _ in 0..rounds {
        rt_o.extend(probe::round_trips(&c1.container, (a2, 9001).into(), trips));
        rt_h.extend(probe::round_trips(&h1, (h2_addr, 9001).into(), trips));
        bw_o.push(probe::iperf3(&c1.container, &c2.container, a2, seconds));
        bw_h.push(probe::iperf3(&h1, &h2, h2_addr, seconds));
        nat.extend(probe::connects(&c1.container, outside, conns / rounds));
        direct.extend(probe::connects(&h1, outside, conns / rounds));
    }
    drop((echo_c2, echo_h2, closer));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64 / 1e9;
    let (bo, bh) = (mean(&bw_o), mean(&bw_h));
    let ((o50, o99), (h50, h99)) = (p50_p99(rt_o), p50_p99(rt_h));
    let ((n50, n99), (d50, d99)) = (p50_p99(nat), p50_p99(direct));
    drop((c1, c2));
    drop((h1, h2, out));
    drop(lab);

    let d = dns::measure(qps, dns_seconds, starts).await;

    println!("container networking, {rounds} rounds, paths in turn");
    println!("  TCP throughput (iperf3, {seconds} s per transfer, mean of {rounds})");
    println!("    host to host (veth between the host namespaces)    {bh:7.2} Gbit/s");
    println!(
        "    container to container through the overlay        {bo:7.2} Gbit/s  -> {:.2}x (target >= 0.9x)",
        bo / bh
    );
    println!(
        "  TCP round trip, 1 byte each way ({} per path)",
        trips * rounds
    );
    println!(
        "    host to host                     p50 {:6.1} µs  p99 {:6.1} µs",
        h50, h99
    );
    println!(
        "    container to container, overlay  p50 {:6.1} µs  p99 {:6.1} µs  -> +{:.1} µs at p50",
        o50,
        o99,
        o50 - h50
    );
    println!(
        "  outbound TCP connection set-up ({} per path)",
        conns / rounds * rounds
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
