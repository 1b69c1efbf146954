//! Rolling updates as a user meets them (`lattice up` + `ltc`), measured against
//! their floor in the same run:
//!
//! - the floor: `ltc create APP -i N` of a busybox httpd app until every instance
//!   is RUNNING and healthy (`ltc create` waits for that);
//! - the rollout: `ltc update APP -e GEN=…` of the same app (a new generation: every
//!   instance replaced, one new beside the old ones at a time with the defaults, or
//!   `--max-surge S`), until every instance runs the new generation;
//! - while it rolls, a client GETs the app through the router in a loop (a new
//!   connection each time) and counts the requests that fail (goal: 0).
//!
//! `cargo build --release -p lattice-cli -p lattice-ltc -p lattice-bench &&
//!  sudo target/release/rollout --instances 10 --rounds 3 [--max-surge 1]`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bench::{arg, bin, ltc, up_args, Up, UpAddrs};

/// One HTTP GET through the router: whether it answered 200.
fn get_ok(addr: &str, host: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut r = String::new();
    s.read_to_string(&mut r).is_ok() && r.starts_with("HTTP/1.1 200")
}

/// `ltc ARGS`, timed; panics when it fails.
fn timed_ltc(home: &std::path::Path, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    let out = Command::new(bin("ltc"))
        .args(args)
        .env("LTC_HOME", home)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ltc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

/// Requests (sent, failed) by a loop GETting `host` until `stop`.
fn request_loop(
    router: String,
    host: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            sent.fetch_add(1, Ordering::Relaxed);
            if !get_ok(&router, &host) {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

fn median(d: &mut [Duration]) -> f64 {
    d.sort();
    d[d.len() / 2].as_secs_f64()
}

fn main() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root: containers need it"
    );
    let n = arg("--instances", 10);
    let rounds = arg("--rounds", 3);
    let surge = arg("--max-surge", 1);
    let dir = tempfile::tempdir().unwrap();
    let (args, UpAddrs { api, router, .. }) = up_args(
        dir.path(),
        "bridge = \"lbench2\"\nsubnet = \"10.251.2.1/24\"\nports = \"63400-63599\"\ngrace = 2\n",
    );
    let (up, _) = Up::start(&args);
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
    println!("rolling update of {n} instances (max surge {surge}), {rounds} rounds, lattice up on this machine");

    let cmd =
        "mkdir -p /srv/w && echo gen-$GEN > /srv/w/index.html && exec httpd -f -p 8080 -h /srv/w";
    let n_s = n.to_string();
    let surge_s = surge.to_string();
    let (mut fresh, mut rolls) = (vec![], vec![]);
    let (mut sent, mut failed) = (0, 0);
    for r in 0..rounds {
        let app = format!("roll{r}");
        fresh.push(timed_ltc(
            &home,
            &[
                "create",
                &app,
                "preloaded:busybox",
                "-i",
                &n_s,
                "-e",
                "GEN=1",
                "--",
                "sh",
                "-c",
                cmd,
            ],
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = request_loop(
            router.clone(),
            format!("{app}.lattice.localhost"),
            stop.clone(),
        );
        std::thread::sleep(Duration::from_millis(200));
        rolls.push(timed_ltc(
            &home,
            &[
                "update",
                &app,
                "-e",
                "GEN=2",
                "--max-surge",
                &surge_s,
                "--timeout",
                "10m",
            ],
        ));
        stop.store(true, Ordering::Relaxed);
        let (s, f) = requests.join().unwrap();
        sent += s;
        failed += f;
        println!(
            "round {r}: create {:.2} s, update {:.2} s, requests {s}, failed {f}",
            fresh[r].as_secs_f64(),
            rolls[r].as_secs_f64()
        );
        ltc(&home, &["remove", &app]);
    }
    let (f, u) = (median(&mut fresh), median(&mut rolls));
    println!("create {n} fresh (floor): median {f:.2} s");
    println!("roll {n} to a new generation: median {u:.2} s");
    println!("rollout / fresh: {:.2}x", u / f);
    println!("requests during the updates: {sent}, failed: {failed} (goal: 0)");
    up.stop();
}
