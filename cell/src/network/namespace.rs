//! Network namespaces: where they are mounted, what containers' and spares' are
//! called, and making, renaming, entering and removing them. One way to the kernel:
//! `unshare`/`setns` and bind mounts, in-process (no `ip netns` run: an exec costs
//! milliseconds on the path of a container's start).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where network namespaces are mounted (where `ip netns` keeps them).
pub(crate) const NETNS_DIR: &str = "/var/run/netns";

/// Where the network namespace of container `handle` is mounted.
pub fn netns_path(handle: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(names(handle).0)
}

/// Interface and namespace names for a container handle (interface names are limited
/// to 15 characters, so the handle is hashed).
pub fn names(handle: &str) -> (String, String) {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in handle.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (
        format!("lattice-{handle}"),
        format!("lv{:012x}", h & 0xffff_ffff_ffff),
    )
}

/// The names of a cell's spare namespaces: `lattice-spare-BRIDGE-PID.START-N`, PID
/// and START (its start time) naming the process that made it, so that a later cell on
/// the bridge knows which ones a process that is gone left behind.
pub(super) fn spare_name(bridge: &str, owner: (i32, u64), n: u64) -> String {
    format!("lattice-spare-{bridge}-{}.{}-{n}", owner.0, owner.1)
}

/// The process (pid, start time) that made the spare namespace `name` of `bridge`.
pub(super) fn spare_owner(bridge: &str, name: &str) -> Option<(i32, u64)> {
    let rest = name.strip_prefix(&format!("lattice-spare-{bridge}-"))?;
    let (owner, n) = rest.split_once('-')?;
    let (pid, start) = owner.split_once('.')?;
    n.parse::<u64>().ok()?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// This process, as spare names record it (read once).
pub(super) fn this_process() -> (i32, u64) {
    static THIS: std::sync::LazyLock<(i32, u64)> = std::sync::LazyLock::new(|| {
        let pid = std::process::id() as i32;
        (pid, crate::shim::proc_stat(pid).map_or(0, |(t, _)| t))
    });
    *THIS
}

/// Removes the spare namespaces of `bridge` whose process is gone.
pub(super) fn forget_dead_spares(bridge: &str) {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((pid, start)) = spare_owner(bridge, &name) else {
            continue;
        };
        let alive = crate::shim::proc_stat(pid).is_some_and(|(t, zombie)| t == start && !zombie);
        if !alive {
            remove(&entry.path());
        }
    }
}

/// Unmounts and removes the namespace file at `path` (what `ip netns del` does). The
/// kernel destroys the namespace, and what is in it, once nothing holds it.
pub(crate) fn remove(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            tracing::warn!(netns = %path.display(), error = %e, "could not unmount the network namespace")
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(netns = %path.display(), error = %e, "could not remove the network namespace")
        }
    }
}

/// Creates the empty file a namespace is mounted on (and its directory); fails when
/// the name is taken.
fn new_mount_point(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// Mounts the namespace mounted at `from` at `to` instead (a bind mount, then the
/// old one goes: moving a mount fails under a shared mount, as `ip netns` makes
/// /run/netns).
pub(super) fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    new_mount_point(to)?;
    if let Err(e) = nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(to);
        anyhow::bail!("bind-mounting {} at {}: {e}", from.display(), to.display());
    }
    remove(from);
    Ok(())
}

/// Creates an empty network namespace mounted at `netns`, in-process (what `ip netns
/// add` does): a thread of its own unshares a new namespace and bind-mounts it there,
/// so no other thread changes namespace.
pub(crate) fn create(netns: &Path) -> anyhow::Result<()> {
    new_mount_point(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("creating a network namespace")?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                netns,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the namespace at {}", netns.display()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace creating thread panicked"))?
    })
}

/// Runs `work` on a thread of its own that has entered the namespace `ns`: only that
/// thread moves, and it ends with `work`.
pub(crate) fn run_inside<T: Send>(
    ns: &std::fs::File,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<T> {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the network namespace")?;
            work()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the network setup thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_say_whose_they_are() {
        let name = spare_name("lbr0", (4242, 123456), 7);
        assert_eq!(spare_owner("lbr0", &name), Some((4242, 123456)));
        // Another bridge's spares are not this one's, even when its name extends it.
        let other = spare_name("lbr0-2", (4242, 123456), 7);
        assert_eq!(spare_owner("lbr0", &other), None);
        assert_eq!(spare_owner("lbr0", "lattice-spare-lbr0-12-3"), None);
        assert_eq!(spare_owner("lbr0", "lattice-web-1"), None);
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        let (ns, veth) = names("0b6c1f2e-4e1c-4c55-9f0e-8b2a4b0f9d11");
        assert!(veth.len() <= 15, "{veth}");
        assert!(ns.starts_with("lattice-"));
        assert_ne!(names("a").1, names("b").1);
    }
}
