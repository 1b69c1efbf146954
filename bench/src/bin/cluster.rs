//! The single-machine cluster as a user meets it (`lattice up` + `ltc`), measured:
//!
//! - `lattice up` start time (spawn → ready line), restarting on the same data dir;
//! - idle footprint: RSS and CPU of the whole cluster process over 10 s with no apps;
//! - `ltc create APP --instances 3` → all 3 instances answering through the router,
//!   against the peer in the same run: 3 bare `runc run -d` busybox httpd containers
//!   started one after another until each answers HTTP (no scheduler, no router);
//! - SIGKILL of an instance's process → its replacement answering through the router,
//!   against one bare `runc run -d` container start until it answers.
//!
//! `cargo build --release --workspace --bins && sudo target/release/cluster --rounds 5`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lattice_bbs::testing::free_port;
use lattice_bench::{arg, bin, cpu_ticks, ltc, runc_bundle, up_args, Up, UpAddrs};

/// (user+system CPU ticks, RSS in KiB) of a process.
fn proc_stat(pid: u32) -> (u64, u64) {
    let ticks = cpu_ticks(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// Pids whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// One HTTP GET; the body, if anything answered.
fn get(addr: &str, host: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    if !r.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(r.split_once("\r\n\r\n")?.1.trim().to_string())
}

/// Mean of the rep's `cell_start_latency_seconds` histogram, in ms, and its count.
fn rep_start_latency(cell: &str) -> (f64, u64) {
    let mut s = TcpStream::connect(cell).expect("the cell's port");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: cell\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    let value = |name: &str| {
        r.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        value("cell_start_latency_seconds_sum"),
        value("cell_start_latency_seconds_count"),
    );
    (
        if count > 0.0 { sum / count * 1e3 } else { 0.0 },
        count as u64,
    )
}

fn ms(d: &[Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v.iter().sum::<f64>() / v.len() as f64, v[v.len() / 2])
}

/// Starts `n` bare httpd containers with runc, one after another, and waits until each
/// answers; then removes them.
fn runc_round(dir: &std::path::Path, n: usize, round: usize) -> Duration {
    let root = dir.join("runc-state");
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let bundles: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let d = dir.join(format!("b{round}-{i}"));
            runc_bundle(&d, &["httpd", "-f", "-p", &p.to_string(), "-h", "/"], true)
        })
        .collect();
    let t0 = Instant::now();
    for (i, b) in bundles.iter().enumerate() {
        let st = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "-d", "-b"])
            .arg(b)
            .arg(format!("cluster-bench-{round}-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "runc run -d failed");
    }
    for p in &ports {
        while TcpStream::connect(("127.0.0.1", *p)).is_err() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let took = t0.elapsed();
    for i in 0..n {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "-f"])
            .arg(format!("cluster-bench-{round}-{i}"))
            .status();
    }
    took
}

fn main() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root: containers need it"
    );
    let rounds = arg("--rounds", 5);
    let dir = tempfile::tempdir().unwrap();
    let (args, UpAddrs { api, router, cell }) = up_args(
        dir.path(),
        "bridge = \"lbench0\"\nsubnet = \"10.251.0.1/24\"\nports = \"63000-63199\"\ngrace = 2\n",
    );

    // Start time: the first start builds the busybox image; then restarts.
    let (up, first) = Up::start(&args);
    up.stop();
    let mut starts = vec![];
    let mut up = None;
    for i in 0..3 {
        let (u, t) = Up::start(&args);
        starts.push(t);
        if i < 2 {
            u.stop();
        } else {
            up = Some(u);
        }
    }
    let up = up.unwrap();
    let pid = up.child.id();

    // Idle footprint.
    std::thread::sleep(Duration::from_secs(2));
    let (t0, _) = proc_stat(pid);
    std::thread::sleep(Duration::from_secs(10));
    let (t1, idle_rss) = proc_stat(pid);
    // SAFETY: sysconf(3) reads a constant of the system and takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle_cpu = (t1 - t0) as f64 / hz / 10.0 * 100.0;

    let home = dir.path().join("ltc");
    let port = router.rsplit(':').next().unwrap();
    ltc(
        &home,
        &[
            "target",
            &format!("http://{api}"),
            "--domain",
            &format!("lattice.localhost:{port}"),
        ],
    );

    // create → 3 routable, against 3 bare runc containers answering.
    let cmd = "mkdir -p /srv/w && cat /proc/sys/kernel/random/uuid > /srv/w/index.html && exec httpd -f -p 8080 -h /srv/w";
    let mut creates = vec![];
    let mut peers = vec![];
    for r in 0..rounds {
        let app = format!("bench{r}");
        let host = format!("{app}.lattice.localhost");
        let t0 = Instant::now();
        let mut child = Command::new(bin("ltc"))
            .args([
                "create",
                &app,
                "preloaded:busybox",
                "-i",
                "3",
                "--",
                "sh",
                "-c",
                cmd,
            ])
            .env("LTC_HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 3 {
            if let Some(b) = get(&router, &host) {
                seen.insert(b);
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        creates.push(t0.elapsed());
        let _ = child.wait();
        if r == rounds - 1 {
            break; // keep the last app for the footprint and healing figures
        }
        ltc(&home, &["remove", &app]);
        peers.push(runc_round(dir.path(), 3, r));
    }
    peers.push(runc_round(dir.path(), 3, rounds));
    std::thread::sleep(Duration::from_secs(3));
    // The rep's own measure: from receiving work to the instance being RUNNING.
    let start_latency = rep_start_latency(&cell);
    let shims = pids_with("lattice shim");
    let shim_rss: u64 = shims.iter().map(|p| proc_stat(*p).1).sum();
    let (_, busy_rss) = proc_stat(pid);

    // SIGKILL → replacement serving, against one bare runc container answering.
    let app = format!("bench{}", rounds - 1);
    let host = format!("{app}.lattice.localhost");
    let mut heals = vec![];
    let mut peer_one = vec![];
    for r in 0..rounds {
        // Tokens served now, and the pid behind one of them.
        let mut before = std::collections::BTreeSet::new();
        while before.len() < 3 {
            if let Some(b) = get(&router, &host) {
                before.insert(b);
            }
        }
        let victims = pids_with("httpd -f -p 8080 -h /srv/w");
        let victim = victims[r % victims.len()];
        let t0 = Instant::now();
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        loop {
            if let Some(b) = get(&router, &host) {
                if !before.contains(&b) {
                    break;
                }
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        heals.push(t0.elapsed());
        peer_one.push(runc_round(dir.path(), 1, 100 + r));
        std::thread::sleep(Duration::from_secs(1));
    }
    ltc(&home, &["remove", &app]);
    std::thread::sleep(Duration::from_secs(3));
    up.stop();
    // The cell's bridge outlives a cell by design; this one was the benchmark's.
    let _ = Command::new("ip").args(["link", "del", "lbench0"]).status();

    let (s_mean, _) = ms(&starts);
    let (c_mean, c_med) = ms(&creates);
    let (p_mean, p_med) = ms(&peers);
    let (h_mean, h_med) = ms(&heals);
    let (o_mean, o_med) = ms(&peer_one);
    println!("lattice up + ltc on one machine ({rounds} rounds)");
    println!(
        "  lattice up start: first (builds the image) {:.0} ms; restarts mean {s_mean:.0} ms   (goal < 2000 ms)",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  idle, no apps: RSS {:.1} MB, CPU {idle_cpu:.2}% of one core over 10 s   (goal < 50 MB, < 1%; k3s's documented ~500 MB)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  with 3 instances: lattice RSS {:.1} MB + {} shims {:.1} MB",
        busy_rss as f64 / 1024.0,
        shims.len(),
        shim_rss as f64 / 1024.0
    );
    println!(
        "  ltc create -i 3 -> 3 answering via router: mean {c_mean:.0} ms median {c_med:.0} ms   (goal < 1000 ms; Kubernetes' pod-start SLO 5 s p99)"
    );
    println!(
        "  peer: 3 x runc run -d httpd until each answers:  mean {p_mean:.0} ms median {p_med:.0} ms   -> ours {:.2}x runc's time",
        c_mean / p_mean
    );
    println!(
        "  the rep: work received -> instance RUNNING (its histogram): mean {:.0} ms over {} starts",
        start_latency.0, start_latency.1
    );
    println!(
        "  SIGKILL -> replacement answering via router:   mean {h_mean:.0} ms median {h_med:.0} ms   (goal < 1000 ms)"
    );
    println!(
        "  peer: 1 x runc run -d httpd until it answers:    mean {o_mean:.0} ms median {o_med:.0} ms   -> ours {:.2}x runc's time",
        h_mean / o_mean
    );
}
