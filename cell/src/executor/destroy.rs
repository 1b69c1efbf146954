//! Stopping and removing a container, and closing the executor when the cell stops.

use std::path::Path;
use std::time::Duration;

use super::{cgroup_path, ContainerInfo, Executor, CGROUP_PARENT};
use crate::shim::{self, ShimEvent};
use crate::{cgroup, rootfs};

impl Executor {
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
        if idle {
            // The parent of every container's cgroup; still in use (another cell on
            // this host) it stays, as rmdir refuses a cgroup with children, and it is
            // left alone while a shim makes a container under it.
            cgroup::remove_parent_unless_in_use(Path::new(cgroup::PARENT_LOCK), || {
                cgroup::remove(CGROUP_PARENT);
            });
        }
        let run = self.cfg.data_dir.join("run");
        if rootfs::is_mounted(&run) && std::fs::read_dir(&run).is_ok_and(|mut d| d.next().is_none())
        {
            if let Err(e) = nix::mount::umount2(&run, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %run.display(), "unmounting the state tmpfs: {e}");
            }
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
            Some(info) => {
                self.teardown(&info);
                tracing::info!(handle, "container destroyed");
            }
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

    pub(super) fn teardown(&self, info: &ContainerInfo) {
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
            self.gone
                .lock()
                .unwrap()
                .push(att.ip, info.clone(), std::time::Instant::now());
        }
        self.release_volumes(&info.request);
        let merged = self.rootfs_dir(handle);
        if let Err(e) = rootfs::unmount(&merged) {
            tracing::warn!(handle, "{e:#}");
        }
        self.trash.discard(&self.dir(handle));
    }
}
