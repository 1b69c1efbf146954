//! A container's volumes: the `local` driver's volumes, scratch volumes and snapshots
//! bound into it, and released when it goes.

use std::path::PathBuf;

use anyhow::Context;

use super::{ContainerRequest, Executor};
use crate::bundle;
use crate::rootfs;

impl Executor {
    /// Where snapshot `volume` of a container is mounted on the host.
    fn snapshot_dir(&self, handle: &str, volume: &str) -> PathBuf {
        self.dir(handle).join("snapshots").join(volume)
    }

    /// The container's volume mounts as host directories: volumes as they are,
    /// snapshots taken and mounted read-only now.
    pub(super) fn volume_binds(&self, req: &ContainerRequest) -> anyhow::Result<Vec<bundle::Bind>> {
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
    pub(super) fn release_volumes(&self, req: &ContainerRequest) {
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

    /// The volumes container `handle` mounts (not its scratch volumes or snapshots).
    pub fn mounted_volumes(&self, handle: &str) -> Vec<String> {
        self.list()
            .iter()
            .filter(|c| c.handle() == handle)
            .flat_map(|c| c.request.volume_mounts.iter())
            .filter(|m| m.scratch_bytes == 0 && !m.snapshot)
            .map(|m| m.volume.clone())
            .collect()
    }

    /// Whether a container of this cell mounts volume `name`.
    pub fn uses_volume(&self, name: &str) -> bool {
        self.list()
            .iter()
            .any(|c| c.request.volume_mounts.iter().any(|m| m.volume == name))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_safe_and_short_whatever_the_handle() {
        assert_eq!(snapshot_name("Web_0.x"), "c-web-0-x");
        assert_eq!(snapshot_name("-lead"), "c-lead");
        assert_eq!(scratch_name("Web_0.x", 1), "scratch1-web-0-x");
        let long = "a".repeat(100);
        assert_eq!(snapshot_name(&long).len(), 62, "c- and 60 of the handle");
        let scratch = scratch_name(&format!("{}-{}", "b".repeat(53), "c".repeat(40)), 0);
        assert_eq!(
            scratch,
            format!("scratch0-{}", "b".repeat(53)),
            "cut, no trailing -"
        );
    }
}
