//! Reading the containers' cgroups: OOM kills, memory and CPU usage, leftovers.
//! Works on cgroup v1 (this host), hybrid, and the unified v2 hierarchy.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

const ROOT: &str = "/sys/fs/cgroup";

/// Whether the host runs the unified (v2-only) hierarchy at /sys/fs/cgroup. Read once
/// per process: the cgroup layout is set up at boot.
pub fn unified() -> bool {
    static UNIFIED: LazyLock<bool> =
        LazyLock::new(|| Path::new(ROOT).join("cgroup.controllers").exists());
    *UNIFIED
}

/// Where the cgroup2 hierarchy is: the root on a v2-only host, `unified` under it on a
/// hybrid one.
fn v2_root() -> PathBuf {
    if unified() {
        PathBuf::from(ROOT)
    } else {
        Path::new(ROOT).join("unified")
    }
}

/// Mount points of the v1 hierarchies (empty on a v2-only host). Read once per process
/// (a container's teardown asked for them several times, each a read of mountinfo).
pub fn v1_hierarchies() -> &'static [PathBuf] {
    static HIERARCHIES: LazyLock<Vec<PathBuf>> = LazyLock::new(read_v1_hierarchies);
    &HIERARCHIES
}

fn read_v1_hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split(' ').next()? != "cgroup" {
                return None;
            }
            pre.split(' ').nth(4).map(PathBuf::from)
        })
        .collect()
}

/// Makes moving a process into a cgroup cheap, as every container start does: the
/// `favordynmods` option of the cgroup2 mount (Linux 6.0+). Without it, such a move
/// can wait for an RCU grace period (about 10 ms, one start in five or six on this
/// project's machine). The kernel's documentation offers it for hosts that change
/// cgroups often; it is host-wide, and forks and exits cost a little more. The v1
/// hierarchies share the lock it changes, but only a cgroup2 mount can switch it
/// after boot (v1 hosts: `cgroup_favordynmods=1` on the kernel command line).
/// Returns whether it is on.
pub fn favor_dynamic_changes() -> anyhow::Result<bool> {
    use anyhow::Context;
    let point = v2_root();
    // The mount's own flags (field 6) and the hierarchy's options (after the type), of
    // the last cgroup2 mount there (one mounted over another hides it).
    let mounted = || -> anyhow::Result<Option<(String, String)>> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(mountinfo.lines().rev().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let mut post = post.split(' ');
            (pre.nth(4) == point.to_str() && post.next() == Some("cgroup2")).then(|| {
                let flags = pre.next().unwrap_or("").to_string();
                (flags, post.nth(1).unwrap_or("").to_string())
            })
        }))
    };
    let Some((flags, options)) = mounted()? else {
        return Ok(false);
    };
    let mut options: Vec<&str> = options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    if options.contains(&"favordynmods") {
        return Ok(true);
    }
    // A remount sets the mount's flags and the hierarchy's options to those given:
    // the ones it has, and this.
    options.push("favordynmods");
    use nix::mount::MsFlags;
    let mut remount = MsFlags::MS_REMOUNT;
    for (name, flag) in [
        ("ro", MsFlags::MS_RDONLY),
        ("nosuid", MsFlags::MS_NOSUID),
        ("nodev", MsFlags::MS_NODEV),
        ("noexec", MsFlags::MS_NOEXEC),
        ("noatime", MsFlags::MS_NOATIME),
        ("nodiratime", MsFlags::MS_NODIRATIME),
        ("relatime", MsFlags::MS_RELATIME),
    ] {
        if flags.split(',').any(|f| f == name) {
            remount |= flag;
        }
    }
    nix::mount::mount(
        None::<&str>,
        &point,
        None::<&str>,
        remount,
        Some(options.join(",").as_str()),
    )
    .with_context(|| format!("remounting {} with favordynmods", point.display()))?;
    // The kernel ignores it, without an error, from a cgroup namespace of its own.
    Ok(mounted()?.is_some_and(|(_, o)| o.split(',').any(|o| o == "favordynmods")))
}

fn rel(cgroup: &str) -> &str {
    cgroup.trim_start_matches('/')
}

/// SIGKILLs whatever is still in the cgroup, thawing it first, and waits (up to a
/// second) for it to be empty. Killing a container's processes froze its cgroup once;
/// when that was interrupted (a process libcontainer had forked to start a Run, caught
/// midway by a stop), the cgroup stayed FROZEN with that process in it, stuck, forever.
/// An empty cgroup (a container's usual end) is left alone.
pub fn thaw_and_drain(cgroup: &str) {
    let pids = || -> Vec<i32> {
        let mut v: Vec<i32> = existing(cgroup)
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut left = pids();
    if left.is_empty() {
        return;
    }
    for h in v1_hierarchies() {
        let state = h.join(rel(cgroup)).join("freezer.state");
        if state.exists() {
            let _ = std::fs::write(&state, "THAWED");
        }
    }
    let v2 = v2_root().join(rel(cgroup));
    if v2.join("cgroup.freeze").exists() {
        let _ = std::fs::write(v2.join("cgroup.freeze"), "0");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        for &pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        left = pids();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
    }
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How many times the kernel OOM-killed a process of this cgroup.
pub fn oom_kills(cgroup: &str) -> u64 {
    if unified() {
        return read_key(
            &Path::new(ROOT).join(rel(cgroup)).join("memory.events"),
            "oom_kill",
        )
        .unwrap_or(0);
    }
    let dir = Path::new(ROOT).join("memory").join(rel(cgroup));
    read_key(&dir.join("memory.oom_control"), "oom_kill")
        // Kernels before 4.13 have no oom_kill counter: a hit limit is the best sign.
        .or_else(|| read_u64(&dir.join("memory.failcnt")))
        .unwrap_or(0)
}

/// Memory in use by the cgroup, bytes.
pub fn memory_bytes(cgroup: &str) -> Option<u64> {
    if unified() {
        return read_u64(&Path::new(ROOT).join(rel(cgroup)).join("memory.current"));
    }
    read_u64(
        &Path::new(ROOT)
            .join("memory")
            .join(rel(cgroup))
            .join("memory.usage_in_bytes"),
    )
}

/// CPU time used by the cgroup, nanoseconds.
pub fn cpu_nanos(cgroup: &str) -> Option<u64> {
    if unified() {
        return read_key(
            &Path::new(ROOT).join(rel(cgroup)).join("cpu.stat"),
            "usage_usec",
        )
        .map(|u| u * 1000);
    }
    read_u64(
        &Path::new(ROOT)
            .join("cpuacct")
            .join(rel(cgroup))
            .join("cpuacct.usage"),
    )
}

/// Moves process `pid` into this cgroup in every hierarchy where it exists (a helper
/// the shim starts for a container's work, held to the container's limits); how many.
pub fn enter(cgroup: &str, pid: u32) -> std::io::Result<usize> {
    let dirs = existing(cgroup);
    if dirs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no cgroup {cgroup} in any hierarchy"),
        ));
    }
    for dir in &dirs {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
    }
    Ok(dirs.len())
}

/// Directories of this cgroup path that exist in any hierarchy (leftover detection).
pub fn existing(cgroup: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = v1_hierarchies()
        .iter()
        .map(|h| h.join(rel(cgroup)))
        .collect();
    dirs.push(Path::new(ROOT).join(rel(cgroup)));
    dirs.push(Path::new(ROOT).join("unified").join(rel(cgroup)));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Removes the directories of an emptied cgroup from every hierarchy; whether none is
/// left.
pub fn remove(cgroup: &str) -> bool {
    existing(cgroup)
        .iter()
        .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
}

/// Held (a shared `flock`) by every shim while it makes its container's cgroups under
/// the parent; a closing executor removes the parent only when it can take the lock
/// exclusively at once. A cell closing idle used to remove the parent while another
/// cell on the host made a container under it ("failed to create dir
/// …/lattice/HANDLE: No such file or directory").
pub const PARENT_LOCK: &str = "/run/lattice/cgroup.lock";

/// `lock` (see [`crate::hostlock`]) locked as `how`; `None` when it cannot be (held
/// elsewhere, for a non-blocking lock; any other failure is logged).
fn lock_parent(lock: &Path, how: nix::fcntl::FlockArg) -> Option<nix::fcntl::Flock<std::fs::File>> {
    crate::hostlock::lock(lock, how)
        .map_err(|e| {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::warn!(lock = %lock.display(), "locking: {e}");
            }
        })
        .ok()
}

/// Held while a container's cgroups are made under the parent (see [`PARENT_LOCK`]).
pub fn making_under_parent(lock: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    lock_parent(lock, nix::fcntl::FlockArg::LockShared)
}

/// Runs `remove` (of the parent) unless a container is being made under it right now;
/// whether it ran.
pub fn remove_parent_unless_in_use(lock: &Path, remove: impl FnOnce()) -> bool {
    match lock_parent(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Some(_held) => {
            remove();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse() {
        let dir = std::env::temp_dir().join(format!("cg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), Some(3));
        assert_eq!(read_key(&f, "missing"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_parent_is_not_removed_while_a_container_is_made_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("run/cgroup.lock");
        let mut removed = 0;
        let making = making_under_parent(&lock).expect("a shared hold");
        let other = making_under_parent(&lock).expect("shared holds go together");
        assert!(!remove_parent_unless_in_use(&lock, || removed += 1));
        drop(making);
        assert!(
            !remove_parent_unless_in_use(&lock, || removed += 1),
            "one is left"
        );
        drop(other);
        assert!(remove_parent_unless_in_use(&lock, || removed += 1));
        assert_eq!(removed, 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
