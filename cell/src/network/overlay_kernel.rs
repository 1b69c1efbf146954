//! The overlay on the real kernel: two network namespaces the test makes as "hosts"
//! (joined by a veth pair, 192.168.77.0/24), each with a bridge and the overlay's
//! VXLAN device set up by [`Overlay`] over [`KernelHost`] entered into the host's
//! namespace, and a "container" namespace on each bridge. A TCP connection goes from
//! one container to the other across the overlay (through VXLAN, then routed
//! directly); once the peer is removed it cannot; after tear-down no namespace,
//! device or route is left. Needs root.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::namespace::run_inside;
use super::overlay::{Overlay, Peer};
use super::OverlayConfig;
use crate::testing::{in_netns, Lab, NsHost};

/// Host `h` with its bridge `lbr` at `gw`/24 and a container namespace `c` at
/// `container`/24 on it; forwarding on.
fn host(lab: &Lab, h: &str, h_ns: &File, gw: &str, c: &str, container: &str) {
    lab.ip(h, "link add lbr type bridge");
    lab.ip(h, &format!("addr add {gw}/24 dev lbr"));
    lab.ip(h, "link set lbr up");
    let netns_c = lab.name(c);
    lab.ip(
        h,
        &format!("link add vc type veth peer name eth0 netns {netns_c}"),
    );
    lab.ip(h, "link set vc master lbr up");
    lab.ip(c, &format!("addr add {container}/24 dev eth0"));
    lab.ip(c, "link set eth0 up");
    lab.ip(c, &format!("route add default via {gw}"));
    run_inside(h_ns, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(())
    })
    .unwrap();
}

/// What the listener sends: more than one packet of any MTU, so that the path's MTU
/// (the VXLAN device's, below the containers') has to be found.
fn payload() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// Connects from inside `from` to `to`:8080, where a listener inside `server_ns`
/// answers with [`payload`]: whether all of it came.
fn talk(from: &File, server_ns: &File, to: Ipv4Addr) -> bool {
    let listener = run_inside(server_ns, || Ok(TcpListener::bind((to, 8080))?)).unwrap();
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&payload());
        }
    });
    let answer = run_inside(from, || {
        let mut s = TcpStream::connect_timeout(&(to, 8080).into(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    });
    if answer.is_err() {
        // Unblock the accept so the server thread ends.
        let _ = run_inside(server_ns, || Ok(TcpStream::connect((to, 8080))?));
    }
    server.join().unwrap();
    answer.is_ok_and(|a| a == payload())
}

/// Two "hosts" h1 and h2 joined by a veth pair (192.168.77.1 and .2 on `ovla`/`ovlb`),
/// each with its bridge and a container (c1 at 10.250.0.2, c2 at 10.250.1.2): the
/// lab and the namespaces h1, h2, c1, c2.
fn two_hosts(name: &str) -> (Lab, [File; 4]) {
    let mut lab = Lab::new(name);
    let (h1, h2) = (lab.netns("h1"), lab.netns("h2"));
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    lab.link(
        ("h1", "ovla", "192.168.77.1"),
        ("h2", "ovlb", "192.168.77.2"),
    );
    host(&lab, "h1", &h1, "10.250.0.1", "c1", "10.250.0.2");
    host(&lab, "h2", &h2, "10.250.1.1", "c2", "10.250.1.2");
    (lab, [h1, h2, c1, c2])
}

/// The overlay `lvx0` (VNI 42) of the host in `ns`, at `local`, for its `subnet`.
fn overlay(ns: &File, local: [u8; 4], subnet: &str, direct_routing: bool) -> Overlay {
    let cfg = OverlayConfig {
        device: "lvx0".into(),
        vni: 42,
        port: 4789,
        local: local.into(),
        direct_routing,
    };
    let host = Arc::new(NsHost::new(ns.try_clone().unwrap()));
    Overlay::start(cfg, subnet.parse().unwrap(), host).unwrap()
}

fn peer(subnet: &str, address: [u8; 4]) -> Peer {
    Peer {
        subnet: subnet.parse().unwrap(),
        address: address.into(),
    }
}

#[test]
fn containers_on_two_hosts_talk_across_the_overlay_and_nothing_is_left() {
    let (lab, [h1, h2, c1, c2]) = two_hosts("ovltest");
    let o1 = overlay(&h1, [192, 168, 77, 1], "10.250.0.0/24", false);
    let o2 = overlay(&h2, [192, 168, 77, 2], "10.250.1.0/24", false);
    let (p1, p2) = (
        peer("10.250.0.0/24", [192, 168, 77, 1]),
        peer("10.250.1.0/24", [192, 168, 77, 2]),
    );
    assert_eq!(o1.apply(&[p2].into()), 1);
    assert_eq!(o2.apply(&[p1].into()), 1);
    let link = Command::new("ip")
        .args(["-n", &lab.name("h1"), "link", "show", "lvx0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(
        lab.routes("h1", "10.250.1.0/24")
            .contains("via 10.250.1.1 dev lvx0"),
        "{}",
        lab.routes("h1", "10.250.1.0/24")
    );

    let (a, b) = (Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 1, 2));
    assert!(talk(&c1, &c2, b), "c1 reaches c2 across the overlay");
    assert!(talk(&c2, &c1, a), "and back");

    // The peer removed: its route goes and the containers no longer reach each other.
    assert_eq!(o1.apply(&Default::default()), 0);
    assert_eq!(lab.routes("h1", "10.250.1.0/24"), "");
    assert!(!talk(&c1, &c2, b), "no overlay route, no connection");

    // Closing removes the VXLAN devices (and everything through them).
    o1.close();
    drop((o1, o2));
    for h in [&h1, &h2] {
        let gone = run_inside(h, || Ok(super::links::index("lvx0").is_err())).unwrap();
        assert!(gone, "the VXLAN device is gone");
    }
    assert_eq!(lab.routes("h2", "10.250.0.0/24"), "");
    let names: Vec<PathBuf> = lab.paths();
    drop((h1, h2, c1, c2));
    drop(lab);
    for n in names {
        assert!(!n.exists(), "{} left behind", n.display());
    }
    assert!(
        super::links::index("lvx0").is_err(),
        "nothing in the test's own namespace"
    );
    assert!(super::links::index("ovla").is_err() && super::links::index("vc").is_err());
}

/// With direct routing, the neighbour on the uplink gets a plain route through its
/// host (no VXLAN), a cell beyond a router a VXLAN one; containers talk both ways
/// over the direct route, and closing removes it with the device.
#[test]
fn neighbours_are_routed_directly_and_the_routes_go_on_close() {
    let (lab, [h1, h2, c1, c2]) = two_hosts("ovldirect");
    let o1 = overlay(&h1, [192, 168, 77, 1], "10.250.0.0/24", true);
    let o2 = overlay(&h2, [192, 168, 77, 2], "10.250.1.0/24", true);
    let uplink = o1.uplink().expect("direct routing finds the uplink");
    assert_eq!(uplink.device, "ovla");
    assert_eq!(uplink.network, "192.168.77.0/24".parse().unwrap());
    let (p1, p2) = (
        peer("10.250.0.0/24", [192, 168, 77, 1]),
        peer("10.250.1.0/24", [192, 168, 77, 2]),
    );
    // A cell beyond a router (never reached here): through VXLAN.
    let far = peer("10.250.9.0/24", [192, 168, 99, 9]);
    assert_eq!(o1.apply(&[p2, far].into()), 2);
    assert_eq!(o2.apply(&[p1].into()), 1);
    let near = lab.routes("h1", "10.250.1.0/24");
    assert!(
        near.contains("via 192.168.77.2 dev ovla") && !near.contains("lvx0"),
        "{near}"
    );
    assert!(
        lab.routes("h1", "10.250.9.0/24")
            .contains("via 10.250.9.1 dev lvx0"),
        "{}",
        lab.routes("h1", "10.250.9.0/24")
    );

    // What went out through the VXLAN devices: packets sent.
    let sent = |ns: &File| {
        in_netns(ns, || {
            let s = std::fs::read_to_string("/proc/thread-self/net/dev")?;
            let line = s.lines().find(|l| l.trim_start().starts_with("lvx0:"));
            let fields: Vec<u64> = line
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|f| f.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            Ok(fields.get(9).copied().expect("lvx0's packets sent"))
        })
        .unwrap()
    };
    let before = sent(&h1) + sent(&h2);
    let (a, b) = (Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 1, 2));
    assert!(talk(&c1, &c2, b), "c1 reaches c2 routed directly");
    assert!(talk(&c2, &c1, a), "and back");
    // Not encapsulated: 2 × 200 kB went by, not through VXLAN (a few packets of the
    // devices' own may).
    let through_vxlan = sent(&h1) + sent(&h2) - before;
    assert!(through_vxlan < 20, "{through_vxlan} packets through VXLAN");

    // The peer removed: its direct route goes.
    assert_eq!(o2.apply(&Default::default()), 0);
    assert_eq!(lab.routes("h2", "10.250.0.0/24"), "");
    // Closing removes the direct route (not through the device) and the device.
    o1.close();
    assert_eq!(lab.routes("h1", "10.250.1.0/24"), "");
    assert_eq!(lab.routes("h1", "10.250.9.0/24"), "");
    drop((o1, o2));
    let names: Vec<PathBuf> = lab.paths();
    drop((h1, h2, c1, c2));
    drop(lab);
    for n in names {
        assert!(!n.exists(), "{} left behind", n.display());
    }
}
