//! Stateful failover in the store (decided by `lattice_specs::failover`): the
//! brain's compare-and-swap move of a volume to another cell, the end of the task
//! that refills it, the copies cells fenced off, and the check that work mounts a
//! volume only on its cell (and, while a failover refills it, only the refilling task).

use lattice_specs::errors::ErrorName;
use lattice_specs::failover::{self, mount_refusal};
use lattice_specs::models::volume::{Failover, State as VolumeState};
use lattice_specs::models::{Backup, Volume, VolumeMount};
use lattice_specs::now_nanos;

use super::txn::Write;
use super::{Db, DbError, Result, VOLUME};

/// One failover as the brain asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move<'a> {
    pub name: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub epoch: u64,
    pub lost_at: i64,
}

impl Db {
    /// Moves volume `m.name` from its lost cell to `m.to`, to be refilled from `backup`
    /// by task `restore_task`: the volume is PENDING there (its new cell makes it), at
    /// the next epoch, and nothing but that task mounts it until it finished. Only if
    /// it is still on `m.from` at `m.epoch` and asks for failover; otherwise
    /// `VolumeAlreadyPlaced` (it moved on).
    pub async fn fail_over_volume(
        &self,
        m: &Move<'_>,
        backup: &Backup,
        restore_task: &str,
    ) -> Result<Volume> {
        if backup.volume != m.name || !failover::good(backup) {
            return Err(DbError::Conflict {
                name: ErrorName::BackupNotCompleted,
                message: format!(
                    "backup {} is not a good backup of volume {}",
                    backup.id, m.name
                ),
            });
        }
        let name = m.name;
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.cell_id != m.from
                || v.epoch != m.epoch
                || v.failover() == Failover::None
                || !matches!(v.state(), VolumeState::Ready | VolumeState::Pending)
            {
                return Err(DbError::Conflict {
                    name: ErrorName::VolumeAlreadyPlaced,
                    message: format!(
                        "volume {name} is {} on cell {:?} at epoch {}: it moved on",
                        lattice_specs::volume::state_name(v.state()),
                        v.cell_id,
                        v.epoch
                    ),
                });
            }
            let now = now_nanos();
            // A standby copy on the new cell becomes the volume: a switch, refilled only
            // when it does not hold this backup (or a refresh was writing into it).
            let promoted = v.failover() == Failover::Standby
                && v.standby_cell_id == m.to
                && !v.standby_backup.is_empty();
            let refill = !(promoted && failover::standby::current(&v, &backup.id));
            super::standby::forget_standby(&mut v);
            v.cell_id = m.to.to_string();
            v.epoch += 1;
            v.state = VolumeState::Pending as i32;
            v.reason = match (promoted, refill) {
                (true, false) => format!(
                    "failed over from lost cell {}: its standby copy (backup {}) takes over",
                    m.from, backup.id
                ),
                (true, true) => format!(
                    "failed over from lost cell {}: its standby copy takes over, refilled from backup {}",
                    m.from, backup.id
                ),
                _ => format!(
                    "failed over from lost cell {}: refilling from backup {}",
                    m.from, backup.id
                ),
            };
            v.used_bytes = 0;
            v.actual_size_bytes = 0;
            v.failed_over_at = now;
            v.failed_over_from = m.from.to_string();
            v.failed_over_backup = backup.id.clone();
            v.data_loss_window_ns = failover::data_loss_window_ns(backup, m.lost_at);
            v.failover_restore_task = if refill {
                restore_task.to_string()
            } else {
                String::new()
            };
            v.updated_at = now;
            Ok((Write::Put(v.clone()), v))
        })
        .await
    }

    /// The refill task `task_guid` of volume `name` finished: the volume is usable
    /// again (ok), or gets a fresh task `retry` to try again (failed, with why).
    pub async fn failover_refilled(
        &self,
        name: &str,
        task_guid: &str,
        outcome: std::result::Result<(), (&str, &str)>,
    ) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let Some(mut v) = cur else {
                return Ok((Write::Nothing, ()));
            };
            if v.failover_restore_task != task_guid {
                return Ok((Write::Nothing, ()));
            }
            match outcome {
                Ok(()) => {
                    v.failover_restore_task.clear();
                    v.reason.clear();
                }
                Err((why, retry)) => {
                    v.failover_restore_task = retry.to_string();
                    v.reason = format!(
                        "refilling from backup {} failed ({why}): trying again",
                        v.failed_over_backup
                    );
                }
            }
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }

    /// Cell `cell` fenced its copy of volume `name` off, keeping it at `copy`: the
    /// record lists it ("CELL:PATH") for the operator.
    pub async fn volume_fenced(&self, name: &str, cell: &str, copy: &str) -> Result<()> {
        let entry = format!("{cell}:{copy}");
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let Some(mut v) = cur else {
                return Ok((Write::Nothing, ()));
            };
            if v.fenced_copies.contains(&entry) {
                return Ok((Write::Nothing, ()));
            }
            v.fenced_copies.push(entry.clone());
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }

    /// Refuses work `work` starting on cell `cell` when it mounts a volume that lives
    /// on another cell (`VolumeFenced`) or that a failover is refilling
    /// (`VolumeNotReady`).
    pub(super) async fn check_mount_cell(
        &self,
        mounts: &[VolumeMount],
        cell: &str,
        work: &str,
    ) -> Result<()> {
        for m in mounts.iter().filter(|m| m.scratch_bytes == 0) {
            if let Some(volume) = lattice_specs::volume::standby_of(&m.volume) {
                let v = self.volume(volume).await?;
                if let Some(refused) = super::standby::standby_mount_refusal(&v, cell, work) {
                    return Err(refused);
                }
                continue;
            }
            let v = self.volume(&m.volume).await?;
            if let Some((name, message)) = mount_refusal(&v, cell, work) {
                return Err(DbError::Conflict { name, message });
            }
        }
        Ok(())
    }
}
