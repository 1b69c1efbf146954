//! Issue 27 item 14: a cell whose presence lease expired (its process paused past the
//! TTL) registers again and takes new work. Real parts: etcd, `lattice bbs`,
//! `lattice brain` and `lattice cell` as processes, the cell paused with SIGSTOP for
//! longer than its lease and resumed with SIGCONT, real containers.

use std::time::{Duration, Instant};

use lattice_specs::bbs_api::*;
use lattice_specs::models;
use lattice_tests::{signal, BbsProcess, BrainProcess, CellProcess, EtcdServer};

type Client = lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel>;

async fn registered(c: &mut Client, cell: &str) -> bool {
    c.cells(Empty {})
        .await
        .unwrap()
        .into_inner()
        .cells
        .iter()
        .any(|p| p.cell_id == cell)
}

/// Polls until the cell's registration is `present`; panics after `within`.
async fn wait_registered(c: &mut Client, cell: &str, present: bool, within: Duration) {
    let t0 = Instant::now();
    while registered(c, cell).await != present {
        assert!(
            t0.elapsed() < within,
            "cell {cell} {} within {within:?}",
            if present {
                "did not register again"
            } else {
                "kept its registration"
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(c: &mut Client, guid: &str) {
    lattice_tests::desire_task(c, guid, "echo done > /tmp/result").await;
}

/// Waits until the task completes; returns it.
async fn completed(c: &mut Client, guid: &str, within: Duration) -> models::Task {
    lattice_tests::wait_task(c, guid, models::task::State::Completed, within).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_paused_past_its_lease_registers_again_and_takes_new_work() {
    let etcd = EtcdServer::start();
    let bbs = BbsProcess::start(&format!("etcd://{}", etcd.endpoint()), &[]);
    let _brain = BrainProcess::start(
        &bbs.grpc,
        "brain-0",
        &["--lock-ttl", "2", "--convergence-interval", "1"],
    );
    // A presence lease of 3 s (CellProcess's --lease-ttl).
    let cell = CellProcess::start(&bbs.grpc, "cell-0", &[]);
    let mut c = bbs.client().await;
    wait_registered(&mut c, "cell-0", true, Duration::from_secs(10)).await;
    submit(&mut c, "before").await;
    let before = completed(&mut c, "before", Duration::from_secs(30)).await;
    assert_eq!((before.failed, before.cell_id.as_str()), (false, "cell-0"));

    // Paused for longer than its lease: the BBS drops the cell.
    let pid = cell.process.pid();
    signal(pid, libc::SIGSTOP);
    wait_registered(&mut c, "cell-0", false, Duration::from_secs(20)).await;
    // Work arriving meanwhile has no cell to go to: it waits, PENDING.
    submit(&mut c, "while-gone").await;
    signal(pid, libc::SIGCONT);

    // Its next keep-alive finds the lease gone: it registers again…
    wait_registered(&mut c, "cell-0", true, Duration::from_secs(15)).await;
    // …and takes the work that waited, and new work.
    submit(&mut c, "after").await;
    for guid in ["while-gone", "after"] {
        let t = completed(&mut c, guid, Duration::from_secs(30)).await;
        assert!(!t.failed, "{guid}: {}", t.failure_reason);
        assert_eq!(t.cell_id, "cell-0");
        assert_eq!(t.result, "done\n");
    }
}
