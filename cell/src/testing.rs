//! Helpers for tests and benchmarks that run real containers: the busybox image, an
//! executor on its own bridge, subnet and port range, and checks for leftovers; and
//! network namespaces standing for hosts ([`Lab`]) with a cell's network made inside
//! one ([`NsHost`]).
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

/// The per-process busybox image's directory.
fn busybox_dir() -> PathBuf {
    std::env::temp_dir().join(format!("lattice-busybox-{}", std::process::id()))
}

/// Removes the process's busybox image when it exits (a test binary, a benchmark).
extern "C" fn remove_busybox() {
    let _ = std::fs::remove_dir_all(busybox_dir());
}

/// The busybox image, built once per process from /bin/busybox and removed when the
/// process exits.
pub fn busybox_rootfs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = busybox_dir();
        crate::rootfs::build_busybox(Path::new("/bin/busybox"), &dir)
            .expect("building the busybox image (install busybox-static with scripts/setup.sh)");
        // SAFETY: registers a plain function with no captured state, once.
        unsafe { libc::atexit(remove_busybox) };
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
        Self::build(grace, vec![], Default::default(), vec![])
    }

    /// An executor that pulls from these registries (HOST:PORT) over plain HTTP.
    pub fn with_insecure_registries(registries: Vec<String>) -> TestExecutor {
        Self::build(
            Duration::from_secs(2),
            registries,
            Default::default(),
            vec![],
        )
    }

    /// An executor trusting these CA certificates (PEM) besides the system's roots.
    pub fn with_extra_ca(extra_ca: Vec<String>) -> TestExecutor {
        Self::build(Duration::from_secs(2), vec![], Default::default(), extra_ca)
    }

    /// [`TestExecutor::with_insecure_registries`] with credentials per registry.
    pub fn with_registry_credentials(
        registries: Vec<String>,
        credentials: BTreeMap<String, (String, String)>,
    ) -> TestExecutor {
        Self::build(Duration::from_secs(2), registries, credentials, vec![])
    }

    fn build(
        grace: Duration,
        insecure_registries: Vec<String>,
        registry_credentials: BTreeMap<String, (String, String)>,
        extra_ca: Vec<String>,
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
                extra_ca,
            },
            shim: shim_command(),
            network: test_network(),
            grace,
            volume_pool_size: Some(8 << 30),
            volume_pool_max: None,
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
                // As a cell shutting down does: with nothing left, the parent cgroup of
                // the containers goes too (it stays while another test's containers run).
                exec.close();
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
        Self::start_with(htpasswd, None)
    }

    /// A registry serving HTTPS with this certificate (PEM, chain) and key.
    pub fn start_with_tls(cert: &Path, key: &Path) -> Registry {
        Self::start_with(None, Some((cert, key)))
    }

    fn start_with(htpasswd: Option<&str>, tls: Option<(&Path, &Path)>) -> Registry {
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
        if let Some((cert, key)) = tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
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

/// [`KernelHost`](crate::network::KernelHost), every call made from a thread inside
/// the network namespace `ns`: a cell's bridge, firewall and overlay set up by the
/// cell's own code inside a namespace standing for a host.
pub struct NsHost {
    ns: std::fs::File,
}

impl NsHost {
    /// The host whose namespace is `ns`.
    pub fn new(ns: std::fs::File) -> NsHost {
        NsHost { ns }
    }

    fn inside<T: Send>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        in_netns(&self.ns, work)
    }
}

/// Runs `work` on a thread of its own inside the network namespace `ns` (sockets it
/// makes stay in that namespace wherever they are used afterwards).
pub fn in_netns<T: Send>(
    ns: &std::fs::File,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    crate::network::namespace::run_inside(ns, work)
}

/// Spawns `cmd` inside the network namespace `ns` (setns before exec: the mount
/// namespace stays the caller's, unlike `ip netns exec`).
pub fn spawn_in(
    ns: &std::fs::File,
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let fd = ns.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls setns(2), which is
    // async-signal-safe, on a descriptor the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

mod ns_host {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::Path;

    use super::NsHost;
    use crate::network::firewall::egress::EgressChain;
    use crate::network::forwarder::Forwarder;
    use crate::network::overlay::{Peer, Uplink};
    use crate::network::{Attachment, Host, KernelHost, NetworkConfig, OverlayConfig};

    impl Host for NsHost {
        fn set_up_bridge(&self, cfg: &NetworkConfig) -> anyhow::Result<()> {
            self.inside(|| KernelHost.set_up_bridge(cfg))
        }
        fn remove_bridge(&self, bridge: &str) {
            let _ = self.inside(|| {
                KernelHost.remove_bridge(bridge);
                Ok(())
            });
        }
        fn create_netns(&self, path: &Path) -> anyhow::Result<()> {
            self.inside(|| KernelHost.create_netns(path))
        }
        fn rename_netns(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
            self.inside(|| KernelHost.rename_netns(from, to))
        }
        fn remove_netns(&self, path: &Path) {
            let _ = self.inside(|| {
                KernelHost.remove_netns(path);
                Ok(())
            });
        }
        fn connect(&self, att: &Attachment, cfg: &NetworkConfig) -> anyhow::Result<()> {
            self.inside(|| KernelHost.connect(att, cfg))
        }
        fn forget_neighbour(&self, bridge: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
            self.inside(|| KernelHost.forget_neighbour(bridge, addr))
        }
        fn forward(&self, at: SocketAddr, target: SocketAddr) -> std::io::Result<Forwarder> {
            self.inside(|| Ok(KernelHost.forward(at, target)?))
                .map_err(std::io::Error::other)
        }
        fn set_egress(&self, bridge: &str, chain: &EgressChain) -> anyhow::Result<()> {
            self.inside(|| KernelHost.set_egress(bridge, chain))
        }
        fn remove_egress(&self, bridge: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
            self.inside(|| KernelHost.remove_egress(bridge, ip))
        }
        fn open_file_server(&self, cfg: &NetworkConfig, port: u16) -> anyhow::Result<()> {
            self.inside(|| KernelHost.open_file_server(cfg, port))
        }
        fn set_up_overlay(&self, cfg: &OverlayConfig, mac: [u8; 6]) -> anyhow::Result<()> {
            self.inside(|| KernelHost.set_up_overlay(cfg, mac))
        }
        fn remove_overlay(&self, device: &str) {
            let _ = self.inside(|| {
                KernelHost.remove_overlay(device);
                Ok(())
            });
        }
        fn add_overlay_peer(&self, device: &str, peer: &Peer) -> anyhow::Result<()> {
            self.inside(|| KernelHost.add_overlay_peer(device, peer))
        }
        fn remove_overlay_peer(&self, device: &str, peer: &Peer) {
            let _ = self.inside(|| {
                KernelHost.remove_overlay_peer(device, peer);
                Ok(())
            });
        }
        fn uplink(&self, local: Ipv4Addr) -> anyhow::Result<Uplink> {
            self.inside(|| KernelHost.uplink(local))
        }
        fn add_direct_route(&self, uplink: &str, peer: &Peer) -> anyhow::Result<()> {
            self.inside(|| KernelHost.add_direct_route(uplink, peer))
        }
        fn remove_direct_route(&self, uplink: &str, peer: &Peer) {
            let _ = self.inside(|| {
                KernelHost.remove_direct_route(uplink, peer);
                Ok(())
            });
        }
    }
}

/// Network namespaces made for one test or benchmark (named `lattice-TAG-PID-NAME`),
/// removed on drop, even when it fails: the kernel destroys their veths, bridges and
/// VXLAN devices with them.
pub struct Lab {
    prefix: String,
    made: Vec<PathBuf>,
}

impl Lab {
    /// An empty lab; `tag` tells whose namespaces these are.
    pub fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("lattice-{tag}-{}", std::process::id()),
            made: vec![],
        }
    }

    /// The full name of the lab's namespace `n`.
    pub fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Where the namespaces made so far are mounted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.made.clone()
    }

    /// Makes the namespace `n` (its loopback up) and opens it.
    pub fn netns(&mut self, n: &str) -> std::fs::File {
        let path = PathBuf::from(crate::network::namespace::NETNS_DIR).join(self.name(n));
        self.made.push(path.clone());
        crate::network::namespace::create(&path).expect("making a network namespace");
        self.ip(n, "link set lo up");
        std::fs::File::open(&path).expect("opening the network namespace")
    }

    /// `ip -n NS ARGS…`, which must succeed.
    pub fn ip(&self, ns: &str, args: &str) {
        let out = std::process::Command::new("ip")
            .arg("-n")
            .arg(self.name(ns))
            .args(args.split_whitespace())
            .output()
            .expect("running ip (iproute2)");
        assert!(
            out.status.success(),
            "ip -n {ns} {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS route show DEST`'s output.
    pub fn routes(&self, ns: &str, dest: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.name(ns), "route", "show", dest])
            .output()
            .expect("running ip (iproute2)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Joins the namespaces `a` and `b` with a veth pair (`dev_a` in `a` at
    /// `addr_a`/24, `dev_b` in `b` at `addr_b`/24), both ends up.
    pub fn link(
        &self,
        (a, dev_a, addr_a): (&str, &str, &str),
        (b, dev_b, addr_b): (&str, &str, &str),
    ) {
        self.ip(
            a,
            &format!(
                "link add {dev_a} type veth peer name {dev_b} netns {}",
                self.name(b)
            ),
        );
        self.ip(a, &format!("addr add {addr_a}/24 dev {dev_a}"));
        self.ip(a, &format!("link set {dev_a} up"));
        self.ip(b, &format!("addr add {addr_b}/24 dev {dev_b}"));
        self.ip(b, &format!("link set {dev_b} up"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for path in self.made.drain(..).rev() {
            crate::network::namespace::remove(&path);
        }
    }
}
