//! Router throughput and latency with wrk, in one run:
//! direct to a backend, through nginx configured as a reverse proxy to the
//! same backends (keep-alive upstream, no access log), and through our router
//! (`lattice router`, access logs off) fed by a real BBS.
//!
//! Needs `scripts/setup-bench.sh` (nginx, wrk) and the release binaries:
//!     cargo build --release -p lattice-cli -p lattice-bench
//!     ./target/release/router-wrk [--seconds 10] [--connections 64] [--rounds 3] [--https 1]
//!
//! `--https 1` measures both proxies terminating HTTPS (the same certificate for
//! `bench.lattice.localhost`, TLS 1.3 as wrk's OpenSSL and each proxy agree, keep-alive
//! without a per-connection request limit on either side) while the backends stay plain
//! HTTP. wrk puts the URL's name into SNI, so a script points its connections at
//! loopback instead of resolving that name.
//!
//! The paths are measured in rounds, nginx and our router in alternating order (one
//! round nginx first, the next ours first), so that a drift of the shared machine
//! during the run (other load, frequency, sockets left in TIME_WAIT by the previous
//! path) weighs on both alike. Figures are means over the rounds.
//!
//! Each proxy's CPU time during its runs (user + system, every thread of the
//! router, every nginx worker, from `/proc`) is divided by the requests it
//! served: a steadier comparison than throughput on a shared machine, where
//! wrk and the backends compete with the proxy for the same two cores.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::testing::fixtures;
use lattice_bbs::testing::free_port;
use lattice_bench::{arg, children, cpu_ticks, lattice_bin, spawn_backends, wait_port, Kill};
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::*;

/// Backend mode: answer every request with a small body, forever.
fn run_backend(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from lattice\n",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The proxy's CPU time per request (µs), NaN for the direct path.
    cpu_us: f64,
}

/// What wrk loads: a URL, the Host header to send when the URL does not name it,
/// and for HTTPS the script that connects to loopback whatever the URL's name.
struct Target {
    url: String,
    host: Option<&'static str>,
    script: Option<PathBuf>,
}

/// The benchmark's apps' name: routed by the router, in the certificate.
const HOST: &str = "bench.lattice.localhost";

impl Target {
    fn http(port: u16, host: Option<&'static str>) -> Target {
        Target {
            url: format!("http://127.0.0.1:{port}/"),
            host,
            script: None,
        }
    }

    /// `https://HOST:port/`: `HOST` is in SNI and the Host header, the
    /// connections go to 127.0.0.1 (`script`).
    fn https(port: u16, script: &Path) -> Target {
        Target {
            url: format!("https://{HOST}:{port}/"),
            host: None,
            script: Some(script.to_path_buf()),
        }
    }
}

/// A wrk script that sends every connection to loopback: no resolver needed for
/// the name the URL (and so SNI) carries.
const LOOPBACK_LUA: &str = "wrk.resolve = function(host, service)\n  wrk.addrs = wrk.lookup(\"127.0.0.1\", service)\nend\n";

/// A certificate for `HOST` and its key, written as PEM into `dir`.
fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// wrk against a proxy, with the proxy's CPU time per request.
fn wrk_proxy(pids: &[u32], target: &Target, seconds: usize, connections: usize) -> Wrk {
    // SAFETY: sysconf(3) reads a constant of the system and takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = || pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let before = ticks();
    let mut r = wrk(target, seconds, connections);
    let ticks = ticks().saturating_sub(before) as f64;
    r.cpu_us = ticks / hz * 1e6 / (r.rps * seconds as f64);
    r
}

fn ms(v: &str) -> f64 {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(target: &Target, seconds: usize, connections: usize) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(h) = target.host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    if let Some(script) = &target.script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(&target.url)
        .output()
        .expect("running wrk: install it with scripts/setup-bench.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("Non-2xx"), "errors during the run:\n{text}");
    assert!(
        !text.contains("Socket errors: connect"),
        "wrk could not connect to {}:\n{text}",
        target.url
    );
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim_start()[prefix.len()..].trim().to_string())
            .unwrap_or_default()
    };
    Wrk {
        rps: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: ms(&field("50%")),
        p99_ms: ms(&field("99%")),
        cpu_us: f64::NAN,
    }
}

/// `lattice router` following `bbs`, on `port` and with HTTPS on `https.0` with the
/// certificate `https.1` when given; access logs off.
fn start_router(
    lattice: &Path,
    bbs: &str,
    port: u16,
    https: Option<(u16, &(PathBuf, PathBuf))>,
    workers: usize,
) -> Kill {
    let mut cmd = Command::new(lattice);
    cmd.args([
        "router",
        "--bbs",
        bbs,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--workers",
        &workers.to_string(),
    ]);
    if let Some((https_port, (cert, key))) = https {
        cmd.arg(format!("--https-listen=127.0.0.1:{https_port}"))
            .arg(format!("--https-cert={},{}", cert.display(), key.display()));
    }
    Kill(
        cmd.env("LATTICE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// nginx as a keep-alive reverse proxy to `backends` on `port`, terminating HTTPS
/// with `tls` when given (then without a limit of requests per client connection,
/// as the router has none).
fn start_nginx(
    dir: &Path,
    backends: &[u16],
    port: u16,
    tls: Option<&(PathBuf, PathBuf)>,
    workers: usize,
) -> Kill {
    let upstreams: String = backends
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};\n"))
        .collect();
    let listen = match tls {
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl;\n ssl_certificate {};\n ssl_certificate_key {};\n ssl_protocols TLSv1.2 TLSv1.3;\n keepalive_requests 1000000000;\n",
            cert.display(),
            key.display()
        ),
        None => format!("listen 127.0.0.1:{port};\n"),
    };
    let conf = format!(
        "worker_processes {nginx_workers};\ndaemon off;\npid {dir}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir};\n proxy_temp_path {dir};\n fastcgi_temp_path {dir};\n uwsgi_temp_path {dir};\n scgi_temp_path {dir};\n\
         upstream apps {{\n{upstreams} keepalive 128;\n}}\n server {{\n {listen} location / {{\n proxy_pass http://apps;\n proxy_http_version 1.1;\n proxy_set_header Connection \"\";\n proxy_set_header Host $host;\n }}\n }}\n}}\n",
        dir = dir.display(),
        nginx_workers = if workers == 0 {
            "auto".to_string()
        } else {
            workers.to_string()
        },
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    Kill(
        Command::new("nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
            ])
            .spawn()
            .expect("running nginx: install it with scripts/setup-bench.sh"),
    )
}

/// A BBS on an embedded store in `dir` that routes `HOST` to `backends`.
async fn routing_bbs(dir: &Path, backends: &[u16]) -> server::RunningBbs {
    let store = Arc::new(EmbeddedStore::open(dir.join("bbs.db")).unwrap());
    let bbs = server::start_with_store(
        store,
        BbsConfig::loopback(StoreUrl::File(dir.join("bbs.db")), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let mut c = BbsClient::connect(format!("http://{}", bbs.grpc_addr))
        .await
        .unwrap();
    let d = fixtures::routed_lrp("bench", 2, HOST);
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(d),
    })
    .await
    .unwrap();
    for (i, port) in backends.iter().enumerate() {
        fixtures::run_instance(&mut c, "bench", i as i32, *port).await;
    }
    bbs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--backend") {
        return run_backend(args[2].parse().unwrap());
    }
    tokio::runtime::Runtime::new().unwrap().block_on(measure());
}

async fn measure() {
    let seconds = arg("--seconds", 10);
    let connections = arg("--connections", 64);
    // Event loops for both proxies: nginx's worker_processes and our --workers
    // (0: one per core, nginx's "auto").
    let workers = arg("--workers", 0);
    let lattice = lattice_bin();

    // Two backends, each its own process.
    let (backends, _procs) = spawn_backends(2);

    // A BBS that routes bench.lattice.localhost to both.
    let dir = tempfile::tempdir().unwrap();
    let bbs = routing_bbs(dir.path(), &backends).await;

    // HTTPS: one certificate for both proxies, and wrk's script for SNI.
    let https = arg("--https", 0) == 1;
    let tls = https.then(|| {
        let script = dir.path().join("loopback.lua");
        std::fs::write(&script, LOOPBACK_LUA).unwrap();
        (write_cert(dir.path()), script)
    });
    let certs = tls.as_ref().map(|(c, _)| c);

    // Our router, as the real binary, access logs off.
    let (router_port, router_https) = (free_port(), free_port());
    let _router = start_router(
        &lattice,
        &bbs.grpc_addr.to_string(),
        router_port,
        certs.map(|c| (router_https, c)),
        workers,
    );
    wait_port(router_port);
    // nginx, same backends, keep-alive upstream.
    let nginx_port = free_port();
    let _nginx = start_nginx(dir.path(), &backends, nginx_port, certs, workers);
    wait_port(nginx_port);
    if https {
        wait_port(router_https);
    }
    let (nginx_target, ours_target) = match &tls {
        Some((_, script)) => (
            Target::https(nginx_port, script),
            Target::https(router_https, script),
        ),
        None => (
            Target::http(nginx_port, Some(HOST)),
            Target::http(router_port, Some(HOST)),
        ),
    };
    let direct_target = Target::http(backends[0], None);

    // Warm up every path, then measure them in rounds.
    for t in [&direct_target, &nginx_target, &ours_target] {
        wrk(t, 1, connections);
    }
    let loops = if workers == 0 {
        "one per core".to_string()
    } else {
        workers.to_string()
    };
    let rounds = arg("--rounds", 3).max(1);
    let mode = if https {
        "both proxies terminating HTTPS (TLS 1.3, same certificate), plain HTTP to the backends"
    } else {
        "plain HTTP"
    };
    println!("wrk -t2 -c{connections} -d{seconds}s, {rounds} rounds, 2 backends, one machine (2 cores shared by wrk, proxy and backends); event loops per proxy: {loops}; {mode}");
    let router_pids = [_router.0.id()];
    let nginx_pids = children(_nginx.0.id());
    assert!(!nginx_pids.is_empty(), "nginx started no worker");
    let (mut direct, mut nginx, mut ours) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        direct.push(wrk(&direct_target, seconds, connections));
        let run_nginx = || wrk_proxy(&nginx_pids, &nginx_target, seconds, connections);
        let run_ours = || wrk_proxy(&router_pids, &ours_target, seconds, connections);
        if round % 2 == 0 {
            nginx.push(run_nginx());
            ours.push(run_ours());
        } else {
            ours.push(run_ours());
            nginx.push(run_nginx());
        }
        println!(
            "round {}: direct {:.0}/s, nginx {:.0}/s, lattice {:.0}/s: lattice / nginx {:.2}; CPU per request: nginx {:.1} µs, lattice {:.1} µs",
            round + 1,
            direct[round].rps,
            nginx[round].rps,
            ours[round].rps,
            ours[round].rps / nginx[round].rps,
            nginx[round].cpu_us,
            ours[round].cpu_us,
        );
    }
    report(&direct, &nginx, &ours, https);
}

/// The means over the rounds of each path, and the ratios.
fn report(direct: &[Wrk], nginx: &[Wrk], ours: &[Wrk], https: bool) {
    let mean = |runs: &[Wrk]| Wrk {
        rps: runs.iter().map(|r| r.rps).sum::<f64>() / runs.len() as f64,
        p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / runs.len() as f64,
        p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / runs.len() as f64,
        cpu_us: runs.iter().map(|r| r.cpu_us).sum::<f64>() / runs.len() as f64,
    };
    let (direct, nginx, ours) = (mean(direct), mean(nginx), mean(ours));
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>14}",
        "path (means)", "requests/s", "p50 ms", "p99 ms", "proxy CPU µs"
    );
    let (nginx_name, ours_name) = match https {
        true => ("nginx HTTPS proxy (peer)", "lattice router HTTPS"),
        false => ("nginx reverse proxy (peer)", "lattice router"),
    };
    for (name, r) in [
        ("direct to one backend", &direct),
        (nginx_name, &nginx),
        (ours_name, &ours),
    ] {
        let cpu = if r.cpu_us.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", r.cpu_us)
        };
        println!(
            "{:<28} {:>12.0} {:>10.2} {:>10.2} {:>14}",
            name, r.rps, r.p50_ms, r.p99_ms, cpu
        );
    }
    println!(
        "throughput lattice / nginx:   {:.2}  (goal >= 1.0)",
        ours.rps / nginx.rps
    );
    println!(
        "proxy CPU per request lattice / nginx: {:.2}  (lower is better)",
        ours.cpu_us / nginx.cpu_us
    );
    println!(
        "added p99 latency vs direct:  lattice {:.2} ms, nginx {:.2} ms  (goal < 1 ms)",
        ours.p99_ms - direct.p99_ms,
        nginx.p99_ms - direct.p99_ms
    );
}
