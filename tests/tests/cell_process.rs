//! The whole path with real parts: etcd, `lattice bbs`, `lattice brain`, `lattice cell`
//! (real containers from the busybox image) and `lattice router`, all as processes.
//! An app is placed, started, health-checked, served through the router, survives a
//! SIGKILLed rep (its containers are re-adopted), crashes are reported and restarted,
//! a Task runs to completion with its result, and scaling down stops containers.

use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::*;
use lattice_specs::models;
use lattice_tests::lrps::{actuals, wait_running};
use lattice_tests::{sh, BbsProcess, BrainProcess, CellProcess, EtcdServer, RouterProcess};

async fn get(router: &str, host: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://{router}/"))
        .header("host", host)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

fn guids(a: &[models::ActualLrp]) -> Vec<String> {
    let mut g: Vec<String> = a
        .iter()
        .map(|a| a.instance_key.clone().unwrap_or_default().instance_guid)
        .collect();
    g.sort();
    g
}

/// Two instances of busybox httpd serving "hello from INDEX" on 8080, routed at
/// GUID.lattice.localhost.
fn httpd_lrp(guid: &str) -> models::DesiredLrp {
    let mut web = fixtures::routed_lrp(guid, 2, &format!("{guid}.lattice.localhost"));
    web.memory_mb = 32;
    web.action = Some(sh(
        "mkdir -p /www && echo \"hello from $INSTANCE_INDEX\" > /www/index.html && exec httpd -f -p $PORT -h /www",
    ));
    web
}

/// etcd, a BBS on it, a brain converging every second, and a router: all but the cells.
struct Cluster {
    _etcd: EtcdServer,
    bbs: BbsProcess,
    _brain: BrainProcess,
    router: RouterProcess,
}

impl Cluster {
    fn start() -> Cluster {
        let etcd = EtcdServer::start();
        let bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
        let brain = BrainProcess::start(
            &bbs.grpc,
            "brain-0",
            &["--lock-ttl", "2", "--convergence-interval", "1"],
        );
        let router = RouterProcess::start(&bbs.grpc);
        Cluster {
            _etcd: etcd,
            bbs,
            _brain: brain,
            router,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_tasks_run_in_real_containers_behind_the_router() {
    let Cluster {
        _etcd,
        bbs,
        _brain,
        router,
    } = Cluster::start();
    let mut cell = CellProcess::start(&bbs.grpc, "cell-0", &[]);
    let mut c = bbs.client().await;

    // An app of two instances, HTTP health-checked, routed at web.lattice.localhost.
    let mut web = httpd_lrp("web");
    web.check_definition = Some(models::CheckDefinition {
        checks: vec![models::Check {
            check: Some(models::check::Check::Http(models::HttpCheck {
                port: 8080,
                path: "/index.html".into(),
                request_timeout_ms: 1000,
            })),
        }],
        log_source: String::new(),
    });
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
    let running = wait_running(&mut c, "web", 2, Duration::from_secs(30)).await;
    for a in &running {
        let net = a.net_info.clone().unwrap();
        assert_eq!(net.address, "127.0.0.1");
        assert_eq!(net.ports[0].container_port, 8080);
        assert_eq!(a.instance_key.as_ref().unwrap().cell_id, "cell-0");
    }

    // Through the router, both instances answer.
    let mut seen = std::collections::HashSet::new();
    let t0 = Instant::now();
    while seen.len() < 2 {
        if let Some((200, body)) = get(&router.listen, "web.lattice.localhost").await {
            seen.insert(body.trim().to_string());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "router served only {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.contains("hello from 0") && seen.contains("hello from 1"),
        "{seen:?}"
    );

    // A Task runs to completion and its result file is read.
    lattice_tests::desire_task(&mut c, "task-1", "echo computing; echo 42 > /tmp/result").await;
    let task = lattice_tests::wait_task(
        &mut c,
        "task-1",
        models::task::State::Completed,
        Duration::from_secs(20),
    )
    .await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(task.result, "42\n");
    assert_eq!(task.cell_id, "cell-0");

    // An app that exits is reported crashed, with the reason, and restarted.
    let mut crasher = fixtures::desired_lrp("crasher", 1);
    crasher.memory_mb = 16;
    crasher.ports.clear();
    crasher.action = Some(sh("sleep 1; exit 3"));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(crasher),
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    loop {
        let a = actuals(&mut c, "crasher").await;
        if let Some(a) = a.first() {
            if a.crash_count >= 2 {
                assert_eq!(a.crash_reason, "exited with status 3");
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no crashes reported: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.remove_desired_lrp(ProcessGuidRequest {
        process_guid: "crasher".into(),
    })
    .await
    .unwrap();

    // The rep is SIGKILLed and restarted: the app's containers keep serving and are
    // re-adopted (same instances, no restarts).
    let before = guids(&running);
    cell.process.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = wait_running(&mut c, "web", 2, Duration::from_secs(20)).await;
    assert_eq!(
        guids(&after),
        before,
        "instances were replaced instead of re-adopted"
    );
    let t0 = Instant::now();
    loop {
        if let Some((200, _)) = get(&router.listen, "web.lattice.localhost").await {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not served after the rep restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Scaling down stops a container; removing the app stops the rest.
    c.update_desired_lrp(UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: Some(models::DesiredLrpUpdate {
            instances: Some(1),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    wait_running(&mut c, "web", 1, Duration::from_secs(20)).await;
    c.remove_desired_lrp(ProcessGuidRequest {
        process_guid: "web".into(),
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    loop {
        let left = cell.containers().await;
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "containers left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Diego's evacuation with real cells: SIGUSR1 to a cell hands its instances to another
/// cell; each keeps serving until its replacement runs, so the app answers throughout;
/// then the evacuated cell exits with no container left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuating_cell_hands_its_instances_over_without_a_gap() {
    let Cluster {
        _etcd,
        bbs,
        _brain,
        router,
    } = Cluster::start();
    let mut cell_a = CellProcess::start(&bbs.grpc, "cell-a", &[]);
    let mut c = bbs.client().await;
    let web = httpd_lrp("evac");
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
    wait_running(&mut c, "evac", 2, Duration::from_secs(30)).await;
    let cell_b = CellProcess::start(&bbs.grpc, "cell-b", &[]);

    // Traffic all along, counting anything but a 200.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, listen) = (stop.clone(), router.listen.clone());
    let traffic = tokio::spawn(async move {
        let (mut ok, mut bad) = (0, vec![]);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match get(&listen, "evac.lattice.localhost").await {
                Some((200, _)) => ok += 1,
                other => bad.push(other),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, bad)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    lattice_tests::signal(cell_a.process.pid(), libc::SIGUSR1);
    let exited = tokio::task::block_in_place(|| cell_a.process.wait_exit(Duration::from_secs(60)));
    assert!(
        exited.is_some(),
        "cell-a did not finish evacuating within 60 s"
    );
    let running = wait_running(&mut c, "evac", 2, Duration::from_secs(30)).await;
    for a in &running {
        assert_eq!(a.instance_key.as_ref().unwrap().cell_id, "cell-b", "{a:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, bad) = traffic.await.unwrap();
    assert!(ok > 20, "only {ok} requests answered");
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {bad:?}",
        bad.len(),
        ok + bad.len()
    );
    let left = std::fs::read_dir(cell_a.data_dir.path().join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "cell-a left containers behind");
    drop(cell_b);
}
