//! Root filesystems: the preloaded images a cell offers (`preloaded:NAME` directories;
//! `oci:` and `docker://` images are in [`crate::image`]), the
//! copy-on-write overlay every container gets on top of its image, and the tiny
//! busybox image the project ships (built from Debian's static busybox).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_specs::rootfs::RootFs;

/// The images a cell can start containers from.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    /// `preloaded:NAME` → directory.
    pub preloaded: BTreeMap<String, PathBuf>,
    /// Registries (HOST:PORT) pulled from over plain HTTP rather than HTTPS.
    pub insecure_registries: Vec<String>,
    /// Directories `oci:PATH` layouts may live under (none: no `oci:` images). Never the
    /// cell's own data directory, where tenants' files are.
    pub oci_roots: Vec<PathBuf>,
    /// Registry (HOST[:PORT]) → (user, password) for registries that want credentials.
    pub registry_credentials: BTreeMap<String, (String, String)>,
    /// CA certificates (PEM texts) trusted besides the system's roots, by registry
    /// pulls and by Download and Upload actions (`--extra-ca`).
    pub extra_ca: Vec<String>,
}

impl Providers {
    /// The layers (lowest first) of a `preloaded:` rootfs, or why this cell cannot
    /// provide it (`oci:` and `docker://` images come from [`crate::image`]).
    pub fn layers(&self, url: &str) -> anyhow::Result<Vec<PathBuf>> {
        match RootFs::parse(url)? {
            RootFs::Preloaded { name } => match self.preloaded.get(&name) {
                Some(dir) if dir.is_dir() => Ok(vec![dir.clone()]),
                Some(dir) => anyhow::bail!(
                    "preloaded rootfs {name:?} is configured at {} but that directory is missing",
                    dir.display()
                ),
                None => anyhow::bail!(
                    "this cell has no preloaded rootfs {name:?} (it has: {})",
                    self.names().join(", ")
                ),
            },
            other => anyhow::bail!(
                "rootfs {url:?} is an image of the {} provider, not a preloaded directory",
                other.provider()
            ),
        }
    }

    /// The preloaded names, for the cell's presence.
    pub fn names(&self) -> Vec<String> {
        self.preloaded.keys().cloned().collect()
    }
}

/// Mounts `lower` (lowest first) read-only under a writable `upper` at `merged`.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> anyhow::Result<()> {
    for d in [upper, work, merged] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // overlayfs lists the topmost lower layer first.
    let lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let mount = |opts: &str| {
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts),
        )
    };
    // `volatile` (Linux 5.10+): no syncs of the upper layer, whose writes are scratch
    // that goes with the container; unmounting would otherwise flush them to disk
    // first (several ms on every destroy). Older kernels take the plain mount.
    match mount(&format!("{opts},volatile")) {
        Err(nix::errno::Errno::EINVAL) => mount(&opts),
        r => r,
    }
    .with_context(|| format!("mounting overlay at {} ({opts})", merged.display()))?;
    Ok(())
}

/// Unmounts an overlay (lazily, so a straggling process cannot keep it busy).
pub fn unmount(merged: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(merged, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", merged.display())),
    }
}

/// Whether `path` is a mount point (in this mount namespace).
pub fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// Builds the `busybox` image at `dir` from a static busybox binary (Debian's
/// `busybox-static` installs one at /bin/busybox): every applet as a symlink, a root
/// and a `vcap` user, and the usual empty directories.
///
/// An image that exists is left alone: running containers use it as their lower
/// layer, and rewriting a layer under a live overlay corrupts what runs from it. The
/// image is built beside `dir` and renamed into place, so it is whole or absent.
pub fn build_busybox(busybox: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.join(".lattice-image").exists() {
        return Ok(());
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let bin = tmp.join("bin");
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/vcap",
        "usr/bin",
        "var",
        "run",
    ] {
        std::fs::create_dir_all(tmp.join(d))?;
    }
    std::fs::set_permissions(
        tmp.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )?;
    std::fs::copy(busybox, bin.join("busybox")).with_context(|| {
        format!(
            "copying {} (install busybox-static: scripts/setup.sh)",
            busybox.display()
        )
    })?;
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    std::os::unix::fs::symlink("/bin/busybox", tmp.join("usr/bin/env"))?;
    std::fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        tmp.join("etc/group"),
        "root:x:0:\nvcap:x:2000:\nnogroup:x:65534:\n",
    )?;
    std::os::unix::fs::chown(tmp.join("home/vcap"), Some(2000), Some(2000)).ok();
    std::fs::write(
        tmp.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;
    std::fs::write(tmp.join(".lattice-image"), "busybox\n")?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Someone else built it first (or an old partial image is in the way).
        Err(_) if dir.join(".lattice-image").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(_) => {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("replacing the incomplete image at {}", dir.display()))?;
            std::fs::rename(&tmp, dir)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preloaded_names_resolve_and_others_say_why_not() {
        let dir = std::env::temp_dir();
        let p = Providers {
            preloaded: [("busybox".to_string(), dir.clone())].into(),
            ..Default::default()
        };
        assert_eq!(p.layers("preloaded:busybox").unwrap(), vec![dir]);
        let e = p.layers("preloaded:ubuntu").unwrap_err().to_string();
        assert!(
            e.contains("no preloaded rootfs \"ubuntu\"") && e.contains("busybox"),
            "{e}"
        );
        let e = p
            .layers("docker://localhost:5000/app:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker provider"), "{e}");
        assert!(p.layers("nonsense").is_err());
    }
}
