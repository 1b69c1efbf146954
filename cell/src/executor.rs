//! The executor: containers on this cell, from request to destroy.
//!
//! For each container it mounts the image copy-on-write (overlayfs), gives it a network
//! namespace on the cell bridge, writes the OCI bundle, starts the container's shim (which
//! drives libcontainer, see [`crate::shim`]) and publishes its ports. Everything a
//! container owns is recorded in its directory, so a restarted rep re-adopts what still
//! runs and reaps what it no longer wants, and `destroy` leaves nothing behind.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use lattice_specs::models;
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::launcher::Launched;
use crate::network::{Attachment, Network, NetworkConfig};
use crate::rootfs::{self, Providers};
use crate::shim::{self, ShimConfig, ShimEvent};

static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// At most this much of a Task's result file is kept (Diego's limit).
pub const MAX_RESULT_BYTES: u64 = 10 * 1024;

/// How long reading a Task's result file may take.
pub const RESULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Containers, their state and the pause binary live here.
    pub data_dir: PathBuf,
    pub providers: Providers,
    /// The shim command (program and leading arguments); `--stdin` is appended and
    /// the shim reads its container's directory from stdin (see [`crate::launcher`]).
    /// `lattice shim` in the server binary, `lattice-shim` in tests.
    pub shim: Vec<OsString>,
    pub network: NetworkConfig,
    /// From SIGTERM to SIGKILL when stopping a container.
    pub grace: Duration,
    /// The `local` volume driver's pool size (in DATA/volumes); none: no volumes.
    pub volume_pool_size: Option<u64>,
    /// The size of the containers' own filesystem (DATA/containers, see
    /// [`crate::scratch`]), which enforces each container's `disk_mb`; none: containers
    /// write to the data directory's filesystem and `disk_mb` is not enforced.
    pub scratch_size: Option<u64>,
}

/// What to run: enough for the executor, nothing about the BBS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRequest {
    /// Unique on the cell (an instance guid or a task guid).
    pub handle: String,
    pub rootfs: String,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub cpu_weight: u32,
    pub max_pids: i32,
    pub privileged: bool,
    pub host_network: bool,
    /// Container ports to publish on the cell.
    pub ports: Vec<u32>,
    pub env: Vec<(String, String)>,
    pub action: models::Action,
    /// Log source of lines from actions that name none (`APP/0`, `TASK`…).
    pub log_source: String,
    /// Volumes of the cell's `local` driver to mount.
    #[serde(default)]
    pub volume_mounts: Vec<models::VolumeMount>,
    /// The rep's own notes (process guid, index, task guid, log guid…), kept with the
    /// container so a restarted rep knows what it is.
    pub tags: BTreeMap<String, String>,
}

/// A container as the executor recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub request: ContainerRequest,
    pub network: Option<Attachment>,
    /// Published ports: container port → host port.
    pub ports: Vec<(u32, u16)>,
    /// Unix nanoseconds.
    pub created_at: i64,
}

impl ContainerInfo {
    pub fn handle(&self) -> &str {
        &self.request.handle
    }

    /// The address the cell reaches the container at (loopback for host networking).
    pub fn ip(&self) -> Ipv4Addr {
        self.network
            .as_ref()
            .map(|n| n.ip)
            .unwrap_or(Ipv4Addr::LOCALHOST)
    }
}

pub struct Executor {
    cfg: ExecutorConfig,
    network: Network,
    images: crate::image::ImageStore,
    volumes: Option<Arc<crate::volume::VolumeDriver>>,
    containers: Mutex<HashMap<String, ContainerInfo>>,
    /// Wakes followers of a container's events when its shim writes one.
    watch: crate::watch::EventWatch,
    /// Held (shared) from resolving an image's layers to mounting them; the layer
    /// cache's garbage collection holds it alone.
    layers_in_flight: tokio::sync::RwLock<()>,
    /// Starts shims, one ahead of need.
    launcher: crate::launcher::Launcher,
    /// Deletes destroyed containers' directories, at the lowest priority.
    trash: crate::trash::Trash,
    /// The containers' filesystem with a disk quota each, when configured.
    scratch: Option<crate::scratch::Scratch>,
}

/// The cgroup path of a container.
pub fn cgroup_path(handle: &str) -> String {
    format!("/lattice/{handle}")
}

/// Puts libcontainer's state directory (`DATA/run`) on a tmpfs, as runc keeps its own
/// in /run: libcontainer rewrites a container's state.json at each change of state, and
/// on a disk filesystem each rewrite frees the blocks of the last one (a discard, a
/// journal write). Runtime state, gone at reboot with the containers it describes. A
/// directory that already holds state (containers of an earlier version still
/// running) stays as it is.
fn state_on_tmpfs(run: &Path) {
    if rootfs::is_mounted(run) {
        return;
    }
    if std::fs::read_dir(run).map_or(true, |mut d| d.next().is_some()) {
        tracing::info!(dir = %run.display(), "container state stays on disk: the directory is in use");
        return;
    }
    if let Err(e) = nix::mount::mount(
        Some("tmpfs"),
        run,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64m"),
    ) {
        tracing::warn!(dir = %run.display(), "container state stays on disk: mounting a tmpfs: {e}");
    }
}

/// Waits up to `limit` for process `pid` to exit (at once when it is gone already);
/// whether it did.
async fn process_exit(pid: u32, limit: Duration) -> bool {
    let Ok(fd) = shim::pidfd(nix::unistd::Pid::from_raw(pid as i32)) else {
        return true;
    };
    match shim::watch_pidfd(fd) {
        // Readable once the process has exited (a zombie counts).
        Some(fd) => tokio::time::timeout(limit, fd.readable()).await.is_ok(),
        None => false,
    }
}

impl Executor {
    pub fn new(cfg: ExecutorConfig) -> anyhow::Result<Arc<Executor>> {
        private_dir(&cfg.data_dir)?;
        let scratch = match cfg.scratch_size {
            // Containers of an earlier version still running (a rep restarted across an
            // upgrade) stay where they are and are re-adopted; limits start once the cell
            // has been emptied.
            Some(_) if crate::scratch::Scratch::holds_unlimited_containers(&cfg.data_dir) => {
                tracing::warn!(
                    "containers from before disk limits are still here: disk_mb is not enforced until the cell has none"
                );
                None
            }
            Some(size) => Some(crate::scratch::Scratch::open(&cfg.data_dir, size)?),
            None => {
                tracing::warn!("no containers' filesystem: disk_mb is not enforced");
                None
            }
        };
        // Root's alone: containers' files (setuid binaries among them), their state and
        // environment are nothing a host user may reach.
        for d in ["containers", "run"] {
            private_dir(&cfg.data_dir.join(d))?;
        }
        state_on_tmpfs(&cfg.data_dir.join("run"));
        match crate::cgroup::favor_dynamic_changes() {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                "no cgroup2 mount to set favordynmods on: a container start may wait for an RCU grace period"
            ),
            Err(e) => tracing::warn!("{e:#}: a container start may wait for an RCU grace period"),
        }
        let pause = cfg.data_dir.join("pause");
        let tmp = cfg.data_dir.join(".pause.tmp");
        std::fs::write(&tmp, PAUSE)?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::rename(&tmp, &pause)?;
        let network = Network::new(cfg.network.clone())?;
        let images = crate::image::ImageStore::new(
            cfg.data_dir.join("images"),
            cfg.providers.insecure_registries.clone(),
            cfg.providers.registry_credentials.clone(),
        );
        let volumes = match cfg.volume_pool_size {
            Some(size) => Some(Arc::new(crate::volume::VolumeDriver::new(
                &cfg.data_dir.join("volumes"),
                size,
            )?)),
            None => None,
        };
        Ok(Arc::new(Executor {
            network,
            images,
            volumes,
            containers: Mutex::new(HashMap::new()),
            watch: crate::watch::EventWatch::new(),
            layers_in_flight: Default::default(),
            launcher: crate::launcher::Launcher::new(cfg.shim.clone()),
            // On the containers' filesystem: a destroyed container's directory moves
            // there at once, whatever filesystem that is.
            trash: crate::trash::Trash::new(cfg.data_dir.join("containers/.trash")),
            scratch,
            cfg,
        }))
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.cfg
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The `local` volume driver, when the cell has a volume pool.
    pub fn volumes(&self) -> Option<&Arc<crate::volume::VolumeDriver>> {
        self.volumes.as_ref()
    }

    /// Where snapshot `volume` of a container is mounted on the host.
    fn snapshot_dir(&self, handle: &str, volume: &str) -> PathBuf {
        self.dir(handle).join("snapshots").join(volume)
    }

    /// The container's volume mounts as host directories: volumes as they are,
    /// snapshots taken and mounted read-only now.
    fn volume_binds(&self, req: &ContainerRequest) -> anyhow::Result<Vec<bundle::Bind>> {
        if req.volume_mounts.is_empty() {
            return Ok(vec![]);
        }
        let driver = self
            .volumes
            .as_ref()
            .context("this cell has no volume pool (start it with --volume-pool-size)")?;
        let volumes = driver.volumes()?;
        let mut binds = vec![];
        for (i, m) in req.volume_mounts.iter().enumerate() {
            let host = if m.scratch_bytes > 0 {
                let name = scratch_name(&req.handle, i);
                if volumes.info(&name).is_err() {
                    volumes.create(&name, m.scratch_bytes.max(crate::volume::MIN_SIZE))?;
                }
                volumes.path(&name)
            } else if m.snapshot {
                let at = self.snapshot_dir(&req.handle, &m.volume);
                let snap = snapshot_name(&req.handle);
                volumes.snapshot(&m.volume, &snap)?;
                if let Err(e) = volumes.mount_snapshot(&m.volume, &snap, &at) {
                    let _ = volumes.release_snapshot(&m.volume, &snap);
                    return Err(e);
                }
                at
            } else {
                volumes.info(&m.volume)?.path
            };
            binds.push(bundle::Bind {
                container_path: m.container_path.clone(),
                host_path: host,
                read_only: m.read_only || m.snapshot,
            });
        }
        Ok(binds)
    }

    /// Removes the container's scratch volumes and unmounts and drops its snapshots.
    fn release_volumes(&self, req: &ContainerRequest) {
        let Some(volumes) = self.volumes.as_ref().and_then(|d| d.opened()) else {
            return;
        };
        for (i, m) in req.volume_mounts.iter().enumerate() {
            if m.scratch_bytes > 0 {
                let name = scratch_name(&req.handle, i);
                if volumes.info(&name).is_ok() {
                    if let Err(e) = volumes.remove(&name) {
                        tracing::warn!(handle = %req.handle, "removing scratch volume: {e:#}");
                    }
                }
            }
        }
        for m in req.volume_mounts.iter().filter(|m| m.snapshot) {
            let at = self.snapshot_dir(&req.handle, &m.volume);
            if let Err(e) = rootfs::unmount(&at) {
                tracing::warn!(handle = %req.handle, "{e:#}");
            }
            let _ = volumes.release_snapshot(&m.volume, &snapshot_name(&req.handle));
        }
    }

    /// Removes cached image layers no container uses that were last used more than
    /// `keep` ago (no container is being created meanwhile). Returns how many went.
    pub async fn collect_layers(&self, keep: Duration) -> usize {
        let _alone = self.layers_in_flight.write().await;
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || images.collect(keep))
            .await
            .unwrap_or(0)
    }

    /// Whether a container of this cell mounts volume `name`.
    pub fn uses_volume(&self, name: &str) -> bool {
        self.list()
            .iter()
            .any(|c| c.request.volume_mounts.iter().any(|m| m.volume == name))
    }

    /// The Unix datagram socket containers' output lines are sent to.
    pub fn log_socket(&self) -> PathBuf {
        self.cfg.data_dir.join("logs.sock")
    }

    pub fn dir(&self, handle: &str) -> PathBuf {
        self.cfg.data_dir.join("containers").join(handle)
    }

    fn rootfs_dir(&self, handle: &str) -> PathBuf {
        self.dir(handle).join("rootfs")
    }

    /// Creates and starts a container. On failure nothing is left behind.
    #[tracing::instrument(skip_all, fields(handle = %req.handle))]
    pub async fn create(&self, req: ContainerRequest) -> anyhow::Result<ContainerInfo> {
        self.create_with_progress(req, &|_| {}).await
    }

    /// The image a rootfs URL names, pulled or unpacked if the cache lacks it;
    /// `progress` hears about downloads.
    pub async fn image(
        &self,
        url: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<crate::image::Image> {
        use lattice_specs::rootfs::RootFs;
        match RootFs::parse(url)? {
            RootFs::Preloaded { .. } => Ok(crate::image::Image {
                layers: self.cfg.providers.layers(url)?,
                config: Default::default(),
            }),
            RootFs::Oci { path, tag } => {
                let path = self.oci_path(&path)?;
                let images = self.images.clone();
                tokio::task::spawn_blocking(move || {
                    images.from_layout(std::path::Path::new(&path), tag.as_deref())
                })
                .await?
            }
            RootFs::Docker {
                registry,
                repository,
                tag,
            } => {
                self.images
                    .pull(
                        registry.as_deref().unwrap_or("docker.io"),
                        &repository,
                        &tag,
                        progress,
                    )
                    .await
            }
        }
    }

    /// An `oci:` layout's directory, if it is under one of the configured roots (and not
    /// in the cell's own data, which tenants can write to).
    fn oci_path(&self, path: &str) -> anyhow::Result<String> {
        let roots = &self.cfg.providers.oci_roots;
        anyhow::ensure!(
            !roots.is_empty(),
            "this cell takes oci: images only from its --oci-root directories, and has none"
        );
        let real = std::path::Path::new(path)
            .canonicalize()
            .with_context(|| format!("no OCI image layout at {path}"))?;
        let data = self.cfg.data_dir.canonicalize()?;
        let allowed = roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| real.starts_with(r));
        anyhow::ensure!(
            allowed && !real.starts_with(&data),
            "{path} is not under this cell's --oci-root directories ({})",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(real.display().to_string())
    }

    /// [`Executor::create`], telling `progress` how an image download goes.
    pub async fn create_with_progress(
        &self,
        req: ContainerRequest,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<ContainerInfo> {
        anyhow::ensure!(
            !req.handle.is_empty()
                && req
                    .handle
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "invalid container handle {:?}",
            req.handle
        );
        let dir = self.dir(&req.handle);
        anyhow::ensure!(!dir.exists(), "container {} already exists", req.handle);
        std::fs::create_dir_all(&dir)?;
        self.watch.add(&req.handle, &dir);
        let mut info = ContainerInfo {
            request: req.clone(),
            network: None,
            ports: vec![],
            created_at: lattice_specs::now_nanos(),
        };
        match self.setup(&mut info, progress).await {
            Ok(()) => {
                self.containers
                    .lock()
                    .unwrap()
                    .insert(req.handle.clone(), info.clone());
                Ok(info)
            }
            Err(e) => {
                self.teardown(&info);
                Err(e)
            }
        }
    }

    async fn setup(
        &self,
        info: &mut ContainerInfo,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<()> {
        let req = info.request.clone();
        let dir = self.dir(&req.handle);
        if !req.host_network {
            // Its address and names; the namespace is made below, while the shim starts.
            info.network = Some(self.network.reserve(&req.handle)?);
        }
        // Recorded first, with the network it will have (no second write for it: each
        // replacement of the file costs the disk a discard), so a crash midway still
        // leaves enough to clean up.
        self.record(info)?;
        let in_flight = self.layers_in_flight.read().await;
        let image = self.image(&req.rootfs, progress).await?;
        let action = crate::image::with_defaults(&req.action, &image.config);
        anyhow::ensure!(
            !crate::image::missing_command(&action),
            "nothing to run: the action names no command and the image {} has no entrypoint or cmd",
            req.rootfs
        );
        let merged = self.rootfs_dir(&req.handle);
        let netns = info.network.as_ref().map(|n| n.netns_path());

        let binds = self.volume_binds(&req)?;
        let cgroup = cgroup_path(&req.handle);
        let spec = bundle::spec(
            &hostname(&req.handle),
            &merged,
            &self.cfg.data_dir.join("pause"),
            netns.as_deref(),
            &cgroup,
            &bundle::Limits {
                memory_mb: req.memory_mb,
                cpu_weight: req.cpu_weight,
                max_pids: req.max_pids,
                privileged: req.privileged,
            },
            &binds,
        )?;
        let bundle_dir = dir.join("bundle");
        std::fs::create_dir_all(&bundle_dir)?;
        write_private(&bundle_dir.join("config.json"), &serde_json::to_vec(&spec)?)?;

        let shim_cfg = ShimConfig {
            id: req.handle.clone(),
            state_root: self.cfg.data_dir.join("run"),
            bundle: bundle_dir,
            rootfs: merged.clone(),
            env: crate::image::merge_env(&image.config.env, &req.env),
            action,
            log_source: req.log_source.clone(),
            log_socket: self.log_socket(),
            grace_ms: self.cfg.grace.as_millis() as u64,
            cgroup,
            binds,
            result_file: req.tags.get("result_file").cloned().unwrap_or_default(),
        };
        write_private(&dir.join("shim.json"), &serde_json::to_vec(&shim_cfg)?)?;

        // The shim and the executor now work side by side (see [`crate::launcher`]):
        // the shim reads its configuration while the rootfs is mounted and the network
        // namespace made; it creates the container (namespaces, cgroups, mounts: most
        // of the work) once they are `ready`, while the network is connected; and it
        // starts the container's process at `go`. It writes its pid to shim.pid and
        // its start time to shim.start.
        let Launched { pid, mut gate } = self.launcher.launch(&dir)?;
        let ready = async {
            let layer = match &self.scratch {
                Some(scratch) => {
                    let disk = dir.join("disk");
                    scratch.subvolume(&disk, req.disk_mb.max(0) as u64 * 1024 * 1024)?;
                    disk
                }
                None => dir.clone(),
            };
            rootfs::mount_overlay(
                &image.layers,
                &layer.join("upper"),
                &layer.join("work"),
                &merged,
            )?;
            drop(in_flight);
            if let Some(att) = &info.network {
                // An empty namespace for now: it is connected while the shim creates
                // the container in it.
                self.network.create(att)?;
            }
            gate.ready().context("the container's shim is gone")?;
            self.finish_setup(info, &merged).await?;
            gate.open().context("the container's shim is gone")
        }
        .await;
        if ready.is_err() && !process_exit(pid, Duration::from_secs(10)).await {
            // Its gate closed, the shim deletes what it created and exits, before the
            // teardown removes the rest; one that does not is killed first (the
            // teardown removes what it leaves).
            tracing::warn!(
                pid,
                "a shim that lost its container did not exit; killing it"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            process_exit(pid, Duration::from_secs(1)).await;
        }
        // The next container's shim loads and its namespace is made now, not while
        // this one's start needed the executor.
        self.launcher.refill();
        if info.network.is_some() {
            self.network.refill();
        }
        ready
    }

    /// What the container's process needs besides the container: its network
    /// connected, its /etc/hosts, its ports published.
    async fn finish_setup(&self, info: &mut ContainerInfo, rootfs: &Path) -> anyhow::Result<()> {
        if let Some(att) = &info.network {
            self.network.connect(att)?;
        }
        // Written inside the container's root: the image's /etc/hosts may be a symlink.
        let hosts = format!(
            "127.0.0.1 localhost\n::1 localhost\n{} {}\n",
            info.ip(),
            hostname(info.handle())
        );
        let _ = crate::inroot::Rooted::new(rootfs, "/etc/hosts")
            .run(move |p| {
                if p.parent().is_some_and(Path::is_dir) {
                    let _ = std::fs::write(p, hosts);
                }
            })
            .await;
        for port in info.request.ports.clone() {
            let host = self
                .network
                .publish(SocketAddr::from((info.ip(), port as u16)), None)
                .await?;
            info.ports.push((port, host));
            self.record(info)?;
        }
        Ok(())
    }

    fn record(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        let dir = self.dir(info.handle());
        let tmp = dir.join(".container.json.tmp");
        write_private(&tmp, &serde_json::to_vec(info)?)?;
        std::fs::rename(tmp, dir.join("container.json"))?;
        Ok(())
    }

    /// Wakes when a container's shim writes events. Take it before reading them with
    /// [`Executor::events`]; when it is not live (no inotify), poll instead.
    pub fn event_signal(&self, handle: &str) -> crate::watch::EventSignal {
        self.watch.signal(handle)
    }

    /// Lifecycle events of a container from byte `offset` on.
    pub fn events(&self, handle: &str, offset: u64) -> (Vec<ShimEvent>, u64) {
        shim::read_events(&self.dir(handle), offset).unwrap_or((vec![], offset))
    }

    /// The shim's pid, when it is still running.
    pub fn shim_pid(&self, handle: &str) -> Option<i32> {
        let dir = self.dir(handle);
        let pid: i32 = std::fs::read_to_string(dir.join("shim.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let (started, zombie) = shim::proc_stat(pid)?;
        // A zombie shim is gone for our purposes.
        if zombie {
            return None;
        }
        // The same process, not another one that got its pid since: the start time the
        // shim recorded, or (a shim of an earlier version) its command line naming the
        // container's directory.
        let ours = match std::fs::read_to_string(dir.join("shim.start")) {
            Ok(t) => t.trim().parse() == Ok(started),
            Err(_) => std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy())),
        };
        ours.then_some(pid)
    }

    /// For a cell that stops with its containers: the spare shim and namespace go, the
    /// trash is emptied, and the tmpfs of libcontainer's state is unmounted if no
    /// container's state is left in it.
    pub fn close(&self) {
        self.launcher.close();
        let idle = self.containers.lock().unwrap().is_empty() && self.on_disk().is_empty();
        self.network.close(idle);
        self.trash.close();
        if let (Some(scratch), true) = (&self.scratch, idle) {
            scratch.close();
        }
        let run = self.cfg.data_dir.join("run");
        if rootfs::is_mounted(&run) && std::fs::read_dir(&run).is_ok_and(|mut d| d.next().is_none())
        {
            if let Err(e) = nix::mount::umount2(&run, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %run.display(), "unmounting the state tmpfs: {e}");
            }
        }
    }

    /// The pid of the shim started ahead for the next container, if there is one.
    pub fn spare_shim_pid(&self) -> Option<u32> {
        self.launcher.spare_pid()
    }

    /// Asks a container to stop: its processes get SIGTERM, then SIGKILL after the grace
    /// period. Returns at once; the shim reports `Exited` and `Destroyed`.
    pub fn stop(&self, handle: &str) {
        if let Some(pid) = self.shim_pid(handle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Stops a container if needed and removes everything it had: processes, cgroups,
    /// mounts, network namespace, veth, host ports, files. Idempotent.
    #[tracing::instrument(skip(self))]
    pub async fn destroy(&self, handle: &str) {
        // A shim that reported its container destroyed has nothing left to do but exit.
        let finished = || {
            self.events(handle, 0)
                .0
                .iter()
                .any(|e| matches!(e, ShimEvent::Destroyed))
        };
        if let Some(pid) = self.shim_pid(handle).filter(|_| !finished()) {
            self.stop(handle);
            let limit = self.cfg.grace + Duration::from_secs(5);
            if !self.shim_exits(handle, pid, limit).await {
                tracing::warn!(handle, pid, "shim did not stop in time; killing it");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let info = self
            .containers
            .lock()
            .unwrap()
            .remove(handle)
            .or_else(|| self.load(handle));
        match info {
            Some(info) => self.teardown(&info),
            None => {
                let _ = std::fs::remove_dir_all(self.dir(handle));
            }
        }
    }

    /// Waits up to `limit` for container `handle`'s shim (`pid`) to exit; whether it did.
    async fn shim_exits(&self, handle: &str, pid: i32, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let exited = shim::exit_watch(nix::unistd::Pid::from_raw(pid));
        // The pidfd is the shim's only if the shim still runs now that it is open.
        if let (Some(fd), Some(_)) = (exited, self.shim_pid(handle)) {
            // Readable once the process has exited (a zombie counts).
            let _ = tokio::time::timeout_at(deadline, fd.readable()).await;
            return self.shim_pid(handle).is_none();
        }
        while tokio::time::Instant::now() < deadline {
            if self.shim_pid(handle).is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.shim_pid(handle).is_none()
    }

    fn teardown(&self, info: &ContainerInfo) {
        let handle = info.handle();
        self.watch.remove(handle);
        // The libcontainer state and cgroup, in case the shim could not delete them.
        let state = self.cfg.data_dir.join("run").join(handle);
        if state.exists() {
            if let Ok(mut c) = libcontainer::container::Container::load(state.clone()) {
                let _ = c.kill(nix::sys::signal::Signal::SIGKILL, true);
                let _ = c.delete(true);
            }
            let _ = std::fs::remove_dir_all(&state);
        }
        crate::cgroup::thaw_and_drain(&cgroup_path(handle));
        crate::cgroup::remove(&cgroup_path(handle));
        for (_, host) in &info.ports {
            self.network.unpublish(*host);
        }
        if let Some(att) = &info.network {
            self.network.detach(att);
        }
        self.release_volumes(&info.request);
        let merged = self.rootfs_dir(handle);
        if let Err(e) = rootfs::unmount(&merged) {
            tracing::warn!(handle, "{e:#}");
        }
        self.trash.discard(&self.dir(handle));
    }

    fn load(&self, handle: &str) -> Option<ContainerInfo> {
        let bytes = std::fs::read(self.dir(handle).join("container.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every container recorded on disk (what a restarted rep finds).
    pub fn on_disk(&self) -> Vec<ContainerInfo> {
        let Ok(entries) = std::fs::read_dir(self.cfg.data_dir.join("containers")) else {
            return vec![];
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()))
            .collect()
    }

    /// Takes back a container found on disk after a restart: its address, its host
    /// ports (published again at the same numbers) and its place in the list.
    pub async fn adopt(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        self.watch.add(info.handle(), &self.dir(info.handle()));
        if let Some(att) = &info.network {
            self.network.adopt(att);
        }
        for (port, host) in &info.ports {
            self.network
                .publish(SocketAddr::from((info.ip(), *port as u16)), Some(*host))
                .await
                .with_context(|| format!("re-publishing host port {host}"))?;
        }
        self.containers
            .lock()
            .unwrap()
            .insert(info.handle().to_string(), info.clone());
        Ok(())
    }

    /// The containers this executor holds.
    pub fn list(&self) -> Vec<ContainerInfo> {
        self.containers.lock().unwrap().values().cloned().collect()
    }

    pub fn get(&self, handle: &str) -> Option<ContainerInfo> {
        self.containers.lock().unwrap().get(handle).cloned()
    }

    /// Reads up to [`MAX_RESULT_BYTES`] of a regular file in the container (a Task's
    /// result), resolved inside the container's root, off the async runtime and within
    /// [`RESULT_READ_TIMEOUT`]: a FIFO, a device or a symlink out of the container is
    /// refused with an error, never waited on or followed.
    pub async fn read_file(&self, handle: &str, path: &str) -> anyhow::Result<String> {
        let file = crate::inroot::Rooted::new(self.rootfs_dir(handle), path);
        let buf = crate::inroot::read_regular(&file, MAX_RESULT_BYTES, RESULT_READ_TIMEOUT)
            .await
            .with_context(|| format!("reading result file {path}"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Memory (bytes) and CPU time (ns) a container has used.
    pub fn usage(&self, handle: &str) -> (Option<u64>, Option<u64>) {
        let cg = cgroup_path(handle);
        (
            crate::cgroup::memory_bytes(&cg),
            crate::cgroup::cpu_nanos(&cg),
        )
    }

    /// Bytes the container has written to its filesystem (disk accounting).
    pub fn disk_bytes(&self, handle: &str) -> u64 {
        let dir = self.dir(handle);
        dir_size(&dir.join("disk/upper")) + dir_size(&dir.join("upper"))
    }
}

/// Creates `dir` (and its parents) and makes it root's alone (0700).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Writes a file only root may read (0600): it holds a container's environment.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(data)
}

fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    }
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| dir_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// A container's hostname: its handle, cut to the kernel's 63 characters.
/// The name of a container's scratch volume (mount `i`), local to its cell.
fn scratch_name(handle: &str, i: usize) -> String {
    let base = snapshot_name(handle);
    let mut n = format!("scratch{i}-{}", base.trim_start_matches("c-"));
    n.truncate(63);
    n.trim_end_matches(['-', '_']).to_string()
}

/// A container's snapshot name: its handle as a volume-safe name.
fn snapshot_name(handle: &str) -> String {
    let mut n: String = handle
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(60);
    format!("c-{}", n.trim_start_matches('-'))
}

pub fn hostname(handle: &str) -> String {
    handle.chars().take(63).collect()
}
