//! The cell's volumes as the BBS wants them: created, removed, checked and reported;
//! and [`VolumeSyncError`], why a volume sync stopped short.

use lattice_specs::volume::standby_name;

use super::bbs::VolumeReport;
use super::*;

/// Why a volume sync stopped short (it is tried again at the next sync).
#[derive(Debug, thiserror::Error)]
pub enum VolumeSyncError {
    /// The BBS refused or failed a call.
    #[error("{}", .0.message)]
    Bbs(#[from] BbsError),
    /// The volume pool cannot be opened now.
    #[error("{0:#}")]
    Pool(anyhow::Error),
    /// The blocking work on the pool did not finish (it panicked or was cancelled).
    #[error("{0}")]
    Blocking(#[from] tokio::task::JoinError),
}

impl<R: Runtime> Rep<R> {
    /// Makes this cell's volumes what the BBS says: copies of volumes that live
    /// elsewhere now are fenced off (`fencing`), PENDING ones are created (at their
    /// epoch), REMOVING ones removed once no container mounts them, READY ones checked
    /// and their use reported; standby copies kept here are made, a PENDING volume
    /// whose standby copy is here takes it over (`standby`). Volumes here that the BBS
    /// does not know are left alone (never deleted on a guess).
    pub async fn sync_volumes(&self) -> Result<(), VolumeSyncError> {
        use models::volume::State as V;
        let Some(driver) = self.exec.volumes().cloned() else {
            return Ok(());
        };
        let bbs = &self.bbs;
        let all = bbs.volumes("").await?;
        self.remember_failover_volumes(&all);
        let records: Vec<models::Volume> = all
            .iter()
            .filter(|v| v.cell_id == self.cfg.cell_id)
            .cloned()
            .collect();
        // (a pool this cell opened holds copies to check against the records)
        let keeps_standby = all.iter().any(|v| v.standby_cell_id == self.cfg.cell_id);
        if records.is_empty() && !keeps_standby && driver.opened().is_none() {
            return Ok(());
        }
        // A pool that cannot be opened now says nothing about the volumes: retry later.
        let vols = tokio::task::spawn_blocking(move || driver.volumes())
            .await?
            .map_err(VolumeSyncError::Pool)?;
        // Copies of volumes that moved away go first: a volume moved back here is
        // made afresh, never from an old copy.
        self.fence_copies(&vols, &all).await?;
        self.report_pool(&vols).await;
        for v in records {
            let name = v.name.clone();
            let report = |state: V, size: u64, used: u64, reason: String| VolumeReport {
                name: name.clone(),
                cell_id: self.cfg.cell_id.clone(),
                state,
                used_bytes: used,
                reason,
                size_bytes: size,
            };
            match v.state() {
                // A copy of an older epoch still here (a container kept it from
                // being fenced) is never taken for the volume.
                V::Pending | V::Ready
                    if vols.epoch(&name) < v.epoch && vols.info(&name).is_ok() =>
                {
                    tracing::info!(volume = %name, "an older copy waits to be fenced before the volume is made here");
                }
                // The standby copy that becomes the volume is taken over once the
                // task refreshing it (if one still runs) ended.
                V::Pending
                    if v.epoch > 0
                        && vols.info(&name).is_err()
                        && vols.holds(&standby_name(&name))
                        && self.exec.uses_volume(&standby_name(&name)) =>
                {
                    tracing::info!(volume = %name, "the standby copy is taken over once the task refreshing it ended");
                }
                V::Pending | V::Ready => {
                    let (d, n, size, pending) = (
                        vols.clone(),
                        name.clone(),
                        v.size_bytes,
                        v.state() == V::Pending,
                    );
                    // (the volume, why growing it failed)
                    let (reported, epoch) = (v.actual_size_bytes, v.epoch);
                    let made = tokio::task::spawn_blocking(move || {
                        let vols = d;
                        match vols.info(&n) {
                            // Asked to grow: online, the data stays; a failure is
                            // reported (and retried), the volume stays usable at
                            // its old size.
                            Ok(info) if !pending && (info.size_bytes < size || reported < size) => {
                                match vols.grow(&n, size) {
                                    Ok(grown) => Ok((grown, None)),
                                    Err(e) => Ok((
                                        info,
                                        Some(format!(
                                            "growing to {} failed: {e:#}",
                                            lattice_specs::volume::format_size(size)
                                        )),
                                    )),
                                }
                            }
                            Ok(info) => Ok((info, None)),
                            Err(_) if pending => {
                                // (only a failed-over volume takes a copy over: a
                                // volume made afresh never starts with old data)
                                let made = if epoch > 0 && vols.holds(&standby_name(&n)) {
                                    let taken = vols.promote(&n)?;
                                    tracing::info!(volume = %n, "standby copy taken over");
                                    taken
                                } else {
                                    vols.create(&n, size)?
                                };
                                if epoch > 0 {
                                    vols.set_epoch(&n, epoch)?;
                                }
                                Ok((made, None))
                            }
                            Err(_) => anyhow::bail!("the volume is missing on its cell"),
                        }
                    })
                    .await?;
                    let req = match made {
                        Ok((info, grow_failed)) => {
                            if pending {
                                tracing::info!(volume = %name, size = v.size_bytes, "volume created");
                            } else if grow_failed.is_none()
                                && v.actual_size_bytes < info.size_bytes
                                && v.actual_size_bytes > 0
                            {
                                tracing::info!(volume = %name, size = info.size_bytes, "volume grown");
                            }
                            if let Some(e) = &grow_failed {
                                tracing::warn!(volume = %name, "{e}");
                            }
                            report(
                                V::Ready,
                                info.size_bytes,
                                info.used_bytes,
                                grow_failed.unwrap_or_default(),
                            )
                        }
                        Err(e) => {
                            tracing::warn!(volume = %name, "volume failed: {e:#}");
                            report(V::Failed, 0, 0, format!("{e:#}"))
                        }
                    };
                    bbs.set_volume_state(&req).await?;
                }
                V::Removing => self.remove_volume(&vols, &name).await?,
                V::Failed | V::Invalid => {}
            }
        }
        self.sync_standby_copies(&vols, &all).await
    }

    /// Removes volume `name` (a REMOVING one) once no container mounts it, and tells
    /// the BBS it is gone.
    async fn remove_volume(
        &self,
        vols: &Arc<crate::volume::Volumes>,
        name: &str,
    ) -> Result<(), VolumeSyncError> {
        if self.exec.uses_volume(name) {
            return Ok(());
        }
        let (d, n) = (vols.clone(), name.to_string());
        let removed = tokio::task::spawn_blocking(move || {
            let vols = d;
            match vols.info(&n) {
                Ok(_) => vols.remove(&n),
                Err(_) => Ok(()),
            }
        })
        .await?;
        match removed {
            Ok(()) => {
                self.bbs.volume_removed(name, &self.cfg.cell_id).await?;
                tracing::info!(volume = %name, "volume removed");
            }
            Err(e) => tracing::warn!(volume = %name, "removing volume: {e:#}"),
        }
        Ok(())
    }

    /// Tends the pool (grows it at its watermark up to its maximum, see
    /// [`crate::pool`]) and publishes its and the volumes' figures: metrics, the cell's
    /// presence when they changed enough ([`super::presence::pool_changed`]), and each
    /// new warning in the cell's log (`ltc debug-logs`): past the watermark at the
    /// maximum, or a growth that failed.
    pub(super) async fn report_pool(&self, vols: &Arc<crate::volume::Volumes>) {
        let v = vols.clone();
        let max = self.exec.volumes().map_or(0, |d| d.pool_max());
        let tended =
            tokio::task::spawn_blocking(move || anyhow::Ok((v.tend_pool(max)?, v.list()?))).await;
        let (pool, list) = match tended {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(cell = %self.cfg.cell_id, "reading the volume pool: {e:#}");
                return;
            }
            Err(e) => {
                tracing::warn!(cell = %self.cfg.cell_id, "reading the volume pool: {e}");
                return;
            }
        };
        let m = &self.metrics;
        for (kind, bytes) in [
            ("size", pool.size_bytes),
            ("used", pool.used_bytes),
            ("max", pool.max_bytes),
        ] {
            m.volume_pool.with_label_values(&[kind]).set(bytes as i64);
        }
        m.volumes.reset();
        for v in &list {
            m.volumes
                .with_label_values(&[&v.name, "size"])
                .set(v.size_bytes as i64);
            m.volumes
                .with_label_values(&[&v.name, "used"])
                .set(v.used_bytes as i64);
        }
        if let Some(from) = pool.grew_from {
            m.volume_pool_growths.with_label_values(&["grown"]).inc();
            tracing::info!(
                cell = %self.cfg.cell_id,
                from,
                to = pool.size_bytes,
                max = pool.max_bytes,
                "volume pool grown at its watermark"
            );
        }
        if pool.grow_failed.is_some() {
            m.volume_pool_growths.with_label_values(&["failed"]).inc();
        }
        let (changed, warned_before) = {
            let mut last = self.pool.lock().unwrap();
            let changed = super::presence::pool_changed(last.as_ref(), &pool);
            let warned_before = last.as_ref().and_then(|l| l.warning.clone());
            *last = Some(pool.clone());
            (changed, warned_before)
        };
        // Once per new warning, not at every sync.
        if let Some(w) = pool
            .warning
            .as_ref()
            .filter(|w| Some(*w) != warned_before.as_ref())
        {
            tracing::warn!(cell = %self.cfg.cell_id, "{w}");
        }
        if changed {
            self.republish_presence().await;
        }
    }
}
