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

fn rel(cgroup: &str) -> &str {
    cgroup.trim_start_matches('/')
}

/// Thaws the cgroup, SIGKILLs whatever is still in it and waits (up to a second) for
/// it to be empty. Killing a container's processes freezes its cgroup first; when that
/// was interrupted (a process libcontainer had forked to start a Run, caught midway by
/// a stop), the cgroup stayed FROZEN with that process in it, stuck, forever.
pub fn thaw_and_drain(cgroup: &str) {
    for h in v1_hierarchies() {
        let state = h.join(rel(cgroup)).join("freezer.state");
        if state.exists() {
            let _ = std::fs::write(&state, "THAWED");
        }
    }
    let v2 = if unified() {
        Path::new(ROOT).join(rel(cgroup))
    } else {
        Path::new(ROOT).join("unified").join(rel(cgroup))
    };
    if v2.join("cgroup.freeze").exists() {
        let _ = std::fs::write(v2.join("cgroup.freeze"), "0");
    }
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let left = pids();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
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
}
