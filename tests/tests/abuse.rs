//! Attacks on the control plane with real parts (etcd, `lattice bbs`, `lattice cell`
//! with real containers): what a caller that reaches a component's port can make it do.

use std::time::{Duration, Instant};

use lattice_specs::models;
use lattice_specs::models::task::State::{Completed, Running};
use lattice_specs::rep_api::{rep_client::RepClient, TaskStart, Work};
use lattice_tests::{desire_task, sh, task, wait_task, BbsProcess, CellProcess, EtcdServer};

/// Sends a rep a Perform of one Task, as the auctioneer (or anyone who reaches its
/// port) would.
async fn perform(rep: &str, task: models::Task) {
    RepClient::connect(format!("http://{rep}"))
        .await
        .unwrap()
        .perform(Work {
            tasks: vec![TaskStart { task: Some(task) }],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A Perform sent straight to a rep (no brain runs here) with a privileged definition
/// under a stored Task's guid: the rep refuses it, and runs the Task only as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_perform_runs_nothing_but_what_the_bbs_stores() {
    let etcd = EtcdServer::start();
    let bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
    let cell = CellProcess::start(&bbs.grpc, "cell-0", &[]);
    let mut c = bbs.client().await;
    desire_task(
        &mut c,
        "victim",
        "grep CapEff /proc/self/status > /tmp/result",
    )
    .await;
    let stored = task(&mut c, "victim").await;

    let mut forged = stored.clone();
    let def = forged.definition.as_mut().unwrap();
    def.privileged = true;
    def.action = Some(sh("echo forged > /tmp/result"));
    perform(&cell.listen, forged).await;
    let refused = async {
        let t0 = Instant::now();
        loop {
            let metrics = reqwest::get(format!("http://{}/metrics", cell.listen))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.contains("cell_refused_work_total 1") {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "not refused: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    refused.await;
    assert_eq!(
        task(&mut c, "victim").await.state(),
        models::task::State::Pending,
        "the forged work was not started"
    );
    assert!(cell.containers().await.is_empty(), "no container was made");

    // The same Task as the BBS stores it runs, unprivileged.
    perform(&cell.listen, stored).await;
    let done = wait_task(&mut c, "victim", Completed, Duration::from_secs(30)).await;
    assert!(!done.failed, "{}", done.failure_reason);
    assert!(done.result.starts_with("CapEff:"), "{}", done.result);
    assert!(
        !done.result.contains("000001ffffffffff") && !done.result.contains("forged"),
        "the privileged definition ran: {}",
        done.result
    );
}

/// A Task that finishes while its cell's process is down (SIGKILL) keeps its result:
/// the cell that comes back reports it completed, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_while_its_cell_is_down_keeps_its_result() {
    let etcd = EtcdServer::start();
    let bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
    let mut cell = CellProcess::start(&bbs.grpc, "cell-0", &[]);
    let mut c = bbs.client().await;
    desire_task(&mut c, "outlives", "sleep 2; echo 42 > /tmp/result").await;
    let stored = task(&mut c, "outlives").await;
    perform(&cell.listen, stored).await;
    wait_task(&mut c, "outlives", Running, Duration::from_secs(20)).await;
    // Killed once its process runs (a rep killed before its container exists leaves a
    // Task that never ran, which fails, as it should).
    let t0 = Instant::now();
    while cell.containers().await.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no container");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cell.process.kill();
    // The Task ends (after 2 s) with no rep to see it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cell.process.start_again();
    let done = wait_task(&mut c, "outlives", Completed, Duration::from_secs(30)).await;
    assert!(!done.failed, "{}", done.failure_reason);
    assert_eq!(done.result, "42\n");
}
