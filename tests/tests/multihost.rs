//! Cells on separate hosts (issue 21 item 5), with the harness of `lattice_tests::hosts`:
//! etcd, the BBS, the brain, two cells, the router and an "outside" client each on a
//! host of its own (a network namespace with its own address on a LAN). An app placed
//! on the cell hosts is served through the router host to the outside host; a cell
//! host cut off the LAN has its instances re-placed and served elsewhere within its
//! lease TTL plus a few seconds, its stale containers stopped once it is back, and its
//! Task failed rather than run twice; every component's `GET /readyz` says whether it
//! can do its job, and stops saying so when what it needs is cut off.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::*;
use lattice_specs::models;
use lattice_tests::hosts::Host;
use lattice_tests::lan_cluster::{LanCluster as Cluster, OUTSIDE_BODY};
use lattice_tests::lrps::{actuals, cell_of, wait_running_where};
use lattice_tests::{sh, BbsClient, CellProcess, RouterProcess};

/// The cells' presence lease, in seconds (the harness's cells run with `--lease-ttl 3`).
const LEASE_TTL: Duration = Duration::from_secs(3);

/// `n` instances of busybox httpd answering "hello from INDEX on CELL_ID", routed at
/// GUID.lattice.localhost.
async fn desire_httpd(c: &mut BbsClient, guid: &str, n: i32) {
    let mut web = fixtures::routed_lrp(guid, n, &format!("{guid}.lattice.localhost"));
    web.memory_mb = 32;
    web.action = Some(sh(
        "mkdir -p /www && echo \"hello from $INSTANCE_INDEX on $CELL_ID\" > /www/index.html && exec httpd -f -p $PORT -h /www",
    ));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
}

/// The handles of the containers a cell reports (an instance guid, a task guid).
async fn containers_of(cell: &CellProcess) -> Vec<String> {
    cell.containers()
        .await
        .iter()
        .map(|c| c["handle"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_the_cell_hosts_is_served_through_the_router_host_to_the_outside_host() {
    let cluster = Cluster::start(2);
    let mut c = cluster.bbs.client().await;
    // The outside host's own server answers on the LAN.
    let (status, body) = cluster.cell_hosts[0]
        .http_get(&cluster.httpd.addr, "/", None)
        .expect("the outside host's server answers from a cell host");
    assert_eq!((status, body.as_str()), (200, OUTSIDE_BODY));

    desire_httpd(&mut c, "web", 2).await;
    let running = wait_running_where(&mut c, "web", 2, Duration::from_secs(60), |_| true).await;
    let cells: HashSet<String> = running.iter().map(cell_of).collect();
    assert_eq!(cells.len(), 2, "spread over both cells: {running:#?}");
    for a in &running {
        let net = a.net_info.clone().unwrap();
        let i: usize = cell_of(a)["cell-".len()..].parse().unwrap();
        assert_eq!(
            net.address,
            cluster.cell_hosts[i].ip().to_string(),
            "published on its cell host's address"
        );
    }

    // From the outside host, through the router host, both instances answer.
    let want: HashSet<String> = running
        .iter()
        .map(|a| {
            format!(
                "hello from {} on {}",
                a.key.as_ref().unwrap().index,
                cell_of(a)
            )
        })
        .collect();
    let mut seen = HashSet::new();
    let t0 = Instant::now();
    while seen != want {
        if let Some((200, body)) = cluster.get("web") {
            seen.insert(body.trim().to_string());
        }
        assert!(seen.is_subset(&want), "{seen:?} is not from {want:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the router served only {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.get("nope").map(|r| r.0), Some(404));

    // A cell restarted on its host finds its bridge there (the kernel asked in the
    // host's namespace, not /sys/class/net, which shows the root namespace's) and
    // re-adopts its instance, which keeps serving.
    let before = guids(&running);
    let mut cluster = cluster;
    cluster.cells[0].process.restart();
    let after = wait_running_where(&mut c, "web", 2, Duration::from_secs(30), |_| true).await;
    assert_eq!(guids(&after), before, "the same instances, re-adopted");
    let addresses = |a: &[models::ActualLrp]| {
        let mut v: Vec<String> = a
            .iter()
            .map(|a| a.net_info.clone().unwrap_or_default().instance_address)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        addresses(&after),
        addresses(&running),
        "re-adopted instances keep their container addresses (and so their names)"
    );
    let mut seen = HashSet::new();
    lattice_tests::wait_for(
        "both instances after the restart",
        Duration::from_secs(20),
        || {
            if let Some((200, body)) = cluster.get("web") {
                seen.insert(body.trim().to_string());
            }
            (seen == want).then_some(())
        },
    );
}

fn guids(a: &[models::ActualLrp]) -> Vec<String> {
    let mut g: Vec<String> = a
        .iter()
        .map(|a| a.instance_key.clone().unwrap_or_default().instance_guid)
        .collect();
    g.sort();
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_host_cut_off_has_its_work_replaced_elsewhere_and_stopped_when_it_returns() {
    // Cell 0 alone takes the app and a long Task; cell 1 joins afterwards.
    let mut cluster = Cluster::start_with(2, 1);
    let mut c = cluster.bbs.client().await;
    desire_httpd(&mut c, "web", 1).await;
    lattice_tests::desire_task(&mut c, "long", "sleep 600; echo done > /tmp/result").await;
    let moved_from = wait_running_where(&mut c, "web", 1, Duration::from_secs(60), |a| {
        cell_of(a) == "cell-0"
    })
    .await
    .remove(0);
    lattice_tests::wait_task(
        &mut c,
        "long",
        models::task::State::Running,
        Duration::from_secs(30),
    )
    .await;
    lattice_tests::wait_for("the router serves web", Duration::from_secs(20), || {
        matches!(cluster.get("web"), Some((200, _))).then_some(())
    });
    cluster.start_cell(1, &[]);
    let cell1 = cluster.cells[1].listen.clone();
    assert!(cell1.starts_with(&cluster.cell_hosts[1].ip().to_string()));

    // Cut off: within the lease TTL and a few seconds, the instance runs on cell 1 and
    // the outside host is served by it.
    let cut = Instant::now();
    cluster.cell_hosts[0].link_down();
    let bound = LEASE_TTL + Duration::from_secs(15);
    let moved = wait_running_where(&mut c, "web", 1, bound, |a| cell_of(a) == "cell-1").await;
    let cell1_ip = cluster.cell_hosts[1].ip().to_string();
    assert_eq!(moved[0].net_info.clone().unwrap().address, cell1_ip);
    let mut served = 0;
    while served < 5 {
        match cluster.get("web") {
            Some((200, body)) if body.trim() == "hello from 0 on cell-1" => served += 1,
            _ => served = 0,
        }
        assert!(
            cut.elapsed() < bound,
            "web not served steadily from cell 1 within {bound:?} of the cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Task that ran on the lost cell failed; it was not started again elsewhere.
    let long = lattice_tests::wait_task(
        &mut c,
        "long",
        models::task::State::Completed,
        Duration::from_secs(15),
    )
    .await;
    assert!(long.failed, "{long:?}");
    assert_eq!(long.cell_id, "cell-0");
    assert!(
        long.failure_reason.contains("cell cell-0 disappeared"),
        "{}",
        long.failure_reason
    );

    // Cut off, cell 0 kept running both: it cannot know.
    let mut stale = containers_of(&cluster.cells[0]).await;
    stale.sort();
    let mut both = vec![
        moved_from.instance_key.clone().unwrap().instance_guid,
        "long".to_string(),
    ];
    both.sort();
    assert_eq!(stale, both, "cell 0's containers while it is cut off");

    // Cell 1's DNS names the new instance only (the stale one is no longer RUNNING).
    let new_ip: std::net::Ipv4Addr = moved[0]
        .net_info
        .clone()
        .unwrap()
        .instance_address
        .parse()
        .unwrap();
    let dns1 = dns_server_of(&mut c, "cell-1").await;
    let cell1_host = cluster.cell_hosts[1].clone();
    lattice_tests::wait_for(
        "cell 1's DNS naming the new instance",
        Duration::from_secs(5),
        || (cell1_host.resolve(dns1, "web.apps.internal") == [new_ip]).then_some(()),
    );

    // Back on the LAN: cell 0 registers again and stops its stale containers (the
    // replaced instance and the failed Task's), the router and the DNS never hand out
    // the stale copy meanwhile, and the Task never ran on cell 1.
    cluster.cell_hosts[0].link_up();
    let t0 = Instant::now();
    loop {
        if let Some((200, body)) = cluster.get("web") {
            assert_eq!(
                body.trim(),
                "hello from 0 on cell-1",
                "served by the stale copy"
            );
        }
        assert_eq!(
            cell1_host.resolve(dns1, "web.apps.internal"),
            [new_ip],
            "cell 1's DNS named another copy"
        );
        let stale = containers_of(&cluster.cells[0]).await;
        if stale.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "cell 0 still runs {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_cell1 = containers_of(&cluster.cells[1]).await;
    assert!(
        !on_cell1.iter().any(|g| g == "long"),
        "the Task ran again on cell 1: {on_cell1:?}"
    );
    let all = actuals(&mut c, "web").await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(cell_of(&all[0]), "cell-1");
    assert_eq!(
        lattice_tests::task(&mut c, "long").await.cell_id,
        "cell-0",
        "the Task stays recorded on the cell it ran on"
    );
}

/// The address of `cell`'s DNS server: its subnet's gateway, as its presence says.
async fn dns_server_of(c: &mut BbsClient, cell: &str) -> std::net::Ipv4Addr {
    let cells = c.cells(Empty {}).await.unwrap().into_inner().cells;
    let p = cells
        .iter()
        .find(|p| p.cell_id == cell)
        .expect("its presence");
    lattice_specs::subnets::gateway(p.subnet.parse().expect("a leased subnet"))
}

/// `GET /readyz` of `addr` from `host`: the status and body.
fn readyz(host: &Host, addr: &str) -> (u16, String) {
    host.http_get(addr, "/readyz", None)
        .unwrap_or_else(|| panic!("no answer from {addr}/readyz"))
}

/// Polls `GET /readyz` of `addr` from `host` until it answers `status`.
fn wait_readyz(host: &Host, addr: &str, status: u16, within: Duration) -> String {
    lattice_tests::wait_for(
        &format!("{addr}/readyz answering {status}"),
        within,
        || match host.http_get(addr, "/readyz", None) {
            Some((s, body)) if s == status => Some(body),
            _ => None,
        },
    )
}

/// Polls the BBS's `GET /readyz` (over HTTPS, from the outside host) until it
/// answers `status`; returns the body.
fn wait_api_readyz(cluster: &Cluster, status: u16, within: Duration) -> String {
    lattice_tests::wait_for(
        &format!("the BBS's /readyz answering {status}"),
        within,
        || match cluster.api_get("/readyz") {
            Some((s, body)) if s == status => Some(body),
            _ => None,
        },
    )
}

/// Waits until the rep's `/readyz` (over mTLS, through the test's way in to its
/// host) answers `status`; returns the body.
async fn rep_readyz(rep: &CellProcess, status: u16, within: Duration) -> String {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(r) = rep.get("/readyz").await {
            if r.status().as_u16() == status {
                return r.text().await.unwrap_or_default();
            }
        }
        assert!(
            t0.elapsed() < within,
            "the rep's /readyz answering {status}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_says_whether_it_is_ready() {
    let cluster = Cluster::start(1);
    let out = &cluster.outside;
    let bbs_api = cluster.bbs.api.clone();
    let (brain, router) = (
        cluster.brain.metrics.clone(),
        cluster.router.metrics.clone(),
    );
    // All ready, asked from the outside host.
    // The BBS's public API over HTTPS only (its certificate from the cluster CA
    // naming its address), as `ltc` reaches it.
    assert_eq!(cluster.api_get("/readyz"), Some((200, "ready\n".into())));
    assert_eq!(
        out.http_get(&bbs_api, "/readyz", None),
        None,
        "no plain HTTP"
    );
    let body = wait_readyz(out, &brain, 200, Duration::from_secs(10));
    assert_eq!(body, "ready: brain-0 leads\n");
    assert_eq!(readyz(out, &router).0, 200);
    // The rep's listener is mutual TLS: the test asks it with its certificate.
    let rep = &cluster.cells[0];
    let body = rep_readyz(rep, 200, Duration::from_secs(10)).await;
    assert!(body.starts_with("ready: presence held"), "{body}");

    // The cell's host cut off: asked on its own host, it is not ready once its lease
    // has run out, and ready again once it is back.
    let cell_host = &cluster.cell_hosts[0];
    cell_host.link_down();
    let body = rep_readyz(rep, 503, LEASE_TTL + Duration::from_secs(5)).await;
    assert!(body.starts_with("not ready:"), "{body}");
    cell_host.link_up();
    rep_readyz(rep, 200, Duration::from_secs(15)).await;

    // etcd paused: the BBS is not ready (its store does not answer), the brain loses
    // track of who leads (its lock cannot be renewed), the router keeps its table.
    lattice_tests::signal(cluster.etcd.process.pid(), libc::SIGSTOP);
    let body = wait_api_readyz(&cluster, 503, Duration::from_secs(10));
    assert!(body.contains("StoreUnavailable"), "{body}");
    let body = wait_readyz(out, &brain, 503, Duration::from_secs(20));
    assert!(body.starts_with("not ready:"), "{body}");
    assert_eq!(
        readyz(out, &router).0,
        200,
        "the router keeps its route table"
    );
    lattice_tests::signal(cluster.etcd.process.pid(), libc::SIGCONT);
    wait_api_readyz(&cluster, 200, Duration::from_secs(10));
    wait_readyz(out, &brain, 200, Duration::from_secs(20));

    // A router whose BBS never answered (nothing listens at the switch's address) has
    // no route table: it serves (404s) but is not ready.
    let alone = cluster.lan.host("router2");
    let nowhere = format!("{}:8889", cluster.lan.gateway());
    let lonely = RouterProcess::start_on(&alone, &nowhere);
    let (status, body) = readyz(out, &lonely.metrics);
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: no route table from the BBS yet\n")
    );
}
