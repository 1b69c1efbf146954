//! The placement core at Diego's scale bar: 1,000 cells in 3 zones and
//! 250,000 LRP instances (25,000 processes × 10), on one core.
//!
//! Two runs: everything in one auction, and the same work arriving in 50
//! batches of 5,000 (each batch sees the cells as the previous ones left them),
//! giving the per-batch decision latency.
//!
//! Usage: cargo run --release -p lattice-bench --bin auction-scale -- [--cells N] [--instances N]

use lattice_bench::arg;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_brain::auction::{
    place, AuctionConfig, CellView, Constraints, Resources, WorkItem, WorkKind,
};

fn cells(n: usize) -> Vec<CellView> {
    (0..n)
        .map(|i| {
            let total = Resources {
                memory_mb: 128 * 1024,
                disk_mb: 1024 * 1024,
                containers: 400,
            };
            CellView {
                cell_id: format!("cell-{i:04}"),
                zone: format!("z{}", i % 3),
                total,
                available: total,
                rootfs_providers: vec![
                    ("preloaded".into(), vec!["busybox".into()]),
                    ("docker".into(), vec![]),
                ],
                volume_drivers: vec!["local".into()],
                ..Default::default()
            }
        })
        .collect()
}

fn work(instances: usize) -> Vec<WorkItem> {
    let c = Arc::new(Constraints {
        rootfs: "preloaded:busybox".into(),
        ..Default::default()
    });
    let per_process = 10;
    (0..instances)
        .map(|i| {
            let p = i / per_process;
            WorkItem {
                kind: WorkKind::Lrp {
                    process_guid: format!("app-{p}").into(),
                    index: (i % per_process) as i32,
                },
                memory_mb: [128, 256, 512][p % 3],
                disk_mb: 1024,
                constraints: c.clone(),
                avoid: vec![],
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n_cells = arg("--cells", 1000);
    let n = arg("--instances", 250_000);
    let cfg = AuctionConfig::default();
    println!("placement core: {n_cells} cells, {n} LRP instances, one thread");

    let cs = cells(n_cells);
    let ws = work(n);
    let t0 = Instant::now();
    let one = place(&cs, &ws, &cfg);
    let t_one = t0.elapsed();
    assert_eq!(one.placed.len() + one.failed.len(), n);
    println!(
        "one auction:        {:>8.3} s  {:>10.0} placements/s  ({} placed, {} failed)",
        t_one.as_secs_f64(),
        one.placed.len() as f64 / t_one.as_secs_f64(),
        one.placed.len(),
        one.failed.len()
    );

    // The same work in batches; the cells remember what earlier batches placed.
    let mut cs = cells(n_cells);
    let batch = 5_000.min(n);
    let mut lat = vec![];
    let mut placed = 0;
    let t0 = Instant::now();
    for chunk in ws.chunks(batch) {
        let t = Instant::now();
        let o = place(&cs, chunk, &cfg);
        lat.push(t.elapsed());
        for (w, c) in &o.placed {
            let cell = &mut cs[*c];
            cell.available.memory_mb -= chunk[*w].memory_mb;
            cell.available.disk_mb -= chunk[*w].disk_mb;
            cell.available.containers -= 1;
            if let WorkKind::Lrp { process_guid, .. } = &chunk[*w].kind {
                cell.lrps.push(process_guid.clone());
            }
        }
        placed += o.placed.len();
    }
    let t_batches = t0.elapsed();
    lat.sort();
    println!(
        "{} batches of {batch}: {:>8.3} s  {:>10.0} placements/s  decision p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        t_batches.as_secs_f64(),
        placed as f64 / t_batches.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!("goal: >= 50000 placements/s on one core");
}
