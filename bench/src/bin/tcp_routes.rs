//! TCP routes' throughput, in one run: through our router (`lattice router`, its
//! `--tcp-listen` port for a route fed by a real BBS) and through nginx's `stream`
//! proxy (Debian's nginx with `libnginx-mod-stream`) to the same two echo backends.
//!
//! Two loads, each over `--connections` concurrent connections for `--seconds`:
//! - stream: every connection echoes 16 KiB chunks back and forth (MB/s echoed);
//! - connect: every worker connects, echoes 64 bytes and closes (connections/s).
//!
//! The proxies are measured in rounds, in alternating order (one round nginx first,
//! the next ours first); figures are means over the rounds. Each proxy's CPU time
//! (user + system: the router's threads, nginx's workers) is divided by what it moved.
//!
//! Needs `scripts/setup-bench.sh` (nginx and its stream module) and release binaries:
//!     cargo build --release -p lattice-cli -p lattice-bench
//!     ./target/release/tcp-routes [--seconds 5] [--connections 32] [--rounds 3] [--workers 0]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::testing::{fixtures, free_port};
use lattice_bench::{arg, children, cpu_ticks, lattice_bin, spawn_backends, wait_port, Kill};
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::DesireLrpRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 16 * 1024;
const SMALL: usize = 64;

/// Backend mode: echo every connection, forever.
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
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// A BBS on an embedded store in `dir` with app `bench`: TCP route `port` → container
/// port 8080, its two instances RUNNING at `backends`.
async fn routing_bbs(dir: &Path, port: u16, backends: &[u16]) -> server::RunningBbs {
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
    let mut d = lattice_specs::testing::desired_lrp("bench", backends.len() as i32);
    d.routes.insert(
        lattice_specs::routes::TCP_ROUTER_KEY.into(),
        format!(r#"[{{"external_port": {port}, "container_port": 8080}}]"#),
    );
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(d),
    })
    .await
    .unwrap();
    for (i, b) in backends.iter().enumerate() {
        fixtures::run_instance(&mut c, "bench", i as i32, *b).await;
    }
    bbs
}

fn start_router(lattice: &Path, bbs: &str, workers: usize) -> Kill {
    Kill(
        Command::new(lattice)
            .args([
                "router",
                "--bbs",
                bbs,
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--tcp-listen",
                "127.0.0.1",
                "--metrics-listen",
                "127.0.0.1:0",
                "--workers",
                &workers.to_string(),
            ])
            .env("LATTICE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// nginx's stream proxy on `port`, round-robin over `backends`.
fn start_nginx(dir: &Path, backends: &[u16], port: u16, workers: usize) -> Kill {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let servers: String = backends
        .iter()
        .map(|b| format!("server 127.0.0.1:{b};"))
        .collect();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes {w};\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
         stream {{ upstream b {{ {servers} }} server {{ listen 127.0.0.1:{port} reuseport; proxy_pass b; }} }}\n",
        w = if workers == 0 { "auto".to_string() } else { workers.to_string() },
        d = dir.display(),
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

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Stream,
    Connect,
}

/// One connection's worth of `load` until `until`; bytes echoed or connections made.
async fn client(
    port: u16,
    load: Load,
    until: Instant,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut buf = vec![7u8; CHUNK];
    match load {
        Load::Stream => {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = s.set_nodelay(true);
            while Instant::now() < until {
                let out = buf.clone();
                if s.write_all(&out).await.is_err() || s.read_exact(&mut buf).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                done.fetch_add(CHUNK as u64, Ordering::Relaxed);
            }
        }
        Load::Connect => {
            while Instant::now() < until {
                let ok = async {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
                    s.set_nodelay(true)?;
                    s.write_all(&buf[..SMALL]).await?;
                    s.read_exact(&mut buf[..SMALL]).await?;
                    std::io::Result::Ok(())
                };
                match ok.await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }
}

/// What one proxy did under one load: per second, and CPU µs per unit (MB or connection).
struct Run {
    rate: f64,
    cpu_us: f64,
    errors: u64,
}

async fn run(port: u16, load: Load, connections: usize, seconds: u64, pids: &[u32]) -> Run {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let cpu0 = ticks(pids);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(port, load, until, done.clone(), errors.clone())))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_s = (ticks(pids) - cpu0) as f64 / hz;
    let n = done.load(Ordering::Relaxed) as f64;
    let units = match load {
        Load::Stream => n / 1e6,
        Load::Connect => n,
    };
    Run {
        rate: units / secs,
        cpu_us: cpu_s * 1e6 / units.max(1e-9),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--backend") {
        return run_backend(args[2].parse().unwrap());
    }
    tokio::runtime::Runtime::new().unwrap().block_on(measure());
}

async fn measure() {
    let seconds = arg("--seconds", 5) as u64;
    let connections = arg("--connections", 32);
    let rounds = arg("--rounds", 3);
    let workers = arg("--workers", 0);
    let lattice = lattice_bin();

    let (backends, _procs) = spawn_backends(2);

    let dir = tempfile::tempdir().unwrap();
    let ours_port = free_port();
    let bbs = routing_bbs(dir.path(), ours_port, &backends).await;
    let router = start_router(&lattice, &bbs.grpc_addr.to_string(), workers);
    wait_port(ours_port);
    let nginx_port = free_port();
    let nginx = start_nginx(dir.path(), &backends, nginx_port, workers);
    wait_port(nginx_port);
    let ours_pids = vec![router.0.id()];
    let nginx_pids = children(nginx.0.id());

    println!(
        "TCP routes: {connections} connections, {seconds}s per run, {rounds} rounds, 2 echo backends"
    );
    for (load, name, unit) in [
        (Load::Stream, "stream (16 KiB echoes)", "MB/s"),
        (
            Load::Connect,
            "connect (64 B echo per connection)",
            "conn/s",
        ),
    ] {
        // Warm both up.
        run(nginx_port, load, connections, 1, &nginx_pids).await;
        run(ours_port, load, connections, 1, &ours_pids).await;
        let (mut nginx_runs, mut ours_runs) = (vec![], vec![]);
        for r in 0..rounds {
            let order = if r % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for nginx_turn in order {
                let (port, pids) = match nginx_turn {
                    true => (nginx_port, &nginx_pids),
                    false => (ours_port, &ours_pids),
                };
                let x = run(port, load, connections, seconds, pids).await;
                println!(
                    "  round {} {:<6} {:>10.1} {unit}  cpu {:>8.1} µs/{}  errors {}",
                    r + 1,
                    if nginx_turn { "nginx" } else { "ours" },
                    x.rate,
                    x.cpu_us,
                    if load == Load::Stream { "MB" } else { "conn" },
                    x.errors
                );
                match nginx_turn {
                    true => nginx_runs.push(x),
                    false => ours_runs.push(x),
                }
            }
        }
        let mean = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
        let (n, o) = (mean(&nginx_runs, |r| r.rate), mean(&ours_runs, |r| r.rate));
        let (nc, oc) = (
            mean(&nginx_runs, |r| r.cpu_us),
            mean(&ours_runs, |r| r.cpu_us),
        );
        println!(
            "{name}: nginx {n:.1} {unit}, ours {o:.1} {unit}: ours/nginx throughput {:.2}x; CPU per unit nginx {nc:.1} µs, ours {oc:.1} µs (nginx/ours {:.2}x)",
            o / n,
            nc / oc
        );
    }
}
