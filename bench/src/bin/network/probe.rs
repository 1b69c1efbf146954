//! The measurements of one path: TCP round trips, TCP connection set-up, and an
//! iperf3 transfer, each from inside one network namespace to an address served from
//! inside another.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_cell::testing::{in_netns, spawn_in};

/// The median and the 99th percentile, in µs.
pub fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(v[v.len() / 2]),
        us(v[(v.len() * 99 / 100).min(v.len() - 1)]),
    )
}

/// A TCP server inside a namespace, serving every connection with `serve` on a
/// thread of its own, stopped on drop.
pub struct Server {
    ns: File,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &File, addr: SocketAddr, serve: fn(TcpStream)) -> Server {
        let listener = in_netns(ns, || Ok(TcpListener::bind(addr)?)).expect("listening");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(s) = s {
                    std::thread::spawn(move || serve(s));
                }
            }
        });
        Server {
            ns: ns.try_clone().expect("the namespace's file"),
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection from inside the listener's namespace wakes the accept.
        let addr = self.addr;
        let woken = in_netns(&self.ns, || {
            Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(1))?)
        });
        if woken.is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Echoes one byte at a time until the peer closes.
pub fn echo(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        if s.write_all(&b).is_err() {
            return;
        }
    }
}

/// Accepts and closes.
pub fn close(_s: TcpStream) {}

/// `n` one-byte round trips on one connection from inside `from` to `to`.
pub fn round_trips(from: &File, to: SocketAddr, n: usize) -> Vec<Duration> {
    in_netns(from, || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [7u8; 1];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            times.push(t0.elapsed());
        }
        Ok(times)
    })
    .expect("round trips")
}

/// `n` TCP connections set up (the connect call returning) from inside `from` to `to`.
pub fn connects(from: &File, to: SocketAddr, n: usize) -> Vec<Duration> {
    in_netns(from, || {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            times.push(t0.elapsed());
            drop(s);
        }
        Ok(times)
    })
    .expect("connects")
}

/// A child process killed and reaped on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What an iperf3 transfer did: the receiver's bits per second, and the CPU both
/// ends used, as iperf3 reports it (user + system time of each process over the
/// transfer, in % of one CPU, summed): the kernel's forwarding work is mostly done
/// in the sender's system time.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bps: f64,
    pub cpu_percent: f64,
}

impl Transfer {
    /// Gbit moved per CPU-second the two ends used: less sensitive than the rate to
    /// other work on the machine (a figure to compare paths by, not an absolute).
    pub fn gbit_per_cpu_second(&self) -> f64 {
        self.bps / 1e9 / (self.cpu_percent / 100.0)
    }
}

/// Where the two ends of a transfer run: anywhere (`None`), or the client on one CPU
/// and the server on another (each "host" a machine of its own).
pub type Pin = Option<(usize, usize)>;

/// `iperf3`, or `taskset -c CPU iperf3` when it is pinned to `cpu`.
fn iperf3_on(cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "iperf3"]);
            c
        }
        None => Command::new("iperf3"),
    }
}

/// An iperf3 transfer of `seconds` from inside `from` to an iperf3 server started
/// inside `server_ns` at `to`, the two ends placed as `pin` says.
pub fn iperf3(from: &File, server_ns: &File, to: Ipv4Addr, seconds: u64, pin: Pin) -> Transfer {
    let port = "5201";
    let _server = Kill(
        spawn_in(
            server_ns,
            iperf3_on(pin.map(|p| p.1))
                .args(["-s", "-1", "-p", port, "-B", &to.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("starting iperf3 -s (install it with scripts/setup-bench.sh)"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = spawn_in(
            from,
            iperf3_on(pin.map(|p| p.0))
                .args(["-c", &to.to_string(), "-p", port, "-J", "-t"])
                .arg(seconds.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .expect("starting iperf3 -c")
        .wait_with_output()
        .expect("iperf3 -c");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let end = &json["end"];
        let cpu = &end["cpu_utilization_percent"];
        if let (Some(bps), Some(local), Some(remote)) = (
            end["sum_received"]["bits_per_second"].as_f64(),
            cpu["host_total"].as_f64(),
            cpu["remote_total"].as_f64(),
        ) {
            return Transfer {
                bps,
                cpu_percent: local + remote,
            };
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 -c {to} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
