//! Containers' writable layers on a filesystem of their own, with a quota each:
//! `disk_mb` is enforced.
//!
//! Without it a container writes into its overlay's upper directory on whatever
//! filesystem holds the cell's data (the host's root, where `bbs.db` may live) until
//! that is full. Instead the cell keeps one sparse file formatted btrfs with quotas on,
//! loop-mounted at `DATA/containers`. Each container's upper and work directories live
//! in a subvolume of their own (`DATA/containers/HANDLE/disk`) whose quota group is
//! held to the container's `disk_mb`: writing past it fails inside the container
//! (`EDQUOT`) and nowhere else. (XFS project quotas, as Docker's overlay2 uses, would do
//! as well, but kernels without `CONFIG_XFS_QUOTA`, like this project's CI, lack them;
//! btrfs quota groups need no option.) A subvolume is made with one ioctl, in well
//! under a millisecond; the file costs only the blocks written to it.
//!
//! [`qgroup_limit`] is the decision (pure, tested); [`Scratch`] does the I/O.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Linux's `struct btrfs_ioctl_qgroup_limit_args` (linux/btrfs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QgroupLimitArgs {
    /// 0: the quota group of the subvolume the ioctl is made on.
    pub qgroupid: u64,
    pub flags: u64,
    pub max_rfer: u64,
    pub max_excl: u64,
    pub rsv_rfer: u64,
    pub rsv_excl: u64,
}

const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;
const BTRFS_QGROUP_LIMIT_MAX_EXCL: u64 = 1 << 1;

/// The limit that holds a subvolume to `bytes` (0: counted, no limit).
pub fn qgroup_limit(bytes: u64) -> QgroupLimitArgs {
    if bytes == 0 {
        return QgroupLimitArgs::default();
    }
    QgroupLimitArgs {
        qgroupid: 0,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER | BTRFS_QGROUP_LIMIT_MAX_EXCL,
        max_rfer: bytes,
        max_excl: bytes,
        ..Default::default()
    }
}

/// `struct btrfs_ioctl_vol_args`: a name for a new subvolume.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (0x94 << 8) | nr
}
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = ioc(1, 14, std::mem::size_of::<VolArgs>());
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = ioc(3, 40, std::mem::size_of::<QuotaCtlArgs>());
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = ioc(2, 43, std::mem::size_of::<QgroupLimitArgs>());
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;

fn ioctl<T>(f: &std::fs::File, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(f);
    // SAFETY: `fd` is open for the call; every request this module sends is built by
    // `ioc` from the size of the very struct `arg` points to, which outlives the call.
    if unsafe { libc::ioctl(fd, request, arg as *mut T) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The containers' filesystem, mounted at `DATA/containers`.
pub struct Scratch {
    mount: PathBuf,
}

impl Scratch {
    /// Whether `DATA/containers` holds containers on the data directory's own
    /// filesystem (made before the containers' filesystem existed).
    pub fn holds_unlimited_containers(data_dir: &Path) -> bool {
        let dir = data_dir.join("containers");
        !crate::rootfs::is_mounted(&dir)
            && std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some())
    }

    /// Makes (the first time) and mounts the containers' filesystem of `size` bytes.
    /// Fails when the directory already holds containers from before (they would be
    /// hidden under the mount).
    pub fn open(data_dir: &Path, size: u64) -> anyhow::Result<Scratch> {
        let mount = data_dir.join("containers");
        std::fs::create_dir_all(&mount)?;
        if !crate::rootfs::is_mounted(&mount) {
            anyhow::ensure!(
                std::fs::read_dir(&mount)?.next().is_none(),
                "{} holds containers from before disk limits: stop them (or empty it) first",
                mount.display()
            );
            let img = data_dir.join("containers.img");
            if !img.exists() {
                let tmp = data_dir.join("containers.img.tmp");
                std::fs::File::create(&tmp)?.set_len(size)?;
                crate::volume::run("mkfs.btrfs", &["-q", "-f", path_str(&tmp)?])
                    .context("formatting the containers' filesystem")?;
                std::fs::rename(&tmp, &img)?;
            }
            crate::volume::run("mount", &["-o", "loop", path_str(&img)?, path_str(&mount)?])
                .context("mounting the containers' filesystem")?;
        }
        let root = std::fs::File::open(&mount)?;
        let mut enable = QuotaCtlArgs {
            cmd: BTRFS_QUOTA_CTL_ENABLE,
            status: 0,
        };
        match ioctl(&root, BTRFS_IOC_QUOTA_CTL, &mut enable) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).context("turning quotas on in the containers' filesystem"),
        }
        Ok(Scratch { mount })
    }

    /// Makes `disk`, a subvolume held to `bytes` (0: counted, not limited), for a
    /// container's upper and work directories.
    pub fn subvolume(&self, disk: &Path, bytes: u64) -> anyhow::Result<()> {
        let (Some(parent), Some(name)) = (disk.parent(), disk.file_name()) else {
            anyhow::bail!("{} names no subvolume", disk.display());
        };
        let name = name.as_encoded_bytes();
        let mut args = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        anyhow::ensure!(name.len() < args.name.len(), "subvolume name too long");
        args.name[..name.len()].copy_from_slice(name);
        let dir = std::fs::File::open(parent)?;
        ioctl(&dir, BTRFS_IOC_SUBVOL_CREATE, &mut args)
            .with_context(|| format!("making the subvolume {}", disk.display()))?;
        let mut limit = qgroup_limit(bytes);
        if limit.flags != 0 {
            ioctl(
                &std::fs::File::open(disk)?,
                BTRFS_IOC_QGROUP_LIMIT,
                &mut limit,
            )
            .context("setting the container's disk quota")?;
        }
        Ok(())
    }

    /// Unmounts the filesystem (the cell stops with no container left).
    pub fn close(&self) {
        if let Err(e) = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(dir = %self.mount.display(), "unmounting the containers' filesystem: {e}");
        }
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctls_have_the_kernels_numbers() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
        assert_eq!(BTRFS_IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(BTRFS_IOC_QUOTA_CTL, 0xc010_9428);
        assert_eq!(BTRFS_IOC_QGROUP_LIMIT, 0x8030_942b);
    }

    #[test]
    fn a_limit_holds_both_what_a_subvolume_refers_to_and_what_it_alone_holds() {
        let l = qgroup_limit(10 << 20);
        assert_eq!(l.qgroupid, 0, "the subvolume the ioctl is made on");
        assert_eq!((l.max_rfer, l.max_excl), (10 << 20, 10 << 20));
        assert_eq!(
            l.flags,
            BTRFS_QGROUP_LIMIT_MAX_RFER | BTRFS_QGROUP_LIMIT_MAX_EXCL
        );
        assert_eq!(qgroup_limit(0).flags, 0, "0: no limit");
    }
}
