//! [`Network`]'s decisions over a recording host: what it asks of the kernel, in
//! which order, and what it hands out. No root, no kernel.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use super::host::{Call, RecordingHost};
use lattice_specs::models::SecurityGroupRule;

use super::{Network, NetworkConfig};

fn network(prefix: u8, ports: (u16, u16)) -> (Network, Arc<RecordingHost>) {
    network_with(prefix, ports, vec![])
}

fn network_with(
    prefix: u8,
    ports: (u16, u16),
    default_egress: Vec<SecurityGroupRule>,
) -> (Network, Arc<RecordingHost>) {
    let host = Arc::new(RecordingHost::default());
    let cfg = NetworkConfig {
        bridge: "lt9".into(),
        gateway: Ipv4Addr::new(10, 9, 0, 1),
        prefix,
        ports,
        publish_ip: Ipv4Addr::LOCALHOST.into(),
        default_egress,
        ..Default::default()
    };
    let net = Network::with_host(cfg, host.clone()).unwrap();
    (net, host)
}

fn netns(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

#[test]
fn a_container_gets_the_spare_namespace_then_a_new_one() {
    let (net, host) = network(24, (1, 1));
    assert_eq!(host.calls(), vec![Call::SetUpBridge("lt9".into())]);
    host.clear();
    net.refill();
    net.refill();
    let spare = net.spare_netns().expect("a spare");
    assert_eq!(
        host.calls(),
        vec![Call::CreateNetns(spare.clone())],
        "one spare"
    );
    host.clear();

    let a = net.reserve("web-0").unwrap();
    assert_eq!(a.ip, Ipv4Addr::new(10, 9, 0, 2));
    assert!(host.calls().is_empty(), "reserving makes nothing");
    net.create(&a).unwrap();
    net.connect(&a, &[]).unwrap();
    let b = net.reserve("web-1").unwrap();
    net.create(&b).unwrap();
    assert_eq!(
        host.calls(),
        vec![
            Call::RenameNetns(spare, netns("lattice-web-0")),
            Call::SetEgress("lt9".into(), a.ip, vec!["accept".into()]),
            Call::Connect(a.veth.clone(), a.ip),
            Call::CreateNetns(netns("lattice-web-1")),
        ]
    );
    assert_eq!(net.spare_netns(), None);
}

#[test]
fn a_spare_that_cannot_be_renamed_goes_and_a_new_namespace_is_made() {
    let (net, host) = network(24, (1, 1));
    net.refill();
    let spare = net.spare_netns().unwrap();
    host.clear();
    host.refuse_rename
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let a = net.reserve("web-0").unwrap();
    net.create(&a).unwrap();
    assert_eq!(
        host.calls(),
        vec![
            Call::RenameNetns(spare.clone(), netns("lattice-web-0")),
            Call::RemoveNetns(spare),
            Call::CreateNetns(netns("lattice-web-0")),
        ]
    );
}

#[test]
fn detaching_forgets_the_neighbour_before_the_namespace_and_frees_the_address() {
    // A /29 holds 5 container addresses.
    let (net, host) = network(29, (1, 1));
    let all: Vec<_> = (0..5)
        .map(|i| net.reserve(&format!("c{i}")).unwrap())
        .collect();
    assert!(net.reserve("one-too-many").is_err());
    host.clear();
    net.detach(&all[1]);
    assert_eq!(
        host.calls(),
        vec![
            Call::ForgetNeighbour("lt9".into(), all[1].ip),
            Call::RemoveNetns(netns("lattice-c1")),
            Call::RemoveEgress("lt9".into(), all[1].ip),
        ]
    );
    assert_eq!(net.reserve("again").unwrap().ip, all[1].ip);
}

#[test]
fn adopted_addresses_are_not_handed_out_again() {
    let (net, _) = network(29, (1, 1));
    let survivor = super::Attachment {
        netns: "lattice-old".into(),
        veth: "lvold".into(),
        ip: Ipv4Addr::new(10, 9, 0, 2),
    };
    net.adopt(&survivor, &[]).unwrap();
    assert_eq!(net.reserve("new").unwrap().ip, Ipv4Addr::new(10, 9, 0, 3));
}

fn rule(protocol: &str, dest: &str, ports: &[u32]) -> SecurityGroupRule {
    SecurityGroupRule {
        protocol: protocol.into(),
        destinations: vec![dest.into()],
        ports: ports.to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_container_gets_its_own_egress_rules_or_else_the_default_ones_before_its_link() {
    let deny_metadata = vec![rule("all", "0.0.0.0-169.254.169.253", &[])];
    let (net, host) = network_with(24, (1, 1), deny_metadata);
    let own = net.reserve("own").unwrap();
    let default = net.reserve("default").unwrap();
    host.clear();
    net.connect(&own, &[rule("tcp", "10.1.0.0/16", &[443])])
        .unwrap();
    net.connect(&default, &[]).unwrap();
    assert_eq!(
        host.calls(),
        vec![
            Call::SetEgress(
                "lt9".into(),
                own.ip,
                vec!["ip daddr { 10.1.0.0-10.1.255.255 } tcp dport { 443 } accept".into()]
            ),
            Call::Connect(own.veth.clone(), own.ip),
            Call::SetEgress(
                "lt9".into(),
                default.ip,
                vec!["ip daddr { 0.0.0.0-169.254.169.253 } accept".into()]
            ),
            Call::Connect(default.veth.clone(), default.ip),
        ]
    );
    // Re-adopted after a restart: the rules come back with the address.
    host.clear();
    net.adopt(&own, &[rule("udp", "10.2.0.1", &[53])]).unwrap();
    assert_eq!(
        host.calls(),
        vec![Call::SetEgress(
            "lt9".into(),
            own.ip,
            vec!["ip daddr { 10.2.0.1 } udp dport { 53 } accept".into()]
        )]
    );
}

#[test]
fn rules_the_firewall_cannot_enforce_refuse_the_container_before_it_is_wired() {
    let (net, host) = network_with(24, (1, 1), vec![rule("tcp", "10.0.0.1", &[0])]);
    let a = net.reserve("bad").unwrap();
    host.clear();
    let err = net
        .connect(
            &a,
            &[rule("all", "10.0.0.1", &[]), rule("all", "nowhere", &[])],
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("invalid field egress_rules[1].destinations[0]"),
        "{err:#}"
    );
    let err = net.connect(&a, &[]).unwrap_err();
    assert!(
        format!("{err:#}").contains("invalid field default_egress[0].ports[0]"),
        "{err:#}"
    );
    assert!(host.calls().is_empty(), "nothing wired");
}

#[test]
fn closing_removes_the_spare_and_an_idle_cell_s_bridge_and_makes_no_more_spares() {
    let (net, host) = network(24, (1, 1));
    net.refill();
    let spare = net.spare_netns().unwrap();
    host.clear();
    net.close(false);
    net.refill();
    assert_eq!(host.calls(), vec![Call::RemoveNetns(spare)]);
    host.clear();
    net.close(true);
    assert_eq!(host.calls(), vec![Call::RemoveBridge("lt9".into())]);
    host.clear();
    drop(net);
    assert!(host.calls().is_empty(), "nothing left to remove");
}

#[tokio::test]
async fn published_ports_skip_taken_ones_and_come_back_when_unpublished() {
    let (net, host) = network(24, (7000, 7002));
    let target = SocketAddr::from((Ipv4Addr::new(10, 9, 0, 2), 8080));
    host.taken.lock().unwrap().insert(7000);
    assert_eq!(net.publish(target, None).await.unwrap(), 7001);
    assert_eq!(net.published(), 1);
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(
        host.calls()[1..],
        [
            Call::Forward(at(7000), target),
            Call::Forward(at(7001), target)
        ]
    );
    host.taken.lock().unwrap().clear();
    // 7000 stays marked: someone else held it.
    assert_eq!(net.publish(target, None).await.unwrap(), 7002);
    let err = net.publish(target, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no free host port in 7000-7002 for {target}")
    );
    net.unpublish(7001);
    assert_eq!(net.published(), 1);
    assert_eq!(net.publish(target, Some(7001)).await.unwrap(), 7001);
    assert_eq!(
        net.publish(target, None).await.unwrap_err().to_string(),
        err.to_string()
    );
}
