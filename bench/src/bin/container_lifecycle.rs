//! Container lifecycle: create → start → exit → destroy of a busybox `/bin/true`
//! container through our executor, against `runc run` on a bundle of the same image,
//! in the same run. Prints mean and median per container and the ratio. The paths are
//! measured in turn, in `--rounds` rounds (default 5) of `--n / --rounds` containers.
//!
//! `sudo scripts/setup-bench.sh && sudo cargo run --release -p lattice-bench --bin container-lifecycle -- --n 50`
//!
//! Two executor figures: with the container's own network (namespace, veth on the
//! cell bridge, address: what every container gets) and with host networking (the
//! same work as the runc bundle, whose network namespace is empty).

use std::process::Command;
use std::time::{Duration, Instant};

use lattice_bench::{arg, runc_bundle};
use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::{request, require_root, run, wait_event, TestExecutor};

/// Mean, median and 90th percentile, in ms.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mean = v.iter().map(ms).sum::<f64>() / v.len() as f64;
    (mean, ms(&v[v.len() / 2]), ms(&v[v.len() * 9 / 10]))
}

async fn executor_round(
    t: &TestExecutor,
    n: usize,
    host_network: bool,
    tag: &str,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let handle = format!("bench-{tag}-{i}");
        let mut req = request(&handle, run("/bin/true", &[]));
        req.host_network = host_network;
        let t0 = Instant::now();
        t.exec.create(req).await.expect("create");
        wait_event(&t.exec, &handle, Duration::from_secs(20), |e| {
            matches!(e, ShimEvent::Destroyed)
        })
        .await;
        t.exec.destroy(&handle).await;
        times.push(t0.elapsed());
    }
    times
}

fn runc_round(n: usize, tag: &str) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let bundle = runc_bundle(dir.path(), &["/bin/true"], false);
    let root = dir.path().join("state");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "-b"])
            .arg(&bundle)
            .arg(format!("runc-bench-{tag}-{i}"))
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "runc run failed");
        times.push(t0.elapsed());
    }
    times
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    require_root();
    let n = arg("--n", 50);
    let rounds = arg("--rounds", 5).clamp(1, n);
    let t = TestExecutor::new();
    // Warm up both (page cache, binaries).
    executor_round(&t, 3, false, "warm").await;
    runc_round(3, "warm");
    // In rounds, the three paths in turn: a drift of the shared machine during the run
    // falls on all three alike, not on whichever was measured last.
    let (mut runc, mut net, mut host) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        let k = n / rounds + usize::from(r < n % rounds);
        runc.extend(runc_round(k, &format!("{r}")));
        net.extend(executor_round(&t, k, false, &format!("net{r}")).await);
        host.extend(executor_round(&t, k, true, &format!("host{r}")).await);
    }
    let (runc, net, host) = (stats(runc), stats(net), stats(host));
    println!("container lifecycle, busybox /bin/true, {n} sequential containers per path (create, start, exit, destroy), in {rounds} rounds");
    let line = |name: &str, s: (f64, f64, f64), ratio: bool| {
        let r = if ratio {
            format!("  -> {:.2}x runc's time", s.0 / runc.0)
        } else {
            String::new()
        };
        println!(
            "  {name:<40} mean {:6.1} ms  median {:6.1} ms  p90 {:6.1} ms{r}",
            s.0, s.1, s.2
        );
    };
    line("runc run (same image, new netns):", runc, false);
    line("executor, own network (netns+veth+IP):", net, true);
    line("executor, host network:", host, true);
}
