//! Helpers for tests and benchmarks that run real containers: the busybox image, an
//! executor on its own bridge, subnet and port range, and checks for leftovers.
//! Containers need root: [`require_root`] fails (never skips) without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lattice_specs::models;

use crate::executor::{ContainerRequest, Executor, ExecutorConfig};
use crate::network::NetworkConfig;
use crate::rootfs::Providers;
use crate::shim::ShimEvent;

/// Fails the test unless it runs as root (containers need it; CI runs as root).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs real containers and needs root (CI runs as root; run `sudo scripts/test.sh`)"
    );
}

/// The busybox image, built once per process from /bin/busybox.
pub fn busybox_rootfs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lattice-busybox-{}", std::process::id()));
        crate::rootfs::build_busybox(Path::new("/bin/busybox"), &dir)
            .expect("building the busybox image (install busybox-static with scripts/setup.sh)");
        dir
    })
    .clone()
}

/// The shim binary next to the test binary (cargo builds `lattice-shim` with the
/// workspace), or `$LATTICE_SHIM`.
pub fn shim_command() -> Vec<std::ffi::OsString> {
    if let Some(p) = std::env::var_os("LATTICE_SHIM") {
        return vec![p];
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("lattice-shim");
        if candidate.is_file() {
            return vec![candidate.into_os_string()];
        }
        dir = d.parent();
    }
    panic!(
        "lattice-shim not found near {} (run `cargo build --workspace --bins`, or set LATTICE_SHIM)",
        exe.display()
    )
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network of its own for one test: a bridge, a /24 and 40 host ports, distinct
/// from the other tests of this process.
pub fn test_network() -> NetworkConfig {
    let n = (std::process::id() + NEXT.fetch_add(1, Ordering::SeqCst) * 7) % 200 + 20;
    NetworkConfig {
        bridge: format!("ltest{n}"),
        gateway: std::net::Ipv4Addr::new(10, 253, n as u8, 1),
        prefix: 24,
        ports: (20000 + n as u16 * 40, 20000 + n as u16 * 40 + 39),
        ..Default::default()
    }
}

/// An executor in a temporary directory, removed (with its bridge) on drop.
pub struct TestExecutor {
    pub exec: Arc<Executor>,
    pub dir: PathBuf,
}

impl TestExecutor {
    pub fn new() -> TestExecutor {
        Self::with_grace(Duration::from_secs(2))
    }

    pub fn with_grace(grace: Duration) -> TestExecutor {
        Self::build(grace, vec![], Default::default())
    }

    /// An executor that pulls from these registries (HOST:PORT) over plain HTTP.
    pub fn with_insecure_registries(registries: Vec<String>) -> TestExecutor {
        Self::build(Duration::from_secs(2), registries, Default::default())
    }

    /// [`TestExecutor::with_insecure_registries`] with credentials per registry.
    pub fn with_registry_credentials(
        registries: Vec<String>,
        credentials: BTreeMap<String, (String, String)>,
    ) -> TestExecutor {
        Self::build(Duration::from_secs(2), registries, credentials)
    }

    fn build(
        grace: Duration,
        insecure_registries: Vec<String>,
        registry_credentials: BTreeMap<String, (String, String)>,
    ) -> TestExecutor {
        require_root();
        let dir =
            std::env::temp_dir().join(format!("lattice-cell-{}", uuid::Uuid::new_v4().simple()));
        let cfg = ExecutorConfig {
            data_dir: dir.clone(),
            providers: Providers {
                preloaded: [("busybox".to_string(), busybox_rootfs())].into(),
                insecure_registries,
                // Tests build their layouts in temporary directories.
                oci_roots: vec![std::env::temp_dir()],
                registry_credentials,
            },
            shim: shim_command(),
            network: test_network(),
            grace,
            volume_pool_size: Some(8 << 30),
            scratch_size: Some(4 << 30),
        };
        TestExecutor {
            exec: Executor::new(cfg).expect("executor"),
            dir,
        }
    }

    /// Another executor over the same directory and network (a restarted rep).
    pub fn restart(&self) -> Arc<Executor> {
        Executor::new(self.exec.config().clone()).expect("executor")
    }
}

impl Default for TestExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestExecutor {
    fn drop(&mut self) {
        destroy_all(self.exec.config().clone());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Destroys every container an executor recorded under `cfg.data_dir` (what a test,
/// or a killed cell, left running), then removes the executor's bridge. Blocking: it
/// runs on a thread of its own, so it may be called from drop inside a runtime.
pub fn destroy_all(cfg: ExecutorConfig) {
    let bridge = cfg.network.bridge.clone();
    let data_dir = cfg.data_dir.clone();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            if let Ok(exec) = Executor::new(cfg) {
                for c in exec.on_disk() {
                    exec.destroy(c.handle()).await;
                }
                if let Some(v) = exec.volumes() {
                    v.close();
                }
            }
        });
    })
    .join();
    // Whatever is still mounted under the data dir (a killed cell's volumes and pool).
    crate::volume::unmount_all(&data_dir);
    crate::network::remove_bridge(&bridge);
}

/// The action builders every crate's tests share (`lattice_specs::testing`); `run`
/// takes the arguments here.
pub use lattice_specs::testing::{download, run_with_args as run, serial, sh, upload};

/// A gzip-compressed tar of `files` (name, content), root-owned, mode 0644.
pub fn tgz_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, *body).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// An HTTP server on loopback for transfers: `GET /app.tgz` answers `tgz`, and the
/// body of the last `POST /upload` is kept in the returned buffer.
pub async fn transfer_server(tgz: Vec<u8>) -> (String, Arc<std::sync::Mutex<Vec<u8>>>) {
    use axum::routing::{get, post};
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new()
        .route("/app.tgz", get(move || async move { tgz.clone() }))
        .route(
            "/upload",
            post(move |body: bytes::Bytes| async move {
                *sink.lock().unwrap() = body.to_vec();
                "ok"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// A busybox container request running `action`.
pub fn request(handle: &str, action: models::Action) -> ContainerRequest {
    ContainerRequest {
        handle: handle.into(),
        rootfs: "preloaded:busybox".into(),
        memory_mb: 64,
        disk_mb: 64,
        cpu_weight: 10,
        max_pids: 0,
        privileged: false,
        host_network: false,
        ports: vec![],
        env: vec![],
        action,
        log_source: "APP/0".into(),
        volume_mounts: vec![],
        egress_rules: vec![],
        tags: Default::default(),
    }
}

/// Waits for an event matching `want`; panics after `timeout` with what was seen.
pub async fn wait_event(
    exec: &Executor,
    handle: &str,
    timeout: Duration,
    want: impl Fn(&ShimEvent) -> bool,
) -> ShimEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut signal = exec.event_signal(handle);
    loop {
        let (events, _) = exec.events(handle, 0);
        if let Some(e) = events.iter().find(|e| want(e)) {
            return e.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let log =
                std::fs::read_to_string(exec.dir(handle).join("shim.log")).unwrap_or_default();
            panic!("container {handle}: no matching event within {timeout:?}; saw {events:?}; shim log: {log}");
        }
        let poll = if signal.is_live() {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(2)
        };
        tokio::select! {
            _ = signal.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// What a destroyed container could have left behind; empty when nothing. (Waits up to
/// 2 s for the kernel's asynchronous removal of the container's veth pair.)
pub fn leftovers(exec: &Executor, handle: &str) -> Vec<String> {
    let mut found = vec![];
    for d in crate::cgroup::existing(&crate::executor::cgroup_path(handle)) {
        found.push(format!("cgroup {}", d.display()));
    }
    let dir = exec.dir(handle);
    if crate::rootfs::is_mounted(&dir.join("rootfs")) {
        found.push("rootfs mount".into());
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    let (netns, veth) = crate::network::names(handle);
    if Path::new("/var/run/netns").join(&netns).exists() {
        found.push(format!("netns {netns}"));
    }
    // The kernel frees a deleted namespace's veth pair in the background (tens of ms).
    let veth_path = Path::new("/sys/class/net").join(&veth);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while veth_path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if veth_path.exists() {
        found.push(format!("veth {veth} (2 s after its namespace went)"));
    }
    if exec.config().data_dir.join("run").join(handle).exists() {
        found.push("libcontainer state".into());
    }
    found
}

/// A real OCI registry (Debian's `docker-registry`, the CNCF distribution) on a free
/// loopback port, storing into a temporary directory; killed and removed on drop.
pub struct Registry {
    child: std::process::Child,
    /// 127.0.0.1:PORT
    pub addr: String,
    dir: PathBuf,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with_htpasswd(None)
    }

    /// A registry that wants HTTP Basic credentials: `htpasswd` is one `USER:BCRYPT`
    /// line (bcrypt is the only hash the registry takes).
    pub fn start_with_htpasswd(htpasswd: Option<&str>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "lattice-registry-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(line) = htpasswd {
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: lattice\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry not found: run scripts/setup.sh (it installs Debian's docker-registry)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry { child, addr, dir }
    }

    /// Pushes the OCI layout at `layout` (tag `tag`) as `REPO:TAG` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        self.push_with(layout, tag, repo, &[])
    }

    /// [`Registry::push`] with more skopeo flags (e.g. recompressing the layers).
    pub fn push_with(&self, layout: &Path, tag: &str, repo: &str, flags: &[&str]) {
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(flags)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .expect("skopeo not found: run scripts/setup.sh (it installs skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
