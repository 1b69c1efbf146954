//! The auction end to end at Diego's scale bar: a real etcd and BBS, 1,000
//! simulated cells (in-process, claiming and starting their work through the
//! BBS like reps), one active brain, and 25,000 LRPs × 10 instances desired
//! through the BBS by 64 concurrent clients.
//!
//! Prints the time until every instance is claimed and RUNNING, end-to-end
//! placements/s against the placement core alone on the same shape (the
//! ratio shows what etcd costs), auction round latency, and the duration of
//! a convergence pass over all 250,000 ActualLRPs (Diego alerts at 10 s).
//!
//! Usage: cargo run --release -p lattice-bench --bin auction-e2e -- [--cells N] [--processes N] [--per N]

use lattice_bench::arg;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs::store::etcd::EtcdStore;
use lattice_bbs::testing::EtcdServer;
use lattice_bbs_client::GrpcBbs as Bbs;
use lattice_brain::auction::{
    place, AuctionConfig, CellView, Constraints, Resources, WorkItem, WorkKind,
};
use lattice_brain::convergence::Convergence;
use lattice_brain::converger::{converge, ConvergeConfig, Memory, Snapshot};
use lattice_brain::leader::{self, BrainConfig};
use lattice_brain::metrics as m;
use lattice_brain::testing::{SimCell, SimCells};
use lattice_specs::bbs_api::{ActualLrPsRequest, DesireLrpRequest, DesiredLrPsRequest};
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::DesiredLrp;
use prometheus::core::Collector;

const CELL: Resources = Resources {
    memory_mb: 128 * 1024,
    disk_mb: 1024 * 1024,
    containers: 400,
};

fn desired(p: usize, per: usize) -> DesiredLrp {
    DesiredLrp {
        domain: "bench".into(),
        memory_mb: [128, 256, 512][p % 3],
        disk_mb: 1024,
        cpu_weight: 10,
        ..lattice_specs::testing::desired_lrp(&format!("app-{p}"), per as i32)
    }
}

/// Approximate quantile from a Prometheus histogram's cumulative buckets.
fn quantile(h: &prometheus::Histogram, q: f64) -> f64 {
    let mf = h.collect();
    let hist = mf[0].get_metric()[0].get_histogram();
    let total = hist.get_sample_count() as f64;
    for b in hist.get_bucket() {
        if b.cumulative_count() as f64 >= q * total {
            return b.upper_bound();
        }
    }
    f64::INFINITY
}

#[tokio::main]
async fn main() {
    let n_cells = arg("--cells", 1000);
    let processes = arg("--processes", 25_000);
    let per = arg("--per", 10);
    let total = processes * per;
    println!("auction end to end: {n_cells} simulated cells, {processes} LRPs x {per} = {total} instances, BBS on etcd");

    let etcd = EtcdServer::start();
    let store = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let running = server::start_with_store(
        store,
        BbsConfig::loopback(
            StoreUrl::Etcd(vec![etcd.endpoint()]),
            Duration::from_secs(30),
        ),
    )
    .await
    .unwrap();
    let bbs = Bbs::connect_lazy(&running.grpc_addr.to_string()).unwrap();

    let cells = Arc::new(SimCells::default());
    let mut sims = vec![];
    for i in 0..n_cells {
        let c = SimCell::start(
            Arc::new(bbs.clone()),
            &format!("cell-{i:04}"),
            &format!("z{}", i % 3),
            CELL,
            Duration::from_secs(60),
        )
        .await;
        cells.add(c.clone());
        sims.push(c);
    }
    let cfg = BrainConfig {
        lock_ttl: Duration::from_secs(10),
        convergence_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(leader::run(
        Arc::new(bbs.clone()),
        cells.clone(),
        cfg,
        stopped,
    ));
    while m::IS_LEADER.get() != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Desire everything with 64 concurrent clients.
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = vec![];
    for _ in 0..64 {
        let (bbs, next) = (bbs.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= processes {
                    return;
                }
                bbs.client()
                    .desire_lrp(DesireLrpRequest {
                        desired_lrp: Some(desired(p, per)),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let desired_in = t0.elapsed();
    println!(
        "desired {total} instances in {:.1} s",
        desired_in.as_secs_f64()
    );

    let mut last_print = Instant::now();
    loop {
        let held: usize = sims.iter().map(|c| c.instances().len()).sum();
        if held >= total {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            println!(
                "  … {held} claimed after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claimed_in = t0.elapsed();
    let actual = bbs
        .client()
        .actual_lr_ps(ActualLrPsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .actual_lrps;
    let running_n = actual
        .iter()
        .filter(|a| a.state() == State::Running)
        .count();
    let all_running_in = t0.elapsed();
    assert_eq!(actual.len(), total);
    let e2e_rate = total as f64 / claimed_in.as_secs_f64();

    // The placement core alone on the same shape, for the ratio.
    let views: Vec<CellView> = (0..n_cells)
        .map(|i| CellView {
            cell_id: format!("cell-{i:04}"),
            zone: format!("z{}", i % 3),
            total: CELL,
            available: CELL,
            rootfs_providers: vec![("preloaded".into(), vec!["busybox".into()])],
            ..Default::default()
        })
        .collect();
    let c = Arc::new(Constraints {
        rootfs: "preloaded:busybox".into(),
        ..Default::default()
    });
    let work: Vec<WorkItem> = (0..total)
        .map(|i| WorkItem {
            kind: WorkKind::Lrp {
                process_guid: format!("app-{}", i / per).into(),
                index: (i % per) as i32,
            },
            memory_mb: [128, 256, 512][(i / per) % 3],
            disk_mb: 1024,
            constraints: c.clone(),
            avoid: vec![],
        })
        .collect();
    let t = Instant::now();
    let o = place(&views, &work, &AuctionConfig::default());
    let core_rate = o.placed.len() as f64 / t.elapsed().as_secs_f64();

    // Convergence over everything: the whole pass, and the decisions alone.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut conv = Convergence::new(Arc::new(bbs.clone()), ConvergeConfig::default());
    let t = Instant::now();
    let counts = conv.run_once(&tx, false).await.unwrap();
    let conv_pass = t.elapsed();
    let desired_all = bbs
        .client()
        .desired_lr_ps(DesiredLrPsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .desired_lrps;
    let cell_ids = sims.iter().map(|c| c.id.clone()).collect();
    let fresh = Default::default();
    let snap = Snapshot {
        now: lattice_specs::now_nanos(),
        desired: &desired_all,
        actual: &actual,
        live_cells: &cell_ids,
        fresh_domains: &fresh,
        tasks: &[],
    };
    let t = Instant::now();
    let (actions, _) = converge(&snap, &ConvergeConfig::default(), &mut Memory::default());
    let conv_core = t.elapsed();

    println!();
    println!(
        "all {total} claimed in            {:>8.1} s   ({e2e_rate:.0} placements/s end to end)",
        claimed_in.as_secs_f64()
    );
    println!(
        "all RUNNING (listed) by          {:>8.1} s   ({running_n} RUNNING)",
        all_running_in.as_secs_f64()
    );
    println!(
        "placement core alone              {core_rate:>10.0} placements/s (same shape, one thread)"
    );
    println!("ratio end to end / core:          {:>10.3}   (the rest is etcd writes: desire, claim, start)", e2e_rate / core_rate);
    println!(
        "auction rounds: {}  decision latency p50 <= {:.3} s, p99 <= {:.3} s;  whole round (cells claiming through etcd) p50 <= {:.1} s;  cell state fetch p99 <= {:.3} s",
        m::AUCTION_DURATION.get_sample_count(),
        quantile(&m::DECISION_DURATION, 0.5),
        quantile(&m::DECISION_DURATION, 0.99),
        quantile(&m::AUCTION_DURATION, 0.5),
        quantile(&m::FETCH_DURATION, 0.99)
    );
    println!(
        "convergence over {} ActualLRPs: full pass {:.2} s (fetch from BBS + decide + apply {} actions), decisions alone {:.3} s   (goal <= 2 s; Diego alerts at 10 s)",
        actual.len(),
        conv_pass.as_secs_f64(),
        counts.missing + counts.extra + counts.crashed + counts.lost + counts.stale,
        conv_core.as_secs_f64()
    );
    assert!(actions.is_empty(), "a converged world needs no action");
}
