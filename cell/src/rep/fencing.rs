//! Failover fencing on the cell, so that no two copies of a volume are ever mounted
//! by apps at once (`lattice_specs::failover`):
//! - **self-fence**: once the cell has not renewed its presence within its TTL it
//!   cannot know whether its failover volumes were moved elsewhere, so it stops every
//!   container mounting one (the volumes' grace period is longer than the TTL plus
//!   the time this takes);
//! - **fenced copies**: a copy here of a volume that lives on another cell now, or of
//!   an older epoch, is unmounted and moved aside (never mounted again), kept for the
//!   operator, and reported in the volume's `fenced_copies`.
//!
//! [`self_fence`] decides which containers stop; the runners here do the I/O.

use std::collections::HashSet;

use lattice_specs::failover::{copy_fate, fenced_name, CopyFate};

use super::volumes::VolumeSyncError;
use super::*;

/// How often the cell checks its presence for the self-fence.
const SELF_FENCE_EVERY: Duration = Duration::from_secs(1);

/// The containers (handles) to stop when the presence is not `held`: those mounting
/// one of `failover_volumes`; `mounts` are the containers' handles and volumes.
pub(super) fn self_fence(
    held: bool,
    failover_volumes: &HashSet<String>,
    mounts: &[(String, Vec<String>)],
) -> Vec<String> {
    if held {
        return vec![];
    }
    mounts
        .iter()
        .filter(|(_, volumes)| volumes.iter().any(|v| failover_volumes.contains(v)))
        .map(|(handle, _)| handle.clone())
        .collect()
}

impl<R: Runtime> Rep<R> {
    /// Remembers which volumes of this cell ask for failover (the self-fence needs
    /// them when the BBS cannot be asked).
    pub(super) fn remember_failover_volumes(&self, records: &[models::Volume]) {
        let names = records
            .iter()
            .filter(|v| v.cell_id == self.cfg.cell_id)
            .filter(|v| v.failover() != models::volume::Failover::None)
            .map(|v| v.name.clone())
            .collect();
        *self.failover_volumes.lock().unwrap() = names;
    }

    /// Stops the containers mounting failover volumes while the presence is not held,
    /// checking every second until `shutdown`.
    pub(super) async fn self_fence_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SELF_FENCE_EVERY) => {}
            }
            let held = self.presence_held();
            let failover = self.failover_volumes.lock().unwrap().clone();
            if held.is_ok() || failover.is_empty() {
                continue;
            }
            let slots = self.snapshot();
            let mounts: Vec<(String, Vec<String>)> = slots
                .iter()
                .filter(|(_, s)| !s.stop.is_cancelled())
                .map(|(h, _)| (h.clone(), self.exec.mounted_volumes(h)))
                .collect();
            for handle in self_fence(false, &failover, &mounts) {
                tracing::warn!(
                    handle,
                    why = %held.as_ref().err().map(String::as_str).unwrap_or(""),
                    "the cell's presence lapsed: stopping a container that mounts a failover volume (self-fence)"
                );
                self.metrics.self_fenced.inc();
                if let Some((_, slot)) = slots.iter().find(|(h, _)| *h == handle) {
                    slot.stop.cancel();
                }
                // Now, not once its supervision has told the BBS (out of reach).
                let rep = self.clone();
                tokio::spawn(async move { rep.exec.destroy(&handle).await });
            }
        }
    }

    /// Fences the copies here of volumes that live on another cell now or moved on
    /// (`records`: every volume of the cluster), and reports every fenced copy the
    /// volume's record does not list yet. A copy a container still mounts waits for
    /// the next sync (the sync stops work the BBS no longer gives this cell).
    pub(super) async fn fence_copies(
        &self,
        vols: &Arc<crate::volume::Volumes>,
        records: &[models::Volume],
    ) -> Result<(), VolumeSyncError> {
        let me = self.cfg.cell_id.clone();
        let v = vols.clone();
        let local = tokio::task::spawn_blocking(move || {
            let list = v.list()?;
            anyhow::Ok(
                list.into_iter()
                    .map(|i| {
                        let epoch = v.epoch(&i.name);
                        (i.name, epoch)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await?
        .map_err(VolumeSyncError::Pool)?;
        for (name, epoch) in local {
            let record = records.iter().find(|r| r.name == name);
            if copy_fate(record, &me, epoch) != CopyFate::Fence {
                continue;
            }
            if self.exec.uses_volume(&name) {
                tracing::info!(volume = %name, "a container still mounts a copy to fence: fencing it once it stopped");
                continue;
            }
            let fenced = fenced_name(&name, epoch, lattice_specs::now_nanos() / 1_000_000_000);
            let (v, n) = (vols.clone(), name.clone());
            match tokio::task::spawn_blocking(move || v.fence(&n, &fenced)).await? {
                Ok(at) => tracing::warn!(
                    volume = %name, copy = %at.display(),
                    "the volume lives on cell {:?} now: this cell's copy is fenced off (kept, never mounted)",
                    record.map(|r| r.cell_id.as_str()).unwrap_or_default()
                ),
                Err(e) => tracing::warn!(volume = %name, "fencing a copy: {e:#}"),
            }
        }
        let v = vols.clone();
        let fenced = tokio::task::spawn_blocking(move || v.fenced())
            .await?
            .map_err(VolumeSyncError::Pool)?;
        for (name, at) in fenced {
            let copy = at.display().to_string();
            let entry = format!("{me}:{copy}");
            let listed = records
                .iter()
                .find(|r| r.name == name)
                .is_none_or(|r| r.fenced_copies.contains(&entry));
            if !listed {
                self.bbs.volume_fenced(&name, &me, &copy).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_without_its_presence_stops_what_mounts_failover_volumes() {
        let failover: HashSet<String> = ["pg".to_string()].into();
        let mounts = vec![
            ("web-0".to_string(), vec!["pg".to_string()]),
            ("cache-0".to_string(), vec!["tmp".to_string()]),
            ("job".to_string(), vec![]),
            (
                "both".to_string(),
                vec!["tmp".to_string(), "pg".to_string()],
            ),
        ];
        assert!(self_fence(true, &failover, &mounts).is_empty(), "held");
        assert_eq!(
            self_fence(false, &failover, &mounts),
            vec!["web-0".to_string(), "both".to_string()]
        );
        assert!(self_fence(false, &HashSet::new(), &mounts).is_empty());
    }
}
