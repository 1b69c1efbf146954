//! `ltc ssh` against its floors, in one run on this machine:
//!
//! - round trip: `ltc ssh APP -- true` (ltc → the API's WebSocket → the rep over mutual
//!   TLS → an exec into the instance) against `runc exec` of `true` in a runc container
//!   of the same busybox image (the floor: an exec with nothing in front of it); medians
//!   over `--runs`, their ratio printed;
//! - port-forward throughput: bytes read from a server in the instance that writes
//!   `--mib` MiB and closes, through `ltc ssh APP -N -L PORT:9000` against a direct TCP
//!   connection to the instance's container address on its bridge and to its published
//!   port (its address and host port, as `ltc status` shows
//!   them); best of `--rounds`, the ratio printed (goal ≥ 0.8×).
//!
//! Run it so:
//!
//!     cargo build --release -p lattice-cli -p lattice-ltc -p lattice-bench
//!     sudo ./target/release/ssh [--runs 20] [--mib 256] [--rounds 3]

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lattice_bench::{arg, bin, ltc, runc_bundle, up_args, wait_port, Kill, Up, UpAddrs};

fn median(d: &mut [Duration]) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// Runs `cmd` to success, `runs` times: the median time.
fn timed(runs: usize, mut cmd: impl FnMut() -> Command) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let out = cmd().stdin(Stdio::null()).output().unwrap();
            assert!(
                out.status.success(),
                "{:?}: {}",
                cmd(),
                String::from_utf8_lossy(&out.stderr)
            );
            t0.elapsed()
        })
        .collect();
    median(&mut times)
}

/// `runc exec CID true`'s median over `runs`, in a detached runc container of busybox.
fn runc_exec_floor(dir: &std::path::Path, runs: usize) -> Duration {
    let bundle = runc_bundle(dir, &["sleep", "100000"], false);
    let id = format!("ssh-bench-{}", std::process::id());
    let st = Command::new("runc")
        .args(["run", "-d", "--bundle", bundle.to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc not found: run scripts/setup-bench.sh");
    assert!(st.success(), "runc run failed");
    let floor = timed(runs, || {
        let mut c = Command::new("runc");
        c.args(["exec", &id, "true"]);
        c
    });
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .status();
    floor
}

/// MiB/s reading everything `addr` sends until it closes.
fn drain(port_or_addr: &str) -> f64 {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(port_or_addr).expect("connecting");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("reading from {port_or_addr}: {e}"),
        }
    }
    total as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64()
}

/// The instance's address and host port for container port 9000.
fn direct_addr(home: &std::path::Path, app: &str) -> String {
    let out = Command::new(bin("ltc"))
        .args(["status", app, "--json"])
        .env("LTC_HOME", home)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ltc status --json");
    let a = &v["actual_lrps"][0];
    let port = a["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["container_port"] == 9000))
        .expect("port 9000 mapped")["host_port"]
        .clone();
    format!("{}:{}", a["address"].as_str().unwrap(), port)
}

/// The instance's own address on its cell's bridge (no forwarder in between), as the
/// container sees it, with container port 9000.
fn container_addr(home: &std::path::Path, app: &str) -> String {
    let out = Command::new(bin("ltc"))
        .args(["ssh", app, "--", "ip", "-o", "-4", "addr", "show", "eth0"])
        .env("LTC_HOME", home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ip = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address of eth0 in {text:?}"));
    format!("{ip}:9000")
}

fn main() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root: containers need it"
    );
    let (runs, mib, rounds) = (arg("--runs", 20), arg("--mib", 256), arg("--rounds", 3));
    let dir = tempfile::tempdir().unwrap();
    let (args, UpAddrs { api, .. }) = up_args(
        dir.path(),
        "bridge = \"lbench5\"\nsubnet = \"10.251.5.1/24\"\nports = \"63800-63899\"\ngrace = 2\n",
    );
    let (up, _) = Up::start(&args);
    let home = dir.path().join("ltc");
    ltc(&home, &["target", &format!("http://{api}")]);
    // A server on 9000 that writes MIB MiB to whoever connects, then closes.
    let cmd = format!(
        "printf '#!/bin/sh\\nexec dd if=/dev/zero bs=65536 count={}\\n' > /tmp/bulk.sh && chmod +x /tmp/bulk.sh && exec nc -ll -p 9000 -e /tmp/bulk.sh",
        mib * 16
    );
    ltc(
        &home,
        &[
            "create",
            "bulk",
            "preloaded:busybox",
            "-p",
            "9000",
            "--no-routes",
            "--",
            "sh",
            "-c",
            &cmd,
        ],
    );
    println!("ltc ssh, lattice up on this machine: {runs} runs, {mib} MiB x {rounds} rounds");

    let ssh = timed(runs, || {
        let mut c = Command::new(bin("ltc"));
        c.args(["ssh", "bulk", "--", "true"]).env("LTC_HOME", &home);
        c
    });
    let floor = runc_exec_floor(dir.path(), runs);
    println!(
        "round trip: ltc ssh -- true {:.1} ms, runc exec true (floor) {:.1} ms: {:.2}x",
        ssh.as_secs_f64() * 1e3,
        floor.as_secs_f64() * 1e3,
        ssh.as_secs_f64() / floor.as_secs_f64()
    );

    let local = lattice_bbs::testing::free_port();
    let _forward = Kill(
        Command::new(bin("ltc"))
            .args(["ssh", "bulk", "-N", "-L", &format!("{local}:9000")])
            .env("LTC_HOME", &home)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(local);
    let direct = direct_addr(&home, "bulk");
    let bridge = container_addr(&home, "bulk");
    let best = |addr: &str| (0..rounds).map(|_| drain(addr)).fold(0.0, f64::max);
    let (d, b, f) = (
        best(&direct),
        best(&bridge),
        best(&format!("127.0.0.1:{local}")),
    );
    println!(
        "throughput: direct to the published port {d:.0} MiB/s, to the container's own address {b:.0} MiB/s, through ltc ssh -L {f:.0} MiB/s: {:.2}x and {:.2}x (goal >= 0.8x)",
        f / d,
        f / b
    );
    ltc(&home, &["remove", "bulk"]);
    up.stop();
}
