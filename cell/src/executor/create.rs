//! Making and starting a container: its image, its network, its bundle, its shim.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{cgroup_path, hostname, write_private, ContainerInfo, ContainerRequest, Executor};
use crate::bundle;
use crate::launcher::Launched;
use crate::rootfs;
use crate::shim::{self, ShimConfig};

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
                tracing::info!(handle = %req.handle, rootfs = %req.rootfs, "container created");
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
        let merged = self.write_bundle(info, &image)?;

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

    /// Writes the container's OCI bundle and its shim's configuration (the image's
    /// defaults filled in, its volumes bound); returns where its rootfs is to be
    /// mounted.
    fn write_bundle(
        &self,
        info: &ContainerInfo,
        image: &crate::image::Image,
    ) -> anyhow::Result<std::path::PathBuf> {
        let req = &info.request;
        let dir = self.dir(&req.handle);
        let action = crate::image::with_defaults(&req.action, &image.config);
        anyhow::ensure!(
            !crate::image::missing_command(&action),
            "nothing to run: the action names no command and the image {} has no entrypoint or cmd",
            req.rootfs
        );
        let merged = self.rootfs_dir(&req.handle);
        let netns = info.network.as_ref().map(|n| n.netns_path());

        let binds = self.volume_binds(req)?;
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
            extra_ca: self.cfg.providers.extra_ca.clone(),
            redirects: self.download_overrides(),
        };
        write_private(&dir.join("shim.json"), &serde_json::to_vec(&shim_cfg)?)?;
        Ok(merged)
    }

    /// What the container's process needs besides the container: its network
    /// connected, its /etc/hosts and /etc/resolv.conf, its ports published.
    async fn finish_setup(&self, info: &mut ContainerInfo, rootfs: &Path) -> anyhow::Result<()> {
        if let Some(att) = &info.network {
            self.network.connect(att, &info.request.egress_rules)?;
        }
        self.write_etc(info, rootfs).await;
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

    /// Writes the container's /etc/hosts (localhost and its own name) and, with a
    /// network of its own, its /etc/resolv.conf (the cell's DNS server; under host
    /// networking the host's resolv.conf is bound in instead, see
    /// [`crate::bundle`]). Written inside the container's root (the image's files
    /// may be symlinks or worse, which are replaced); an image without /etc gets none.
    async fn write_etc(&self, info: &ContainerInfo, rootfs: &Path) {
        let net = self.network.config();
        let mut files = vec![(
            "/etc/hosts",
            crate::dns::hosts(info.ip(), &hostname(info.handle())),
        )];
        if info.network.is_some() {
            files.push((
                "/etc/resolv.conf",
                crate::dns::resolv_conf(net.gateway, &net.internal_domain),
            ));
        }
        for (path, content) in files {
            let written = crate::inroot::Rooted::new(rootfs, path)
                .run(move |p| write_replacing(p, &content))
                .await;
            if let Err(e) = written.and_then(|r| r) {
                tracing::warn!(handle = info.handle(), path, error = %e, "could not write the container's file");
            }
        }
    }
}

/// Writes `content` at `p` as a regular file, unless its directory is missing. A
/// symlink, FIFO or device there is replaced, never written through (writing to a
/// FIFO would wait for a reader forever).
fn write_replacing(p: &Path, content: &str) -> std::io::Result<()> {
    if !p.parent().is_some_and(Path::is_dir) {
        return Ok(());
    }
    if std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_file()) {
        std::fs::remove_file(p)?;
    }
    std::fs::write(p, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_symlink_in_place_of_a_file_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, link, target) = (
            dir.path().join("hosts"),
            dir.path().join("resolv.conf"),
            dir.path().join("elsewhere"),
        );
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_replacing(&fifo, "a").unwrap();
        write_replacing(&link, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&fifo).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "b");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        write_replacing(&dir.path().join("no-etc/hosts"), "c").unwrap();
        assert!(!dir.path().join("no-etc").exists());
    }
}
