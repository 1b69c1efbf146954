//! Standby copies on the cell (`--failover standby`): the copies the BBS keeps here
//! are made (at their volume's size, grown with it) and reported at every volume sync;
//! copies no longer wanted here are removed once no container mounts them. Taking a
//! copy over when its volume fails over here is the volume sync's (`Volumes::promote`).

use lattice_specs::volume::{standby_name, standby_of};

use super::bbs::VolumeReport;
use super::volumes::VolumeSyncError;
use super::*;

/// The volumes whose standby copy this cell `me` keeps, per `records`.
fn kept_here<'a>(records: &'a [models::Volume], me: &str) -> Vec<&'a models::Volume> {
    records
        .iter()
        .filter(|v| v.failover() == models::volume::Failover::Standby)
        .filter(|v| v.standby_cell_id == me && v.cell_id != me)
        .filter(|v| v.state() == models::volume::State::Ready)
        .collect()
}

/// Whether copy `copy` of volume `volume` stays on cell `me`: kept here, or about to
/// be taken over here (the volume PENDING here).
fn wanted(records: &[models::Volume], me: &str, volume: &str) -> bool {
    records.iter().any(|v| {
        v.name == volume
            && ((v.failover() == models::volume::Failover::Standby
                && v.standby_cell_id == me
                && v.cell_id != me)
                || (v.cell_id == me && v.state() == models::volume::State::Pending))
    })
}

impl<R: Runtime> Rep<R> {
    /// Makes and reports the standby copies kept here; removes the others.
    pub(super) async fn sync_standby_copies(
        &self,
        vols: &Arc<crate::volume::Volumes>,
        records: &[models::Volume],
    ) -> Result<(), VolumeSyncError> {
        let me = self.cfg.cell_id.clone();
        for v in kept_here(records, &me) {
            let copy = standby_name(&v.name);
            let (d, c, size) = (vols.clone(), copy.clone(), v.size_bytes);
            let made = tokio::task::spawn_blocking(move || match d.info(&c) {
                Ok(info) if info.size_bytes < size => d.grow(&c, size),
                Ok(info) => Ok(info),
                Err(_) => d.create(&c, size),
            })
            .await?;
            let (state, size, used, reason) = match made {
                Ok(info) => (
                    models::volume::State::Ready,
                    info.size_bytes,
                    info.used_bytes,
                    String::new(),
                ),
                Err(e) => {
                    tracing::warn!(volume = %v.name, "making its standby copy failed: {e:#}");
                    (models::volume::State::Failed, 0, 0, format!("{e:#}"))
                }
            };
            if !v.standby_ready && state == models::volume::State::Ready {
                tracing::info!(volume = %v.name, "standby copy made");
            }
            let report = VolumeReport {
                name: copy,
                cell_id: me.clone(),
                state,
                used_bytes: used,
                reason,
                size_bytes: size,
            };
            self.bbs.set_volume_state(&report).await?;
        }
        let v = vols.clone();
        let local = tokio::task::spawn_blocking(move || v.names())
            .await?
            .map_err(VolumeSyncError::Pool)?;
        for copy in local.iter().map(String::as_str) {
            let Some(volume) = standby_of(copy) else {
                continue;
            };
            if wanted(records, &me, volume) || self.exec.uses_volume(copy) {
                continue;
            }
            let (d, c) = (vols.clone(), copy.to_string());
            match tokio::task::spawn_blocking(move || d.remove(&c)).await? {
                Ok(()) => tracing::info!(%volume, "standby copy no longer kept here: removed"),
                Err(e) => tracing::warn!(%volume, "removing a standby copy: {e:#}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::volume::{Failover, State};

    fn volume(name: &str, cell: &str, standby: &str, state: State) -> models::Volume {
        let mut v = models::Volume {
            name: name.into(),
            cell_id: cell.into(),
            standby_cell_id: standby.into(),
            ..Default::default()
        };
        v.set_state(state);
        v.set_failover(Failover::Standby);
        v
    }

    #[test]
    fn a_cell_keeps_the_copies_recorded_on_it_and_those_it_takes_over() {
        let records = [
            volume("kept", "a", "b", State::Ready),
            volume("elsewhere", "a", "c", State::Ready),
            volume("taken", "b", "", State::Pending),
            volume("not-made", "a", "b", State::Pending),
        ];
        let kept: Vec<&str> = kept_here(&records, "b")
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(kept, ["kept"]);
        assert!(wanted(&records, "b", "kept"));
        assert!(wanted(&records, "b", "taken"), "taken over here next");
        assert!(wanted(&records, "b", "not-made"));
        assert!(!wanted(&records, "b", "elsewhere"));
        assert!(!wanted(&records, "b", "gone"));
        let mut restore = volume("kept", "a", "b", State::Ready);
        restore.set_failover(Failover::Restore);
        assert!(!wanted(&[restore], "b", "kept"));
    }
}
