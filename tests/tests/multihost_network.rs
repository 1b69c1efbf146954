//! Containers on a real network across hosts (issue 21), with the harness of
//! `lattice_tests::hosts`: every component on a host of its own, each cell leasing its
//! subnet from the BBS and joined to the others by the overlay (routed directly
//! between hosts on one segment, VXLAN to a cell beyond a router). An app on cell A
//! calls an app on cell B by name (`APP.apps.internal`) and by address with no
//! published port; an app and a Task reach the outside host through NAT; egress rules
//! (a workload's own, and the cluster's default) let through what they allow and
//! refuse the rest at once, while app-to-app traffic stays allowed.

use std::net::Ipv4Addr;
use std::time::Duration;

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::*;
use lattice_specs::models::{self, PortRange, SecurityGroupRule};
use lattice_tests::lan_cluster::{LanCluster as Cluster, OUTSIDE_BODY};
use lattice_tests::lrps::wait_running;
use lattice_tests::{sh, BbsClient};

/// Cell `cell-0` takes work tagged `a`, `cell-1` work tagged `b`: the tests choose
/// which cell runs what.
fn tagged_cluster(bbs_extra: &[&str]) -> Cluster {
    let mut cluster = Cluster::start_opts(2, 0, bbs_extra);
    cluster.start_cell(0, &["--placement-tag", "a"]);
    cluster.start_cell(1, &["--placement-tag", "b"]);
    cluster
}

/// An httpd app on the cell tagged `tag`, answering "hello from INDEX on CELL_ID" on
/// container port 8080 (routed at GUID.lattice.localhost). `before` runs first.
async fn desire_app(c: &mut BbsClient, guid: &str, tag: &str, before: &str) {
    let mut web = fixtures::routed_lrp(guid, 1, &format!("{guid}.lattice.localhost"));
    web.memory_mb = 32;
    web.placement_tags = vec![tag.into()];
    web.action = Some(sh(&format!(
        "mkdir -p /www && echo \"hello from $INSTANCE_INDEX on $CELL_ID\" > /www/index.html && {before} exec httpd -f -p 8080 -h /www"
    )));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
}

/// Runs `script` as a Task on the cell tagged `tag`, with `egress` rules, and gives
/// its result file (`/tmp/result`) once it completed (failing the test if the Task
/// failed).
async fn task_result(
    c: &mut BbsClient,
    guid: &str,
    tag: &str,
    egress: Vec<SecurityGroupRule>,
    script: &str,
) -> String {
    c.desire_task(DesireTaskRequest {
        task_guid: guid.into(),
        domain: "test".into(),
        definition: Some(models::TaskDefinition {
            action: Some(sh(script)),
            result_file: "/tmp/result".into(),
            memory_mb: 16,
            cpu_weight: 10,
            placement_tags: vec![tag.into()],
            egress_rules: egress,
            log_guid: guid.into(),
            ..lattice_specs::testing::task_definition("/bin/true")
        }),
    })
    .await
    .unwrap();
    // Well under wget's connect timeout (minutes): a refusal that hung would fail here.
    let t = lattice_tests::wait_task(
        c,
        guid,
        models::task::State::Completed,
        Duration::from_secs(40),
    )
    .await;
    assert!(!t.failed, "{guid} failed: {}", t.failure_reason);
    t.result
}

fn tcp_to(ip: &str, ports: Option<(u32, u32)>) -> SecurityGroupRule {
    SecurityGroupRule {
        protocol: "tcp".into(),
        destinations: vec![ip.into()],
        port_range: ports.map(|(start, end)| PortRange { start, end }),
        ..Default::default()
    }
}

/// What a Task writes when `wget` of `url` answers (its body) or not ("refused").
fn fetch(url: &str) -> String {
    format!("wget -q -O- {url} > /tmp/result 2>/dev/null || echo refused > /tmp/result")
}

fn ip_of(addr: &str) -> String {
    addr.rsplit_once(':').unwrap().0.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_on_two_cells_call_each_other_by_name_and_reach_the_outside_through_nat() {
    let cluster = tagged_cluster(&[]);
    let mut c = cluster.bbs.client().await;

    // Each cell leased a subnet of its own from the cluster's network.
    // (A cell says it is ready as its presence is being written: wait for both.)
    let t0 = std::time::Instant::now();
    let cells = loop {
        let cells = c.cells(Empty {}).await.unwrap().into_inner().cells;
        if cells.len() == 2 {
            break cells;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{cells:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let subnets: Vec<String> = cells.iter().map(|p| p.subnet.clone()).collect();
    assert_ne!(subnets[0], subnets[1]);
    for (p, s) in cells.iter().zip(&subnets) {
        assert!(s.starts_with("10.255."), "{} leased {s}", p.cell_id);
    }

    // The server on cell 1; its address is in cell 1's subnet, with no host port used
    // by what follows.
    desire_app(&mut c, "server", "b", "").await;
    let server = wait_running(&mut c, "server", 1, Duration::from_secs(60))
        .await
        .remove(0);
    assert_eq!(server.instance_key.clone().unwrap().cell_id, "cell-1");
    let addr = server.net_info.clone().unwrap().instance_address;
    let addr: Ipv4Addr = addr.parse().expect("an instance address");

    // A Task on cell 0 calls it by name, by index and by address, across the overlay.
    let want = "hello from 0 on cell-1\n";
    let by_name = task_result(
        &mut c,
        "by-name",
        "a",
        vec![],
        &fetch("http://server.apps.internal:8080/"),
    )
    .await;
    assert_eq!(by_name, want, "by name");
    let by_index = task_result(
        &mut c,
        "by-index",
        "a",
        vec![],
        &fetch("http://0.server.apps.internal:8080/"),
    )
    .await;
    assert_eq!(by_index, want, "by index");
    let by_addr = task_result(
        &mut c,
        "by-address",
        "a",
        vec![],
        &fetch(&format!("http://{addr}:8080/")),
    )
    .await;
    assert_eq!(by_addr, want, "by address");
    // Cell 1's host is closed to cell 0's containers as to its own: its DNS server on
    // cell 1's gateway, reached over the overlay, does not answer them.
    let gateway_1 = lattice_specs::subnets::gateway(subnets[1].parse().unwrap());
    let other_dns = task_result(
        &mut c,
        "other-cells-host",
        "a",
        vec![],
        &format!("nslookup server.apps.internal {gateway_1} > /dev/null 2>&1 && echo answered > /tmp/result || echo blocked > /tmp/result"),
    )
    .await;
    assert_eq!(
        other_dns, "blocked\n",
        "cell 1's DNS server answered a container of cell 0"
    );
    // An unknown app does not resolve (and fast: the Task is done within its bound).
    let unknown = task_result(
        &mut c,
        "unknown",
        "a",
        vec![],
        "nslookup nope.apps.internal > /dev/null 2>&1 && echo found > /tmp/result || echo nxdomain > /tmp/result",
    )
    .await;
    assert_eq!(unknown, "nxdomain\n");

    // A Task and an app reach the outside host through NAT.
    let outside = format!("http://{}/", cluster.httpd.addr);
    let from_task = task_result(&mut c, "outbound", "a", vec![], &fetch(&outside)).await;
    assert_eq!(from_task, OUTSIDE_BODY, "a Task reaches the outside host");
    // The app serves what it fetched from outside at start.
    desire_app(
        &mut c,
        "fetcher",
        "b",
        &format!("wget -q -O /www/index.html {outside} &&"),
    )
    .await;
    wait_running(&mut c, "fetcher", 1, Duration::from_secs(60)).await;
    let body = lattice_tests::wait_for(
        "the fetcher served through the router",
        Duration::from_secs(20),
        || match cluster.get("fetcher") {
            Some((200, body)) => Some(body),
            _ => None,
        },
    );
    assert_eq!(body, OUTSIDE_BODY, "an app reaches the outside host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_rules_allow_and_refuse_and_the_cluster_default_governs_the_rest() {
    // The cluster's default: TCP to port 81 only (nothing there on the outside host),
    // so a workload without rules cannot reach the outside host's port 80.
    let dir = tempfile::tempdir().unwrap();
    let defaults = dir.path().join("egress.json");
    std::fs::write(
        &defaults,
        r#"[{"protocol":"tcp","destinations":["0.0.0.0/0"],"port_range":{"start":81,"end":81}}]"#,
    )
    .unwrap();
    let cluster = tagged_cluster(&["--default-egress-rules", defaults.to_str().unwrap()]);
    let mut c = cluster.bbs.client().await;
    let outside_ip = ip_of(&cluster.httpd.addr);
    let outside = format!("http://{}/", cluster.httpd.addr);

    // No rules: the default refuses port 80, at once.
    let t0 = std::time::Instant::now();
    let r = task_result(&mut c, "default", "a", vec![], &fetch(&outside)).await;
    assert_eq!(r, "refused\n", "the default rules let it out");
    // Its own rule to the outside host's port 80: reached, and (`log: true`) the
    // connection is a line in the Task's log on its cell, even though the Task exits
    // at once: the cell names the container by its address when it reads the logged
    // packet, which may be after the container is gone (it remembers for a while).
    let allow = vec![SecurityGroupRule {
        log: true,
        ..tcp_to(&outside_ip, Some((80, 80)))
    }];
    let r = task_result(&mut c, "allowed", "a", allow, &fetch(&outside)).await;
    assert_eq!(r, OUTSIDE_BODY, "its rule did not let it out");
    let logs = "/v1/logs/allowed?follow=false";
    let want = format!("egress tcp {outside_ip}:80 allowed");
    let mut seen = String::new();
    let t_log = std::time::Instant::now();
    while !seen.contains(&want) {
        assert!(
            t_log.elapsed() < Duration::from_secs(10),
            "no {want:?} in the Task's log: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = cluster.cells[0]
            .get(logs)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    // Its own rule to another port only: refused, though the server is there.
    let other = vec![tcp_to(&outside_ip, Some((81, 90)))];
    let r = task_result(&mut c, "denied", "a", other, &fetch(&outside)).await;
    assert_eq!(r, "refused\n", "a port outside its rules was let through");
    // Another address only: refused.
    let elsewhere = vec![tcp_to("192.0.2.0/24", Some((80, 80)))];
    let r = task_result(&mut c, "elsewhere", "a", elsewhere, &fetch(&outside)).await;
    assert_eq!(r, "refused\n");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "refusals should not wait for timeouts: {:?}",
        t0.elapsed()
    );

    // App-to-app traffic is governed apart: allowed under the restrictive default.
    desire_app(&mut c, "server", "b", "").await;
    wait_running(&mut c, "server", 1, Duration::from_secs(60))
        .await
        .remove(0);
    let r = task_result(
        &mut c,
        "internal",
        "a",
        vec![],
        &fetch("http://server.apps.internal:8080/"),
    )
    .await;
    assert_eq!(r, "hello from 0 on cell-1\n");
}

/// The route on `host` to `subnet` (`ip route show`).
fn route_on(host: &lattice_tests::hosts::Host, subnet: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", host.netns(), "route", "show", subnet])
        .output()
        .expect("running ip (iproute2)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_are_routed_directly_and_a_cell_beyond_a_router_through_vxlan() {
    // Cells 0 and 1 on the LAN, cell 2 on another segment the switch routes to.
    let mut cluster = tagged_cluster(&[]);
    let far = cluster.add_cell_host_beyond_router();
    cluster.start_cell(far, &["--placement-tag", "c"]);
    let mut c = cluster.bbs.client().await;
    desire_app(&mut c, "near", "b", "").await;
    desire_app(&mut c, "far", "c", "").await;
    wait_running(&mut c, "near", 1, Duration::from_secs(60)).await;
    wait_running(&mut c, "far", 1, Duration::from_secs(60)).await;

    // On cell 0's host: its neighbour's subnet via the neighbour's host on the LAN,
    // the far cell's through the VXLAN device (the overlay follows the cells every
    // second).
    let cells = c.cells(Empty {}).await.unwrap().into_inner().cells;
    let subnet_of = |id: &str| {
        let p = cells.iter().find(|p| p.cell_id == id);
        p.unwrap_or_else(|| panic!("{id} in {cells:#?}"))
            .subnet
            .clone()
    };
    let (near_subnet, far_subnet) = (subnet_of("cell-1"), subnet_of("cell-2"));
    let h0 = &cluster.cell_hosts[0];
    let near_host = cluster.cell_hosts[1].ip();
    let routes = lattice_tests::wait_for("cell 0's routes", Duration::from_secs(10), || {
        let (n, f) = (route_on(h0, &near_subnet), route_on(h0, &far_subnet));
        (!n.is_empty() && !f.is_empty()).then_some((n, f))
    });
    assert!(
        routes.0.contains(&format!("via {near_host} dev eth0")),
        "the neighbour routed directly: {routes:?}"
    );
    assert!(
        routes.1.contains("dev lattice-vx0"),
        "the cell beyond the router through VXLAN: {routes:?}"
    );

    // A Task on cell 0 reaches both apps by name, both ways.
    let r = task_result(
        &mut c,
        "to-near",
        "a",
        vec![],
        &fetch("http://near.apps.internal:8080/"),
    )
    .await;
    assert_eq!(r, "hello from 0 on cell-1\n", "to the neighbour");
    let r = task_result(
        &mut c,
        "to-far",
        "a",
        vec![],
        &fetch("http://far.apps.internal:8080/"),
    )
    .await;
    assert_eq!(r, "hello from 0 on cell-2\n", "beyond the router");
}
