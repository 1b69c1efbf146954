//! The backup scheduler: on the active brain, every few seconds, each volume's backup
//! schedule is turned into steps (`lattice_specs::backup::schedule_steps`): the current
//! slot's backup is started unless it exists, and backups beyond the retention are
//! pruned. A slot's backup id is the same for every brain, and the BBS creates it only
//! if absent, so a slot gets exactly one backup even when brains fail over mid-slot.

use std::time::Duration;

use lattice_specs::backup::{schedule_steps, ScheduleStep};
use lattice_specs::bbs_api::{BackupIdRequest, Empty, StartBackupRequest};

use crate::auctioneer::{bbs_err, BrainError};
use crate::bbs::{error_name, Bbs};

/// One pass at `now` (Unix seconds): what was started and pruned.
pub async fn tick(bbs: &Bbs, now: i64) -> Result<(usize, usize), BrainError> {
    let mut client = bbs.client();
    let schedules = client
        .backup_schedules(bbs.req(Empty {}))
        .await
        .map_err(bbs_err)?
        .into_inner()
        .schedules;
    if schedules.is_empty() {
        return Ok((0, 0));
    }
    let backups = client
        .backups(bbs.req(Empty {}))
        .await
        .map_err(bbs_err)?
        .into_inner()
        .backups;
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
                    let r = client
                        .start_backup(bbs.req(StartBackupRequest {
                            volume: s.volume.clone(),
                            id: id.clone(),
                            slot: slot.clone(),
                        }))
                        .await;
                    match r {
                        Ok(_) => {
                            started += 1;
                            crate::metrics::SCHEDULED_BACKUPS
                                .with_label_values(&["started"])
                                .inc();
                            tracing::info!(volume = %s.volume, %slot, backup = %id, "scheduled backup started");
                        }
                        // Another brain (or an earlier pass) filled the slot.
                        Err(st) if error_name(&st) == Some("BackupAlreadyExists") => {}
                        Err(st) => {
                            let e = bbs_err(st);
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
                ScheduleStep::Prune { id } => {
                    match client
                        .delete_backup(bbs.req(BackupIdRequest { id: id.clone() }))
                        .await
                    {
                        Ok(_) => {
                            pruned += 1;
                            crate::metrics::SCHEDULED_BACKUPS
                                .with_label_values(&["pruned"])
                                .inc();
                            tracing::info!(volume = %s.volume, backup = %id, "backup pruned (retention)");
                        }
                        Err(st) if error_name(&st) == Some("BackupNotFound") => {}
                        Err(st) => return Err(bbs_err(st)),
                    }
                }
            }
        }
    }
    Ok((started, pruned))
}

/// Runs [`tick`] every `interval` until the brain loses its lock.
pub async fn run(bbs: Bbs, interval: Duration) -> Result<(), BrainError> {
    loop {
        let now = lattice_specs::now_nanos() / 1_000_000_000;
        match tick(&bbs, now).await {
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "backup scheduling failed; retrying"),
            Ok(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}
