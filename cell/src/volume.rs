//! The `local` volume driver: thin-provisioned volumes with a hard size, cheap
//! consistent snapshots, and online growth.
//!
//! A cell keeps a **pool**: one sparse file formatted XFS with reflink, loop-mounted at
//! `DIR/pool`. Each volume is a sparse file in the pool (`pool/volumes/NAME.img`)
//! formatted XFS and loop-mounted at `DIR/mnt/NAME`; containers bind-mount that
//! directory. A 10 GB volume costs only the blocks written to it (what mkfs zeroes becomes
//! unwritten extents in the pool); its filesystem's size is its quota (writing past it
//! fails with ENOSPC inside the container and nowhere else). A snapshot freezes the volume's filesystem, reflinks its image (copy-on-write:
//! no data copied, time independent of size) and thaws it. Growth extends the image,
//! refreshes the loop device and grows XFS while mounted (`xfs_growfs`; ext4's online
//! resize would need CAP_SYS_RESOURCE, which containers-in-VMs often lack). The pool
//! grows the same way at its watermark, up to its maximum (when to: [`crate::pool`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

pub use lattice_specs::volume::{parse_size, MIN_SIZE};

/// Pool use at which [`Volumes::pool`] warns.
pub const POOL_WARNING: f64 = 0.8;

/// One volume as `ltc volume list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// The volume's size (its quota).
    pub size_bytes: u64,
    /// Disk the volume really takes in the pool.
    pub used_bytes: u64,
    /// Where it is mounted on the cell (containers bind-mount this).
    pub path: PathBuf,
    pub snapshots: Vec<String>,
}

/// The pool's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolInfo {
    pub size_bytes: u64,
    pub used_bytes: u64,
    /// Set when use passes [`POOL_WARNING`].
    pub warning: Option<String>,
}

pub(crate) fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("running {cmd} (is it installed? scripts/setup.sh installs it)")
    })?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Volume and snapshot names: what is safe as a file name and a mount point (a
/// volume's, or its standby copy's `NAME.standby`).
pub fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    lattice_specs::volume::check_copy_name(kind, name).map_err(anyhow::Error::msg)
}

mod fence;
mod standby;

fn is_mounted(path: &Path) -> bool {
    crate::rootfs::is_mounted(path)
}

/// Grows the loop-mounted XFS image `img` (mounted at `mnt`) to `size` bytes while
/// mounted: the file, then its loop device, then the filesystem. Also when the image
/// already has the size: a growth that failed midway is finished here (growing XFS to
/// the size it has is a no-op).
fn grow_image(img: &Path, mnt: &Path, size: u64) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(img)?;
    if size > f.metadata()?.len() {
        f.set_len(size)?;
    }
    drop(f);
    let dev = run("losetup", &["-j", img.to_str().unwrap()])?;
    let dev = dev
        .split(':')
        .next()
        .filter(|d| d.starts_with("/dev/loop"))
        .with_context(|| format!("{} has no loop device", img.display()))?
        .to_string();
    run("losetup", &["-c", &dev])?;
    run("xfs_growfs", &[mnt.to_str().unwrap()])?;
    Ok(())
}

/// The volumes of one cell.
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// Opens (creating it the first time) a pool of `pool_size` bytes at `dir`, and
    /// mounts every volume it holds.
    pub fn open(dir: &Path, pool_size: u64) -> anyhow::Result<Volumes> {
        std::fs::create_dir_all(dir.join("pool"))?;
        std::fs::create_dir_all(dir.join("mnt"))?;
        let dir = dir.canonicalize()?;
        let v = Volumes { dir };
        let img = v.dir.join("pool.img");
        if !img.exists() {
            let tmp = v.dir.join("pool.img.tmp");
            let f = std::fs::File::create(&tmp)?;
            f.set_len(pool_size)?;
            drop(f);
            run(
                "mkfs.xfs",
                // The smallest log XFS allows: the pool's one fixed cost.
                &[
                    "-q",
                    "-m",
                    "reflink=1",
                    "-l",
                    "size=64m",
                    tmp.to_str().unwrap(),
                ],
            )
            .context("formatting the volume pool")?;
            std::fs::rename(&tmp, &img)?;
        }
        let pool = v.dir.join("pool");
        if !is_mounted(&pool) {
            run(
                "mount",
                &["-o", "loop", img.to_str().unwrap(), pool.to_str().unwrap()],
            )
            .context("mounting the volume pool")?;
        }
        std::fs::create_dir_all(pool.join("volumes"))?;
        std::fs::create_dir_all(pool.join("snapshots"))?;
        for name in v.names()? {
            v.mount(&name)?;
        }
        Ok(v)
    }

    fn image(&self, name: &str) -> PathBuf {
        self.dir.join("pool/volumes").join(format!("{name}.img"))
    }

    fn snapshot_image(&self, name: &str, snap: &str) -> PathBuf {
        self.dir
            .join("pool/snapshots")
            .join(format!("{name}@{snap}.img"))
    }

    /// Where volume `name` is mounted.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join("mnt").join(name)
    }

    /// The copies in the pool by name (a directory read: no filesystem figures).
    pub(crate) fn names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("pool/volumes"))?
            .filter_map(|e| {
                let n = e.ok()?.file_name().into_string().ok()?;
                n.strip_suffix(".img").map(String::from)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn mount(&self, name: &str) -> anyhow::Result<()> {
        let mnt = self.path(name);
        std::fs::create_dir_all(&mnt)?;
        if !is_mounted(&mnt) {
            run(
                "mount",
                &[
                    "-o",
                    "loop",
                    self.image(name).to_str().unwrap(),
                    mnt.to_str().unwrap(),
                ],
            )
            .with_context(|| format!("mounting volume {name}"))?;
        }
        Ok(())
    }

    /// A new volume of `size` bytes, empty and mounted.
    pub fn create(&self, name: &str, size: u64) -> anyhow::Result<VolumeInfo> {
        check_name("volume", name)?;
        anyhow::ensure!(
            size >= MIN_SIZE,
            "volume {name}: {size} bytes is too small; volumes are at least 300M"
        );
        let img = self.image(name);
        anyhow::ensure!(!img.exists(), "volume {name} already exists on this cell");
        let tmp = img.with_extension("img.tmp");
        let made = (|| {
            let f = std::fs::File::create(&tmp)?;
            f.set_len(size)?;
            drop(f);
            // In the XFS pool, mkfs's zeroing (its 64 MB log) becomes unwritten extents:
            // an empty volume costs the pool next to nothing.
            run("mkfs.xfs", &["-q", tmp.to_str().unwrap()])?;
            std::fs::rename(&tmp, &img)?;
            self.mount(name)
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            if img.exists() {
                let _ = self.unmount(name);
                let _ = std::fs::remove_file(&img);
            }
            return Err(e.context(format!("creating volume {name}")));
        }
        self.info(name)
    }

    fn unmount(&self, name: &str) -> anyhow::Result<()> {
        let mnt = self.path(name);
        if is_mounted(&mnt) {
            run("umount", &[mnt.to_str().unwrap()])
                .with_context(|| format!("unmounting volume {name}"))?;
        }
        let _ = std::fs::remove_dir(&mnt);
        Ok(())
    }

    /// Removes a volume and its snapshots (the caller refuses while a container uses it).
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        check_name("volume", name)?;
        let img = self.image(name);
        anyhow::ensure!(img.exists(), "no volume {name} on this cell");
        self.unmount(name)?;
        std::fs::remove_file(&img)?;
        self.forget_epoch(name);
        for s in self.snapshots(name)? {
            let _ = std::fs::remove_file(self.snapshot_image(name, &s));
        }
        Ok(())
    }

    fn snapshots(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let prefix = format!("{name}@");
        let mut snaps: Vec<String> = std::fs::read_dir(self.dir.join("pool/snapshots"))?
            .filter_map(|e| {
                let n = e.ok()?.file_name().into_string().ok()?;
                n.strip_prefix(&prefix)?
                    .strip_suffix(".img")
                    .map(String::from)
            })
            .collect();
        snaps.sort();
        Ok(snaps)
    }

    pub fn info(&self, name: &str) -> anyhow::Result<VolumeInfo> {
        let meta = std::fs::metadata(self.image(name))
            .with_context(|| format!("no volume {name} on this cell"))?;
        // What the filesystem holds (data and its own metadata), as `df` says.
        let used = match nix::sys::statvfs::statvfs(&self.path(name)) {
            Ok(st) if is_mounted(&self.path(name)) => {
                (st.blocks() - st.blocks_free()) * st.fragment_size()
            }
            _ => meta.blocks() * 512,
        };
        Ok(VolumeInfo {
            name: name.to_string(),
            size_bytes: meta.len(),
            used_bytes: used,
            path: self.path(name),
            snapshots: self.snapshots(name)?,
        })
    }

    pub fn list(&self) -> anyhow::Result<Vec<VolumeInfo>> {
        self.names()?.iter().map(|n| self.info(n)).collect()
    }

    /// Grows a mounted volume to `size` bytes without unmounting it.
    pub fn grow(&self, name: &str, size: u64) -> anyhow::Result<VolumeInfo> {
        let info = self.info(name)?;
        anyhow::ensure!(
            size >= info.size_bytes,
            "volume {name} is {} bytes; it can only grow",
            info.size_bytes
        );
        grow_image(&self.image(name), &self.path(name), size)
            .with_context(|| format!("growing volume {name}"))?;
        self.info(name)
    }

    /// A consistent, copy-on-write snapshot: the filesystem is frozen only while its
    /// image is reflinked.
    pub fn snapshot(&self, name: &str, snap: &str) -> anyhow::Result<PathBuf> {
        check_name("snapshot", snap)?;
        self.info(name)?;
        let dest = self.snapshot_image(name, snap);
        anyhow::ensure!(
            !dest.exists(),
            "volume {name} already has a snapshot {snap}"
        );
        let mnt = self.path(name);
        run("fsfreeze", &["-f", mnt.to_str().unwrap()])
            .with_context(|| format!("freezing volume {name}"))?;
        let copied = run(
            "cp",
            &[
                "--reflink=always",
                self.image(name).to_str().unwrap(),
                dest.to_str().unwrap(),
            ],
        );
        let thawed = run("fsfreeze", &["-u", mnt.to_str().unwrap()]);
        copied.with_context(|| format!("snapshotting volume {name}"))?;
        thawed.with_context(|| format!("thawing volume {name}"))?;
        Ok(dest)
    }

    /// Mounts snapshot `snap` of `name` read-only at `at` (for a backup to read).
    pub fn mount_snapshot(&self, name: &str, snap: &str, at: &Path) -> anyhow::Result<()> {
        let img = self.snapshot_image(name, snap);
        anyhow::ensure!(img.exists(), "volume {name} has no snapshot {snap}");
        std::fs::create_dir_all(at)?;
        run(
            "mount",
            &[
                "-o",
                // A twin of a mounted filesystem: same UUID, log already clean.
                "loop,ro,nouuid,norecovery",
                img.to_str().unwrap(),
                at.to_str().unwrap(),
            ],
        )
        .with_context(|| format!("mounting snapshot {name}@{snap}"))?;
        Ok(())
    }

    /// Drops a snapshot.
    pub fn release_snapshot(&self, name: &str, snap: &str) -> anyhow::Result<()> {
        let img = self.snapshot_image(name, snap);
        std::fs::remove_file(&img).with_context(|| format!("volume {name} has no snapshot {snap}"))
    }

    /// The pool's size and use, warning past [`POOL_WARNING`].
    pub fn pool(&self) -> anyhow::Result<PoolInfo> {
        let st = nix::sys::statvfs::statvfs(&self.dir.join("pool"))?;
        let size = st.blocks() * st.fragment_size();
        let used = size - st.blocks_free() * st.fragment_size();
        let share = used as f64 / size.max(1) as f64;
        Ok(PoolInfo {
            size_bytes: size,
            used_bytes: used,
            warning: (share >= POOL_WARNING).then(|| {
                format!(
                    "the volume pool is {:.0}% full: grow it or remove volumes",
                    share * 100.0
                )
            }),
        })
    }

    /// Grows the pool at its watermark up to `max` bytes, or warns (see
    /// [`crate::pool`]).
    pub fn tend_pool(&self, max: u64) -> anyhow::Result<crate::pool::Tended> {
        crate::pool::tend(self, max)
    }

    /// Unmounts every volume and the pool (a test's cleanup, or a cell going away).
    pub fn close(&self) -> anyhow::Result<()> {
        for n in self.names()? {
            self.unmount(&n)?;
        }
        let pool = self.dir.join("pool");
        if is_mounted(&pool) {
            run("umount", &[pool.to_str().unwrap()])?;
        }
        Ok(())
    }
}

/// The pool's file and its filesystem: its length, and what of it volumes cannot use.
impl crate::pool::PoolDisk for Volumes {
    fn figures(&self) -> anyhow::Result<crate::pool::PoolFigures> {
        let size = std::fs::metadata(self.dir.join("pool.img"))?.len();
        let st = nix::sys::statvfs::statvfs(&self.dir.join("pool"))?;
        let free = st.blocks_free() * st.fragment_size();
        Ok(crate::pool::PoolFigures {
            size_bytes: size,
            used_bytes: size.saturating_sub(free),
        })
    }

    fn grow(&self, size: u64) -> anyhow::Result<()> {
        grow_image(&self.dir.join("pool.img"), &self.dir.join("pool"), size)
            .context("growing the volume pool")
    }
}

/// The cell's `local` volume driver: the pool is made on first use (a cell that never
/// holds a volume pays nothing), reopened with its volumes when the cell restarts.
pub struct VolumeDriver {
    dir: PathBuf,
    pool_size: u64,
    pool_max: u64,
    pool: std::sync::Mutex<Option<std::sync::Arc<Volumes>>>,
}

impl VolumeDriver {
    /// A driver keeping its pool in `dir`, made `pool_size` bytes and grown at its
    /// watermark up to `pool_max` (no growth when not above `pool_size`); an existing
    /// pool is opened (and its volumes mounted) now.
    pub fn new(dir: &Path, pool_size: u64, pool_max: u64) -> anyhow::Result<VolumeDriver> {
        let d = VolumeDriver {
            dir: dir.to_path_buf(),
            pool_size,
            pool_max: pool_max.max(pool_size),
            pool: Default::default(),
        };
        if dir.join("pool.img").exists() {
            d.volumes()?;
        }
        Ok(d)
    }

    /// The pool, made and mounted the first time.
    pub fn volumes(&self) -> anyhow::Result<std::sync::Arc<Volumes>> {
        let mut pool = self.pool.lock().unwrap();
        if let Some(v) = &*pool {
            return Ok(v.clone());
        }
        let v = std::sync::Arc::new(
            Volumes::open(&self.dir, self.pool_size).context("opening the volume pool")?,
        );
        *pool = Some(v.clone());
        Ok(v)
    }

    /// The most the pool grows to.
    pub fn pool_max(&self) -> u64 {
        self.pool_max
    }

    /// The pool if it is open.
    pub fn opened(&self) -> Option<std::sync::Arc<Volumes>> {
        self.pool.lock().unwrap().clone()
    }

    /// Unmounts every volume and the pool (the cell is stopping).
    pub fn close(&self) {
        if let Some(v) = self.pool.lock().unwrap().take() {
            if let Err(e) = v.close() {
                tracing::warn!("closing the volume pool: {e:#}");
            }
        }
    }
}

/// Unmounts everything mounted under `dir`, deepest first (a killed cell's volumes,
/// snapshots and pool, when a test or an operator cleans up after it).
pub fn unmount_all(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
