//! Failover on the cell's volumes: the epoch a copy was made at (a marker next to its
//! image), and fencing a copy off: unmounted and its image moved to `pool/fenced/`,
//! where nothing mounts it, kept for the operator (`mount -o loop IMAGE DIR` reads it).

use std::path::PathBuf;

use anyhow::Context;

use super::{check_name, Volumes};

impl Volumes {
    fn epoch_file(&self, name: &str) -> PathBuf {
        self.dir.join("pool/volumes").join(format!("{name}.epoch"))
    }

    fn fenced_dir(&self) -> PathBuf {
        self.dir.join("pool/fenced")
    }

    /// The epoch volume `name`'s copy was made at (0: before any failover).
    pub fn epoch(&self, name: &str) -> u64 {
        std::fs::read_to_string(self.epoch_file(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records that volume `name`'s copy was made at `epoch`.
    pub fn set_epoch(&self, name: &str, epoch: u64) -> anyhow::Result<()> {
        check_name("volume", name)?;
        let file = self.epoch_file(name);
        let tmp = file.with_extension("epoch.tmp");
        std::fs::write(&tmp, epoch.to_string())?;
        std::fs::rename(&tmp, &file)
            .with_context(|| format!("recording the epoch of volume {name}"))
    }

    pub(super) fn forget_epoch(&self, name: &str) {
        let _ = std::fs::remove_file(self.epoch_file(name));
    }

    /// Fences volume `name`'s copy off as `fenced` (a name no volume has): unmounted,
    /// its image moved out of the volumes. The caller makes sure no container mounts
    /// it. Returns where the image is kept.
    pub fn fence(&self, name: &str, fenced: &str) -> anyhow::Result<PathBuf> {
        check_name("volume", name)?;
        anyhow::ensure!(
            !fenced.contains('/') && fenced.starts_with(&format!("{name}@")),
            "a fenced copy of {name} is named {name}@…, not {fenced:?}"
        );
        let img = self.image(name);
        anyhow::ensure!(img.exists(), "no volume {name} on this cell");
        std::fs::create_dir_all(self.fenced_dir())?;
        let dest = self.fenced_dir().join(format!("{fenced}.img"));
        anyhow::ensure!(!dest.exists(), "a fenced copy {fenced} exists already");
        self.unmount(name)?;
        std::fs::rename(&img, &dest).with_context(|| format!("fencing volume {name}"))?;
        self.forget_epoch(name);
        Ok(dest)
    }

    /// The fenced copies this cell keeps: (volume, image path).
    pub fn fenced(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let dir = self.fenced_dir();
        if !dir.exists() {
            return Ok(vec![]);
        }
        let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(|e| {
                let e = e.ok()?;
                let n = e.file_name().into_string().ok()?;
                let volume = n.strip_suffix(".img")?.split_once('@')?.0.to_string();
                Some((volume, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}
