//! The executor: containers on this cell, from request to destroy.
//!
//! For each container it mounts the image copy-on-write (overlayfs), gives it a network
//! namespace on the cell bridge, writes the OCI bundle, starts the container's shim (which
//! drives libcontainer, see [`crate::shim`]) and publishes its ports. Everything a
//! container owns is recorded in its directory, so a restarted rep re-adopts what still
//! runs and reaps what it no longer wants, and `destroy` leaves nothing behind.
//!
//! The rooms: `create` makes and starts a container, `destroy` stops and removes one
//! (and closes the executor), `listing` answers what runs here and re-adopts what a
//! restart found, `volumes` mounts and releases a container's volumes, `exec` opens
//! sessions inside running containers (exec and port forwards).

mod create;
mod destroy;
pub mod exec;
mod gone;
mod listing;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use lattice_specs::models;
use serde::{Deserialize, Serialize};

use crate::network::{Attachment, Network, NetworkConfig};
use crate::rootfs::{self, Providers};
use crate::shim::{self, ShimEvent};

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
    /// The most the pool grows to at its watermark (none, or not above its size: it
    /// does not grow).
    pub volume_pool_max: Option<u64>,
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
    /// What the container may open connections to beyond the cluster's containers
    /// (Diego's security group rules); none: the cell's default rules.
    #[serde(default)]
    pub egress_rules: Vec<models::SecurityGroupRule>,
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
    /// Containers destroyed a moment ago, by address (late egress log packets).
    gone: Mutex<gone::RecentlyGone>,
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
    /// Where the cell's lifecycle file server listens, once it does: Download
    /// actions from `file-server.service.cf.internal:8080` go there.
    file_server: std::sync::OnceLock<std::net::SocketAddr>,
}

/// The cgroup every container's cgroup is made under.
pub const CGROUP_PARENT: &str = "/lattice";

/// The cgroup path of a container.
pub fn cgroup_path(handle: &str) -> String {
    format!("{CGROUP_PARENT}/{handle}")
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
        )
        .with_extra_ca(cfg.providers.extra_ca.clone());
        let volumes = match cfg.volume_pool_size {
            Some(size) => Some(Arc::new(crate::volume::VolumeDriver::new(
                &cfg.data_dir.join("volumes"),
                size,
                cfg.volume_pool_max.unwrap_or(size),
            )?)),
            None => None,
        };
        Ok(Arc::new(Executor {
            network,
            images,
            volumes,
            containers: Mutex::new(HashMap::new()),
            gone: Mutex::new(gone::RecentlyGone::default()),
            watch: crate::watch::EventWatch::new(),
            layers_in_flight: Default::default(),
            launcher: crate::launcher::Launcher::new(cfg.shim.clone()),
            // On the containers' filesystem: a destroyed container's directory moves
            // there at once, whatever filesystem that is.
            trash: crate::trash::Trash::new(cfg.data_dir.join("containers/.trash")),
            scratch,
            cfg,
            file_server: Default::default(),
        }))
    }

    /// Points the containers at the cell's lifecycle file server listening at `addr`
    /// (on the gateway): their port 8080 on the gateway goes to it, and their
    /// Download actions from its name fetch from it.
    pub fn set_file_server(&self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        self.network.open_file_server(addr.port())?;
        let _ = self.file_server.set(addr);
        Ok(())
    }

    /// The names Download actions reach at a fixed address.
    pub fn download_overrides(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.file_server
            .get()
            .map(|a| {
                vec![(
                    format!("{}:{}", crate::fileserver::NAME, crate::fileserver::PORT),
                    *a,
                )]
            })
            .unwrap_or_default()
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

    /// Removes cached image layers no container uses that were last used more than
    /// `keep` ago (no container is being created meanwhile). Returns how many went.
    pub async fn collect_layers(&self, keep: Duration) -> usize {
        let _alone = self.layers_in_flight.write().await;
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || images.collect(keep))
            .await
            .unwrap_or(0)
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

/// A container's hostname: its handle, cut to the kernel's 63 characters.
pub fn hostname(handle: &str) -> String {
    handle.chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames_are_cut_to_the_kernel_s_limit() {
        assert_eq!(super::hostname("web-0"), "web-0");
        assert_eq!(super::hostname(&"h".repeat(70)).len(), 63);
    }
}
