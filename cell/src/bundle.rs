//! The OCI runtime spec (`config.json`) of a container: namespaces, cgroup limits,
//! capabilities, seccomp and masked paths, computed from what the work asks for.
//! Pure: the executor writes the result into the bundle directory.

use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
};

/// Where the pause binary is mounted inside every container.
pub const PAUSE_PATH: &str = "/.lattice/pause";

/// Pids a container may hold when the work does not say (a fork bomb stops here).
pub const DEFAULT_MAX_PIDS: i64 = 1024;

/// Open files a process may hold when the Run action does not say.
pub const DEFAULT_NOFILE: u64 = 1024;

/// What a container needs from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: i32,
    pub cpu_weight: u32,
    pub max_pids: i32,
    pub privileged: bool,
}

/// Capabilities an unprivileged container keeps (Docker's default set minus the rarely
/// needed ones): enough to run servers as root inside the container, nothing that
/// reaches the host.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Mknod,
    Capability::AuditWrite,
    Capability::Setfcap,
];

/// Syscalls an unprivileged container may not make (they fail with EPERM): kernel
/// modules, reboot, clocks, swap, keyrings, BPF and perf, namespaces, mounting,
/// io_uring (whose operations seccomp cannot see), and process_vm/ptrace across the
/// container. Everything else is allowed.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The default seccomp profile of unprivileged containers.
pub fn default_seccomp() -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(
                    DENIED_SYSCALLS
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc_eperm())
                .build()
                .expect("static syscall rule"),
            // New namespaces through clone(2) as well as unshare(2): one rule per flag.
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc_eperm())
                .args(
                    NAMESPACE_FLAGS
                        .iter()
                        .map(|f| {
                            LinuxSeccompArgBuilder::default()
                                .index(0usize)
                                .value(*f)
                                .value_two(*f)
                                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                                .build()
                                .expect("static clone rule")
                        })
                        .collect::<Vec<_>>(),
                )
                .build()
                .expect("static clone rule"),
            // clone3's flags live in memory seccomp cannot read: callers fall back to
            // clone (as under Docker's profile).
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(nix::errno::Errno::ENOSYS as u32)
                .build()
                .expect("static clone3 rule"),
        ])
        .build()
        .expect("static seccomp profile")
}

/// clone(2) flags that make namespaces.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

fn libc_eperm() -> u32 {
    nix::errno::Errno::EPERM as u32
}

/// CPU shares from a 1–100 weight (Diego's mapping: 100 → 1024, never below 2).
pub fn cpu_shares(weight: u32) -> u64 {
    let w = weight.clamp(1, 100) as u64;
    (w * 1024 / 100).max(2)
}

/// A host directory bind-mounted into the container (a volume or a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    pub container_path: String,
    pub host_path: std::path::PathBuf,
    pub read_only: bool,
}

/// The runtime spec of one container.
///
/// - `rootfs`: the container's root directory on the host (an overlay mount);
/// - `pause`: the host path of the pause binary, bind-mounted read-only at [`PAUSE_PATH`];
/// - `netns`: the network namespace to join (`None` shares the cell's: `--net host`);
/// - `cgroup`: the cgroup path, e.g. `/lattice/HANDLE`;
/// - `binds`: volumes to bind-mount.
pub fn spec(
    hostname: &str,
    rootfs: &Path,
    pause: &Path,
    netns: Option<&Path>,
    cgroup: &str,
    limits: &Limits,
    binds: &[Bind],
) -> anyhow::Result<Spec> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(hostname.to_string()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()?,
    ));
    spec.set_process(Some(init_process(limits)?));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.extend(extra_mounts(pause, netns, binds)?);
    spec.set_mounts(Some(mounts));

    let base = spec.linux().clone().unwrap_or_default();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(netns)?)
        .resources(resources(limits)?)
        .cgroups_path(cgroup);
    if limits.privileged {
        linux = linux.masked_paths(vec![]).readonly_paths(vec![]);
    } else {
        linux = linux
            .masked_paths(base.masked_paths().clone().unwrap_or_default())
            .readonly_paths(base.readonly_paths().clone().unwrap_or_default())
            .seccomp(default_seccomp());
    }
    spec.set_linux(Some(linux.build()?));
    Ok(spec)
}

/// The container's init: `pause`, with the capabilities, no_new_privs and nofile
/// limit its processes get.
fn init_process(limits: &Limits) -> anyhow::Result<oci_spec::runtime::Process> {
    let caps: std::collections::HashSet<Capability> = if limits.privileged {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()?;
    Ok(ProcessBuilder::default()
        .args(vec![PAUSE_PATH.to_string()])
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])
        .cwd("/")
        .no_new_privileges(!limits.privileged)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(DEFAULT_NOFILE)
            .soft(DEFAULT_NOFILE)
            .build()?])
        .build()?)
}

/// The mounts beyond the defaults: the pause binary, the cell's resolv.conf under
/// host networking, and the volumes.
fn extra_mounts(
    pause: &Path,
    netns: Option<&Path>,
    binds: &[Bind],
) -> anyhow::Result<Vec<oci_spec::runtime::Mount>> {
    let mut mounts = vec![MountBuilder::default()
        .destination(PAUSE_PATH)
        .source(pause)
        .typ("bind")
        .options(vec![
            "bind".to_string(),
            "ro".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ])
        .build()?];
    if netns.is_none() {
        // Host networking: the container sees the cell's /etc/resolv.conf.
        mounts.push(
            MountBuilder::default()
                .destination("/etc/resolv.conf")
                .source("/etc/resolv.conf")
                .typ("bind")
                .options(vec!["bind".to_string(), "ro".to_string()])
                .build()?,
        );
    }
    for b in binds {
        let mut options = vec![
            "rbind".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ];
        if b.read_only {
            options.push("ro".to_string());
        }
        mounts.push(
            MountBuilder::default()
                .destination(&b.container_path)
                .source(&b.host_path)
                .typ("bind")
                .options(options)
                .build()?,
        );
    }
    Ok(mounts)
}

/// Its own pid, mount, uts and ipc namespaces, and `netns` when it has one.
fn namespaces(netns: Option<&Path>) -> anyhow::Result<Vec<LinuxNamespace>> {
    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<_, _>>()?;
    if let Some(path) = netns {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path)
                .build()?,
        );
    }
    Ok(namespaces)
}

/// CPU shares, the pids limit and the memory limit (no swap past it).
fn resources(limits: &Limits) -> anyhow::Result<oci_spec::runtime::LinuxResources> {
    let mut resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(cpu_shares(limits.cpu_weight))
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(if limits.max_pids > 0 {
                    limits.max_pids as i64
                } else {
                    DEFAULT_MAX_PIDS
                })
                .build()?,
        );
    if limits.memory_mb > 0 {
        let bytes = limits.memory_mb as i64 * 1024 * 1024;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                // Memory plus swap equal to memory: no swapping past the limit.
                .swap(bytes)
                .build()?,
        );
    }
    Ok(resources.build()?)
}

/// Every capability with its kernel number.
const ALL_CAPS: &[(Capability, u32)] = {
    use Capability::*;
    &[
        (Chown, 0),
        (DacOverride, 1),
        (DacReadSearch, 2),
        (Fowner, 3),
        (Fsetid, 4),
        (Kill, 5),
        (Setgid, 6),
        (Setuid, 7),
        (Setpcap, 8),
        (LinuxImmutable, 9),
        (NetBindService, 10),
        (NetBroadcast, 11),
        (NetAdmin, 12),
        (NetRaw, 13),
        (IpcLock, 14),
        (IpcOwner, 15),
        (SysModule, 16),
        (SysRawio, 17),
        (SysChroot, 18),
        (SysPtrace, 19),
        (SysPacct, 20),
        (SysAdmin, 21),
        (SysBoot, 22),
        (SysNice, 23),
        (SysResource, 24),
        (SysTime, 25),
        (SysTtyConfig, 26),
        (Mknod, 27),
        (Lease, 28),
        (AuditWrite, 29),
        (AuditControl, 30),
        (Setfcap, 31),
        (MacOverride, 32),
        (MacAdmin, 33),
        (Syslog, 34),
        (WakeAlarm, 35),
        (BlockSuspend, 36),
        (AuditRead, 37),
        (Perfmon, 38),
        (Bpf, 39),
        (CheckpointRestore, 40),
    ]
};

/// The cell's own capability bounding set: a container cannot get more than the cell
/// has (a cell inside another container or VM sandbox may lack some).
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn all_caps() -> std::collections::HashSet<Capability> {
    let own = own_bounding_set();
    ALL_CAPS
        .iter()
        .filter(|(_, bit)| own & (1u64 << bit) != 0)
        .map(|(c, _)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(privileged: bool) -> Limits {
        Limits {
            memory_mb: 64,
            cpu_weight: 50,
            max_pids: 0,
            privileged,
        }
    }

    fn make(privileged: bool, netns: Option<&Path>) -> Spec {
        spec(
            "h",
            Path::new("/r"),
            Path::new("/p"),
            netns,
            "/lattice/h",
            &limits(privileged),
            &[
                Bind {
                    container_path: "/data".into(),
                    host_path: "/v/data".into(),
                    read_only: false,
                },
                Bind {
                    container_path: "/snap".into(),
                    host_path: "/v/snap".into(),
                    read_only: true,
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn unprivileged_is_locked_down() {
        let s = make(false, Some(Path::new("/var/run/netns/x")));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(!bounding.contains(&Capability::NetAdmin));
        assert!(bounding.contains(&Capability::NetBindService));
        let linux = s.linux().as_ref().unwrap();
        let seccomp = linux.seccomp().as_ref().unwrap();
        let denied: Vec<&String> = seccomp
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names())
            .collect();
        for name in ["io_uring_setup", "unshare", "mount", "clone", "clone3"] {
            assert!(denied.iter().any(|d| *d == name), "{name} not denied");
        }
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        let ns = linux.namespaces().as_ref().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/var/run/netns/x")));
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().unwrap().limit(), DEFAULT_MAX_PIDS);
        assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/lattice/h"))
        );
    }

    #[test]
    fn privileged_lifts_restrictions_explicitly() {
        let s = make(true, None);
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(false));
        let caps = p.capabilities().as_ref().unwrap();
        assert!(caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        let linux = s.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(|m| m.is_empty()));
        // Host network: no network namespace of its own.
        assert!(!linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn cpu_weight_maps_to_shares() {
        assert_eq!(cpu_shares(100), 1024);
        assert_eq!(cpu_shares(0), 10);
        assert_eq!(cpu_shares(1), 10);
        assert_eq!(cpu_shares(500), 1024);
    }

    #[test]
    fn pause_is_mounted_read_only() {
        let s = make(false, None);
        let m = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(PAUSE_PATH))
            .unwrap();
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn volumes_are_bound_read_only_when_asked() {
        let s = make(false, None);
        let find = |dest: &str| {
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == Path::new(dest))
                .unwrap()
                .clone()
        };
        let (data, snap) = (find("/data"), find("/snap"));
        assert_eq!(data.source().as_deref(), Some(Path::new("/v/data")));
        assert!(!data.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(snap.options().as_ref().unwrap().contains(&"ro".to_string()));
    }
}
