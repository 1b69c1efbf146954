//! The backup schedule: on the active brain, every few seconds, each volume's backup
//! schedule is turned into steps (`lattice_specs::backup::schedule_steps`): the current
//! slot's backup is started unless it exists, and backups beyond the retention are
//! pruned. A slot's backup id is the same for every brain, and the BBS creates it only
//! if absent, so a slot gets exactly one backup even when brains fail over mid-slot.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs_client::{BrainBbs, ScheduledBackups};
use lattice_specs::backup::{schedule_steps, ScheduleStep};
use lattice_specs::errors::ErrorName;

use crate::auctioneer::{bbs_err, BrainError};

/// One pass at `now` (Unix seconds): what was started and pruned.
pub async fn tick(bbs: &dyn ScheduledBackups, now: i64) -> Result<(usize, usize), BrainError> {
    let schedules = bbs.backup_schedules().await.map_err(bbs_err)?;
    if schedules.is_empty() {
        return Ok((0, 0));
    }
    let backups = bbs.backups().await.map_err(bbs_err)?;
    let (mut started, mut pruned) = (0, 0);
    for s in &schedules {
        let steps = match schedule_steps(s, &backups, now) {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!(volume = %s.volume, "bad backup schedule: {e}");
                continue;
            }
        };
        for step in steps {
            match step {
                ScheduleStep::Start { id, slot } => {
                    match bbs.start_backup(&s.volume, &id, &slot).await {
                        Ok(_) => {
                            started += 1;
                            crate::metrics::SCHEDULED_BACKUPS
                                .with_label_values(&["started"])
                                .inc();
                            tracing::info!(volume = %s.volume, %slot, backup = %id, "scheduled backup started");
                        }
                        // Another brain (or an earlier pass) filled the slot.
                        Err(e) if e.name == Some(ErrorName::BackupAlreadyExists) => {}
                        Err(e) => {
                            let e = bbs_err(e);
                            if matches!(e, BrainError::LockLost) {
                                return Err(e);
                            }
                            crate::metrics::SCHEDULED_BACKUPS
                                .with_label_values(&["refused"])
                                .inc();
                            tracing::warn!(volume = %s.volume, %slot, "scheduled backup not started: {e}");
                        }
                    }
                }
                ScheduleStep::Prune { id } => match bbs.delete_backup(&id).await {
                    Ok(_) => {
                        pruned += 1;
                        crate::metrics::SCHEDULED_BACKUPS
                            .with_label_values(&["pruned"])
                            .inc();
                        tracing::info!(volume = %s.volume, backup = %id, "backup pruned (retention)");
                    }
                    Err(e) if e.name == Some(ErrorName::BackupNotFound) => {}
                    Err(e) => return Err(bbs_err(e)),
                },
            }
        }
    }
    Ok((started, pruned))
}

/// Runs [`tick`] every `interval` until the brain loses its lock.
pub async fn run(bbs: Arc<dyn BrainBbs>, interval: Duration) -> Result<(), BrainError> {
    loop {
        let now = lattice_specs::now_nanos() / 1_000_000_000;
        match tick(bbs.as_ref(), now).await {
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "backup scheduling failed; retrying"),
            Ok(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::{CellWrites, Leases, Result as BbsResult};
    use lattice_specs::models::{volume, Backup, BackupSchedule, CellCapacity, CellPresence};

    const NOW: i64 = 1_800_000_000;

    /// A BBS with volume `data` READY on `cell-1`, backed up hourly.
    async fn bbs_with_a_schedule() -> FakeBbs {
        let bbs = FakeBbs::start().await;
        let lease = bbs.grant_lease(60).await.unwrap();
        let cell = CellPresence {
            cell_id: "cell-1".into(),
            rep_address: "http://cell-1:1800".into(),
            capacity: Some(CellCapacity {
                memory_mb: 1024,
                disk_mb: 1024,
                containers: 10,
            }),
            volume_drivers: vec!["local".into()],
            ..Default::default()
        };
        bbs.set_cell_presence(&cell, lease).await.unwrap();
        let size = lattice_specs::volume::MIN_SIZE;
        bbs.db()
            .create_volume("data", size, "cell-1")
            .await
            .unwrap();
        let ready = lattice_bbs_client::VolumeReport {
            name: "data".into(),
            cell_id: "cell-1".into(),
            state: volume::State::Ready,
            size_bytes: size,
            used_bytes: 0,
            reason: String::new(),
        };
        bbs.set_volume_state(&ready).await.unwrap();
        let schedule = BackupSchedule {
            volume: "data".into(),
            every: "1h".into(),
            keep: 2,
            created_at: 0,
        };
        bbs.db().set_backup_schedule(&schedule).await.unwrap();
        bbs
    }

    /// A brain whose list of backups is stale: it sees none (another brain just
    /// started this slot's backup).
    struct StaleView(FakeBbs);

    #[async_trait]
    impl ScheduledBackups for StaleView {
        async fn backup_schedules(&self) -> BbsResult<Vec<BackupSchedule>> {
            self.0.backup_schedules().await
        }
        async fn backups(&self) -> BbsResult<Vec<Backup>> {
            Ok(vec![])
        }
        async fn start_backup(&self, volume: &str, id: &str, slot: &str) -> BbsResult<()> {
            self.0.start_backup(volume, id, slot).await
        }
        async fn delete_backup(&self, id: &str) -> BbsResult<()> {
            self.0.delete_backup(id).await
        }
    }

    #[tokio::test]
    async fn a_slot_gets_one_backup_however_often_the_schedule_runs() {
        let bbs = bbs_with_a_schedule().await;
        assert_eq!(tick(&bbs, NOW).await.unwrap(), (1, 0));
        assert_eq!(tick(&bbs, NOW + 60).await.unwrap(), (0, 0));
        let backups = bbs.backups().await.unwrap();
        assert_eq!(backups.len(), 1);
        assert_eq!(backups[0].volume, "data");
    }

    #[tokio::test]
    async fn a_backup_that_already_exists_counts_as_done() {
        let bbs = bbs_with_a_schedule().await;
        assert_eq!(tick(&bbs, NOW).await.unwrap(), (1, 0));
        // The BBS refuses the second start (BackupAlreadyExists): not an error, and
        // not counted as a refusal either.
        let refused = crate::metrics::SCHEDULED_BACKUPS.with_label_values(&["refused"]);
        let refused_before = refused.get();
        let stale = StaleView(bbs.clone());
        assert_eq!(tick(&stale, NOW).await.unwrap(), (0, 0));
        assert_eq!(refused.get(), refused_before);
        assert_eq!(bbs.backups().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_brain_whose_lock_moved_on_starts_nothing() {
        let bbs = bbs_with_a_schedule().await;
        let fenced = bbs.superseded("brain").await;
        let r = tick(fenced.as_ref(), NOW).await;
        assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
        assert!(bbs.backups().await.unwrap().is_empty());
    }
}
