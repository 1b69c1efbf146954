//! What runs on this cell: the containers held, the ones recorded on disk (re-adopted
//! after a restart), their result files and their usage.

use std::net::SocketAddr;

use anyhow::Context;

use super::{cgroup_path, ContainerInfo, Executor, MAX_RESULT_BYTES, RESULT_READ_TIMEOUT};

impl Executor {
    pub(super) fn load(&self, handle: &str) -> Option<ContainerInfo> {
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
            self.network.adopt(att, &info.request.egress_rules)?;
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

    /// The container at address `ip` on the cell's bridge, or the one destroyed there
    /// in the last few seconds ([`super::gone::KEEP`]).
    pub fn container_at(&self, ip: std::net::Ipv4Addr) -> Option<ContainerInfo> {
        let live = self
            .containers
            .lock()
            .unwrap()
            .values()
            .find(|c| c.network.as_ref().is_some_and(|n| n.ip == ip))
            .cloned();
        live.or_else(|| {
            self.gone
                .lock()
                .unwrap()
                .find(ip, std::time::Instant::now())
        })
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

/// The space the files under `p` take on disk (its blocks), 0 when it is missing.
fn dir_size(p: &std::path::Path) -> u64 {
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
