//! Shared bits of the benchmark programs in `src/bin`; see bench/RESULTS.md.

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): the
/// state (field 3) first, so field N is at index N - 3. Empty when the process is gone.
pub fn proc_stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    after.split_whitespace().map(str::to_string).collect()
}

/// User + system CPU time of process `pid`, all its threads, in clock ticks (fields 14
/// and 15); 0 when it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = proc_stat_fields(pid);
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// The value after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A runc bundle in `dir/bundle` running `args` in the busybox image (read-only root,
/// no terminal); with `host_network` it shares the host's network namespace.
pub fn runc_bundle(dir: &std::path::Path, args: &[&str], host_network: bool) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let st = std::process::Command::new("runc")
        .args(["spec"])
        .current_dir(&bundle)
        .status()
        .expect("runc not found: run scripts/setup-bench.sh");
    assert!(st.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"]["path"] = lattice_cell::testing::busybox_rootfs()
        .display()
        .to_string()
        .into();
    spec["root"]["readonly"] = true.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    if host_network {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    bundle
}

// ---- `lattice up` and `ltc` as the cluster benchmarks drive them ---------------------

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary next to the running benchmark (`target/release/NAME`).
pub fn bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe().unwrap().with_file_name(name)
}

pub struct Up {
    pub child: Child,
}

impl Up {
    /// Starts `lattice up`; returns it and the time to its ready line.
    pub fn start(args: &[String]) -> (Up, Duration) {
        let t0 = Instant::now();
        let mut child = Command::new(bin("lattice"))
            .args(args)
            .env("LATTICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("lattice not built: cargo build --release --workspace --bins");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 && !line.starts_with("lattice up ready") {
            line.clear();
        }
        assert!(
            line.starts_with("lattice up ready"),
            "lattice up did not start"
        );
        let took = t0.elapsed();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (Up { child }, took)
    }

    /// Stops the cluster as Ctrl-C does (containers stopped, volumes unmounted).
    pub fn stop(self) {}
}

/// Also when a benchmark panics: the cluster never outlives it (nor its mounts).
impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
            // child is not reaped yet (try_wait said so), so its pid is still its own.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// Runs `ltc ARGS` with `home` as its LTC_HOME; panics when it fails.
pub fn ltc(home: &std::path::Path, args: &[&str]) {
    let out = Command::new(bin("ltc"))
        .args(args)
        .env("LTC_HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ltc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a benchmark's `lattice up` listens (loopback, free ports).
pub struct UpAddrs {
    pub api: String,
    pub router: String,
    pub cell: String,
}

/// The arguments of a `lattice up` keeping its data in `dir/data`, configured with
/// `cell_toml` (the `[cell]` table: its bridge, subnet and ports, so benchmarks never
/// collide with a running cluster), on free loopback ports.
pub fn up_args(dir: &std::path::Path, cell_toml: &str) -> (Vec<String>, UpAddrs) {
    let config = dir.join("lattice.toml");
    std::fs::write(&config, format!("[cell]\n{cell_toml}")).expect("writing lattice.toml");
    let port = || format!("127.0.0.1:{}", lattice_bbs::testing::free_port());
    let addrs = UpAddrs {
        api: port(),
        router: port(),
        cell: port(),
    };
    let args = [
        "--config",
        config.to_str().unwrap(),
        "up",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--api-listen",
        &addrs.api,
        "--router-listen",
        &addrs.router,
        "--grpc-listen",
        &port(),
        "--cell-listen",
        &addrs.cell,
        "--metrics-listen",
        &port(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (args, addrs)
}

// ---- helper processes the proxy benchmarks start ---------------------------------

/// A child process stopped with SIGTERM when dropped (nginx's master then stops its
/// workers), killed after 5 s if it has not stopped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the child is
        // reaped only below, so its pid is still its own.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 10 s) until something listens on loopback `port`.
pub fn wait_port(port: u16) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {port}");
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        // Field 4, the parent's pid.
        .filter(|&child| proc_stat_fields(child).get(1) == Some(&pid.to_string()))
        .collect()
}

/// `n` backends, each this benchmark's own binary run as `--backend PORT` on a free
/// loopback port, answering once this returns.
pub fn spawn_backends(n: usize) -> (Vec<u16>, Vec<Kill>) {
    let exe = std::env::current_exe().unwrap();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let procs = ports
        .iter()
        .map(|p| {
            Kill(
                Command::new(&exe)
                    .args(["--backend", &p.to_string()])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    ports.iter().for_each(|p| wait_port(*p));
    (ports, procs)
}

/// `lattice` next to this benchmark, built in release.
pub fn lattice_bin() -> std::path::PathBuf {
    let lattice = bin("lattice");
    assert!(
        lattice.exists(),
        "build the router first: cargo build --release -p lattice-cli"
    );
    lattice
}

fn free_port() -> u16 {
    lattice_bbs::testing::free_port()
}
