//! Support for end-to-end tests: the `lattice` binary run as a real process,
//! killed and restarted like a crashing component would be; on loopback, or each
//! component on a host of its own on a LAN ([`hosts`]).

pub mod backups;
pub mod hosts;
pub mod images;
pub mod lan_cluster;
pub mod lrps;
pub mod openssh;
pub mod pki;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use lattice_bbs::testing::{free_port, EtcdServer};

/// The `lattice` binary, built (or confirmed fresh) once per test process; or the
/// one `LATTICE_BIN` names (a benchmark's release build), as it is.
pub fn lattice_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LATTICE_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "lattice-cli",
                "-p",
                "lattice-ltc",
                "--bin",
                "lattice",
                "--bin",
                "ltc",
            ])
            .current_dir(&root)
            .status()
            .expect("running cargo build for the lattice binary");
        assert!(status.success(), "building the lattice binary failed");
        // target/<profile>/deps/<test> → target/<profile>/lattice
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("lattice");
        assert!(
            bin.exists(),
            "lattice binary not found at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The `ltc` binary (crate `lattice-ltc`, built with `lattice` into the same directory).
pub fn ltc_bin() -> PathBuf {
    lattice_bin().with_file_name("ltc")
}

/// A `lattice` subcommand run as a child process, ready once it prints its
/// ready line; killed (SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
    args: Vec<String>,
    ready_prefix: String,
    /// The host it runs on (none: the test's own network namespace).
    host: Option<hosts::Host>,
}

impl Process {
    pub fn start(args: Vec<String>, ready_prefix: &str) -> Process {
        Self::start_on(None, args, ready_prefix)
    }

    /// [`Process::start`] on `host` (and again there on a restart).
    pub fn start_on(host: Option<&hosts::Host>, args: Vec<String>, ready_prefix: &str) -> Process {
        let mut p = Process {
            child: None,
            args,
            ready_prefix: ready_prefix.into(),
            host: host.cloned(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(lattice_bin());
        if let Some(host) = &self.host {
            host.command(&mut cmd);
        }
        let mut child = cmd
            .args(&self.args)
            // LATTICE_TEST_LOG (e.g. `info,lattice_brain=debug`) to see more.
            .env(
                "LATTICE_LOG",
                std::env::var("LATTICE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting lattice");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let prefix = self.ready_prefix.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&prefix) {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!(
                "`lattice {}` did not report ready within 20 s",
                self.args.join(" ")
            );
        }
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as Ctrl-C would, and wait (up to 60 s) for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the process is running");
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "`lattice {}` did not stop within 60 s of SIGTERM",
                    self.args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again after [`Process::terminate`] or [`Process::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the process is still running");
        self.spawn();
    }

    /// Kill and start again with the same arguments (same ports).
    pub fn restart(&mut self) {
        self.kill();
        // The ports were just released; retry briefly if the OS is slow to free them.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            match r {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (e.g. after an
    /// evacuation); its exit status, or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `lattice bbs` process on fixed free ports (kept across restarts).
pub struct BbsProcess {
    pub process: Process,
    /// Where the other components reach its gRPC API.
    pub grpc: String,
    pub api: String,
    /// On a host: the test's way in to its gRPC API.
    grpc_tunnel: Option<hosts::Tunnel>,
    /// How the test's client reaches it over mutual TLS (None: plaintext).
    pub tls: Option<lattice_tls::client::ClientTls>,
}

impl BbsProcess {
    /// Start `lattice bbs --store STORE`.
    pub fn start(store: &str, extra: &[&str]) -> BbsProcess {
        let grpc = format!("127.0.0.1:{}", free_port());
        let api = format!("127.0.0.1:{}", free_port());
        Self::start_at(None, grpc, api, store, extra)
    }

    /// [`BbsProcess::start`] on `host`: gRPC at IP:8889, the public API at IP:8888.
    pub fn start_on(host: &hosts::Host, store: &str, extra: &[&str]) -> BbsProcess {
        Self::start_at(Some(host), host.addr(8889), host.addr(8888), store, extra)
    }

    fn start_at(
        host: Option<&hosts::Host>,
        grpc: String,
        api: String,
        store: &str,
        extra: &[&str],
    ) -> BbsProcess {
        let mut args: Vec<String> = vec![
            "bbs".into(),
            "--store".into(),
            store.into(),
            "--listen".into(),
            grpc.clone(),
            "--api-listen".into(),
            api.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        BbsProcess {
            process: Process::start_on(host, args, "lattice bbs ready"),
            grpc_tunnel: host.map(|h| h.tunnel(&grpc)),
            grpc,
            api,
            tls: None,
        }
    }

    pub fn kill(&mut self) {
        self.process.kill()
    }

    pub fn restart(&mut self) {
        self.process.restart()
    }

    pub async fn client(
        &self,
    ) -> lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let grpc = match &self.grpc_tunnel {
            Some(t) => t.addr.to_string(),
            None => self.grpc.clone(),
        };
        if let Some(tls) = &self.tls {
            // Connects at the first call (the BBS answered its ready line already).
            let ch = lattice_tls::client::lazy_channel(&grpc, Some(tls), |e| e).unwrap();
            return lattice_specs::bbs_api::bbs_client::BbsClient::new(ch);
        }
        loop {
            match lattice_specs::bbs_api::bbs_client::BbsClient::connect(format!("http://{grpc}"))
                .await
            {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot connect to the BBS at {}: {e}", self.grpc)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// A `lattice brain` process.
pub struct BrainProcess {
    pub process: Process,
    pub id: String,
    pub metrics: String,
}

impl BrainProcess {
    pub fn start(bbs_grpc: &str, id: &str, extra: &[&str]) -> BrainProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        Self::start_at(None, metrics, bbs_grpc, id, extra)
    }

    /// [`BrainProcess::start`] on `host`: its /metrics and /readyz at IP:8890.
    pub fn start_on(host: &hosts::Host, bbs_grpc: &str, id: &str, extra: &[&str]) -> BrainProcess {
        Self::start_at(Some(host), host.addr(8890), bbs_grpc, id, extra)
    }

    fn start_at(
        host: Option<&hosts::Host>,
        metrics: String,
        bbs_grpc: &str,
        id: &str,
        extra: &[&str],
    ) -> BrainProcess {
        let mut args: Vec<String> = vec![
            "brain".into(),
            "--bbs".into(),
            bbs_grpc.into(),
            "--id".into(),
            id.into(),
            "--metrics-listen".into(),
            metrics.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        BrainProcess {
            process: Process::start_on(host, args, "lattice brain ready"),
            id: id.into(),
            metrics,
        }
    }
}

/// A `lattice router` process on fixed free ports (kept across restarts).
pub struct RouterProcess {
    pub process: Process,
    pub listen: String,
    pub metrics: String,
}

impl RouterProcess {
    pub fn start(bbs_grpc: &str) -> RouterProcess {
        let listen = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        Self::start_at(None, listen, metrics, bbs_grpc, &[])
    }

    /// [`RouterProcess::start`] on `host`: serving at IP:8080, /metrics and /readyz at
    /// IP:8891.
    pub fn start_on(host: &hosts::Host, bbs_grpc: &str) -> RouterProcess {
        Self::start_on_with(host, bbs_grpc, &[])
    }

    /// [`RouterProcess::start_on`] with more flags (`--tls-*`).
    pub fn start_on_with(host: &hosts::Host, bbs_grpc: &str, extra: &[String]) -> RouterProcess {
        Self::start_at(
            Some(host),
            host.addr(8080),
            host.addr(8891),
            bbs_grpc,
            extra,
        )
    }

    fn start_at(
        host: Option<&hosts::Host>,
        listen: String,
        metrics: String,
        bbs_grpc: &str,
        extra: &[String],
    ) -> RouterProcess {
        let mut args: Vec<String> = vec![
            "router".into(),
            "--bbs".into(),
            bbs_grpc.into(),
            "--listen".into(),
            listen.clone(),
            "--metrics-listen".into(),
            metrics.clone(),
        ];
        args.extend(extra.iter().cloned());
        RouterProcess {
            process: Process::start_on(host, args, "lattice router ready"),
            listen,
            metrics,
        }
    }
}

/// Send a signal to a process (SIGSTOP/SIGCONT to pause and resume etcd).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a pid that is
    // gone makes it fail with ESRCH, which is ignored.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A `lattice cell` process with its own data directory, bridge, subnet and host
/// ports. Dropping it kills the process and then destroys every container it left
/// (a killed rep leaves its containers running on purpose), and the bridge.
pub struct CellProcess {
    pub process: Process,
    pub id: String,
    /// Where the rep listens (IP:PORT), as the brain and BBS reach it.
    pub listen: String,
    pub data_dir: tempfile::TempDir,
    pub network: lattice_cell::network::NetworkConfig,
    /// On a host: the test's way in to its HTTP API.
    http_tunnel: Option<hosts::Tunnel>,
    /// The test's HTTPS client to the rep (None: plain HTTP).
    pub tls: Option<reqwest::Client>,
}

impl CellProcess {
    pub fn start(bbs_grpc: &str, id: &str, extra: &[&str]) -> CellProcess {
        let listen = format!("127.0.0.1:{}", free_port());
        Self::start_at(None, listen, bbs_grpc, id, extra)
    }

    /// [`CellProcess::start`] on `host`: the rep at IP:1800, published ports on the
    /// host's address; its own bridge (`test_network`'s name), its subnet leased from
    /// the BBS and the overlay on (unless `extra` names a `--subnet`).
    pub fn start_on(host: &hosts::Host, bbs_grpc: &str, id: &str, extra: &[&str]) -> CellProcess {
        let ip = host.ip().to_string();
        let extra: Vec<&str> = ["--address", ip.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::start_at(Some(host), host.addr(1800), bbs_grpc, id, &extra)
    }

    fn start_at(
        host: Option<&hosts::Host>,
        listen: String,
        bbs_grpc: &str,
        id: &str,
        extra: &[&str],
    ) -> CellProcess {
        lattice_cell::testing::require_root();
        let data_dir = tempfile::tempdir().unwrap();
        let network = lattice_cell::testing::test_network();
        if let Some(h) = host {
            h.record_cell(id, data_dir.path(), &network);
        }
        let mut args: Vec<String> = vec![
            "cell".into(),
            "--bbs".into(),
            bbs_grpc.into(),
            "--listen".into(),
            listen.clone(),
            "--cell-id".into(),
            id.into(),
            "--data-dir".into(),
            data_dir.path().display().to_string(),
            "--bridge".into(),
            network.bridge.clone(),
            "--ports".into(),
            format!("{}-{}", network.ports.0, network.ports.1),
            "--lease-ttl".into(),
            "3".into(),
            "--sync-interval".into(),
            "2".into(),
            "--grace".into(),
            "2".into(),
        ];
        if host.is_none() {
            args.extend([
                "--subnet".into(),
                format!("{}/{}", network.gateway, network.prefix),
            ]);
        } else if !extra.contains(&"--subnet") {
            // A host of its own, as on a LAN of machines: its subnet leased from the
            // BBS, the overlay to the other cells' subnets: routed directly to the
            // cells on its segment, through VXLAN to the others.
            args.push("--overlay".into());
            args.push("--overlay-direct-routing".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        CellProcess {
            process: Process::start_on(host, args, "lattice cell ready"),
            id: id.into(),
            http_tunnel: host.map(|h| h.tunnel(&listen)),
            listen,
            data_dir,
            network,
            tls: None,
        }
    }

    /// Where the test reaches the rep's HTTP API (IP:PORT).
    pub fn http(&self) -> String {
        match &self.http_tunnel {
            Some(t) => t.addr.to_string(),
            None => self.listen.clone(),
        }
    }

    /// `GET PATH` of the rep's HTTP API (over TLS when the cell has a certificate).
    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        match &self.tls {
            Some(c) => c.get(format!("https://{}{path}", self.http())).send().await,
            None => reqwest::get(format!("http://{}{path}", self.http())).await,
        }
    }

    /// The containers the cell reports (`GET /v1/containers`).
    pub async fn containers(&self) -> Vec<serde_json::Value> {
        self.get("/v1/containers")
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /v1/containers")
            .json()
            .await
            .expect("containers JSON")
    }
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        self.process.kill();
        match &self.process.host {
            // Where its bridge is: the host's namespace.
            Some(host) => {
                host.run(|| destroy_cell_leftovers(self.data_dir.path(), &self.network));
                host.forget_cell(&self.id);
            }
            None => destroy_cell_leftovers(self.data_dir.path(), &self.network),
        }
    }
}

/// A chunked HTTP/1.1 body, decoded.
pub fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![];
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Polls `f` every 200 ms until it gives a value; panics after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `lattice up` as a user runs it, on free ports, with its own data directory and a
/// network of its own given through a TOML config file (`[cell]` bridge, subnet and
/// ports). Dropping it kills the process and destroys every container left.
pub struct UpProcess {
    pub process: Process,
    /// http://127.0.0.1:PORT
    pub api: String,
    /// 127.0.0.1:PORT
    pub router: String,
    /// The BBS's gRPC address (more cells can join there).
    pub grpc: String,
    /// The cell's rep (mutual TLS only).
    pub cell: String,
    /// The brain's, router's and cell's /metrics, and /readyz (IP:PORT).
    pub metrics: String,
    /// The ssh proxy (Diego's, for the original ltc): 127.0.0.1:PORT.
    pub ssh: String,
    /// The WebDAV blob store (the original ltc's droplet store): 127.0.0.1:PORT.
    pub dav: String,
    pub data_dir: tempfile::TempDir,
    network: lattice_cell::network::NetworkConfig,
}

/// What an `ltc` run said.
#[derive(Debug)]
pub struct LtcOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl UpProcess {
    pub fn start() -> UpProcess {
        Self::start_with(&[])
    }

    /// `lattice up` with more flags (e.g. `--store etcd://…`).
    pub fn start_with(extra: &[&str]) -> UpProcess {
        lattice_cell::testing::require_root();
        let data_dir = tempfile::tempdir().unwrap();
        let network = lattice_cell::testing::test_network();
        let config = data_dir.path().join("lattice.toml");
        std::fs::write(
            &config,
            format!(
                "[cell]\nbridge = \"{}\"\nsubnet = \"{}/{}\"\nports = \"{}-{}\"\ngrace = 2\nsync_interval = 2\n",
                network.bridge, network.gateway, network.prefix, network.ports.0, network.ports.1
            ),
        )
        .unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        let router = format!("127.0.0.1:{}", free_port());
        let grpc = format!("127.0.0.1:{}", free_port());
        let cell = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let ssh = format!("127.0.0.1:{}", free_port());
        let dav = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = [
            "--config",
            config.to_str().unwrap(),
            "up",
            "--data-dir",
            data_dir.path().join("lattice").to_str().unwrap(),
            "--api-listen",
            &api,
            "--router-listen",
            &router,
            "--grpc-listen",
            &grpc,
            "--cell-listen",
            &cell,
            "--metrics-listen",
            &metrics,
            "--ssh-proxy-listen",
            &ssh,
            "--dav-listen",
            &dav,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        UpProcess {
            process: Process::start(args, "lattice up ready"),
            api: format!("http://{api}"),
            router,
            grpc,
            cell,
            metrics,
            ssh,
            dav,
            data_dir,
            network,
        }
    }

    /// Certificates from this cluster's CA (in `DATA/tls`), for more components.
    pub fn pki(&self) -> pki::TestPki {
        pki::TestPki::of(&self.data_dir.path().join("lattice/tls"))
    }

    /// `ltc target` this cluster (its API, and its router as the apps' domain).
    pub fn target(&self) {
        let port = self.router.rsplit(':').next().unwrap();
        let out = self.ltc_ok(&[
            "target",
            &self.api,
            "--domain",
            &format!("lattice.localhost:{port}"),
        ]);
        assert!(out.contains("Target set to"), "{out}");
    }

    /// Runs `ltc ARGS` with this cluster's ltc home (as the user's own `~/.lattice`).
    pub fn ltc(&self, args: &[&str]) -> LtcOutput {
        let out = Command::new(ltc_bin())
            .args(args)
            .env("LTC_HOME", self.data_dir.path().join("ltc"))
            .env_remove("LTC_TARGET")
            .output()
            .expect("running ltc");
        LtcOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Runs `ltc ARGS` and insists it succeeds.
    pub fn ltc_ok(&self, args: &[&str]) -> String {
        let out = self.ltc(args);
        assert!(out.ok, "ltc {args:?} failed: {out:#?}");
        out.stdout
    }

    /// The app's page through the router, as `curl -H 'Host: APP.lattice.localhost'`.
    pub fn get(&self, app: &str) -> Option<(u16, String)> {
        self.get_path(app, "/")
            .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `path` of the app through the router: status and body bytes.
    pub fn get_path(&self, app: &str, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut s = std::net::TcpStream::connect(&self.router).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        use std::io::{Read, Write};
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {app}.lattice.localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut resp = vec![];
        s.read_to_end(&mut resp).ok()?;
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut body = resp[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        Some((status, body))
    }

    /// `GET path` from `addr` (host:port): the body, whatever the status.
    pub fn http_get(addr: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = vec![];
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp).into_owned();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// Containers the cell has on disk.
    pub fn containers_on_disk(&self) -> usize {
        // Not the trash (`.trash`), which is on the containers' filesystem too.
        std::fs::read_dir(self.data_dir.path().join("lattice/cell/containers"))
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        self.process.kill();
        destroy_cell_leftovers(&self.data_dir.path().join("lattice/cell"), &self.network);
    }
}

/// Destroys every container a killed cell left in `data_dir`, and its bridge.
fn destroy_cell_leftovers(
    data_dir: &std::path::Path,
    network: &lattice_cell::network::NetworkConfig,
) {
    lattice_cell::testing::destroy_all(lattice_cell::executor::ExecutorConfig {
        data_dir: data_dir.to_path_buf(),
        providers: Default::default(),
        shim: vec![lattice_bin().into_os_string(), "shim".into()],
        network: network.clone(),
        grace: Duration::from_secs(1),
        volume_pool_size: None,
        volume_pool_max: None,
        scratch_size: None,
    });
}

/// The BBS's gRPC client, as the tests hold it.
pub type BbsClient = lattice_specs::bbs_api::bbs_client::BbsClient<tonic::transport::Channel>;

/// `sh -c SCRIPT` as a Run action.
pub use lattice_specs::testing::sh;

/// Desires Task `guid` (domain `test`): `script` in busybox, its result `/tmp/result`.
pub async fn desire_task(c: &mut BbsClient, guid: &str, script: &str) {
    c.desire_task(lattice_specs::bbs_api::DesireTaskRequest {
        task_guid: guid.into(),
        domain: "test".into(),
        definition: Some(lattice_specs::models::TaskDefinition {
            action: Some(sh(script)),
            result_file: "/tmp/result".into(),
            memory_mb: 16,
            cpu_weight: 10,
            ..lattice_specs::testing::task_definition("/bin/true")
        }),
    })
    .await
    .unwrap();
}

/// A Task as the BBS stores it.
pub async fn task(c: &mut BbsClient, guid: &str) -> lattice_specs::models::Task {
    c.task_by_guid(lattice_specs::bbs_api::TaskGuidRequest {
        task_guid: guid.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .task
    .unwrap()
}

/// Waits for Task `guid` to reach `state`; panics with the Task after `within`.
pub async fn wait_task(
    c: &mut BbsClient,
    guid: &str,
    state: lattice_specs::models::task::State,
    within: Duration,
) -> lattice_specs::models::Task {
    let t0 = Instant::now();
    loop {
        let t = task(c, guid).await;
        if t.state() == state {
            return t;
        }
        assert!(
            t0.elapsed() < within,
            "{guid} not {state:?} within {within:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
