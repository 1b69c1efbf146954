//! Standby copies (`--failover standby`) in the pool: a volume's copy kept on this
//! cell as an ordinary volume named `NAME.standby`
//! (`lattice_specs::volume::standby_name`), refreshed by tasks restoring backups into
//! it, and promoted to be the volume when the volume fails over onto this cell.

use anyhow::Context;
use lattice_specs::volume::standby_name;

use super::{check_name, VolumeInfo, Volumes};

impl Volumes {
    /// Whether this cell holds a copy named `name` (a volume or a standby copy).
    pub fn holds(&self, name: &str) -> bool {
        self.image(name).exists()
    }

    /// Makes volume `name`'s standby copy the volume: the copy unmounted, its image
    /// renamed to the volume's and mounted as it. The caller makes sure no container
    /// mounts the copy, and that the volume has no copy here.
    pub fn promote(&self, name: &str) -> anyhow::Result<VolumeInfo> {
        check_name("volume", name)?;
        let copy = standby_name(name);
        let (from, to) = (self.image(&copy), self.image(name));
        anyhow::ensure!(
            from.exists(),
            "no standby copy of volume {name} on this cell"
        );
        anyhow::ensure!(!to.exists(), "volume {name} exists already on this cell");
        anyhow::ensure!(
            self.snapshots(&copy)?.is_empty(),
            "the standby copy of volume {name} has snapshots in use"
        );
        self.unmount(&copy)?;
        std::fs::rename(&from, &to)
            .with_context(|| format!("taking the standby copy of volume {name} over"))?;
        self.forget_epoch(&copy);
        self.mount(name)?;
        self.info(name)
    }
}
